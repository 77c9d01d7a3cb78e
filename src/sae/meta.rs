//! What an SAE is and what it was trained on, stored beside its weights (`sae.json`) in
//! every cache entry that holds an SAE (`train_sae`, `import_sae`). `saerun export` reads
//! it to write SAELens' `cfg.json`; nothing here enters a key that its inputs' keys do not
//! already determine, except `model_source`, a location (see `TrainedOn`).

use crate::model::Processing;
use crate::spec::Architecture;
use serde::{Deserialize, Serialize};

pub const META_FILE: &str = "sae.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeMeta {
    pub architecture: Architecture,
    /// The width of the hook's activation (d_mlp for `mlp.hook_post`, n_heads·d_head for
    /// `attn.hook_z`, d_model otherwise; the toy data's dimension).
    pub d_in: usize,
    pub d_sae: usize,
    /// The l1 coefficient it was trained with (0 for TopK, and for imported SAEs whose
    /// cfg.json does not say).
    pub l1: f64,
    pub k: Option<usize>,
    pub seed: u64,
    /// `None` for SAEs trained on toy data.
    pub trained_on: Option<TrainedOn>,
}

/// The language-model activations an SAE was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedOn {
    /// The spec's `model.source` (`hf:ORG/NAME[@rev]` or `path:DIR`) of the run that
    /// computed the entry: a location, not key material (the hash is), so another run
    /// that reuses the entry from a moved copy of the same model sees the first run's.
    pub model_source: String,
    /// blake3 of config.json and the weights, as in stage keys (`None` for SAEs imported
    /// from a cfg.json that does not record it).
    pub model_hash: Option<String>,
    pub processing: Processing,
    /// The model's compute dtype (`f32`, `f16`, `bf16`).
    pub model_dtype: String,
    /// TransformerLens hook name, e.g. `blocks.2.hook_resid_post`.
    pub hook: String,
    pub context_tokens: usize,
    pub prepend_bos: bool,
    /// The spec's `data.source`.
    pub data_source: String,
}
