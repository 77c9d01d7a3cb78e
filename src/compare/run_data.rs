//! What comparisons read from a run directory: the per-SAE metrics keyed by the identity
//! that survives stage-version bumps (`architecture, d_sae, l1, k, seed`), and the resolved
//! spec flattened to `section.key = value`.

use crate::report::tables;
use crate::{Error, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// An SAE's identity across runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeKey {
    pub architecture: String,
    pub d_sae: u64,
    pub l1: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u64>,
    pub seed: u64,
}

impl SaeKey {
    pub fn label(&self) -> String {
        let sparsity = match self.k {
            Some(k) => format!("k={k}"),
            None => format!("l1={}", self.l1),
        };
        format!(
            "{} d_sae={} {sparsity} seed={}",
            self.architecture, self.d_sae, self.seed
        )
    }

    pub fn same(&self, other: &SaeKey) -> bool {
        self.architecture == other.architecture
            && self.d_sae == other.d_sae
            && self.l1.to_bits() == other.l1.to_bits()
            && self.k == other.k
            && self.seed == other.seed
    }
}

/// One SAE's numeric metrics, by column name.
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub key: SaeKey,
    pub values: BTreeMap<String, f64>,
}

const IDENTITY: [&str; 6] = ["architecture", "d_sae", "l1", "k", "seed", "train_key"];

/// `metrics.parquet` of a run directory.
pub fn read_metrics(run_dir: &Path) -> Result<Vec<MetricRow>> {
    let df = tables::read(&run_dir.join(crate::report::METRICS_TABLE))?;
    let err = |e: PolarsError| Error::run(format!("{}: {e}", run_dir.display()));
    let f64s = |name: &str| -> Result<Vec<Option<f64>>> {
        let c = df
            .column(name)
            .map_err(err)?
            .cast(&DataType::Float64)
            .map_err(err)?;
        let ca = c.f64().map_err(err)?.clone();
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    };
    let (d, l1, k, seed) = (f64s("d_sae")?, f64s("l1")?, f64s("k")?, f64s("seed")?);
    let archs: Vec<String> = match df.column("architecture") {
        Ok(c) => {
            let ca = c.str().map_err(err)?;
            (0..ca.len())
                .map(|i| ca.get(i).unwrap_or("").to_string())
                .collect()
        }
        // Runs written before the column existed: only TopK SAEs have a k.
        Err(_) => k
            .iter()
            .map(|k| if k.is_some() { "topk" } else { "relu_l1" }.to_string())
            .collect(),
    };
    let mut numeric = Vec::new();
    for c in df.columns() {
        let name = c.name().as_str();
        if !IDENTITY.contains(&name) && c.dtype().is_primitive_numeric() {
            numeric.push((name.to_string(), f64s(name)?));
        }
    }
    Ok((0..df.height())
        .map(|i| MetricRow {
            key: SaeKey {
                architecture: archs[i].clone(),
                d_sae: d[i].unwrap_or(0.0) as u64,
                l1: l1[i].unwrap_or(0.0),
                k: k[i].map(|v| v as u64),
                seed: seed[i].unwrap_or(0.0) as u64,
            },
            values: numeric
                .iter()
                .filter_map(|(n, v)| v[i].map(|x| (n.clone(), x)))
                .collect(),
        })
        .collect())
}

/// The run's resolved `spec.toml` as `section.key` → value (TOML text).
pub fn read_spec(run_dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = run_dir.join("spec.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "cannot read", e))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| Error::run(format!("{}: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    flatten("", &toml::Value::Table(value), &mut out);
    Ok(out)
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}
