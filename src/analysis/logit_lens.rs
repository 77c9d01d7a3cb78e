//! Logit lens of a decoder direction: `W_dec[f] @ W_U` in the run's processing convention
//! (TransformerLens: W_U with the final layer norm's weight folded in and centred; none: the
//! raw unembedding), top and bottom tokens. Tokens whose W_U column norm exceeds a threshold
//! are excluded: they are tokens the tokenizer never produces and would dominate the lists.

use super::TokenValue;
use crate::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensLists {
    pub feature: usize,
    pub top: Vec<TokenValue>,
    pub bottom: Vec<TokenValue>,
}

/// Norm of every W_U column (one per vocabulary entry). `w_u` is (d_model, vocab).
pub fn column_norms(w_u: &Tensor) -> Result<Vec<f32>> {
    Ok(w_u.sqr()?.sum(0)?.sqrt()?.to_vec1()?)
}

/// The tokens whose W_U column norm exceeds `max_norm`, ascending.
pub fn excluded_tokens(norms: &[f32], max_norm: f64) -> Vec<u32> {
    (0..norms.len() as u32)
        .filter(|&t| norms[t as usize] as f64 > max_norm)
        .collect()
}

/// Top and bottom `k` tokens of `direction @ w_u`, leaving out `excluded` (ascending).
pub fn lens(
    direction: &Tensor,
    w_u: &Tensor,
    excluded: &[u32],
    k: usize,
    name: &dyn Fn(u32) -> String,
) -> Result<(Vec<TokenValue>, Vec<TokenValue>)> {
    let logits: Vec<f32> = direction
        .unsqueeze(0)?
        .matmul(w_u)?
        .flatten_all()?
        .to_vec1()?;
    let mut kept: Vec<u32> = (0..logits.len() as u32)
        .filter(|t| excluded.binary_search(t).is_err())
        .collect();
    kept.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    let entry = |&t: &u32| TokenValue {
        id: t,
        token: name(t),
        value: logits[t as usize],
    };
    let top = kept.iter().take(k).map(entry).collect();
    let bottom = kept.iter().rev().take(k).map(entry).collect();
    Ok((top, bottom))
}
