//! `saerun diff A B`: the resolved-spec keys that differ, then per SAE (matched on identity,
//! not on stage keys, which change whenever a stage version is bumped) every metric side by
//! side with its absolute and relative change.

use super::reference::Reference;
use super::run_data::{read_metrics, read_spec, MetricRow, SaeKey};
use super::run_ref::FoundRun;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment: String,
    pub dir: String,
    pub git_commit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecChange {
    pub key: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricChange {
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub abs_delta: Option<f64>,
    /// (b − a) / |a|; `None` when a is 0 or missing.
    pub rel_delta: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Same,
    Changed,
    OnlyA,
    OnlyB,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowDiff {
    pub sae: SaeKey,
    pub status: RowStatus,
    pub metrics: Vec<MetricChange>,
}

/// The `--json` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDiff {
    pub a: RunInfo,
    pub b: RunInfo,
    pub same_experiment: bool,
    pub spec: Vec<SpecChange>,
    pub rows: Vec<RowDiff>,
}

pub struct DiffOptions {
    /// Keep unchanged rows (and unchanged metrics of changed rows).
    pub all: bool,
    /// Count a metric as changed only if |relative Δ| exceeds this (0: any difference).
    pub threshold: f64,
}

/// One side of a diff: a run, or a committed reference (its expected values as metrics).
pub struct Side {
    pub info: RunInfo,
    /// `None` for a reference, which has no spec.
    pub spec: Option<BTreeMap<String, String>>,
    pub rows: Vec<MetricRow>,
}

impl Side {
    pub fn of_run(r: &FoundRun) -> Result<Side> {
        Ok(Side {
            info: RunInfo {
                run_id: r.record.run_id.clone(),
                experiment: r.record.experiment.clone(),
                dir: r.dir.display().to_string(),
                git_commit: r.record.git_commit.clone(),
            },
            spec: Some(read_spec(&r.dir)?),
            rows: read_metrics(&r.dir)?,
        })
    }

    pub fn of_reference(path: &Path, r: &Reference) -> Side {
        let mut rows: Vec<MetricRow> = Vec::new();
        for e in &r.expect {
            let i = match rows.iter().position(|row| row.key.same(&e.sae)) {
                Some(i) => i,
                None => {
                    rows.push(MetricRow {
                        key: e.sae.clone(),
                        values: BTreeMap::new(),
                    });
                    rows.len() - 1
                }
            };
            rows[i].values.insert(e.metric.clone(), e.value);
        }
        Side {
            info: RunInfo {
                run_id: "reference".into(),
                experiment: r.experiment.clone(),
                dir: path.display().to_string(),
                git_commit: String::new(),
            },
            spec: None,
            rows,
        }
    }
}

fn change(metric: &str, a: Option<f64>, b: Option<f64>) -> MetricChange {
    let abs_delta = a.zip(b).map(|(a, b)| b - a);
    let rel_delta = a
        .zip(abs_delta)
        .and_then(|(a, d)| (a != 0.0).then(|| d / a.abs()));
    MetricChange {
        metric: metric.to_string(),
        a,
        b,
        abs_delta,
        rel_delta,
    }
}

fn is_change(m: &MetricChange, threshold: f64) -> bool {
    match (m.a, m.b) {
        (Some(a), Some(b)) if a == b || (a.is_nan() && b.is_nan()) => false,
        (Some(_), Some(_)) => m.rel_delta.is_none_or(|r| r.abs() > threshold),
        (None, None) => false,
        _ => true,
    }
}

pub fn diff(a: &Side, b: &Side, opts: &DiffOptions) -> RunDiff {
    let spec = match (&a.spec, &b.spec) {
        (Some(sa), Some(sb)) => {
            let keys: BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
            keys.into_iter()
                .filter(|k| sa.get(*k) != sb.get(*k))
                .map(|k| SpecChange {
                    key: k.clone(),
                    a: sa.get(k).cloned(),
                    b: sb.get(k).cloned(),
                })
                .collect()
        }
        // A reference has no spec to compare.
        _ => Vec::new(),
    };
    let (ma, mb) = (&a.rows, &b.rows);
    let mut rows = Vec::new();
    for ra in ma {
        let Some(rb) = mb.iter().find(|r| r.key.same(&ra.key)) else {
            rows.push(RowDiff {
                sae: ra.key.clone(),
                status: RowStatus::OnlyA,
                metrics: Vec::new(),
            });
            continue;
        };
        let names: BTreeSet<&String> = ra.values.keys().chain(rb.values.keys()).collect();
        let all: Vec<MetricChange> = names
            .into_iter()
            .map(|n| change(n, ra.values.get(n).copied(), rb.values.get(n).copied()))
            .collect();
        let changed = all.iter().any(|m| is_change(m, opts.threshold));
        let metrics = if opts.all {
            all
        } else {
            all.into_iter()
                .filter(|m| is_change(m, opts.threshold))
                .collect()
        };
        let status = if changed {
            RowStatus::Changed
        } else {
            RowStatus::Same
        };
        if changed || opts.all {
            rows.push(RowDiff {
                sae: ra.key.clone(),
                status,
                metrics,
            });
        }
    }
    for rb in mb
        .iter()
        .filter(|rb| !ma.iter().any(|ra| ra.key.same(&rb.key)))
    {
        rows.push(RowDiff {
            sae: rb.key.clone(),
            status: RowStatus::OnlyB,
            metrics: Vec::new(),
        });
    }
    RunDiff {
        same_experiment: a.info.experiment == b.info.experiment,
        a: a.info.clone(),
        b: b.info.clone(),
        spec,
        rows,
    }
}
