//! The experiment spec: one TOML file per experiment, layered with environment variables
//! and `--set` flags (see `load`), then checked and resolved into typed stage parameters
//! (see `resolve`).
//!
//! The structs here mirror the file exactly (`deny_unknown_fields` everywhere, so a typo is
//! an error naming the key). Sections a later pipeline needs (`[model]`, `[hook]`,
//! `[analyses]`) are added as optional fields, so existing specs keep loading.

pub mod analyses;
pub mod import;
pub mod load;
pub mod resolve;
pub mod sweep;

use serde::{Deserialize, Serialize};

use crate::model::UnembeddingPrecision;
use sweep::OneOrMany;

pub use load::{load_spec, SpecOrigin};
pub use resolve::{resolve, GridPoint, ResolvedSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub experiment: ExperimentSection,
    pub data: DataSection,
    pub sae: SaeSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub eval: EvalSection,
    /// The language model (text data only).
    pub model: Option<ModelSection>,
    /// Where activations are read (text data only).
    pub hook: Option<HookSection>,
    /// Feature analyses and the feature browser (text data only; optional).
    pub analyses: Option<AnalysesSection>,
    /// How the run computes (optional; the CPU when absent).
    pub run: Option<RunSection>,
}

/// `[run]`: where the run computes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// `"cpu"`, `"cuda"` or `"cuda:N"` (checked in `resolve`; see `device::DeviceChoice`).
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    "cpu".into()
}

/// `[analyses]`: which SAEs and features to analyse, and each analysis' parameters. The
/// defaults follow the original study (uniform bins of width 1, logit-lens norm cut 20,
/// top-k 10).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysesSection {
    /// `false` skips the analyses (e.g. `--set analyses.enabled=false` for a quick run).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Analyse only SAEs with these dictionary ratios / sizes / l1 / k / seeds (each
    /// omitted filter admits all).
    pub ratios: Option<OneOrMany<f64>>,
    pub d_sae: Option<OneOrMany<usize>>,
    pub l1: Option<OneOrMany<f64>>,
    pub k: Option<OneOrMany<usize>>,
    pub seeds: Option<OneOrMany<u64>>,
    /// `"top_n"` (most frequently active), `"random"` (a seeded sample of `n_features`),
    /// `"ids"` (`feature_ids`) or `"all"`.
    #[serde(default = "default_feature_choice")]
    pub features: String,
    #[serde(default = "default_n_features")]
    pub n_features: usize,
    pub feature_ids: Option<Vec<usize>>,
    /// Seeds the random feature sample and the uniform-bin draws.
    #[serde(default)]
    pub seed: u64,
    /// Eval contexts scanned for statistics and examples (default: `eval.contexts`).
    pub contexts: Option<usize>,
    /// Top examples per feature, and tokens in each logit-lens / ablation list.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Uniform examples: bins of this width from 0 to the feature's max (the post: 1) ...
    pub bin_width: Option<f64>,
    /// ... or this many equal bins.
    pub n_bins: Option<usize>,
    /// Logit lens: tokens whose W_U column norm exceeds this are excluded.
    #[serde(default = "default_max_norm")]
    pub logit_lens_max_norm: f64,
}

fn default_enabled() -> bool {
    true
}
fn default_feature_choice() -> String {
    "top_n".into()
}
fn default_n_features() -> usize {
    100
}
fn default_top_k() -> usize {
    10
}
fn default_max_norm() -> f64 {
    20.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `hf:ORG/NAME[@revision]` or `path:DIR` (config.json, *.safetensors, tokenizer.json).
    pub source: String,
    /// `"none"` (raw Hugging Face activations) or `"transformer_lens"` (what
    /// `HookedTransformer.from_pretrained` gives: fold_ln, centred writing weights).
    #[serde(default = "default_processing")]
    pub processing: crate::model::processing::Processing,
    /// Compute dtype: `"f32"`, `"f16"` or `"bf16"`.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Contexts per forward pass when harvesting and evaluating.
    #[serde(default = "default_model_batch")]
    pub batch_size: usize,
}

fn default_processing() -> crate::model::processing::Processing {
    crate::model::processing::Processing::TransformerLens
}
fn default_dtype() -> String {
    "f32".into()
}
fn default_model_batch() -> usize {
    32
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSection {
    /// TransformerLens hook name, e.g. `blocks.2.hook_resid_post`.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSection {
    /// Names the results directory `results/<name>/`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seed of the data generator, and the default training seed.
    #[serde(default)]
    pub seed: u64,
}

/// `[data]`. `source` selects the kind of data; the other keys belong to one kind each and
/// are checked against it in `resolve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// `"toy"`: synthetic superposition data with known ground-truth features.
    pub source: String,
    // --- toy ---
    pub activation_dim: Option<usize>,
    pub n_features: Option<usize>,
    /// Expected number of active ground-truth features per sample.
    pub mean_active: Option<f64>,
    /// Feature i is active with probability proportional to `prob_decay^i`.
    pub prob_decay: Option<f64>,
    pub correlated: Option<bool>,
    /// Number of training samples materialised by the data stage.
    pub train_samples: Option<usize>,
    // --- text (`hf-dataset:ORG/NAME[@rev]` or `path:FILE_OR_DIR`) ---
    /// Column (Parquet) or field (JSONL) holding the documents.
    pub text_column: Option<String>,
    /// Tokens per context (the original study: 25).
    pub context_tokens: Option<usize>,
    /// `"truncate"`: each document → its first context; `"pack"`: concatenate and cut.
    pub packing: Option<crate::data::text::Packing>,
    pub prepend_bos: Option<bool>,
    /// Fraction of documents held out for evaluation.
    pub eval_fraction: Option<f64>,
    /// Use only the first N documents.
    pub max_documents: Option<usize>,
    /// Activation store precision: `"f32"` or `"f16"`.
    pub store_dtype: Option<crate::store::StoreDtype>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// ReLU encoder, unit-norm decoder atoms, loss = MSE + l1 · L1.
    ReluL1,
    /// Keep the k largest (positive) pre-activations per sample; loss = MSE
    /// (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").
    #[serde(rename = "topk")]
    TopK,
}

/// What a dictionary ratio multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RatioBase {
    /// The activation dimension (d_model for a language model).
    #[default]
    ActivationDim,
    /// The number of ground-truth features (toy data only).
    NFeatures,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaeSection {
    /// SAEs to evaluate instead of training: `"saelens:DIR"` (see `import`). With it, the
    /// grid keys below and `[train]`'s length must be absent.
    pub source: Option<String>,
    /// Required unless `source` is given.
    pub architecture: Option<Architecture>,
    /// Dictionary sizes as multiples of `ratio_base`. Exactly one of `dict_ratios`, `dict_sizes`.
    pub dict_ratios: Option<OneOrMany<f64>>,
    #[serde(default)]
    pub ratio_base: RatioBase,
    /// Absolute dictionary sizes (number of latents).
    pub dict_sizes: Option<OneOrMany<usize>>,
    /// L1 coefficients (sweep; architecture `relu_l1`).
    pub l1: Option<OneOrMany<f64>>,
    /// Active latents per sample (sweep; architecture `topk`).
    pub k: Option<OneOrMany<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant learning rate after warm-up.
    #[default]
    Constant,
    /// Linear decay to zero over the steps after warm-up.
    Linear,
    /// Cosine decay to zero over the steps after warm-up.
    Cosine,
}

/// The reconstruction term of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MseReduction {
    /// ‖x − x̂‖² summed over dimensions, averaged over the batch (SAELens, Anthropic).
    #[default]
    Sum,
    /// Averaged over dimensions too (torch `F.mse_loss`; the original study's code): l1
    /// values are d_model times smaller for the same trade-off.
    Mean,
}

impl MseReduction {
    pub fn is_default(&self) -> bool {
        *self == MseReduction::Sum
    }
    /// Factor applied to Σ‖x − x̂‖² / B.
    pub fn scale(&self, d_in: usize) -> f64 {
        match self {
            MseReduction::Sum => 1.0,
            MseReduction::Mean => 1.0 / d_in as f64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub batch_size: usize,
    /// Number of optimiser steps. Exactly one of `steps`, `epochs`.
    pub steps: Option<u64>,
    /// Passes over the training samples (converted to steps).
    pub epochs: Option<f64>,
    pub lr: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    /// Training seeds (sweep); default: `experiment.seed`.
    pub seeds: Option<OneOrMany<u64>>,
    /// Record a training-curve point every this many steps.
    pub log_every: u64,
    /// Reconstruction term: `"sum"` over dimensions (default) or `"mean"`.
    pub mse: MseReduction,
    /// l1 rises linearly from 0 over this many steps (0: off).
    pub l1_warmup_steps: u64,
    /// Resample dead latents every this many steps (Anthropic-style; off when unset).
    pub resample_every: Option<u64>,
    /// Last step at which to resample (default: half the steps).
    pub resample_until: Option<u64>,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            batch_size: 1024,
            steps: None,
            epochs: None,
            lr: 1e-3,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            seeds: None,
            log_every: 100,
            mse: MseReduction::Sum,
            l1_warmup_steps: 0,
            resample_every: None,
            resample_until: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Held-out samples for evaluation.
    pub samples: usize,
    /// Cosine above which two atoms count as the same feature (MCS).
    pub mcs_threshold: f64,
    /// Text data: evaluation contexts used for reconstruction and perplexity (at most;
    /// default 2048).
    pub contexts: Option<usize>,
    /// Text data: the precision of the unembedding in the cross-entropies (`eval_lm`,
    /// `ce_baselines`): "f32" (default, as transformers) or "bf16" (inputs rounded to bf16,
    /// f32 sums; about 1.5× faster evaluation where the CPU has AVX512_BF16).
    pub unembedding: UnembeddingPrecision,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            samples: 16384,
            mcs_threshold: 0.9,
            contexts: None,
            unembedding: UnembeddingPrecision::F32,
        }
    }
}
