//! Ablated text: for a context ending at the token of interest, delete each earlier token in
//! turn and recompute the feature's activation at that same final token. All deletions of
//! one example run as one batch, and the forward pass stops at the hook.

use super::probe::Probe;
use crate::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblatedText {
    /// Index into the feature's examples.
    pub example: usize,
    pub context: usize,
    /// The final token (the example's position).
    pub position: usize,
    /// The feature's activation at the final token of the truncated context.
    pub original: f32,
    /// `deltas[i]`: activation with token i deleted minus `original`, for i < position.
    pub deltas: Vec<f32>,
}

/// (original activation, deltas) for the context `prefix` (ending at the token of
/// interest).
pub fn ablate_each_earlier_token(
    probe: &Probe,
    prefix: &[u32],
    feature: usize,
) -> Result<(f32, Vec<f32>)> {
    let original = probe.last_token_activations(prefix, 1, feature)?[0];
    let p = prefix.len() - 1;
    if p == 0 {
        return Ok((original, Vec::new()));
    }
    let mut batch = Vec::with_capacity(p * p);
    for deleted in 0..p {
        batch.extend(
            prefix
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != deleted)
                .map(|(_, &t)| t),
        );
    }
    let after = probe.last_token_activations(&batch, p, feature)?;
    Ok((original, after.iter().map(|a| a - original).collect()))
}
