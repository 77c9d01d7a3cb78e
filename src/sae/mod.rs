//! Sparse autoencoders: the model, its parameters and gradients, the optimiser, the
//! training loop and its checkpoints; what an SAE was trained on (`meta`) and the SAELens
//! interchange format (`saelens`).
pub mod adam;
pub mod checkpoint;
pub mod grads;
pub mod meta;
pub mod model;
pub mod params;
pub mod reconstruct;
pub mod resample;
pub mod saelens;
pub mod schedule;
pub mod step;
pub mod train;

pub use model::Sae;
