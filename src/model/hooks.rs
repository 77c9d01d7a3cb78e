//! Hook points, named as in TransformerLens' `HookedTransformer` for GPT-NeoX/Pythia, so specs
//! and cached activations use the names the literature uses.
//!
//! Shapes (b = batch, s = sequence):
//! - `hook_embed`, `blocks.L.hook_resid_pre`, `blocks.L.hook_attn_out`, `blocks.L.hook_mlp_out`,
//!   `blocks.L.hook_resid_post`, `ln_final.hook_normalized`: (b, s, d_model)
//! - `blocks.L.attn.hook_z`: (b, s, n_heads, d_head), each head's attention-weighted values
//!   before the output projection (TransformerLens' `hook_z`; the input of HF `attention.dense`)
//! - `blocks.L.mlp.hook_post`: (b, s, d_mlp), after the GELU
//!
//! Values depend on the weight processing (see `Processing`): with `transformer_lens`, every
//! residual-stream hook and `hook_attn_out`/`hook_mlp_out` are the raw values minus their mean
//! over d_model; `hook_z` excludes the (LN-folded) value bias, which TransformerLens moves into
//! `b_O`; `ln_final.hook_normalized` is only centred and scaled (the LN weight and bias live in
//! `W_U`/`b_U`). `mlp.hook_post` is the same in both.
//!
//! Pythia has no `hook_pos_embed` (rotary) and, with a parallel residual, no `hook_resid_mid`;
//! neither is offered (not even for sequential-residual models).

use std::fmt;

use crate::{Error, Result};

/// A point in the forward pass whose activation can be captured or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings (block 0's input).
    Embed,
    /// `blocks.L.hook_resid_pre`: the residual stream entering block L.
    ResidPre(usize),
    /// `blocks.L.attn.hook_z`: per-head attention output before `W_O`, (b, s, heads, d_head).
    AttnZ(usize),
    /// `blocks.L.hook_attn_out`: the attention sub-layer's contribution to the residual stream.
    AttnOut(usize),
    /// `blocks.L.mlp.hook_post`: MLP hidden activations after the GELU.
    MlpPost(usize),
    /// `blocks.L.hook_mlp_out`: the MLP sub-layer's contribution to the residual stream.
    MlpOut(usize),
    /// `blocks.L.hook_resid_post`: the residual stream leaving block L.
    ResidPost(usize),
    /// `ln_final.hook_normalized`: the final layer norm's output, the unembedding's input.
    LnFinalNormalized,
}

/// Per-block hooks in execution order, with their name suffix after `blocks.L.`.
/// Builds a per-block hook for a layer index.
type MakeHook = fn(usize) -> HookPoint;

const BLOCK_HOOKS: [(&str, MakeHook); 6] = [
    ("hook_resid_pre", HookPoint::ResidPre),
    ("attn.hook_z", HookPoint::AttnZ),
    ("hook_attn_out", HookPoint::AttnOut),
    ("mlp.hook_post", HookPoint::MlpPost),
    ("hook_mlp_out", HookPoint::MlpOut),
    ("hook_resid_post", HookPoint::ResidPost),
];

impl HookPoint {
    /// Parse a TransformerLens hook name for a model with `n_layers` blocks. Unknown names and
    /// out-of-range layers are `Error::Input`, with the list of valid names.
    pub fn parse(name: &str, n_layers: usize) -> Result<Self> {
        let name = name.trim();
        let found = match name {
            "hook_embed" => Some(HookPoint::Embed),
            "ln_final.hook_normalized" => Some(HookPoint::LnFinalNormalized),
            _ => name.strip_prefix("blocks.").and_then(|rest| {
                let (layer, suffix) = rest.split_once('.')?;
                // Reject "+1" / " 1" / "01"-style spellings so a name round-trips through `name()`.
                if layer.is_empty()
                    || !layer.bytes().all(|c| c.is_ascii_digit())
                    || (layer.len() > 1 && layer.starts_with('0'))
                {
                    return None;
                }
                let layer: usize = layer.parse().ok()?;
                let make = BLOCK_HOOKS.iter().find(|(s, _)| *s == suffix)?.1;
                Some(make(layer))
            }),
        };
        match found {
            Some(h) if h.layer().is_none_or(|l| l < n_layers) => Ok(h),
            Some(h) => Err(Error::input(format!(
                "hook {name:?}: layer {} is out of range, the model has {n_layers} layers; valid hooks: {}",
                h.layer().unwrap_or(0),
                Self::valid_names_summary(n_layers)
            ))),
            None => Err(Error::input(format!(
                "unknown hook {name:?}; valid hooks: {}",
                Self::valid_names_summary(n_layers)
            ))),
        }
    }

    /// The TransformerLens name, e.g. `blocks.2.hook_resid_post`.
    pub fn name(&self) -> String {
        match *self {
            HookPoint::Embed => "hook_embed".into(),
            HookPoint::LnFinalNormalized => "ln_final.hook_normalized".into(),
            _ => {
                let l = self.layer().unwrap_or(0);
                format!("blocks.{l}.{}", BLOCK_HOOKS[self.slot()].0)
            }
        }
    }

    /// The block index for per-block hooks.
    pub fn layer(&self) -> Option<usize> {
        match *self {
            HookPoint::Embed | HookPoint::LnFinalNormalized => None,
            HookPoint::ResidPre(l)
            | HookPoint::AttnZ(l)
            | HookPoint::AttnOut(l)
            | HookPoint::MlpPost(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => Some(l),
        }
    }

    /// Whether the hook carries the residual stream itself (shape (b, s, d_model) and the
    /// forward pass can be resumed from it with `forward_from`).
    pub fn is_residual(&self) -> bool {
        matches!(
            self,
            HookPoint::Embed
                | HookPoint::ResidPre(_)
                | HookPoint::ResidPost(_)
                | HookPoint::LnFinalNormalized
        )
    }

    /// Every hook of a model with `n_layers` blocks, in execution order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed];
        for l in 0..n_layers {
            v.extend(BLOCK_HOOKS.iter().map(|(_, make)| make(l)));
        }
        v.push(HookPoint::LnFinalNormalized);
        v
    }

    /// Position in execution order (`all(n_layers)[h.order(n_layers)] == h`), used to stop the
    /// forward pass right after the last hook a caller needs.
    pub(crate) fn order(&self, n_layers: usize) -> usize {
        match *self {
            HookPoint::Embed => 0,
            HookPoint::LnFinalNormalized => 1 + BLOCK_HOOKS.len() * n_layers,
            _ => 1 + BLOCK_HOOKS.len() * self.layer().unwrap_or(0) + self.slot(),
        }
    }

    /// Index into `BLOCK_HOOKS` (per-block hooks only).
    fn slot(&self) -> usize {
        match self {
            HookPoint::ResidPre(_) | HookPoint::Embed | HookPoint::LnFinalNormalized => 0,
            HookPoint::AttnZ(_) => 1,
            HookPoint::AttnOut(_) => 2,
            HookPoint::MlpPost(_) => 3,
            HookPoint::MlpOut(_) => 4,
            HookPoint::ResidPost(_) => 5,
        }
    }

    fn valid_names_summary(n_layers: usize) -> String {
        let blocks = if n_layers == 0 {
            String::new()
        } else {
            let suffixes: Vec<&str> = BLOCK_HOOKS.iter().map(|(s, _)| *s).collect();
            format!(
                "blocks.L.{{{}}} for L in 0..={}, ",
                suffixes.join(", "),
                n_layers - 1
            )
        };
        format!("hook_embed, {blocks}ln_final.hook_normalized")
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
