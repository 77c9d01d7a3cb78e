//! Naming runs: a run directory, a run id, `EXPERIMENT@latest` or `EXPERIMENT@~N` (N runs
//! before the latest), resolved against the results directory.

use crate::record::{RunRecord, RUN_FILE};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

pub struct FoundRun {
    pub dir: PathBuf,
    pub record: RunRecord,
}

fn read(dir: &Path) -> Result<FoundRun> {
    let file = dir.join(RUN_FILE);
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, "cannot read run record", e))?;
    let record = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(format!("{}: not a run record: {e}", file.display())))?;
    Ok(FoundRun {
        dir: dir.to_path_buf(),
        record,
    })
}

/// Every finished run of `experiment` (or of all experiments), oldest first.
pub fn list(results_dir: &Path, experiment: Option<&str>) -> Result<Vec<FoundRun>> {
    Ok(RunRecord::find_all(results_dir)?
        .into_iter()
        .filter(|(_, r)| experiment.is_none_or(|e| e == r.experiment))
        .map(|(dir, record)| FoundRun { dir, record })
        .collect())
}

/// Resolve a run reference.
pub fn resolve(results_dir: &Path, name: &str) -> Result<FoundRun> {
    let as_dir = Path::new(name);
    if as_dir.join(RUN_FILE).is_file() {
        return read(as_dir);
    }
    if let Some((experiment, which)) = name.split_once('@') {
        let runs = list(results_dir, Some(experiment))?;
        let back = match which {
            "latest" => 0,
            w => w
                .strip_prefix('~')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::input(format!(
                        "run `{name}`: expected EXPERIMENT@latest or EXPERIMENT@~N"
                    ))
                })?,
        };
        return runs.into_iter().rev().nth(back).ok_or_else(|| {
            Error::input(format!(
                "run `{name}`: experiment `{experiment}` has {} under {}",
                if back == 0 {
                    "no runs".to_string()
                } else {
                    format!("fewer than {} runs", back + 1)
                },
                results_dir.display()
            ))
        });
    }
    list(results_dir, None)?
        .into_iter()
        .find(|r| r.record.run_id == name)
        .ok_or_else(|| {
            Error::input(format!(
                "run `{name}`: not a run directory, run id, EXPERIMENT@latest or EXPERIMENT@~N under {}",
                results_dir.display()
            ))
        })
}
