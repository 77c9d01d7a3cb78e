//! GPT-NeoX (Pythia) forward pass with TransformerLens hook points.
//!
//! - [`config`] reads `config.json` in the Pythia-hub and recent-transformers dialects.
//! - [`weights`] reads safetensors checkpoints, single file or sharded.
//! - [`gpt_neox`] is the forward pass: capture and replacement at hooks, resuming from the
//!   residual stream.
//! - [`hooks`] names hook points as TransformerLens does.
//! - [`processing`] selects raw or TransformerLens-processed weights.
//! - [`tokenizer`] wraps `tokenizer.json`.
//! - [`unembed_bf16`] is the evaluation losses' optional bf16 unembedding.

mod attention;
pub mod config;
mod fused_linear;
pub mod gpt_neox;
pub mod hooks;
mod layer_norm;
mod nll;
mod ops;
pub mod processing;
pub mod tokenizer;
pub mod unembed_bf16;
pub mod weights;

pub use config::GptNeoXConfig;
pub use gpt_neox::{GptNeoX, Losses, Pass};
pub use hooks::HookPoint;
pub use ops::Kernels;
pub use processing::Processing;
pub use tokenizer::Tokenizer;
pub use unembed_bf16::UnembeddingPrecision;
pub use weights::Checkpoint;
