//! GPT-NeoX (Pythia) forward pass with TransformerLens hook points.
//!
//! - [`config`]: `config.json` in the Pythia-hub and recent-transformers dialects.
//! - [`weights`]: safetensors checkpoints, single file or sharded.
//! - [`gpt_neox`]: the forward pass, hook capture/replacement, resuming from the residual stream.
//! - [`hooks`]: TransformerLens hook names.
//! - [`processing`]: raw vs TransformerLens weight processing.
//! - [`tokenizer`]: `tokenizer.json`.

pub mod config;
pub mod gpt_neox;
pub mod hooks;
mod ops;
pub mod processing;
pub mod tokenizer;
pub mod weights;

pub use config::GptNeoXConfig;
pub use gpt_neox::GptNeoX;
pub use hooks::HookPoint;
pub use processing::Processing;
pub use tokenizer::Tokenizer;
pub use weights::Checkpoint;
