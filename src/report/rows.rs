//! One row per trained SAE (metrics) and one per logged training step (curves), gathered
//! from the cache entries of a plan.

use super::super::pipeline::plan::{Plan, Task};
use crate::cache::Entry;
use crate::metrics::reconstruction::Reconstruction;
use crate::spec::resolve::GridPoint;
use crate::stages::{eval_lm, eval_sae, match_sizes, train_sae};
use crate::Result;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct SaeRow {
    pub d_sae: usize,
    pub ratio: f64,
    pub l1: f64,
    pub k: Option<usize>,
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
    /// Text data only: perplexity impact of splicing the SAE in at the hook.
    pub lm: Option<crate::metrics::perplexity::PerplexityImpact>,
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

/// The columns every SAE has, plus its training curve appended to `curves`.
fn base_row(
    plan: &Plan,
    entries: &[Entry],
    point: &GridPoint,
    sae: usize,
    r: &Reconstruction,
    curves: &mut Vec<CurveRow>,
) -> Result<SaeRow> {
    let curve = train_sae::load_curve(&entries[sae])?;
    for p in &curve {
        curves.push(CurveRow {
            d_sae: point.d_sae,
            l1: point.l1,
            seed: point.seed,
            point: p.clone(),
        });
    }
    Ok(SaeRow {
        d_sae: point.d_sae,
        ratio: point.ratio,
        l1: point.l1,
        k: point.k,
        seed: point.seed,
        train_key: plan.nodes[sae].key.hex(),
        final_loss: curve.last().map_or(f64::NAN, |p| p.loss),
        mse: r.mse,
        fve: r.fve,
        l0: r.l0,
        dead: r.dead,
        dense: r.dense,
        mmcs_truth: None,
        truth_recovered: None,
        lm: None,
        next_d_sae: None,
        mean_matched_cos: None,
        features_above: None,
        fraction_above: None,
    })
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
                let mut row = base_row(plan, entries, point, *sae, &m.reconstruction, &mut curves)?;
                row.mmcs_truth = m.truth.as_ref().map(|t| t.mmcs);
                row.truth_recovered = m.truth.as_ref().map(|t| t.recovered);
                row_of_sae.insert(*sae, rows.len());
                rows.push(row);
            }
            Task::EvalLm { point, sae, .. } => {
                let m = eval_lm::load(&entries[i].dir)?;
                let mut row = base_row(plan, entries, point, *sae, &m.reconstruction, &mut curves)?;
                row.lm = Some(m.perplexity);
                row_of_sae.insert(*sae, rows.len());
                rows.push(row);
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
