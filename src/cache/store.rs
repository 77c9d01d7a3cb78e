//! The on-disk store. Layout under the cache directory:
//!
//!   v1/entries/<stage>/<key>/   one complete stage output + `manifest.json`
//!   v1/tmp/<key>.<host>.<pid>.<n>/  outputs being built (never read; the host keeps
//!                               names apart on a cache shared across machines)
//!   v1/tmp/<key>.checkpoint/    state a long computation of <key> can resume from
//!   v1/locks/<key>.lock         per-key lock files
//!
//! An entry is built in `tmp/`, its files are hashed into the manifest, everything is
//! fsynced, and the directory is renamed into `entries/` in one step. So an entry either
//! exists complete or not at all: a run killed mid-stage leaves only a `tmp/` directory,
//! which is ignored and removed by the next computation of that key or by `cache gc`.
//! The checkpoint area is the exception the next computation keeps (to resume from); it
//! is removed once the key's entry is published, or by `cache gc`. Like the rest of `tmp/`
//! it is only written under the key's exclusive lock.
//! A per-key lock makes a second concurrent run wait for the first and then reuse its
//! result instead of computing the stage twice.

use super::key::{canonical_value, StageKey};
use super::verify::{self, Depth};
use crate::process_tag::ProcessTag;
use crate::{file_lock, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const LAYOUT: &str = "v1";
const CHECKPOINT_SUFFIX: &str = ".checkpoint";
pub const MANIFEST: &str = "manifest.json";

pub struct Cache {
    root: PathBuf,
}

#[derive(Clone, Copy)]
enum LockKind {
    Shared,
    Exclusive,
}

/// What a stage needs to be looked up or computed.
pub struct StageRequest<'a, P: Serialize> {
    pub stage: &'a str,
    pub version: u32,
    pub key: StageKey,
    pub params: &'a P,
    pub inputs: &'a [StageKey],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryManifest {
    pub stage: String,
    pub version: u32,
    pub key: StageKey,
    /// Canonical parameters, as hashed into the key.
    pub params: serde_json::Value,
    pub inputs: Vec<StageKey>,
    /// File name → blake3 of its contents.
    pub files: BTreeMap<String, String>,
    /// File name → size in bytes (absent in entries written before sizes were recorded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sizes: BTreeMap<String, u64>,
    pub compute_seconds: f64,
    pub created_at: String,
    pub saerun_version: String,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub manifest: EntryManifest,
    /// A shared lock on the entry's key, held while a run uses it, so that `cache gc` (which
    /// needs the exclusive lock to delete) never removes an entry under a running reader.
    reader: Option<Arc<File>>,
}

impl Entry {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Total size of the entry's files in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.manifest
            .files
            .keys()
            .chain(std::iter::once(&MANIFEST.to_string()))
            .filter_map(|f| fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Reused,
    Computed,
}

impl Cache {
    pub fn open(dir: &Path) -> Result<Cache> {
        let root = dir.join(LAYOUT);
        for sub in ["entries", "tmp", "locks", "corrupt"] {
            let p = root.join(sub);
            fs::create_dir_all(&p)
                .map_err(|e| Error::io(&p, "cannot create cache directory", e))?;
        }
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entry_dir(&self, stage: &str, key: &StageKey) -> PathBuf {
        self.root.join("entries").join(stage).join(key.hex())
    }

    fn lock_path(&self, key: &StageKey) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", key.hex()))
    }

    pub fn lookup(&self, stage: &str, key: &StageKey) -> Result<Option<Entry>> {
        read_entry(&self.entry_dir(stage, key))
    }

    /// Return the entry for `req`, computing it with `compute(tmp_dir)` if it is missing.
    /// `compute` writes its output files into the directory it is given. If another process
    /// holds the key's lock, calls `on_wait` and waits for it.
    pub fn get_or_compute<P: Serialize>(
        &self,
        req: &StageRequest<P>,
        compute: impl FnOnce(&Path) -> Result<()>,
        on_wait: impl FnOnce(),
    ) -> Result<(Entry, Outcome)> {
        self.obtain(req, compute, Some(on_wait))?.ok_or_else(|| {
            Error::run("internal: a blocking cache lookup returned without an entry")
        })
    }

    /// Like `get_or_compute`, but never waits for another process: `None` when another one
    /// holds the key's lock (computing it, or gc), so the caller can do other work first.
    /// Once this call has computed the entry it does wait, briefly, to take it up.
    pub fn try_get_or_compute<P: Serialize>(
        &self,
        req: &StageRequest<P>,
        compute: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Option<(Entry, Outcome)>> {
        self.obtain(req, compute, None::<fn()>)
    }

    /// `on_wait`: `Some` to wait for a busy key (told once), `None` to return `None` instead.
    fn obtain<P: Serialize>(
        &self,
        req: &StageRequest<P>,
        compute: impl FnOnce(&Path) -> Result<()>,
        on_wait: Option<impl FnOnce()>,
    ) -> Result<Option<(Entry, Outcome)>> {
        let blocking = on_wait.is_some();
        let mut on_wait = on_wait;
        let mut compute = Some(compute);
        let mut outcome = Outcome::Reused;
        loop {
            // Shared lock first, then look: gc deletes only under the exclusive lock.
            let wait = blocking || outcome == Outcome::Computed;
            let Some(shared) = self.lock_key(&req.key, LockKind::Shared, wait, &mut on_wait)?
            else {
                return Ok(None);
            };
            if let Some(mut e) = self.lookup(req.stage, &req.key)? {
                if verify::problems(&e, Depth::Cheap).is_empty() {
                    e.reader = Some(Arc::new(shared));
                    return Ok(Some((e, outcome)));
                }
                // Corrupt: repaired below under the exclusive lock.
            }
            drop(shared);
            let Some(compute) = compute.take() else {
                // Computed, then deleted before we could re-lock it (a concurrent gc).
                return Err(Error::run(format!(
                    "cache entry {} {} vanished right after it was computed",
                    req.stage,
                    req.key.short()
                )));
            };
            let Some(exclusive) =
                self.lock_key(&req.key, LockKind::Exclusive, blocking, &mut on_wait)?
            else {
                return Ok(None);
            };
            // Another process may have finished (or repaired) this key while we waited.
            if let Some(e) = self.lookup(req.stage, &req.key)? {
                let problems = verify::problems(&e, Depth::Cheap);
                if !problems.is_empty() {
                    self.quarantine(&e, &problems)?;
                }
            }
            if self.lookup(req.stage, &req.key)?.is_none() {
                self.compute_entry(req, compute)?;
                outcome = Outcome::Computed;
            }
            // Released here; the next iteration takes the shared lock and returns the entry.
            drop(exclusive);
        }
    }

    /// The key's lock of `kind`; if another process holds it: with `wait`, tell `on_wait`
    /// (once) and block until it is ours; without, `None`.
    fn lock_key(
        &self,
        key: &StageKey,
        kind: LockKind,
        wait: bool,
        on_wait: &mut Option<impl FnOnce()>,
    ) -> Result<Option<File>> {
        let path = self.lock_path(key);
        let file = self.open_lock(key)?;
        let tried = match kind {
            LockKind::Shared => file.try_lock_shared(),
            LockKind::Exclusive => file.try_lock(),
        };
        match tried {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) if !wait => return Ok(None),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, "cannot lock", e)),
        }
        if let Some(f) = on_wait.take() {
            f();
        }
        match kind {
            LockKind::Shared => file.lock_shared(),
            LockKind::Exclusive => file.lock(),
        }
        .map_err(|e| Error::io(&path, "cannot lock", e))?;
        Ok(Some(file))
    }

    /// Build, hash and publish an entry; called with the key's exclusive lock held.
    fn compute_entry<P: Serialize>(
        &self,
        req: &StageRequest<P>,
        compute: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        self.remove_stale_tmp(&req.key);
        let tmp = self.new_tmp_dir(&req.key)?;
        let started = Instant::now();
        let result = compute(&tmp).and_then(|()| {
            let (files, sizes) = hash_files(&tmp)?;
            let manifest = EntryManifest {
                stage: req.stage.to_string(),
                version: req.version,
                key: req.key,
                // The value itself, not its text parsed back: serde_json's default float
                // parser can land one ulp off, and the manifest must record what was hashed.
                params: canonical_value(req.params)?,
                inputs: req.inputs.to_vec(),
                files,
                sizes,
                compute_seconds: started.elapsed().as_secs_f64(),
                created_at: chrono::Utc::now().to_rfc3339(),
                saerun_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            self.publish(&tmp, &manifest)
        });
        match result {
            Ok(_) => {
                let _ = fs::remove_dir_all(self.checkpoint_dir(&req.key));
            }
            Err(_) => {
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        result.map(|_| ())
    }

    fn publish(&self, tmp: &Path, manifest: &EntryManifest) -> Result<Entry> {
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::run(format!("cannot encode manifest: {e}")))?;
        write_synced(&tmp.join(MANIFEST), &json)?;
        sync_dir(tmp)?;
        let dest = self.entry_dir(&manifest.stage, &manifest.key);
        let parent = dest.parent().expect("entry dir has a parent");
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, "cannot create", e))?;
        fs::rename(tmp, &dest).map_err(|e| Error::io(&dest, "cannot publish cache entry", e))?;
        sync_dir(parent)?;
        Ok(Entry {
            dir: dest,
            manifest: manifest.clone(),
            reader: None,
        })
    }

    /// Exclusive per-key lock, held until the returned file is dropped (or the process
    /// dies: the OS releases it, so a killed run never blocks the next one).
    fn open_lock(&self, key: &StageKey) -> Result<File> {
        let path = self.lock_path(key);
        file_lock::open(&path).map_err(|e| Error::io(&path, "cannot open lock file", e))
    }

    fn lock(&self, key: &StageKey, on_wait: impl FnOnce()) -> Result<File> {
        let path = self.lock_path(key);
        let file = self.open_lock(key)?;
        file_lock::lock_or_wait(&file, on_wait).map_err(|e| Error::io(&path, "cannot lock", e))?;
        Ok(file)
    }

    /// Try to take a key's lock without waiting (used by gc to skip busy keys).
    pub fn try_lock(&self, key: &StageKey) -> Option<File> {
        let file = self.open_lock(key).ok()?;
        file.try_lock().ok().map(|()| file)
    }

    fn new_tmp_dir(&self, key: &StageKey) -> Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join("tmp").join(format!(
            "{}.{}.{n}",
            key.hex(),
            ProcessTag::current().name()
        ));
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "cannot create", e))?;
        Ok(dir)
    }

    /// Where a computation of `key` may keep checkpoints (not created here). The stage
    /// decides what goes in; the cache only keeps it across kills and removes it.
    pub fn checkpoint_dir(&self, key: &StageKey) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}{CHECKPOINT_SUFFIX}", key.hex()))
    }

    /// Leftovers of a killed computation of `key` (we hold its lock, so nobody else is
    /// writing them), except its checkpoints.
    fn remove_stale_tmp(&self, key: &StageKey) {
        let keep = self.checkpoint_dir(key);
        for dir in self.tmp_dirs() {
            if tmp_dir_key(&dir) == Some(*key) && dir != keep {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }

    pub fn tmp_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(self.root.join("tmp"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Every complete entry, sorted by stage then key.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let root = self.root.join("entries");
        for stage in read_dir_sorted(&root)? {
            for dir in read_dir_sorted(&stage)? {
                if let Some(e) = read_entry(&dir)? {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// If the entry fails a full check, move it aside (under its exclusive lock, re-checked
    /// there) so the next lookup finds it missing; returns whether it was corrupt.
    pub fn repair_if_corrupt(&self, entry: &Entry) -> Result<bool> {
        if verify::problems(entry, Depth::Full).is_empty() {
            return Ok(false);
        }
        let _lock = self.lock(&entry.manifest.key, || {})?;
        match self.lookup(&entry.manifest.stage, &entry.manifest.key)? {
            Some(e) => {
                let problems = verify::problems(&e, Depth::Full);
                if problems.is_empty() {
                    return Ok(false);
                }
                self.quarantine(&e, &problems)?;
                Ok(true)
            }
            None => Ok(true),
        }
    }

    /// Move a corrupt entry to `corrupt/` (kept for inspection, removed by `cache gc`) and
    /// say so; the caller holds the key's exclusive lock.
    fn quarantine(&self, entry: &Entry, problems: &[String]) -> Result<()> {
        // The same key can go corrupt twice in one second: a random suffix keeps names apart.
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        let dest = self.root.join("corrupt").join(format!(
            "{}.{}.{stamp}-{:08x}",
            entry.manifest.stage,
            entry.manifest.key.hex(),
            rand::random::<u32>()
        ));
        fs::rename(&entry.dir, &dest).map_err(|e| Error::io(&entry.dir, "cannot move aside", e))?;
        tracing::warn!(
            "cache entry {} {} is corrupt ({}); moved to {} and recomputing it",
            entry.manifest.stage,
            entry.manifest.key.short(),
            problems.join("; "),
            dest.display()
        );
        Ok(())
    }

    /// Entries moved aside as corrupt.
    pub fn corrupt_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(self.root.join("corrupt"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Delete an entry: renamed into tmp first so readers never see a half-deleted one.
    pub fn remove(&self, entry: &Entry) -> Result<()> {
        let doomed = self.new_tmp_dir(&entry.manifest.key)?;
        fs::remove_dir(&doomed).map_err(|e| Error::io(&doomed, "cannot prepare removal", e))?;
        fs::rename(&entry.dir, &doomed).map_err(|e| Error::io(&entry.dir, "cannot remove", e))?;
        fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, "cannot remove", e))
    }
}

pub fn tmp_dir_key(dir: &Path) -> Option<StageKey> {
    let name = dir.file_name()?.to_str()?;
    StageKey::from_hex(name.split('.').next()?)
}

fn read_entry(dir: &Path) -> Result<Option<Entry>> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, "cannot read", e)),
    };
    let manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::run(format!("corrupt cache manifest {}: {e}", path.display())))?;
    Ok(Some(Entry {
        dir: dir.to_path_buf(),
        manifest,
        reader: None,
    }))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, "cannot list", e)),
    };
    out.sort();
    Ok(out)
}

/// blake3 of every regular file under `dir`, keyed by its path relative to `dir` (with
/// `/` separators); files are fsynced on the way.
/// Every file below `dir` (relative name) with its blake3 and its size.
type FileFacts = (BTreeMap<String, String>, BTreeMap<String, u64>);

fn hash_files(dir: &Path) -> Result<FileFacts> {
    let mut out = (BTreeMap::new(), BTreeMap::new());
    hash_tree(dir, "", &mut out)?;
    Ok(out)
}

fn hash_tree(dir: &Path, prefix: &str, out: &mut FileFacts) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::run(format!("non-UTF-8 file name in {}", dir.display())))?;
        let rel = format!("{prefix}{name}");
        if path.is_dir() {
            hash_tree(&path, &format!("{rel}/"), out)?;
            sync_dir(&path)?;
            continue;
        }
        if !path.is_file() {
            return Err(Error::run(format!(
                "stage output {} is not a plain file",
                path.display()
            )));
        }
        let mut h = blake3::Hasher::new();
        h.update_mmap(&path)
            .map_err(|e| Error::io(&path, "cannot hash", e))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&path, "cannot sync", e))?;
        let len = fs::metadata(&path)
            .map_err(|e| Error::io(&path, "cannot stat", e))?
            .len();
        out.1.insert(rel.clone(), len);
        out.0.insert(rel, h.finalize().to_hex().to_string());
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| Error::io(path, "cannot create", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, "cannot write", e))
}

/// fsync a directory so a rename into it is durable, not only atomic.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, "cannot sync directory", e))
}
