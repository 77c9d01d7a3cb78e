//! Semantic checks and resolution: turns a type-checked `Spec` into the typed parameters
//! the stages are keyed on. Ratios become absolute sizes, epochs become steps, defaults are
//! filled in, and sweep lists are expanded into grid points. Every check names the key and
//! where its value came from.

use super::analyses::{resolve_analyses, AnalysisSetup};
use super::import::{resolve_imports, ImportedSae};
use super::{Architecture, MseReduction, RatioBase, SaeSection, Schedule, Spec, SpecOrigin};
use crate::data::text::{ContextParams, Packing};
use crate::data::toy::ToyParams;
use crate::device::{DeviceChoice, DEVICE_KEY};
use crate::hub::model::{resolve_model_files, ModelFiles};
use crate::hub::source::{DatasetSource, ModelSource};
use crate::model::config::GptNeoXConfig;
use crate::model::gpt_neox::GptNeoX;
use crate::model::hooks::HookPoint;
use crate::model::tokenizer::Tokenizer;
use crate::model::weights::Checkpoint;
use crate::model::{Processing, UnembeddingPrecision};
use crate::store::StoreDtype;
use crate::{Error, Result};
use candle_core::DType;
use serde::Serialize;
use std::path::PathBuf;

/// Data a spec asks for: synthetic toy data, or text run through a language model.
#[derive(Debug, Clone)]
pub enum DataParams {
    Toy(ToyParams),
    Text(Box<TextSetup>),
}

/// Text data and the model it is run through, resolved to local files and content hashes.
/// Keys use the hashes, never the paths, so a moved cache or a renamed file changes nothing.
#[derive(Debug, Clone)]
pub struct TextSetup {
    pub data_source: String,
    pub data_files: Vec<PathBuf>,
    pub data_hash: String,
    pub text_column: String,
    pub context: ContextParams,
    pub store_dtype: StoreDtype,
    pub model_source: String,
    pub model_files: ModelFiles,
    pub model_hash: String,
    pub tokenizer_hash: String,
    pub processing: Processing,
    pub dtype: DType,
    pub model_batch: usize,
    pub hook: HookPoint,
    pub d_model: usize,
    /// The width of the hook's activation: what the store holds and SAEs read.
    pub d_in: usize,
    /// Evaluation contexts used for perplexity (at most).
    pub eval_contexts: usize,
    /// The precision of the unembedding in the evaluation's cross-entropies.
    pub eval_unembedding: UnembeddingPrecision,
}

impl DataParams {
    pub fn activation_dim(&self) -> usize {
        match self {
            DataParams::Toy(t) => t.activation_dim,
            DataParams::Text(t) => t.d_in,
        }
    }
}

/// Optimiser and schedule, shared by every grid point.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSchedule {
    pub batch_size: usize,
    pub steps: u64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub log_every: u64,
    /// How the reconstruction error is reduced over dimensions.
    #[serde(skip_serializing_if = "MseReduction::is_default")]
    pub mse: MseReduction,
    /// l1 rises linearly from 0 over these steps.
    #[serde(skip_serializing_if = "is_zero")]
    pub l1_warmup_steps: u64,
    /// Dead-latent resampling (Anthropic, "Towards Monosemanticity").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resample: Option<ResampleSchedule>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Every `every` steps up to `until`, latents that did not fire since the last check are
/// re-initialised towards inputs the SAE reconstructs badly.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ResampleSchedule {
    pub every: u64,
    pub until: u64,
}

/// One SAE to train.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct GridPoint {
    pub architecture: Architecture,
    pub d_sae: usize,
    /// `d_sae` over the ratio base, for tables and plots.
    pub ratio: f64,
    /// 0 for TopK.
    pub l1: f64,
    /// TopK only.
    pub k: Option<usize>,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct ResolvedSpec {
    pub spec: Spec,
    pub data: DataParams,
    /// `None` when the SAEs are imported (`sae.source`), not trained.
    pub schedule: Option<TrainSchedule>,
    /// Sorted by (seed, l1, d_sae) so that each size's next-larger neighbour follows it.
    /// Empty when the SAEs are imported.
    pub grid: Vec<GridPoint>,
    /// SAEs from `sae.source`, in folder-name order.
    pub imports: Vec<ImportedSae>,
    pub eval_samples: usize,
    pub mcs_threshold: f64,
    /// `[analyses]`, if the spec has it.
    pub analyses: Option<AnalysisSetup>,
    /// `run.device`, parsed and available in this build (not yet opened).
    pub device: DeviceChoice,
}

pub fn resolve(spec: Spec, origin: &SpecOrigin) -> Result<ResolvedSpec> {
    check_name(&spec, origin)?;
    let threshold = check_eval(&spec, origin)?;
    let data = resolve_data(&spec, origin)?;
    let train_samples = match &data {
        DataParams::Toy(t) => t.train_samples,
        // Epochs over an activation store are converted when its size is known; the
        // pipeline rejects `epochs` for text data.
        DataParams::Text(_) => 0,
    };
    if matches!(data, DataParams::Text(_)) && spec.train.epochs.is_some() {
        return Err(origin.error(
            "train.epochs",
            "is only supported for toy data; give `train.steps`",
        ));
    }
    let (schedule, grid, imports) = match &spec.sae.source {
        Some(source) => {
            let imports = resolve_import_section(&spec, origin, &data, source)?;
            (None, Vec::new(), imports)
        }
        None => {
            let schedule = resolve_schedule(&spec, origin, train_samples)?;
            let Some(architecture) = spec.sae.architecture else {
                return Err(origin.error(
                    "sae.architecture",
                    "is required (\"relu_l1\" or \"topk\"), unless `sae.source` imports trained SAEs",
                ));
            };
            let sizes = dictionary_sizes(&spec.sae, &data, origin)?;
            let sparsity = sparsity_axis(&spec.sae, architecture, &sizes, origin)?;
            if spec.train.resample_every == Some(0) {
                return Err(origin.error("train.resample_every", "must be > 0"));
            }
            // Resampling is off without `resample_every`; a lone `resample_until` would be
            // ignored, and the run would train without the resampling its spec asks for.
            if spec.train.resample_until.is_some() && spec.train.resample_every.is_none() {
                return Err(origin.error(
                    "train.resample_until",
                    "needs `train.resample_every` (resampling is off without it)",
                ));
            }
            let seeds = match &spec.train.seeds {
                Some(s) => s.values().to_vec(),
                None => vec![spec.experiment.seed],
            };
            let grid = grid(architecture, &seeds, &sparsity, &sizes);
            (Some(schedule), grid, Vec::new())
        }
    };
    let analysed: Vec<GridPoint> = match imports.is_empty() {
        true => grid.clone(),
        false => imports.iter().map(|i| i.point).collect(),
    };
    let device = match &spec.run {
        Some(run) => DeviceChoice::parse(&run.device).map_err(|e| origin.error(DEVICE_KEY, e))?,
        None => DeviceChoice::Cpu,
    };
    device
        .check_built()
        .map_err(|e| origin.error(DEVICE_KEY, e))?;
    let eval_contexts = match &data {
        DataParams::Text(t) => Some(t.eval_contexts),
        DataParams::Toy(_) => None,
    };
    Ok(ResolvedSpec {
        analyses: resolve_analyses(&spec, origin, &analysed, eval_contexts)?,
        eval_samples: spec.eval.samples,
        mcs_threshold: threshold,
        data,
        schedule,
        grid,
        device,
        imports,
        spec,
    })
}

/// `sae.source`: the imported SAEs, with the keys that only describe a training grid
/// rejected (they would be silently ignored otherwise).
fn resolve_import_section(
    spec: &Spec,
    origin: &SpecOrigin,
    data: &DataParams,
    source: &str,
) -> Result<Vec<ImportedSae>> {
    let s = &spec.sae;
    let grid_keys = [
        ("sae.architecture", s.architecture.is_some()),
        ("sae.dict_ratios", s.dict_ratios.is_some()),
        ("sae.dict_sizes", s.dict_sizes.is_some()),
        ("sae.l1", s.l1.is_some()),
        ("sae.k", s.k.is_some()),
        ("train.steps", spec.train.steps.is_some()),
        ("train.epochs", spec.train.epochs.is_some()),
        ("train.seeds", spec.train.seeds.is_some()),
    ];
    if let Some((key, _)) = grid_keys.iter().find(|(_, set)| *set) {
        return Err(origin.error(
            key,
            "does not apply with `sae.source`: imported SAEs are evaluated, not trained (their cfg.json says what they are)",
        ));
    }
    let DataParams::Text(t) = data else {
        return Err(origin.error(
            "sae.source",
            "needs text data and a model: imported SAEs are evaluated on the model's activations at their hook",
        ));
    };
    resolve_imports(source, t, origin)
}

/// The experiment name names a directory: no separators, no hidden or empty names.
fn check_name(spec: &Spec, origin: &SpecOrigin) -> Result<()> {
    let name = &spec.experiment.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || name.starts_with('.')
    {
        return Err(origin.error(
            "experiment.name",
            format!("expected a non-empty name of letters, digits, '_', '-', '.' (it names a directory), got \"{name}\""),
        ));
    }
    Ok(())
}

/// The `[eval]` values every data kind uses; returns the MCS threshold.
fn check_eval(spec: &Spec, origin: &SpecOrigin) -> Result<f64> {
    if spec.eval.samples == 0 {
        return Err(origin.error("eval.samples", "must be > 0"));
    }
    let threshold = spec.eval.mcs_threshold;
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(origin.error(
            "eval.mcs_threshold",
            format!("must be in (0, 1], got {threshold}"),
        ));
    }
    Ok(threshold)
}

/// The dictionary sizes of the sweep as (latents, latents over the ratio base).
fn dictionary_sizes(
    sae: &SaeSection,
    data: &DataParams,
    origin: &SpecOrigin,
) -> Result<Vec<(usize, f64)>> {
    let e = |key: &str, what: String| origin.error(key, what);
    let base =
        match sae.ratio_base {
            RatioBase::ActivationDim => data.activation_dim(),
            RatioBase::NFeatures => match data {
                DataParams::Toy(t) => t.n_features,
                DataParams::Text(_) => return Err(e(
                    "sae.ratio_base",
                    "\"n_features\" needs toy data (known ground truth); use \"activation_dim\""
                        .into(),
                )),
            },
        };
    let sizes: Vec<(usize, f64)> = match (&sae.dict_ratios, &sae.dict_sizes) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(e(
                "sae",
                "give exactly one of `dict_ratios` (multiples of the ratio base) or `dict_sizes` (absolute)".into(),
            ))
        }
        (Some(ratios), None) => {
            let mut out = Vec::new();
            for &r in ratios.values() {
                if !(r.is_finite() && r > 0.0) {
                    return Err(e("sae.dict_ratios", format!("every ratio must be > 0, got {r}")));
                }
                let d = (r * base as f64).round() as usize;
                if d == 0 {
                    return Err(e("sae.dict_ratios", format!("ratio {r} × {base} rounds to 0 latents")));
                }
                out.push((d, d as f64 / base as f64));
            }
            out
        }
        (None, Some(sizes)) => {
            let mut out = Vec::new();
            for &d in sizes.values() {
                if d == 0 {
                    return Err(e("sae.dict_sizes", "every size must be > 0, got 0".into()));
                }
                out.push((d, d as f64 / base as f64));
            }
            out
        }
    };
    // Far beyond any SAE trained on a CPU; catches typos (an extra zero or exponent) before
    // they turn into a failed multi-gigabyte allocation.
    const MAX_LATENTS: usize = 1 << 22;
    if let Some(&(d, _)) = sizes.iter().find(|(d, _)| *d > MAX_LATENTS) {
        let key = if sae.dict_ratios.is_some() {
            "sae.dict_ratios"
        } else {
            "sae.dict_sizes"
        };
        return Err(e(
            key,
            format!("{d} latents is more than the supported {MAX_LATENTS}"),
        ));
    }
    Ok(sizes)
}

/// The sparsity axis of the sweep: l1 coefficients (ReLU-L1) or k (TopK), as (l1, k).
fn sparsity_axis(
    sae: &SaeSection,
    architecture: Architecture,
    sizes: &[(usize, f64)],
    origin: &SpecOrigin,
) -> Result<Vec<(f64, Option<usize>)>> {
    let e = |key: &str, what: String| origin.error(key, what);
    let sparsity: Vec<(f64, Option<usize>)> = match (architecture, &sae.l1, &sae.k) {
        (Architecture::ReluL1, Some(l1s), None) => {
            for &l1 in l1s.values() {
                if !(l1.is_finite() && l1 >= 0.0) {
                    return Err(e(
                        "sae.l1",
                        format!("every coefficient must be ≥ 0, got {l1}"),
                    ));
                }
            }
            l1s.values().iter().map(|&l1| (l1, None)).collect()
        }
        (Architecture::ReluL1, None, _) => {
            return Err(e(
                "sae.l1",
                "is required for architecture \"relu_l1\"".into(),
            ))
        }
        (Architecture::ReluL1, Some(_), Some(_)) => {
            return Err(e("sae.k", "applies only to architecture \"topk\"".into()))
        }
        (Architecture::TopK, None, Some(ks)) => {
            if let Some(bad) = ks.values().iter().find(|&&k| k == 0) {
                return Err(e("sae.k", format!("every k must be > 0, got {bad}")));
            }
            ks.values().iter().map(|&k| (0.0, Some(k))).collect()
        }
        (Architecture::TopK, _, None) => {
            return Err(e("sae.k", "is required for architecture \"topk\"".into()))
        }
        (Architecture::TopK, Some(_), Some(_)) => {
            return Err(e(
                "sae.l1",
                "does not apply to architecture \"topk\" (its sparsity is `k`)".into(),
            ))
        }
    };
    if let Some(k) = sparsity
        .iter()
        .filter_map(|s| s.1)
        .find(|&k| sizes.iter().any(|&(d, _)| k > d))
    {
        return Err(e("sae.k", format!("k = {k} exceeds a dictionary size")));
    }
    Ok(sparsity)
}

/// Every (seed, sparsity, size) combination, sorted by (seed, l1, k, d_sae), duplicates
/// removed.
fn grid(
    architecture: Architecture,
    seeds: &[u64],
    sparsity: &[(f64, Option<usize>)],
    sizes: &[(usize, f64)],
) -> Vec<GridPoint> {
    let mut grid = Vec::new();
    for &seed in seeds {
        for &(l1, k) in sparsity {
            for &(d_sae, ratio) in sizes {
                grid.push(GridPoint {
                    architecture,
                    d_sae,
                    ratio,
                    l1,
                    k,
                    seed,
                });
            }
        }
    }
    grid.sort_by(|a, b| {
        (a.seed, a.l1, a.k, a.d_sae)
            .partial_cmp(&(b.seed, b.l1, b.k, b.d_sae))
            .expect("finite values were checked")
    });
    grid.dedup();
    grid
}

fn resolve_data(spec: &Spec, origin: &SpecOrigin) -> Result<DataParams> {
    let d = &spec.data;
    let e = |key: &str, what: String| origin.error(key, what);
    match d.source.as_str() {
        "toy" => {
            if spec.model.is_some() || spec.hook.is_some() {
                let key = if spec.model.is_some() { "model" } else { "hook" };
                return Err(e(key, "toy data is not read from a model; remove this section".into()));
            }
            let text_keys = [
                ("text_column", d.text_column.is_some()),
                ("context_tokens", d.context_tokens.is_some()),
                ("packing", d.packing.is_some()),
                ("prepend_bos", d.prepend_bos.is_some()),
                ("eval_fraction", d.eval_fraction.is_some()),
                ("max_documents", d.max_documents.is_some()),
                ("store_dtype", d.store_dtype.is_some()),
            ];
            if let Some((k, _)) = text_keys.iter().find(|(_, set)| *set) {
                return Err(e(&format!("data.{k}"), "applies only to text sources".into()));
            }
            let defaults = ToyParams::interim_report_default();
            let t = ToyParams {
                activation_dim: d.activation_dim.unwrap_or(defaults.activation_dim),
                n_features: d.n_features.unwrap_or(defaults.n_features),
                mean_active: d.mean_active.unwrap_or(defaults.mean_active),
                prob_decay: d.prob_decay.unwrap_or(defaults.prob_decay),
                correlated: d.correlated.unwrap_or(defaults.correlated),
                train_samples: d.train_samples.unwrap_or(defaults.train_samples),
                eval_samples: spec.eval.samples,
                seed: spec.experiment.seed,
            };
            if t.activation_dim == 0 {
                return Err(e("data.activation_dim", "must be > 0".into()));
            }
            if t.n_features == 0 {
                return Err(e("data.n_features", "must be > 0".into()));
            }
            if !(t.mean_active > 0.0 && t.mean_active <= t.n_features as f64) {
                return Err(e(
                    "data.mean_active",
                    format!(
                        "must be in (0, n_features = {}], got {}",
                        t.n_features, t.mean_active
                    ),
                ));
            }
            if !(t.prob_decay > 0.0 && t.prob_decay <= 1.0) {
                return Err(e(
                    "data.prob_decay",
                    format!("must be in (0, 1], got {}", t.prob_decay),
                ));
            }
            if t.train_samples == 0 {
                return Err(e("data.train_samples", "must be > 0".into()));
            }
            Ok(DataParams::Toy(t))
        }
        other if other.starts_with("hf-dataset:") || other.starts_with("path:") => {
            resolve_text(spec, origin).map(|t| DataParams::Text(Box::new(t)))
        }
        other => Err(e(
            "data.source",
            format!(
                "unsupported data source \"{other}\"; expected \"toy\", \"hf-dataset:ORG/NAME\" or \"path:FILE_OR_DIR\""
            ),
        )),
    }
}

/// Keys that belong to one kind of data only.
const TOY_KEYS: [&str; 6] = [
    "activation_dim",
    "n_features",
    "mean_active",
    "prob_decay",
    "correlated",
    "train_samples",
];

fn resolve_text(spec: &Spec, origin: &SpecOrigin) -> Result<TextSetup> {
    let d = &spec.data;
    let e = |key: &str, what: String| origin.error(key, what);
    let set = [
        d.activation_dim.is_some(),
        d.n_features.is_some(),
        d.mean_active.is_some(),
        d.prob_decay.is_some(),
        d.correlated.is_some(),
        d.train_samples.is_some(),
    ];
    if let Some(i) = set.iter().position(|s| *s) {
        return Err(e(
            &format!("data.{}", TOY_KEYS[i]),
            "applies only to source = \"toy\"".into(),
        ));
    }
    let Some(model) = &spec.model else {
        return Err(e(
            "model",
            "text data needs a [model] section (source = \"hf:ORG/NAME\" or \"path:DIR\")".into(),
        ));
    };
    let Some(hook) = &spec.hook else {
        return Err(e(
            "hook",
            "text data needs a [hook] section (name = \"blocks.L.hook_resid_post\")".into(),
        ));
    };
    let context_tokens = d.context_tokens.unwrap_or(25);
    if context_tokens < 2 {
        return Err(e(
            "data.context_tokens",
            format!("must be ≥ 2, got {context_tokens}"),
        ));
    }
    let eval_fraction = d.eval_fraction.unwrap_or(0.05);
    if !(eval_fraction > 0.0 && eval_fraction < 1.0) {
        return Err(e(
            "data.eval_fraction",
            format!("must be in (0, 1), got {eval_fraction}"),
        ));
    }
    if d.max_documents == Some(0) {
        return Err(e("data.max_documents", "must be > 0".into()));
    }
    let dtype = match model.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => {
            return Err(e(
                "model.dtype",
                format!("expected \"f32\", \"f16\" or \"bf16\", got \"{other}\""),
            ))
        }
    };
    if model.batch_size == 0 {
        return Err(e("model.batch_size", "must be > 0".into()));
    }
    if spec.eval.contexts == Some(0) {
        return Err(e("eval.contexts", "must be > 0".into()));
    }

    // Sources: parse first (cheap, precise errors), then resolve (may download).
    let data_source =
        DatasetSource::parse(&d.source).map_err(|err| e("data.source", err.to_string()))?;
    let model_source =
        ModelSource::parse(&model.source).map_err(|err| e("model.source", err.to_string()))?;
    let model_files = resolve_model_files(&model_source)?;
    let config = GptNeoXConfig::from_file(&model_files.config)?;
    let hook = HookPoint::parse(&hook.name, config.num_hidden_layers)
        .map_err(|err| e("hook.name", err.to_string()))?;
    // The weights and tokenizer are checked here, not first when a stage loads them: a bad
    // checkpoint or tokenizer.json is bad input, so `validate` must report it and `run` must
    // fail before any stage runs (otherwise `tokenize` is computed and cached, and then the
    // first stage that loads the model fails).
    let checkpoint = Checkpoint::open(&model_files.dir)?;
    GptNeoX::check_weights(&config, &checkpoint)?;
    drop(checkpoint);
    Tokenizer::from_file(&model_files.tokenizer)?;
    let data_files = data_source.resolve_parquet()?;
    let mut weights_and_config = vec![model_files.config.clone()];
    weights_and_config.extend(model_files.weights.iter().cloned());

    Ok(TextSetup {
        data_source: data_source.to_string(),
        data_hash: content_hash(&data_files)?,
        data_files,
        text_column: d.text_column.clone().unwrap_or_else(|| "text".into()),
        context: ContextParams {
            context_tokens,
            packing: d.packing.unwrap_or(Packing::Truncate),
            prepend_bos: d.prepend_bos.unwrap_or(false),
            eval_fraction,
            max_documents: d.max_documents,
            seed: spec.experiment.seed,
        },
        store_dtype: d.store_dtype.unwrap_or(StoreDtype::F32),
        model_source: model_source.to_string(),
        model_hash: content_hash(&weights_and_config)?,
        tokenizer_hash: content_hash(std::slice::from_ref(&model_files.tokenizer))?,
        model_files,
        processing: model.processing,
        dtype,
        model_batch: model.batch_size,
        hook,
        d_model: config.hidden_size,
        d_in: hook_width(hook, &config),
        eval_contexts: spec.eval.contexts.unwrap_or(2048),
        eval_unembedding: spec.eval.unembedding,
    })
}

/// The width of `hook`'s activation per token: d_mlp after the MLP's GELU, n_heads · d_head
/// (= d_model) for the flattened `attn.hook_z`, d_model elsewhere.
pub fn hook_width(hook: HookPoint, config: &GptNeoXConfig) -> usize {
    match hook {
        HookPoint::MlpPost(_) => config.intermediate_size,
        _ => config.hidden_size,
    }
}

/// blake3 over the contents of `files` (in the given order). Stage keys use this instead
/// of paths, so the same data under another name or cache location keys identically.
pub fn content_hash(files: &[PathBuf]) -> Result<String> {
    let mut all = blake3::Hasher::new();
    for f in files {
        let mut h = blake3::Hasher::new();
        h.update_mmap(f)
            .map_err(|err| Error::io(f, "cannot read", err))?;
        all.update(h.finalize().as_bytes());
    }
    Ok(all.finalize().to_hex().to_string())
}

fn resolve_schedule(
    spec: &Spec,
    origin: &SpecOrigin,
    train_samples: usize,
) -> Result<TrainSchedule> {
    let t = &spec.train;
    let e = |key: &str, what: String| origin.error(key, what);
    if t.batch_size == 0 {
        return Err(e("train.batch_size", "must be > 0".into()));
    }
    let steps = match (t.steps, t.epochs) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(e("train", "give exactly one of `steps` or `epochs`".into()))
        }
        (Some(0), None) => return Err(e("train.steps", "must be > 0".into())),
        (Some(s), None) => s,
        (None, Some(ep)) => {
            if !(ep.is_finite() && ep > 0.0) {
                return Err(e("train.epochs", format!("must be > 0, got {ep}")));
            }
            (ep * train_samples as f64 / t.batch_size as f64).ceil() as u64
        }
    };
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return Err(e("train.lr", format!("must be > 0, got {}", t.lr)));
    }
    if t.warmup_steps > steps {
        return Err(e(
            "train.warmup_steps",
            format!(
                "must be ≤ the number of steps ({steps}), got {}",
                t.warmup_steps
            ),
        ));
    }
    for (key, b) in [
        ("train.adam_beta1", t.adam_beta1),
        ("train.adam_beta2", t.adam_beta2),
    ] {
        if !(0.0..1.0).contains(&b) {
            return Err(e(key, format!("must be in [0, 1), got {b}")));
        }
    }
    if t.l1_warmup_steps > steps {
        return Err(e(
            "train.l1_warmup_steps",
            format!(
                "must be ≤ the number of steps ({steps}), got {}",
                t.l1_warmup_steps
            ),
        ));
    }
    if t.log_every == 0 {
        return Err(e("train.log_every", "must be > 0".into()));
    }
    Ok(TrainSchedule {
        batch_size: t.batch_size,
        steps,
        lr: t.lr,
        warmup_steps: t.warmup_steps,
        schedule: t.schedule,
        adam_beta1: t.adam_beta1,
        adam_beta2: t.adam_beta2,
        log_every: t.log_every,
        mse: t.mse,
        l1_warmup_steps: t.l1_warmup_steps,
        resample: t.resample_every.map(|every| ResampleSchedule {
            every,
            // Default: stop resampling halfway, so latents have time to settle.
            until: t.resample_until.unwrap_or(steps / 2),
        }),
    })
}
