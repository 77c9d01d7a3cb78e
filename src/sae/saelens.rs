//! The SAELens on-disk format, both ways: one folder per SAE with `cfg.json` and
//! `sae_weights.safetensors`, as `SAE.save_model` writes and `SAE.load_from_disk` reads
//! them (checked against sae-lens 6.54.12 by `scripts/saelens_interchange.py`).
//!
//! SAELens' tensors are `W_enc` (d_in, d_sae), `b_enc` (d_sae), `W_dec` (d_sae, d_in),
//! `b_dec` (d_in), and it encodes `act((x − b_dec·apply_b_dec_to_input) W_enc + b_enc)`
//! (act = ReLU for `standard`, top-k of the pre-activations then ReLU for `topk`); saerun's
//! `Sae` keeps `w_enc` as (d_sae, d_in) and always subtracts `b_dec`. Variants SAELens has
//! and saerun does not are folded into the weights on import, exactly (up to rounding):
//! `apply_b_dec_to_input = false` into `b_enc`, and TopK's `rescale_acts_by_decoder_norm`
//! into rescaled encoder rows and unit-norm atoms.
//!
//! The model behind a SAELens SAE is loaded by SAELens with
//! `HookedTransformer.from_pretrained_no_processing(**model_from_pretrained_kwargs)`, so a
//! processing flag absent from those kwargs is off; saerun's `transformer_lens` processing
//! is all four of `fold_ln`, `center_writing_weights`, `center_unembed`,
//! `fold_value_biases` on, `none` all four off.

use super::meta::{SaeMeta, TrainedOn};
use super::Sae;
use crate::device::HOST;
use crate::model::Processing;
use crate::spec::Architecture;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

pub const CFG_FILE: &str = "cfg.json";
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
/// The SAELens release the format was checked against (and that exported cfg.json files
/// name as `sae_lens_version`, which SAELens reads to pick its 6.x config layout).
pub const SAELENS_VERSION: &str = "6.54.12";
/// The weight-processing flags of TransformerLens' `from_pretrained` that saerun's
/// `transformer_lens` processing applies (see `model::processing`).
const PROCESSING_FLAGS: [&str; 4] = [
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
];

/// What saerun reads from a SAELens cfg.json: the SAE's description, and how to map its
/// weights onto saerun's `Sae`.
#[derive(Debug, Clone)]
pub struct SaeLensCfg {
    pub meta: SaeMeta,
    pub apply_b_dec_to_input: bool,
    pub rescale_acts_by_decoder_norm: bool,
}

/// saerun's cfg.json for `meta`: everything SAELens needs to load the SAE, its metadata
/// in SAELens' names, and saerun's own identity under `metadata.saerun`.
pub fn cfg_json(meta: &SaeMeta, train_key: Option<&str>) -> Value {
    let mut metadata = Map::new();
    metadata.insert("sae_lens_version".into(), json!(SAELENS_VERSION));
    let mut saerun = Map::new();
    saerun.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    saerun.insert("l1".into(), json!(meta.l1));
    saerun.insert("seed".into(), json!(meta.seed));
    if let Some(key) = train_key {
        saerun.insert("key".into(), json!(key));
    }
    if let Some(t) = &meta.trained_on {
        metadata.insert("model_name".into(), json!(model_name(&t.model_source)));
        metadata.insert("model_class_name".into(), json!("HookedTransformer"));
        metadata.insert("hook_name".into(), json!(t.hook));
        metadata.insert("hook_head_index".into(), Value::Null);
        metadata.insert("context_size".into(), json!(t.context_tokens));
        metadata.insert("prepend_bos".into(), json!(t.prepend_bos));
        metadata.insert("dataset_path".into(), json!(dataset_path(&t.data_source)));
        let on = t.processing == Processing::TransformerLens;
        let kwargs: Map<String, Value> = PROCESSING_FLAGS
            .iter()
            .map(|f| (f.to_string(), json!(on)))
            .collect();
        metadata.insert("model_from_pretrained_kwargs".into(), Value::Object(kwargs));
        saerun.insert("model_source".into(), json!(t.model_source));
        saerun.insert("model_hash".into(), json!(t.model_hash));
        saerun.insert("processing".into(), json!(t.processing.as_str()));
        saerun.insert("model_dtype".into(), json!(t.model_dtype));
        saerun.insert("data_source".into(), json!(t.data_source));
    }
    metadata.insert("saerun".into(), Value::Object(saerun));
    let mut cfg = json!({
        "architecture": match meta.architecture {
            Architecture::ReluL1 => "standard",
            Architecture::TopK => "topk",
        },
        "d_in": meta.d_in,
        "d_sae": meta.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": match &meta.trained_on {
            Some(t) if t.hook.ends_with("attn.hook_z") => "hook_z",
            _ => "none",
        },
        "metadata": metadata,
    });
    if let Some(k) = meta.k {
        cfg["k"] = json!(k);
        cfg["rescale_acts_by_decoder_norm"] = json!(false);
    }
    cfg
}

/// `hf:ORG/NAME[@rev]` → `ORG/NAME` (a name TransformerLens loads); `path:DIR` → DIR's
/// last component (TransformerLens cannot load it by name; `metadata.saerun.model_source`
/// has the whole source).
fn model_name(source: &str) -> String {
    if let Some(repo) = source.strip_prefix("hf:") {
        return repo.split('@').next().unwrap_or(repo).to_string();
    }
    let path = source.strip_prefix("path:").unwrap_or(source);
    Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// `hf-dataset:ORG/NAME[@rev]` → `ORG/NAME`; a `path:` source as it is.
fn dataset_path(source: &str) -> String {
    match source.strip_prefix("hf-dataset:") {
        Some(repo) => repo.split('@').next().unwrap_or(repo).to_string(),
        None => source.to_string(),
    }
}

/// Write `sae` in SAELens' format into `dir` (which exists): cfg.json and the weights.
pub fn write(dir: &Path, sae: &Sae, meta: &SaeMeta, train_key: Option<&str>) -> Result<()> {
    let tensors: HashMap<String, Tensor> = [
        ("W_enc", sae.w_enc.t()?.contiguous()?),
        ("b_enc", sae.b_enc.clone()),
        ("W_dec", sae.w_dec.clone()),
        ("b_dec", sae.b_dec.clone()),
    ]
    .into_iter()
    .map(|(k, v)| Ok((k.to_string(), v.to_device(&HOST)?.to_dtype(DType::F32)?)))
    .collect::<Result<_>>()?;
    let weights = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)
        .map_err(|e| Error::run(format!("cannot write {}: {e}", weights.display())))?;
    let cfg = serde_json::to_vec_pretty(&cfg_json(meta, train_key))
        .map_err(|e| Error::run(format!("cannot encode cfg.json: {e}")))?;
    let file = dir.join(CFG_FILE);
    std::fs::write(&file, cfg).map_err(|e| Error::io(&file, "cannot write", e))
}

/// A typed look-up in a cfg.json, with errors that name the file and the key.
struct Reader<'a> {
    file: &'a Path,
    root: &'a Value,
}

impl Reader<'_> {
    fn bad(&self, key: &str, expected: &str, got: Option<&Value>) -> Error {
        let got = match got {
            None => "nothing (the key is missing)".to_string(),
            Some(v) => format!("{v}"),
        };
        Error::input(format!(
            "{}: key `{key}`: expected {expected}, got {got}",
            self.file.display()
        ))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        let mut v = self.root;
        for part in key.split('.') {
            v = v.get(part)?;
        }
        (!v.is_null()).then_some(v)
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key);
        v.and_then(Value::as_u64)
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| self.bad(key, "a positive integer", v))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            other => Err(self.bad(key, "a string", other)),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            other => Err(self.bad(key, "true or false", other)),
        }
    }
}

/// Read and check `dir/cfg.json` (cheap: no weights are read).
pub fn read_cfg(dir: &Path) -> Result<SaeLensCfg> {
    let file = dir.join(CFG_FILE);
    let bytes = std::fs::read(&file).map_err(|e| {
        Error::input(format!(
            "{}: cannot read ({e}); expected a SAELens SAE folder with {CFG_FILE} and {WEIGHTS_FILE}",
            file.display()
        ))
    })?;
    let root: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(format!("{}: not valid JSON: {e}", file.display())))?;
    if !root.is_object() {
        return Err(Error::input(format!(
            "{}: expected a JSON object",
            file.display()
        )));
    }
    let r = Reader {
        file: &file,
        root: &root,
    };
    // SAELens before 6.0 kept the metadata at the top level (and `hook_point` for
    // `hook_name`); it converts such files when it loads them, and so does this.
    let legacy = r.opt_str("metadata.sae_lens_version")?.is_none() && r.get("metadata").is_none();
    let meta_key = |k: &str| {
        if legacy {
            k.to_string()
        } else {
            format!("metadata.{k}")
        }
    };
    let architecture = match r.opt_str("architecture")?.unwrap_or("standard") {
        "standard" => Architecture::ReluL1,
        "topk" => Architecture::TopK,
        other => {
            return Err(r.bad(
                "architecture",
                "\"standard\" or \"topk\" (the architectures saerun evaluates)",
                Some(&json!(other)),
            ))
        }
    };
    let d_in = r.usize("d_in")?;
    let d_sae = r.usize("d_sae")?;
    let k = match architecture {
        Architecture::TopK => {
            let k = match r.get("k") {
                Some(_) => r.usize("k")?,
                None => r.usize("activation_fn_kwargs.k")?,
            };
            if k > d_sae {
                return Err(r.bad("k", &format!("at most d_sae = {d_sae}"), r.get("k")));
            }
            Some(k)
        }
        Architecture::ReluL1 => None,
    };
    if let Some(act) = r.opt_str("activation_fn")? {
        let expected = if k.is_some() { "topk" } else { "relu" };
        if act != expected {
            return Err(r.bad(
                "activation_fn",
                &format!("\"{expected}\""),
                r.get("activation_fn"),
            ));
        }
    }
    let norm = r.opt_str("normalize_activations")?.unwrap_or("none");
    if norm != "none" {
        return Err(r.bad(
            "normalize_activations",
            "\"none\" (saerun does not rescale activations)",
            r.get("normalize_activations"),
        ));
    }
    let head_key = meta_key(if legacy {
        "hook_point_head_index"
    } else {
        "hook_head_index"
    });
    if r.get(&head_key).is_some() {
        return Err(r.bad(
            &head_key,
            "null (SAEs on one attention head are not supported)",
            r.get(&head_key),
        ));
    }
    let hook_key = match r.get(&meta_key("hook_name")) {
        None if legacy && r.get("hook_point").is_some() => "hook_point".to_string(),
        _ => meta_key("hook_name"),
    };
    let hook = r.opt_str(&hook_key)?;
    let reshape = r.opt_str("reshape_activations")?.unwrap_or("none");
    let is_z = hook.is_some_and(|h| h.ends_with("attn.hook_z"));
    if !(reshape == "none" || (reshape == "hook_z" && is_z)) {
        return Err(r.bad(
            "reshape_activations",
            "\"none\" (or \"hook_z\" for an attn.hook_z hook)",
            r.get("reshape_activations"),
        ));
    }
    let trained_on = match hook {
        None => None,
        Some(hook) => Some(TrainedOn {
            model_source: r
                .opt_str(&meta_key("saerun.model_source"))?
                .or(r.opt_str(&meta_key("model_name"))?)
                .unwrap_or("")
                .to_string(),
            model_hash: r
                .opt_str(&meta_key("saerun.model_hash"))?
                .map(str::to_string),
            processing: processing(&r, &meta_key("model_from_pretrained_kwargs"))?,
            model_dtype: r
                .opt_str(&meta_key("saerun.model_dtype"))?
                .unwrap_or("f32")
                .to_string(),
            hook: hook.to_string(),
            context_tokens: match r.get(&meta_key("context_size")) {
                Some(_) => r.usize(&meta_key("context_size"))?,
                None => 0,
            },
            prepend_bos: r.bool_or(&meta_key("prepend_bos"), true)?,
            data_source: r
                .opt_str(&meta_key("saerun.data_source"))?
                .or(r.opt_str(&meta_key("dataset_path"))?)
                .unwrap_or("")
                .to_string(),
        }),
    };
    let l1 = match r.get(&meta_key("saerun.l1")) {
        None => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| r.bad(&meta_key("saerun.l1"), "a number ≥ 0", Some(v)))?,
    };
    let seed = match r.get(&meta_key("saerun.seed")) {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| r.bad(&meta_key("saerun.seed"), "an integer ≥ 0", Some(v)))?,
    };
    Ok(SaeLensCfg {
        meta: SaeMeta {
            architecture,
            d_in,
            d_sae,
            l1: if k.is_some() { 0.0 } else { l1 },
            k,
            seed,
            trained_on,
        },
        apply_b_dec_to_input: r.bool_or("apply_b_dec_to_input", true)?,
        rescale_acts_by_decoder_norm: r.bool_or("rescale_acts_by_decoder_norm", false)?,
    })
}

/// The processing convention `model_from_pretrained_kwargs` describes (absent flags are
/// off, as in `from_pretrained_no_processing`).
fn processing(r: &Reader, key: &str) -> Result<Processing> {
    let kwargs = match r.get(key) {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        other => return Err(r.bad(key, "an object", other)),
    };
    if kwargs.get("refactor_factored_attn_matrices") == Some(&Value::Bool(true)) {
        return Err(r.bad(
            &format!("{key}.refactor_factored_attn_matrices"),
            "false (saerun does not refactor attention matrices)",
            Some(&Value::Bool(true)),
        ));
    }
    let mut on = Vec::new();
    for flag in PROCESSING_FLAGS {
        match kwargs.get(flag) {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => on.push(flag),
            other => return Err(r.bad(&format!("{key}.{flag}"), "true or false", other)),
        }
    }
    match on.len() {
        0 => Ok(Processing::None),
        4 => Ok(Processing::TransformerLens),
        _ => Err(r.bad(
            key,
            "all of fold_ln, center_writing_weights, center_unembed, fold_value_biases true (saerun's \"transformer_lens\" processing) or none of them (\"none\")",
            r.get(key),
        )),
    }
}

/// The SAE in `dir` as saerun's `Sae` (f32, on the host), with SAELens' variants folded
/// in (see the module docs). `cfg` is what `read_cfg` returned for `dir`.
pub fn load(dir: &Path, cfg: &SaeLensCfg) -> Result<Sae> {
    let file = dir.join(WEIGHTS_FILE);
    let mut t = candle_core::safetensors::load(&file, &HOST).map_err(|e| {
        Error::input(format!(
            "{}: cannot read as safetensors: {e}",
            file.display()
        ))
    })?;
    let (d_in, d_sae) = (cfg.meta.d_in, cfg.meta.d_sae);
    let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let v = t.remove(name).ok_or_else(|| {
            Error::input(format!(
                "{}: no tensor `{name}`; expected W_enc [{d_in}, {d_sae}], b_enc [{d_sae}], W_dec [{d_sae}, {d_in}], b_dec [{d_in}]",
                file.display()
            ))
        })?;
        if v.dims() != shape {
            return Err(Error::input(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?} (cfg.json: d_in {d_in}, d_sae {d_sae})",
                file.display(),
                v.dims()
            )));
        }
        Ok(v.to_dtype(DType::F32)?)
    };
    let w_enc_t = take("W_enc", &[d_in, d_sae])?;
    let mut b_enc = take("b_enc", &[d_sae])?;
    let mut w_dec = take("W_dec", &[d_sae, d_in])?;
    let b_dec = take("b_dec", &[d_in])?;
    let mut w_enc = w_enc_t.t()?.contiguous()?;
    if !cfg.apply_b_dec_to_input {
        // x W_encᵀ + b_enc = (x − b_dec) W_encᵀ + (b_enc + b_dec W_encᵀ).
        let shift = w_enc.matmul(&b_dec.unsqueeze(1)?)?.squeeze(1)?;
        b_enc = (b_enc + shift)?;
    }
    if cfg.rescale_acts_by_decoder_norm {
        // SAELens: codes = topk(pre · ‖W_dec[j]‖), x̂ = Σ codes_j / ‖W_dec[j]‖ · W_dec[j].
        // The same codes from encoder rows and biases scaled by the norms, with unit atoms.
        let norms = w_dec.sqr()?.sum(1)?.sqrt()?;
        w_enc = w_enc.broadcast_mul(&norms.unsqueeze(1)?)?;
        b_enc = (b_enc * &norms)?;
        w_dec = w_dec.broadcast_div(&norms.clamp(1e-12, f64::MAX)?.unsqueeze(1)?)?;
    }
    Ok(Sae {
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        top_k: cfg.meta.k,
    })
}
