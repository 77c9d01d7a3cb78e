//! Sparse autoencoders: the model, its parameters and gradients, the optimiser, the
//! training loop and its checkpoints.
pub mod adam;
pub mod checkpoint;
pub mod grads;
pub mod model;
pub mod params;
pub mod resample;
pub mod schedule;
pub mod step;
pub mod train;

pub use model::Sae;
