//! GPT-NeoX `config.json`, read in both dialects found in the wild:
//! - Pythia hub repos (transformers 4.x): `rotary_pct`, `rotary_emb_base`, `torch_dtype`;
//! - recent transformers (5.x): `rope_parameters.{partial_rotary_factor, rope_theta}`, `dtype`.
//!
//! A field given in both dialects must agree; a field that is needed and missing is an
//! `Error::Input` naming the field and the file, because silently defaulting (say) the rotary
//! fraction would give a model that loads and produces plausible but wrong activations.

use std::path::Path;

use candle_core::DType;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The MLP activation. HF's `"gelu"` is the exact erf form; the tanh approximations are
/// accepted because a few GPT-NeoX derivatives use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `hidden_act = "gelu"`: x·Φ(x) with the erf (candle `gelu_erf`).
    GeluErf,
    /// `hidden_act = "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh"`: the tanh approximation.
    GeluTanh,
}

/// The architecture hyper-parameters the forward pass needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GptNeoXConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Fraction of each head's dimensions that get rotary embeddings (Pythia: 0.25).
    pub rotary_pct: f64,
    /// RoPE base θ (Pythia: 10000).
    pub rotary_emb_base: f64,
    pub layer_norm_eps: f64,
    pub use_parallel_residual: bool,
    pub hidden_act: Activation,
    /// `attention.query_key_value` / `attention.dense` carry biases (true for all Pythia).
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    /// The dtype the checkpoint says it was saved in, if it says so (informational: the
    /// safetensors headers are authoritative).
    pub torch_dtype: Option<DType>,
}

impl GptNeoXConfig {
    /// Read and validate `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "reading", e))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parse a config from JSON text; `origin` names the file in error messages.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::input(format!("{origin}: not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::input(format!("{origin}: expected a JSON object")))?;
        let r = Reader { obj, origin };

        if let Some(mt) = r.opt_str("model_type")? {
            if mt != "gpt_neox" {
                return Err(Error::input(format!(
                    "{origin}: model_type is {mt:?}, only \"gpt_neox\" (Pythia) is supported"
                )));
            }
        }

        let rope = match obj
            .get("rope_parameters")
            .or_else(|| obj.get("rope_scaling"))
        {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                return Err(Error::input(format!(
                    "{origin}: rope_parameters must be an object"
                )))
            }
        };
        if let Some(rope) = rope {
            if let Some(t) = rope.get("rope_type").or_else(|| rope.get("type")) {
                if t.as_str() != Some("default") {
                    return Err(Error::input(format!(
                        "{origin}: rope_parameters.rope_type {t} is not supported (only \"default\")"
                    )));
                }
            }
        }
        let rope_reader = rope.map(|m| Reader { obj: m, origin });
        let rotary_pct = r.either_f64(
            "rotary_pct",
            rope_reader.as_ref(),
            "rope_parameters.partial_rotary_factor",
            "partial_rotary_factor",
        )?;
        let rotary_emb_base = r.either_f64(
            "rotary_emb_base",
            rope_reader.as_ref(),
            "rope_parameters.rope_theta",
            "rope_theta",
        )?;

        let torch_dtype = match (r.opt_str("torch_dtype")?, r.opt_str("dtype")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::input(format!(
                    "{origin}: torch_dtype ({a:?}) and dtype ({b:?}) contradict each other"
                )))
            }
            (Some(a), _) | (None, Some(a)) => Some(parse_dtype(&a).ok_or_else(|| {
                Error::input(format!(
                    "{origin}: dtype {a:?} is not float32/float16/bfloat16"
                ))
            })?),
            (None, None) => None,
        };

        let act = r.req_str("hidden_act")?;
        let hidden_act = match act.as_str() {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(Error::input(format!(
                    "{origin}: hidden_act {other:?} is not supported (expected \"gelu\")"
                )))
            }
        };

        let cfg = GptNeoXConfig {
            vocab_size: r.req_usize("vocab_size")?,
            hidden_size: r.req_usize("hidden_size")?,
            num_hidden_layers: r.req_usize("num_hidden_layers")?,
            num_attention_heads: r.req_usize("num_attention_heads")?,
            intermediate_size: r.req_usize("intermediate_size")?,
            rotary_pct,
            rotary_emb_base,
            layer_norm_eps: r.req_f64("layer_norm_eps")?,
            use_parallel_residual: r.req_bool("use_parallel_residual")?,
            hidden_act,
            // Absent from every Pythia config (pre-dates the field); transformers defaults it to true.
            attention_bias: r.opt_bool("attention_bias")?.unwrap_or(true),
            // Absent means untied in GPTNeoXConfig (its default is false).
            tie_word_embeddings: r.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            torch_dtype,
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::input(format!("{origin}: {field} {why}")));
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
        ] {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "hidden_size",
                format!(
                    "({}) is not divisible by num_attention_heads ({})",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        if !(self.rotary_pct > 0.0 && self.rotary_pct <= 1.0) {
            return bad(
                "rotary_pct",
                format!("({}) must be in (0, 1]", self.rotary_pct),
            );
        }
        if !self.rotary_ndims().is_multiple_of(2) || self.rotary_ndims() == 0 {
            return bad(
                "rotary_pct",
                format!(
                    "({}) gives {} rotary dims per head of {}; it must be a positive even number",
                    self.rotary_pct,
                    self.rotary_ndims(),
                    self.head_dim()
                ),
            );
        }
        if !(self.rotary_emb_base > 0.0 && self.rotary_emb_base.is_finite()) {
            return bad(
                "rotary_emb_base",
                format!("({}) must be positive", self.rotary_emb_base),
            );
        }
        if !(self.layer_norm_eps >= 0.0 && self.layer_norm_eps.is_finite()) {
            return bad(
                "layer_norm_eps",
                format!("({}) must be non-negative", self.layer_norm_eps),
            );
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Rotary dims per head, exactly as transformers computes them: `int(head_dim * rotary_pct)`
    /// (same IEEE product, truncated).
    pub fn rotary_ndims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }
}

fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "float32" | "float" => Some(DType::F32),
        "float16" | "half" => Some(DType::F16),
        "bfloat16" => Some(DType::BF16),
        _ => None,
    }
}

/// Typed field access on one JSON object, producing errors that name the field and file.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> Error {
        Error::input(format!("{}: missing field {key}", self.origin))
    }

    fn wrong(&self, key: &str, what: &str, v: &Value) -> Error {
        Error::input(format!(
            "{}: field {key} must be {what}, got {v}",
            self.origin
        ))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong(key, "a number", v)))
            .transpose()
    }

    fn req_f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong(key, "true or false", v))
            })
            .transpose()
    }

    fn req_bool(&self, key: &str) -> Result<bool> {
        self.opt_bool(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.wrong(key, "a string", v))
            })
            .transpose()
    }

    fn req_str(&self, key: &str) -> Result<String> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// A value that the old dialect stores at top level (`old_key`) and the new one inside
    /// `rope_parameters` (`new_key`). One of them must be present; if both are, they must agree.
    fn either_f64(
        &self,
        old_key: &str,
        rope: Option<&Reader>,
        new_name: &str,
        new_key: &str,
    ) -> Result<f64> {
        let old = self.opt_f64(old_key)?;
        let new = match rope {
            Some(r) => r
                .get(new_key)
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| self.wrong(new_name, "a number", v))
                })
                .transpose()?,
            None => None,
        };
        match (old, new) {
            (Some(a), Some(b)) if (a - b).abs() > 1e-12 * a.abs().max(1.0) => {
                Err(Error::input(format!(
                    "{}: {old_key} ({a}) and {new_name} ({b}) contradict each other",
                    self.origin
                )))
            }
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Err(Error::input(format!(
                "{}: missing field {old_key} (or {new_name})",
                self.origin
            ))),
        }
    }
}
