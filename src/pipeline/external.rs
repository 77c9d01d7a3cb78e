//! External inputs: things a stage reads that are not stage outputs. Their identity enters
//! stage keys through content hashes in the parameters; these structs only say where they
//! are and how to run them, so a moved model directory changes no key.

use crate::model::hooks::HookPoint;
use crate::model::processing::Processing;
use crate::spec::resolve::TextSetup;
use candle_core::DType;
use serde::Serialize;
use std::path::PathBuf;

/// The model parameters that enter the keys of stages running the model: the weights by
/// content hash, how they are processed, the compute dtype and the hook. Flattened into
/// each stage's parameters, so their canonical JSON (and keys) stay flat.
#[derive(Debug, Clone, Serialize)]
pub struct ModelKey {
    pub model_hash: String,
    pub processing: String,
    pub dtype: String,
    pub hook: String,
}

impl ModelKey {
    pub fn of(t: &TextSetup) -> ModelKey {
        ModelKey {
            model_hash: t.model_hash.clone(),
            processing: t.processing.as_str().to_string(),
            dtype: format!("{:?}", t.dtype).to_lowercase(),
            hook: t.hook.name(),
        }
    }
}

/// The language model a stage runs, and the hook it reads or patches.
#[derive(Debug, Clone)]
pub struct ModelRef {
    pub dir: PathBuf,
    pub processing: Processing,
    pub dtype: DType,
    pub hook: HookPoint,
    /// Contexts per forward pass.
    pub batch: usize,
}

impl ModelRef {
    pub fn of(t: &TextSetup) -> ModelRef {
        ModelRef {
            dir: t.model_files.dir.clone(),
            processing: t.processing,
            dtype: t.dtype,
            hook: t.hook,
            batch: t.model_batch,
        }
    }

    /// Two refs with the same weights, processing and dtype share one loaded model.
    pub fn same_weights(&self, other: &ModelRef) -> bool {
        self.dir == other.dir && self.processing == other.processing && self.dtype == other.dtype
    }
}

/// Where the text and tokenizer behind a `tokenize` key are.
#[derive(Debug, Clone)]
pub struct TextFiles {
    pub data_source: String,
    pub data_files: Vec<PathBuf>,
    pub tokenizer: PathBuf,
}

impl TextFiles {
    pub fn of(t: &TextSetup) -> TextFiles {
        TextFiles {
            data_source: t.data_source.clone(),
            data_files: t.data_files.clone(),
            tokenizer: t.model_files.tokenizer.clone(),
        }
    }
}
