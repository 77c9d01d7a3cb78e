//! Garbage collection. Roots are the stage keys that recorded runs reference (every
//! `run.json` under the results directory); everything else, plus leftovers of killed
//! computations in `tmp/` and run directories of runs that died, is garbage. Keys whose lock is held by a running process are
//! skipped. Like `dvc gc`, nothing is deleted without an explicit `--yes`.

use super::store::{tmp_dir_key, Cache, Entry};
use super::StageKey;
use crate::record::{RunDir, RunRecord};
use crate::Result;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub struct GcPlan {
    pub keep: Vec<Entry>,
    pub remove: Vec<Entry>,
    pub stale_tmp: Vec<PathBuf>,
    /// Run directories of runs that died before finishing.
    pub stale_runs: Vec<PathBuf>,
    /// Entries moved aside as corrupt.
    pub corrupt: Vec<PathBuf>,
    pub runs_scanned: usize,
}

impl GcPlan {
    pub fn bytes_to_free(&self) -> u64 {
        self.remove.iter().map(|e| e.size_bytes()).sum()
    }
}

/// What gc would do, given the results directory whose runs are the roots. Entries younger
/// than `min_age` are kept even if unreferenced: a running run records its stages only when
/// it finishes, and between publishing an entry and taking its shared lock there is a brief
/// window in which only this age protects it.
pub fn plan(cache: &Cache, results_dir: &Path, min_age: std::time::Duration) -> Result<GcPlan> {
    let runs = RunRecord::find_all(results_dir)?;
    let roots: BTreeSet<StageKey> = runs
        .iter()
        .flat_map(|(_, r)| r.stages.iter().map(|s| s.key))
        .collect();
    let now = chrono::Utc::now();
    let young = |e: &Entry| {
        chrono::DateTime::parse_from_rfc3339(&e.manifest.created_at)
            .ok()
            .and_then(|t| (now - t.with_timezone(&chrono::Utc)).to_std().ok())
            .is_none_or(|age| age < min_age)
    };
    let (keep, remove) = cache
        .entries()?
        .into_iter()
        .partition(|e| roots.contains(&e.manifest.key) || young(e));
    let stale_tmp = cache
        .tmp_dirs()
        .into_iter()
        .filter(|d| match tmp_dir_key(d) {
            // Not locked ⇒ its writer is gone.
            Some(key) => cache.try_lock(&key).is_some(),
            None => true,
        })
        .collect();
    Ok(GcPlan {
        keep,
        remove,
        stale_tmp,
        stale_runs: RunDir::stale_partials(results_dir),
        corrupt: cache.corrupt_dirs(),
        runs_scanned: runs.len(),
    })
}

/// Delete what `plan` found, skipping keys another process is computing right now.
pub fn execute(cache: &Cache, plan: &GcPlan) -> Result<usize> {
    let mut removed = 0;
    for entry in &plan.remove {
        if let Some(_lock) = cache.try_lock(&entry.manifest.key) {
            cache.remove(entry)?;
            removed += 1;
        }
    }
    for dir in &plan.stale_tmp {
        // Re-check under the lock: a run may have started computing this key since `plan`.
        let lock = tmp_dir_key(dir).map(|k| cache.try_lock(&k));
        if !matches!(lock, Some(None)) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    for dir in plan.stale_runs.iter().chain(&plan.corrupt) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::stage_key;
    use crate::cache::store::StageRequest;

    /// An entry a running process is using (it holds the entry's shared lock) is not
    /// deleted; once released, it is.
    #[test]
    fn entries_in_use_are_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let params = 7u32;
        let key = stage_key("demo", 1, &params, &[]).unwrap();
        let req = StageRequest {
            stage: "demo",
            version: 1,
            key,
            params: &params,
            inputs: &[],
        };
        let (entry, _) = cache
            .get_or_compute(
                &req,
                |out| {
                    std::fs::write(out.join("x"), b"1")
                        .map_err(|e| crate::Error::io(out, "write", e))
                },
                || {},
            )
            .unwrap();

        let results = dir.path().join("results");
        let p = plan(&cache, &results, std::time::Duration::ZERO).unwrap();
        assert_eq!(p.remove.len(), 1);
        assert_eq!(execute(&cache, &p).unwrap(), 0, "deleted an entry in use");
        assert!(entry.dir.is_dir());
        drop(entry);
        assert_eq!(execute(&cache, &p).unwrap(), 1);
        assert!(cache.entries().unwrap().is_empty());
    }
}
