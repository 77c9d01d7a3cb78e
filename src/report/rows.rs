//! One row per trained SAE (metrics) and one per logged training step (curves), gathered
//! from the cache entries of a plan.

use super::super::pipeline::plan::{Plan, Task};
use crate::cache::Entry;
use crate::stages::{eval_sae, match_sizes, train_sae};
use crate::Result;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct SaeRow {
    pub d_sae: usize,
    pub ratio: f64,
    pub l1: f64,
    pub seed: u64,
    pub train_key: String,
    pub final_loss: f64,
    pub mse: f64,
    pub fve: f64,
    pub l0: f64,
    pub dead: usize,
    pub dense: usize,
    /// Toy data only: MMCS against the ground truth, and true features recovered.
    pub mmcs_truth: Option<f64>,
    pub truth_recovered: Option<usize>,
    /// Against the next larger size at the same l1 and seed (None for the largest).
    pub next_d_sae: Option<usize>,
    pub mean_matched_cos: Option<f64>,
    pub features_above: Option<usize>,
    pub fraction_above: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CurveRow {
    pub d_sae: usize,
    pub l1: f64,
    pub seed: u64,
    pub point: crate::sae::train::CurvePoint,
}

pub fn collect(plan: &Plan, entries: &[Entry]) -> Result<(Vec<SaeRow>, Vec<CurveRow>)> {
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    // Index of each SAE's row, by its train node.
    let mut row_of_sae: HashMap<usize, usize> = HashMap::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        match &node.task {
            Task::EvalSae { point, sae, .. } => {
                let m = eval_sae::load(&entries[i])?;
                let curve = train_sae::load_curve(&entries[*sae])?;
                for p in &curve {
                    curves.push(CurveRow {
                        d_sae: point.d_sae,
                        l1: point.l1,
                        seed: point.seed,
                        point: p.clone(),
                    });
                }
                row_of_sae.insert(*sae, rows.len());
                rows.push(SaeRow {
                    d_sae: point.d_sae,
                    ratio: point.ratio,
                    l1: point.l1,
                    seed: point.seed,
                    train_key: plan.nodes[*sae].key.hex(),
                    final_loss: curve.last().map_or(f64::NAN, |p| p.loss),
                    mse: m.reconstruction.mse,
                    fve: m.reconstruction.fve,
                    l0: m.reconstruction.l0,
                    dead: m.reconstruction.dead,
                    dense: m.reconstruction.dense,
                    mmcs_truth: m.truth.as_ref().map(|t| t.mmcs),
                    truth_recovered: m.truth.as_ref().map(|t| t.recovered),
                    next_d_sae: None,
                    mean_matched_cos: None,
                    features_above: None,
                    fraction_above: None,
                });
            }
            Task::MatchSizes {
                large, small_sae, ..
            } => {
                let m = match_sizes::load(&entries[i])?;
                // Eval nodes of both SAEs come before the match node in the plan.
                if let Some(&r) = row_of_sae.get(small_sae) {
                    let row = &mut rows[r];
                    row.next_d_sae = Some(large.d_sae);
                    row.mean_matched_cos = Some(m.mean_matched_cos);
                    row.features_above = Some(m.features_above);
                    row.fraction_above = Some(m.fraction_above);
                }
            }
            _ => {}
        }
    }
    Ok((rows, curves))
}
