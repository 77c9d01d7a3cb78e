//! Run records: `results/<experiment>/<run-id>/` holds the resolved spec, `run.json` (every
//! stage's key, whether it was reused or computed, its wall time, saerun version and git
//! commit), the Parquet tables, the plots and an HTML report. A run directory is built
//! under a hidden name and renamed into place when complete; run ids are unique, so earlier
//! runs are never overwritten.
//!
//! A run directory under construction is `.partial-<run-id>.<host>.<pid>` and holds a
//! `.writer.lock` that its process keeps locked until it publishes or dies: whether the
//! run is still alive is decided by that lock on any host that shares the directory (as
//! the stage cache's locks are), and by host + pid where the lock file is missing.

use crate::cache::{Outcome, StageKey};
use crate::process_tag::ProcessTag;
use crate::{file_lock, Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

pub const RUN_FILE: &str = "run.json";
/// Run directories under construction: `.partial-<run-id>.<host>.<pid>` (before hosts were
/// recorded: `.partial-<run-id>.<pid>`).
const PARTIAL_PREFIX: &str = ".partial-";
/// Inside a partial run directory: locked by the process writing it.
const WRITER_LOCK: &str = ".writer.lock";

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
    /// The locked `.writer.lock`; the lock lasts until this is dropped or the process dies.
    _writer: fs::File,
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
            let tmp = exp_dir.join(format!(
                "{PARTIAL_PREFIX}{run_id}.{}",
                ProcessTag::current().name()
            ));
            if dest.exists() {
                continue;
            }
            match fs::create_dir(&tmp) {
                Ok(()) => {
                    let _writer = lock_writer(&tmp)?;
                    return Ok(RunDir {
                        run_id,
                        tmp,
                        dest,
                        _writer,
                    });
                }
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
        // The lock stays held (the file is open) until `self` is dropped; without the file,
        // a looker on this host judges the directory by host and pid, which say alive.
        let lock = self.tmp.join(WRITER_LOCK);
        fs::remove_file(&lock).map_err(|e| Error::io(&lock, "cannot remove", e))?;
        crate::cache::store::sync_dir(&self.tmp)?;
        fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::io(&self.dest, "cannot publish run directory", e))?;
        Ok(self.dest.clone())
    }

    /// Run directories left behind by processes that died before finishing them: their
    /// `.writer.lock` can be locked (its holder is gone, on whichever host it ran), or,
    /// without one, their host is this one and the pid in the name no longer runs. Another
    /// host's directory without a lock file is never judged stale.
    pub fn stale_partials(results_dir: &Path) -> Vec<PathBuf> {
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
                let Some(writer) = name.strip_prefix(PARTIAL_PREFIX).map(partial_writer) else {
                    continue;
                };
                let lock = run.join(WRITER_LOCK);
                let dead = if lock.is_file() {
                    file_lock::open(&lock).is_ok_and(|f| f.try_lock().is_ok())
                } else {
                    writer.and_then(|w| w.is_running()) == Some(false)
                };
                if dead {
                    out.push(run);
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

/// Create `<dir>/.writer.lock` already locked: locked under a temporary name, then renamed,
/// so that nobody ever sees the lock file unlocked while its writer lives.
fn lock_writer(dir: &Path) -> Result<fs::File> {
    let tmp = dir.join(format!("{WRITER_LOCK}.tmp"));
    let file = file_lock::open(&tmp).map_err(|e| Error::io(&tmp, "cannot create", e))?;
    file.try_lock()
        .map_err(|e| Error::run(format!("cannot lock {}: {e}", tmp.display())))?;
    let lock = dir.join(WRITER_LOCK);
    fs::rename(&tmp, &lock).map_err(|e| Error::io(&lock, "cannot create", e))?;
    Ok(file)
}

/// The writer named by a partial directory's name after `.partial-`: `<run-id>.<host>.<pid>`,
/// or `<run-id>.<pid>` (written before hosts were recorded: taken as this host's).
fn partial_writer(rest: &str) -> Option<ProcessTag> {
    let parts: Vec<&str> = rest.split('.').collect();
    let (host, pid) = match parts.as_slice() {
        [_, pid] => (ProcessTag::current().host, pid),
        [_, host, pid] => (host.to_string(), pid),
        _ => return None,
    };
    Some(ProcessTag {
        host,
        pid: pid.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_carry_host_and_pid() {
        let me = ProcessTag::current();
        let t = partial_writer(&format!("20990101-000000-abcd.{}", me.name())).unwrap();
        assert_eq!(t, me);
        let old = partial_writer("20990101-000000.4194305").unwrap();
        assert_eq!((old.host, old.pid), (me.host.clone(), 4_194_305));
        assert_eq!(
            partial_writer("20990101-000000-abcd.otherhost.12")
                .unwrap()
                .host,
            "otherhost"
        );
        assert!(partial_writer("junk").is_none());
    }

    /// A live run is never stale; once its writer is gone (lock released), it is, whatever
    /// the host in its name says. Another host's directory without a lock file is kept.
    #[test]
    fn stale_partials_follow_the_writer_lock() {
        let results = tempfile::tempdir().unwrap();
        let run = RunDir::create(results.path(), "exp").unwrap();
        assert!(RunDir::stale_partials(results.path()).is_empty());
        let elsewhere = results
            .path()
            .join("exp/.partial-20990101-000000-abcd.some-other-host.1");
        fs::create_dir_all(&elsewhere).unwrap();
        assert!(RunDir::stale_partials(results.path()).is_empty());
        // The writer (as if on another host) died: its lock file is there, unlocked.
        file_lock::open(&elsewhere.join(WRITER_LOCK)).unwrap();
        assert_eq!(
            RunDir::stale_partials(results.path()),
            vec![elsewhere.clone()]
        );
        drop(run);
        assert_eq!(RunDir::stale_partials(results.path()).len(), 2);
    }
}
