//! Stage `eval_sae`: reconstruction metrics on the held-out split and, for toy data,
//! recovery of the ground-truth features.

use crate::cache::Entry;
use crate::metrics::mcs::{truth_recovery, TruthRecovery};
use crate::metrics::reconstruction::{evaluate, Reconstruction};
use crate::sae::Sae;
use crate::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const NAME: &str = "eval_sae";
pub const VERSION: u32 = 1;

const FILE: &str = "metrics.json";
const BATCH: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct EvalParams {
    pub mcs_threshold: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub reconstruction: Reconstruction,
    pub truth: Option<TruthRecovery>,
}

pub fn run(
    params: &EvalParams,
    sae: &Sae,
    eval: &Tensor,
    truth: Option<&Tensor>,
    out: &Path,
) -> Result<()> {
    let metrics = EvalMetrics {
        reconstruction: evaluate(sae, eval, BATCH)?,
        truth: truth
            .map(|t| truth_recovery(t, &sae.w_dec, params.mcs_threshold))
            .transpose()?,
    };
    super::write_json(&out.join(FILE), &metrics)
}

pub fn load(entry: &Entry) -> Result<EvalMetrics> {
    super::read_json(&entry.file(FILE))
}
