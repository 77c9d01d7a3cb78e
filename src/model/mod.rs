//! GPT-NeoX (Pythia) forward pass with TransformerLens hook points.
//!
//! - [`config`] reads `config.json` in the Pythia-hub and recent-transformers dialects.
//! - [`weights`] reads safetensors checkpoints, single file or sharded.
//! - [`gpt_neox`] is the forward pass: capture and replacement at hooks, resuming from the
//!   residual stream.
//! - [`hooks`] names hook points as TransformerLens does.
//! - [`processing`] selects raw or TransformerLens-processed weights.
//! - [`tokenizer`] wraps `tokenizer.json`.

mod attention;
mod bf16_linear;
mod bf16_panels;
pub mod config;
mod fused_linear;
pub mod gpt_neox;
pub mod hooks;
mod layer_norm;
mod nll;
mod ops;
pub mod processing;
pub mod tokenizer;
pub mod weights;

pub use config::GptNeoXConfig;
pub use gpt_neox::{GptNeoX, Losses, Pass};
pub use hooks::HookPoint;
pub use nll::UnembeddingPrecision;
pub use ops::Kernels;
pub use processing::Processing;
pub use tokenizer::Tokenizer;
pub use weights::Checkpoint;
