//! Next-token cross-entropy of a language model's logits, and the perplexity-impact metrics
//! of splicing an SAE in at a hook (REFERENCE.md "Perplexity impact"):
//!   CE recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean),  ΔCE = CE_sae − CE_clean.

use crate::Result;
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

/// Sum of next-token negative log-likelihoods (nats) and the number of predictions, for
/// logits (b, s, vocab) and tokens (b, s): position t predicts token t + 1.
pub fn next_token_nll(logits: &Tensor, tokens: &Tensor) -> Result<(f64, usize)> {
    let (b, s, _) = logits.dims3()?;
    if s < 2 {
        return Ok((0.0, 0));
    }
    let log_probs = candle_nn::ops::log_softmax(
        &logits.narrow(1, 0, s - 1)?.to_dtype(DType::F32)?,
        D::Minus1,
    )?;
    let targets = tokens
        .narrow(1, 1, s - 1)?
        .to_dtype(DType::U32)?
        .unsqueeze(2)?
        .contiguous()?;
    let picked = log_probs.contiguous()?.gather(&targets, 2)?;
    let sum = picked.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((-sum, b * (s - 1)))
}

/// Mean-CE accumulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct MeanCe {
    nll: f64,
    count: usize,
}

impl MeanCe {
    pub fn add(&mut self, logits: &Tensor, tokens: &Tensor) -> Result<()> {
        self.add_sum(next_token_nll(logits, tokens)?);
        Ok(())
    }
    /// Add a summed NLL and its number of predictions (`GptNeoX::next_token_nll`).
    pub fn add_sum(&mut self, (nll, count): (f64, usize)) {
        self.nll += nll;
        self.count += count;
    }
    pub fn mean(&self) -> f64 {
        self.nll / self.count.max(1) as f64
    }
    pub fn count(&self) -> usize {
        self.count
    }
}

/// SAE-independent reference points on the evaluation contexts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CeBaselines {
    pub ce_clean: f64,
    /// The hook's activation replaced by zeros.
    pub ce_zero: f64,
    /// The hook's activation replaced by its mean over the training store.
    pub ce_mean: f64,
    pub predictions: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PerplexityImpact {
    pub ce_clean: f64,
    pub ce_sae: f64,
    pub ce_zero: f64,
    pub ce_mean: f64,
    pub ce_recovered: f64,
    pub delta_ce: f64,
    /// exp(CE_sae) / exp(CE_clean).
    pub perplexity_ratio: f64,
}

impl PerplexityImpact {
    pub fn new(base: &CeBaselines, ce_sae: f64) -> Self {
        PerplexityImpact {
            ce_clean: base.ce_clean,
            ce_sae,
            ce_zero: base.ce_zero,
            ce_mean: base.ce_mean,
            ce_recovered: (base.ce_zero - ce_sae) / (base.ce_zero - base.ce_clean),
            delta_ce: ce_sae - base.ce_clean,
            perplexity_ratio: (ce_sae - base.ce_clean).exp(),
        }
    }
}

impl PerplexityImpact {
    /// The metrics table's perplexity columns.
    pub fn columns(&self) -> [(&'static str, crate::results::Cell); 7] {
        use crate::results::IntoCell;
        [
            ("ce_clean", self.ce_clean.cell()),
            ("ce_sae", self.ce_sae.cell()),
            ("ce_zero", self.ce_zero.cell()),
            ("ce_mean", self.ce_mean.cell()),
            ("ce_recovered", self.ce_recovered.cell()),
            ("delta_ce", self.delta_ce.cell()),
            ("perplexity_ratio", self.perplexity_ratio.cell()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Uniform logits over V tokens give CE = ln V; a confident correct prediction ~0.
    #[test]
    fn cross_entropy_of_known_distributions() {
        let v = 7;
        let logits = Tensor::zeros((2, 4, v), DType::F32, &Device::Cpu).unwrap();
        let tokens = Tensor::new(&[[1u32, 2, 3, 4], [0, 6, 5, 1]], &Device::Cpu).unwrap();
        let (nll, n) = next_token_nll(&logits, &tokens).unwrap();
        assert_eq!(n, 6);
        assert!((nll / n as f64 - (v as f64).ln()).abs() < 1e-6);

        let mut peaked = vec![0f32; 3 * v];
        for (t, next) in [2usize, 3, 4].iter().enumerate() {
            peaked[t * v + next] = 50.0;
        }
        let logits = Tensor::from_vec(peaked, (1, 3, v), &Device::Cpu).unwrap();
        let tokens = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        let (nll, n) = next_token_nll(&logits, &tokens).unwrap();
        assert_eq!(n, 2);
        assert!(nll < 1e-10);
    }

    #[test]
    fn recovered_is_one_for_a_perfect_sae_and_zero_for_zero_ablation() {
        let base = CeBaselines {
            ce_clean: 3.0,
            ce_zero: 10.0,
            ce_mean: 6.0,
            predictions: 10,
        };
        assert!((PerplexityImpact::new(&base, 3.0).ce_recovered - 1.0).abs() < 1e-12);
        assert!(PerplexityImpact::new(&base, 10.0).ce_recovered.abs() < 1e-12);
        let p = PerplexityImpact::new(&base, 3.5);
        assert!((p.delta_ce - 0.5).abs() < 1e-12);
        assert!((p.perplexity_ratio - 0.5f64.exp()).abs() < 1e-12);
    }
}
