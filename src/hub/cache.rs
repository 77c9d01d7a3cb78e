//! Read-side of the standard Hugging Face hub cache, shared with Python's huggingface_hub:
//!
//! ```text
//! <cache_dir>/models--ORG--NAME/            (datasets--ORG--NAME for datasets)
//!     blobs/<etag>                          file contents
//!     snapshots/<commit>/<path>             relative symlinks into blobs/
//!     refs/<revision>                       text file holding the commit of a branch/tag
//! ```
//!
//! A branch/tag revision is looked up through `refs/<revision>`; a 40-hex commit names
//! its snapshot directory directly (Python writes no `refs/<sha>`).

use std::path::{Path, PathBuf};

use super::source::is_commit_hash;
use crate::{Error, Result};

/// Model or dataset repository; they live in separate namespaces on the hub and in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// Folder prefix in the cache, and path segment of the `/api/...` routes.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// One repository inside the cache root.
#[derive(Debug, Clone)]
pub struct CachedRepo {
    dir: PathBuf,
}

impl CachedRepo {
    pub fn new(cache_dir: &Path, kind: RepoKind, repo: &str) -> Self {
        let folder = format!("{}--{}", kind.plural(), repo.replace('/', "--"));
        CachedRepo {
            dir: cache_dir.join(folder),
        }
    }

    /// `<cache_dir>/models--ORG--NAME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<cache_dir>/.locks/models--ORG--NAME/saerun-download.lock`: held by a saerun process
    /// while it downloads into this repository, beside the per-blob locks Python's
    /// huggingface_hub keeps under `.locks/`.
    pub fn download_lock_path(&self) -> PathBuf {
        let folder = self.dir.file_name().unwrap_or_default();
        let root = self.dir.parent().unwrap_or(Path::new("."));
        root.join(".locks")
            .join(folder)
            .join("saerun-download.lock")
    }

    pub fn ref_path(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// The commit a revision points to according to the cache, if the cache knows it.
    pub fn commit_for(&self, revision: &str) -> Option<String> {
        if let Ok(text) = std::fs::read_to_string(self.ref_path(revision)) {
            let commit = text.trim();
            // A corrupt ref must not turn into a path outside snapshots/.
            if !commit.is_empty() && !commit.contains(['/', '\\']) && commit != ".." {
                return Some(commit.to_string());
            }
        }
        if is_commit_hash(revision) && self.snapshot_dir(revision).is_dir() {
            return Some(revision.to_string());
        }
        None
    }

    /// The cached file of a snapshot, if present and its symlink is not dangling.
    pub fn file(&self, commit: &str, filename: &str) -> Option<PathBuf> {
        let path = self.snapshot_dir(commit).join(filename);
        // `is_file` follows the symlink, so a link whose blob was deleted counts as missing.
        path.is_file().then_some(path)
    }

    /// Every file of a snapshot, as `/`-separated paths relative to the snapshot, sorted.
    pub fn snapshot_files(&self, commit: &str) -> Vec<String> {
        let root = self.snapshot_dir(commit);
        let mut out = Vec::new();
        walk_files(&root, &root, &mut out);
        out.sort();
        out
    }

    /// Removes a dangling snapshot symlink (its blob was deleted) before the file is
    /// downloaded again.
    pub fn remove_dangling(&self, commit: &str, filename: &str) {
        let path = self.snapshot_dir(commit).join(filename);
        if path.symlink_metadata().is_ok() && !path.exists() {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Points `refs/<revision>` at `commit`, atomically (temp file + rename) so a
    /// concurrent reader never sees a half-written ref.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision);
        let parent = path
            .parent()
            .ok_or_else(|| Error::run(format!("bad ref path {}", path.display())))?;
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating", e))?;
        // Unique per writer, not only per process: two threads of one process (or one
        // process resolving the same model twice at once) must not share a temp file.
        let tmp = parent.join(format!(
            ".{}.tmp-{}-{:08x}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("ref"),
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&tmp, commit).map_err(|e| Error::io(&tmp, "writing", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "writing", e))
    }
}

fn walk_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // `metadata` follows symlinks: snapshot entries are links to blobs.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // dangling link
        };
        if meta.is_dir() {
            walk_files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(rel.join("/"));
        }
    }
}
