//! Committed reference results: `experiments/<spec>.reference.toml` beside a spec holds
//! expected metric values per SAE identity, each with a tolerance and a source. It is a
//! separate file, so it never enters a stage key. `saerun reproduce` checks a run against
//! it; `saerun promote` writes one from a run with the tolerance rule below.

use super::run_data::{read_metrics, MetricRow, SaeKey};
use super::run_ref::FoundRun;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub experiment: String,
    /// Where the values come from, e.g. "run <id> on <CPU>" or a paper with its setup.
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    #[serde(default)]
    pub expect: Vec<Expectation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub sae: SaeKey,
    pub metric: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_tol: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_tol: Option<f64>,
    /// Shown but never failed (e.g. a published value whose setup differs from the spec).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub informational: bool,
    /// Overrides the file's source for this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Expectation {
    /// The allowed |observed − value|.
    pub fn tolerance(&self) -> f64 {
        self.abs_tol
            .unwrap_or(0.0)
            .max(self.rel_tol.unwrap_or(0.0) * self.value.abs())
    }
}

/// `experiments/x.toml` → `experiments/x.reference.toml`.
pub fn path_for_spec(spec: &Path) -> PathBuf {
    let stem = spec.file_stem().and_then(|s| s.to_str()).unwrap_or("spec");
    spec.with_file_name(format!("{stem}.reference.toml"))
}

pub fn load(path: &Path) -> Result<Reference> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read reference", e))?;
    toml::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", path.display())))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Informational,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub sae: SaeKey,
    pub metric: String,
    pub expected: f64,
    pub tolerance: f64,
    pub observed: Option<f64>,
    pub verdict: Verdict,
    pub source: String,
}

/// Every expectation against the run's metrics. A missing SAE or metric fails.
pub fn check(reference: &Reference, rows: &[MetricRow]) -> Vec<Check> {
    reference
        .expect
        .iter()
        .map(|e| {
            let observed = rows
                .iter()
                .find(|r| r.key.same(&e.sae))
                .and_then(|r| r.values.get(&e.metric).copied());
            let tolerance = e.tolerance();
            let within = observed.is_some_and(|o| (o - e.value).abs() <= tolerance);
            Check {
                sae: e.sae.clone(),
                metric: e.metric.clone(),
                expected: e.value,
                tolerance,
                observed,
                verdict: match (e.informational, within) {
                    (true, _) => Verdict::Informational,
                    (false, true) => Verdict::Pass,
                    (false, false) => Verdict::Fail,
                },
                source: e.source.clone().unwrap_or_else(|| reference.source.clone()),
            }
        })
        .collect()
}

/// The tolerance rule of `promote` (README, "References"): what a value may move by on
/// another machine. Thread counts change nothing here (measured: bit-identical metrics with
/// RAYON_NUM_THREADS=1 and 2); another CPU's GEMM kernels sum in another order, and
/// training amplifies those last-bit differences, so:
/// - quantities in [0, 1] that measure quality: ± 0.02 absolute;
/// - counts of latents or features: ± max(2, 5%);
/// - scale-dependent losses and L0: ± 5% relative;
/// - structure (ratio, next size): exact.
pub fn tolerance_rule(metric: &str, value: f64) -> (Option<f64>, Option<f64>) {
    match metric {
        "fve" | "mmcs_truth" | "ce_recovered" | "fraction_above" | "mean_matched_cos" => {
            (Some(0.02), None)
        }
        "dead" | "dense" | "truth_recovered" | "features_above" => {
            (Some((0.05 * value.abs()).max(2.0)), None)
        }
        "ratio" | "next_d_sae" => (Some(0.0), None),
        _ => (None, Some(0.05)),
    }
}

pub const RULE_TEXT: &str = "promote: [0,1] quality metrics (fve, mmcs_truth, ce_recovered, fraction_above, mean_matched_cos) +/- 0.02; counts (dead, dense, truth_recovered, features_above) +/- max(2, 5%); ratio and next_d_sae exact; everything else +/- 5% relative";

/// A reference holding every metric of every SAE of `run`.
pub fn promote(run: &FoundRun, cpu: &str) -> Result<Reference> {
    let rows = read_metrics(&run.dir)?;
    let mut expect = Vec::new();
    for r in &rows {
        for (metric, &value) in &r.values {
            if !value.is_finite() {
                continue;
            }
            let (abs_tol, rel_tol) = tolerance_rule(metric, value);
            expect.push(Expectation {
                sae: r.key.clone(),
                metric: metric.clone(),
                value,
                abs_tol,
                rel_tol,
                informational: false,
                source: None,
            });
        }
    }
    let rec = &run.record;
    Ok(Reference {
        experiment: rec.experiment.clone(),
        source: format!(
            "run {} of {} on {cpu}, saerun {} ({})",
            rec.run_id, rec.spec_file, rec.saerun_version, rec.git_commit
        ),
        rule: RULE_TEXT.to_string(),
        expect,
    })
}

/// The reference as TOML, one compact `[[expect]]` block per value (the SAE as an inline
/// table), for review in a diff.
pub fn to_toml(r: &Reference) -> Result<String> {
    let enc = |v: toml::Value| v.to_string();
    let mut out = format!(
        "experiment = {}\nsource = {}\nrule = {}\n",
        enc(r.experiment.clone().into()),
        enc(r.source.clone().into()),
        enc(r.rule.clone().into())
    );
    for e in &r.expect {
        out.push_str(&format!(
            "\n[[expect]]\nsae = {}\nmetric = {}\nvalue = {}\n",
            enc(toml::Value::try_from(&e.sae)
                .map_err(|err| Error::run(format!("cannot encode reference: {err}")))?),
            enc(e.metric.clone().into()),
            enc(e.value.into())
        ));
        if let Some(t) = e.abs_tol {
            out.push_str(&format!("abs_tol = {}\n", enc(t.into())));
        }
        if let Some(t) = e.rel_tol {
            out.push_str(&format!("rel_tol = {}\n", enc(t.into())));
        }
        if e.informational {
            out.push_str("informational = true\n");
        }
        if let Some(s) = &e.source {
            out.push_str(&format!("source = {}\n", enc(s.clone().into())));
        }
    }
    Ok(out)
}

/// `model name` and the vector-ISA flags of this machine, for sources.
pub fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let flags: Vec<&str> = ["avx2", "avx512f", "amx_bf16"]
        .into_iter()
        .filter(|f| info.split_whitespace().any(|w| w == *f))
        .collect();
    format!("{model} ({})", flags.join(", "))
}
