//! saerun: a declarative, content-addressed runner for sparse-autoencoder experiments.
//! See ARCHITECTURE.md for how the modules map onto the pipeline.

pub mod error;
pub mod hub;
pub mod model;

pub use error::{Error, Result};
