//! saerun: a declarative, content-addressed runner for sparse-autoencoder experiments.
//! See ARCHITECTURE.md for how the modules map onto the pipeline.

pub mod analysis;
pub mod browser;
pub mod cache;
pub mod cli;
pub mod compare;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod file_lock;
pub mod host_matmul;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod process_tag;
pub mod progress;
pub mod record;
pub mod report;
pub mod results;
pub mod sae;
pub mod spec;
pub mod stages;
pub mod store;

pub use error::{Error, Result};
