//! Weight-processing conventions, i.e. which basis the activations are reported in.
//!
//! - `none`: the Hugging Face weights as they are; activations equal transformers' hidden states.
//! - `transformer_lens`: what `HookedTransformer.from_pretrained` does by default
//!   (TransformerLens `loading_from_pretrained.py` / `weight_processing.py`):
//!   1. fold_ln: each layer norm's weight is multiplied into the linear map that reads it and its
//!      bias becomes part of that map's bias; the norm keeps only centring and scaling (`LNPre`).
//!      The folded input weights are also centred over d_model (harmless: their input is centred).
//!   2. center_writing_weights: everything that writes into the residual stream (`W_E`, `W_O`,
//!      `b_O`, `W_out`, `b_out`) has its d_model-mean removed, so the residual stream is the raw one
//!      minus its per-token mean over d_model.
//!   3. center_unembed: `W_U` (which now holds `ln_final.w`) and `b_U` (which holds
//!      `ln_final.b @ W_U`) are centred over the vocabulary. Logits shift by a per-token constant,
//!      so log-probs are unchanged.
//!   4. fold_value_biases: `b_V` moves into `b_O` (attention weights sum to one, so this is
//!      exact); `attn.hook_z` therefore excludes `b_V`, as in TransformerLens.
//!
//! Both conventions produce the same log-probs; hooks differ as described in `HookPoint`.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::gpt_neox::Params;
use crate::{Error, Result};

/// Which weight-processing convention activations are reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Processing {
    /// Raw Hugging Face weights and activations.
    None,
    /// TransformerLens `from_pretrained` defaults (fold_ln, center_writing_weights,
    /// center_unembed, fold_value_biases).
    TransformerLens,
}

impl Processing {
    /// The stable spelling used in specs and cache keys. Never change these strings: cached
    /// activations are keyed by them.
    pub fn as_str(&self) -> &'static str {
        match self {
            Processing::None => "none",
            Processing::TransformerLens => "transformer_lens",
        }
    }
}

impl fmt::Display for Processing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Processing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Processing::None),
            "transformer_lens" => Ok(Processing::TransformerLens),
            other => Err(Error::input(format!(
                "unknown weight processing {other:?}; expected \"none\" or \"transformer_lens\""
            ))),
        }
    }
}

/// Subtract the mean over `dim`.
fn center(w: &Tensor, dim: usize) -> Result<Tensor> {
    Ok(w.broadcast_sub(&w.mean_keepdim(dim)?)?)
}

/// `w @ v` for a matrix (out, in) and a vector (in) -> (out).
fn matvec(w: &Tensor, v: &Tensor) -> Result<Tensor> {
    Ok(w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)
}

/// Fold a layer norm (weight `ln_w`, bias `ln_b`) into the HF linear map (out, in) reading it:
/// `W' = W · diag(ln_w)` centred over its input dim, `b' = b + W · ln_b`.
///
/// Takes `w` by value and drops it as soon as it is scaled, so that folding the unembedding
/// (103 MB for Pythia-70M) holds two copies of it at once, not three.
fn fold_norm_into(
    w: Tensor,
    b: Option<&Tensor>,
    ln_w: &Tensor,
    ln_b: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let from_ln_bias = matvec(&w, ln_b)?;
    let b = match b {
        Some(b) => (b + from_ln_bias)?,
        None => from_ln_bias,
    };
    let scaled = w.broadcast_mul(&ln_w.unsqueeze(0)?)?;
    drop(w);
    Ok((center(&scaled, 1)?, b))
}

/// Apply the TransformerLens processing to f32 parameters in HF layout.
pub(crate) fn transformer_lens(mut p: Params, n_heads: usize, d_head: usize) -> Result<Params> {
    if p.embed.dtype() != DType::F32 {
        return Err(Error::run("weight processing expects f32 parameters"));
    }
    let d_model = n_heads * d_head;
    let ones = Tensor::ones(d_model, DType::F32, p.embed.device())?;
    let zeros = Tensor::zeros(d_model, DType::F32, p.embed.device())?;

    p.embed = center(&p.embed, 1)?;
    for blk in &mut p.blocks {
        // 1. fold ln1 into QKV and ln2 into the MLP input.
        let (qkv_w, qkv_b) = fold_norm_into(
            blk.qkv_w.clone(),
            blk.qkv_b.as_ref(),
            &blk.ln1_w,
            &blk.ln1_b,
        )?;
        let (fc1_w, fc1_b) =
            fold_norm_into(blk.fc1_w.clone(), Some(&blk.fc1_b), &blk.ln2_w, &blk.ln2_b)?;
        blk.ln1_w = ones.clone();
        blk.ln1_b = zeros.clone();
        blk.ln2_w = ones.clone();
        blk.ln2_b = zeros.clone();
        blk.fc1_w = fc1_w;
        blk.fc1_b = fc1_b;

        // 2. centre the writing weights over d_model (HF (out=d_model, in) -> dim 0).
        let out_w = center(&blk.out_w, 0)?;
        let out_b = match &blk.out_b {
            Some(b) => center(b, 0)?,
            None => zeros.clone(),
        };
        blk.fc2_w = center(&blk.fc2_w, 0)?;
        blk.fc2_b = center(&blk.fc2_b, 0)?;

        // 4. fold the value biases into b_O. Rows of the fused QKV are grouped per head
        // (q, k, v of head 0, then head 1, ...), so b_V is slot 2 of (heads, 3, d_head).
        let qkv_b = qkv_b.reshape((n_heads, 3, d_head))?;
        let b_v = qkv_b.narrow(1, 2, 1)?.flatten_all()?;
        blk.out_b = Some((out_b + matvec(&out_w, &b_v)?)?);
        blk.out_w = out_w;
        let qk_b = qkv_b.narrow(1, 0, 2)?;
        let v_zero = qk_b.narrow(1, 0, 1)?.zeros_like()?;
        blk.qkv_b = Some(Tensor::cat(&[&qk_b, &v_zero], 1)?.flatten_all()?);
        blk.qkv_w = qkv_w;
    }

    // 1 + 3 for the unembedding: fold ln_final, then centre over the vocabulary.
    // Moved out (a small placeholder takes its place until the result is stored) so that
    // the unprocessed unembedding is freed once scaled.
    let unembed = std::mem::replace(&mut p.unembed, zeros.clone());
    let (u_w, u_b) = fold_norm_into(unembed, p.unembed_b.as_ref(), &p.lnf_w, &p.lnf_b)?;
    p.unembed = center(&u_w, 0)?;
    drop(u_w);
    p.unembed_b = Some(u_b.broadcast_sub(&u_b.mean_keepdim(D::Minus1)?)?);
    p.lnf_w = ones;
    p.lnf_b = zeros;
    Ok(p)
}
