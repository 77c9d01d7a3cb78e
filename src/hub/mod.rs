//! Hugging Face hub access: cache resolution and downloads for models and datasets.
//!
//! - [`source`]: `path:` / `hf:` / `hf-dataset:` spec strings → [`ModelSource`], [`DatasetSource`].
//! - [`config`]: [`HubConfig`] (endpoint, cache dir, offline, token, timeouts, retries) from
//!   the same environment variables as Python's huggingface_hub.
//! - [`cache`]: lookups in the standard cache layout (`refs/`, `snapshots/`, `blobs/`).
//! - [`download`]: listings and downloads (`ureq`) with connect and idle timeouts, bounded
//!   retries with back-off, and size-verified blobs renamed into the cache only when complete.
//! - [`model`] / [`dataset`]: cache first, hub on a miss, one clear error otherwise.

pub mod cache;
pub mod config;
pub mod dataset;
pub mod download;
pub mod model;
pub mod source;
mod unavailable;

pub use cache::{CachedRepo, RepoKind};
pub use config::HubConfig;
pub use dataset::PARQUET_CONVERT_REVISION;
pub use model::{resolve_model_files, resolve_model_files_with, ModelFiles};
pub use source::{DatasetSource, ModelSource};
