//! Direction ablation: at the hook, subtract (feature activation × decoder direction) at every
//! position, resume the forward pass from there, and compare the log-probabilities with the
//! clean pass: of the actual next token at each position, and over the whole vocabulary at
//! the token of interest.

use super::probe::Probe;
use super::TokenValue;
use crate::Result;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionAblation {
    pub feature: usize,
    pub context: usize,
    /// The token of interest (the max-activating one).
    pub position: usize,
    /// `delta_logprob[i]`: change in log p(token i+1 | ..i) when the direction is ablated.
    pub delta_logprob: Vec<f32>,
    /// At `position`: the tokens whose log-probability rises / falls most.
    pub rises: Vec<TokenValue>,
    pub falls: Vec<TokenValue>,
}

/// Clean and ablated log-probabilities (seq × vocab) of one context.
pub fn ablated_logprobs(probe: &Probe, tokens: &[u32], feature: usize) -> Result<(Tensor, Tensor)> {
    let s = tokens.len();
    let t = Tensor::from_slice(tokens, (1, s), probe.device)?;
    let clean = probe.model.forward(&t)?;
    let x = probe.model.capture(&t, &[probe.hook])?.remove(0);
    let d = x.dim(2)?;
    let codes = probe
        .sae
        .encode(&x.reshape((s, d))?)?
        .narrow(1, feature, 1)?; // (s, 1)
    let direction = probe.sae.w_dec.narrow(0, feature, 1)?; // (1, d)
    let ablated_x = (x.reshape((s, d))? - codes.matmul(&direction)?)?.reshape((1, s, d))?;
    let ablated = if probe.hook.is_residual() {
        probe.model.forward_from(probe.hook, &ablated_x)?
    } else {
        probe
            .model
            .forward_with_replacement(&t, probe.hook, &mut |_| Ok(ablated_x.clone()))?
    };
    let lp = |l: &Tensor| -> Result<Tensor> {
        Ok(candle_nn::ops::log_softmax(&l.squeeze(0)?, D::Minus1)?)
    };
    Ok((lp(&clean)?, lp(&ablated)?))
}

pub struct Request<'a> {
    pub tokens: &'a [u32],
    pub context: usize,
    pub position: usize,
    pub feature: usize,
    pub k: usize,
    /// Only ids below this are ranked (the tokenizer's vocabulary, not padding rows).
    pub vocab: usize,
}

pub fn ablate_direction(
    probe: &Probe,
    req: &Request,
    name: &dyn Fn(u32) -> String,
) -> Result<DirectionAblation> {
    let (clean, ablated) = ablated_logprobs(probe, req.tokens, req.feature)?;
    let diff = (ablated - clean)?;
    let diff: Vec<Vec<f32>> = diff.to_vec2()?;
    let delta_logprob = (0..req.tokens.len() - 1)
        .map(|i| diff[i][req.tokens[i + 1] as usize])
        .collect();
    let at = &diff[req.position];
    let mut ids: Vec<u32> = (0..at.len().min(req.vocab) as u32).collect();
    ids.sort_by(|&a, &b| at[b as usize].total_cmp(&at[a as usize]).then(a.cmp(&b)));
    let entry = |&t: &u32| TokenValue {
        id: t,
        token: name(t),
        value: at[t as usize],
    };
    Ok(DirectionAblation {
        feature: req.feature,
        context: req.context,
        position: req.position,
        delta_logprob,
        rises: ids.iter().take(req.k).map(entry).collect(),
        falls: ids.iter().rev().take(req.k).map(entry).collect(),
    })
}
