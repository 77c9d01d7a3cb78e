//! Run records: `results/<experiment>/<run-id>/` holds the resolved spec, `run.json` (every
//! stage's key, whether it was reused or computed, its wall time, saerun version and git
//! commit), the Parquet tables, the plots and an HTML report. A run directory is built
//! under a hidden name and renamed into place when complete; run ids are unique, so earlier
//! runs are never overwritten.

use crate::cache::{Outcome, StageKey};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

pub const RUN_FILE: &str = "run.json";
/// Run directories under construction: `.partial-<run-id>.<pid>`.
const PARTIAL_PREFIX: &str = ".partial-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    pub label: String,
    pub key: StageKey,
    pub outcome: Outcome,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub experiment: String,
    pub run_id: String,
    pub spec_file: String,
    pub started_at: String,
    pub finished_at: String,
    pub saerun_version: String,
    pub git_commit: String,
    pub cache_dir: String,
    /// `run.device` (`cpu`, `cuda:N`); records from before the GPU build are CPU runs.
    #[serde(default = "cpu")]
    pub device: String,
    /// External inputs (text data and models), by content hash and, for hub sources, the
    /// commit they resolved to: `hf:ORG/NAME@main` moves, the record should not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRecord>,
    pub stages: Vec<StageRecord>,
}

fn cpu() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceRecord {
    /// `model`, `tokenizer` or `data`.
    pub role: String,
    pub source: String,
    pub content_blake3: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_commit: Option<String>,
}

impl RunRecord {
    pub fn computed(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| s.outcome == Outcome::Computed)
            .count()
    }

    /// Every finished run record below `results_dir` (`<experiment>/<run-id>/run.json`), with
    /// its directory, oldest first (run ids start with a UTC timestamp; the finish time breaks
    /// ties within a second).
    pub fn find_all(results_dir: &Path) -> Result<Vec<(PathBuf, RunRecord)>> {
        let mut out = Vec::new();
        let Ok(experiments) = fs::read_dir(results_dir) else {
            return Ok(out);
        };
        for exp in experiments.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Ok(runs) = fs::read_dir(&exp) else {
                continue;
            };
            for run in runs.filter_map(|e| e.ok()).map(|e| e.path()) {
                // A run directory under construction may hold a half-written record; it is
                // not a run yet (its process still holds shared locks on what it uses).
                let name = run.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with(PARTIAL_PREFIX) {
                    continue;
                }
                let file = run.join(RUN_FILE);
                if let Ok(bytes) = fs::read(&file) {
                    let rec = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::run(format!("unreadable run record {}: {e}", file.display()))
                    })?;
                    out.push((run, rec));
                }
            }
        }
        let order = |r: &RunRecord| {
            (
                r.run_id.get(..15).unwrap_or("").to_string(),
                r.finished_at.clone(),
            )
        };
        out.sort_by_key(|(_, r)| order(r));
        Ok(out)
    }
}

/// A run directory under construction.
pub struct RunDir {
    pub run_id: String,
    tmp: PathBuf,
    dest: PathBuf,
}

impl RunDir {
    pub fn create(results_dir: &Path, experiment: &str) -> Result<RunDir> {
        let exp_dir = results_dir.join(experiment);
        fs::create_dir_all(&exp_dir).map_err(|e| Error::io(&exp_dir, "cannot create", e))?;
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        // A random suffix keeps ids unique when runs start in the same second (two runs of
        // one spec at once); the existence check and `create_dir` cover the rest.
        loop {
            let suffix: u16 = rand::random();
            let run_id = format!("{stamp}-{suffix:04x}");
            let dest = exp_dir.join(&run_id);
            let tmp = exp_dir.join(format!("{PARTIAL_PREFIX}{run_id}.{}", std::process::id()));
            if dest.exists() {
                continue;
            }
            match fs::create_dir(&tmp) {
                Ok(()) => return Ok(RunDir { run_id, tmp, dest }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&tmp, "cannot create", e)),
            }
        }
    }

    /// Where files are written until `finish`.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Publish the run directory; returns its final path.
    pub fn finish(self) -> Result<PathBuf> {
        crate::cache::store::sync_dir(&self.tmp)?;
        fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::io(&self.dest, "cannot publish run directory", e))?;
        Ok(self.dest.clone())
    }

    /// Run directories left behind by processes that died before finishing them (the pid in
    /// the name is no longer running). Only decidable where /proc exists; elsewhere none.
    pub fn stale_partials(results_dir: &Path) -> Vec<PathBuf> {
        if !Path::new("/proc/self").exists() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let Ok(experiments) = fs::read_dir(results_dir) else {
            return out;
        };
        for exp in experiments.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Ok(runs) = fs::read_dir(&exp) else {
                continue;
            };
            for run in runs.filter_map(|e| e.ok()).map(|e| e.path()) {
                let name = run.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let pid = name
                    .strip_prefix(PARTIAL_PREFIX)
                    .and_then(|rest| rest.rsplit('.').next())
                    .and_then(|pid| pid.parse::<u32>().ok());
                if let Some(pid) = pid {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        out.push(run);
                    }
                }
            }
        }
        out
    }

    /// Remove a run that failed before finishing.
    pub fn abandon(self) {
        let _ = fs::remove_dir_all(&self.tmp);
    }
}
