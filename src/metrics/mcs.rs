//! Max cosine similarity between sets of directions (rows).
//! - MMCS against ground truth (Sharkey et al.): mean over true features of the max cosine
//!   with any learned atom; "recovered" counts true features whose max exceeds a threshold.
//! - Feature count across sizes (Riggs; HoagyC `run_mmcs_with_larger`): one-to-one matching
//!   (exact linear assignment, see `assignment`) of a dictionary's atoms to the next larger
//!   one's; count the smaller dictionary's atoms whose matched cosine exceeds the threshold.

use super::assignment::max_assignment;
use crate::sae::model::normalise_rows;
use crate::Result;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

/// (rows of a) × (rows of b) cosine similarities, row-major.
pub fn cosine_matrix(a: &Tensor, b: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let a = normalise_rows(a)?;
    let b = normalise_rows(b)?;
    let sim = a.matmul(&b.t()?)?;
    let (r, c) = sim.dims2()?;
    Ok((sim.flatten_all()?.to_vec1::<f32>()?, r, c))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TruthRecovery {
    pub mmcs: f64,
    pub recovered: usize,
    pub n_true: usize,
}

/// MMCS of `atoms` against the ground-truth `truth` features.
pub fn truth_recovery(truth: &Tensor, atoms: &Tensor, threshold: f64) -> Result<TruthRecovery> {
    let max = normalise_rows(truth)?
        .matmul(&normalise_rows(atoms)?.t()?)?
        .max(D::Minus1)?
        .to_vec1::<f32>()?;
    Ok(TruthRecovery {
        mmcs: max.iter().map(|&v| v as f64).sum::<f64>() / max.len().max(1) as f64,
        recovered: max.iter().filter(|&&v| v as f64 > threshold).count(),
        n_true: max.len(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SizeMatch {
    pub n_small: usize,
    pub n_large: usize,
    /// Mean cosine of the one-to-one matched pairs (over the smaller dictionary).
    pub mean_matched_cos: f64,
    /// Smaller-dictionary atoms whose matched cosine exceeds the threshold.
    pub features_above: usize,
    pub fraction_above: f64,
    /// The same count without the one-to-one constraint (plain max over the larger one).
    pub features_above_unmatched: usize,
    /// Per atom of the smaller dictionary: its matched atom in the larger one and their
    /// cosine (`None` only if the larger one has fewer atoms). Followed by the feature
    /// browser from one size to the next.
    #[serde(default)]
    pub pairs: Vec<Option<(u32, f32)>>,
}

/// Feature count of `small` against `large` (rows are atoms).
pub fn match_sizes(small: &Tensor, large: &Tensor, threshold: f64) -> Result<SizeMatch> {
    let (sim, rows, cols) = cosine_matrix(small, large)?;
    let assignment = max_assignment(&sim, rows, cols);
    let matched: Vec<f64> = assignment
        .iter()
        .enumerate()
        .map(|(r, c)| c.map_or(0.0, |c| sim[r * cols + c] as f64))
        .collect();
    let unmatched_max = sim
        .chunks(cols)
        .filter(|row| row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64 > threshold)
        .count();
    let above = matched.iter().filter(|&&v| v > threshold).count();
    Ok(SizeMatch {
        n_small: rows,
        n_large: cols,
        mean_matched_cos: matched.iter().sum::<f64>() / rows.max(1) as f64,
        features_above: above,
        fraction_above: above as f64 / rows.max(1) as f64,
        features_above_unmatched: unmatched_max,
        pairs: assignment
            .iter()
            .enumerate()
            .map(|(r, c)| c.map(|c| (c as u32, sim[r * cols + c])))
            .collect(),
    })
}
