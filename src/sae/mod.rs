//! Sparse autoencoders: the model, its parameters and gradients, the optimiser and the
//! training loop.
pub mod adam;
pub mod grads;
pub mod model;
pub mod params;
pub mod resample;
pub mod schedule;
pub mod train;

pub use model::Sae;
