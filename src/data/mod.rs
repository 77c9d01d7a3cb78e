//! Where activations come from. `toy`: synthetic superposition data with known features.
pub mod text;
pub mod toy;
