//! Checking a cache entry against its manifest, so that a corrupted artifact (a flipped
//! byte, a truncated file, a deleted file) is never served. Two depths:
//! - cheap, on every reuse: every file exists with its recorded size, and files up to
//!   `SMALL_FILE` (JSON, tables, small weights) are hashed in full;
//! - full, before an entry is loaded as a computing stage's input, and in `cache verify`:
//!   every file is hashed (blake3 over a memory map, multi-threaded for large files).
//!
//! A corrupt entry is moved aside (`Cache::quarantine`) and recomputed.

use super::store::Entry;
use std::fs;

/// Files up to this size are hashed on every reuse: cheap next to reading them.
pub const SMALL_FILE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Cheap,
    Full,
}

/// What is wrong with the entry's files; empty if nothing.
pub fn problems(entry: &Entry, depth: Depth) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in &entry.manifest.files {
        let path = entry.dir.join(name);
        let Ok(meta) = fs::metadata(&path) else {
            out.push(format!("{name} is missing"));
            continue;
        };
        if let Some(&size) = entry.manifest.sizes.get(name) {
            if meta.len() != size {
                out.push(format!(
                    "{name} has {} bytes, the manifest {size}",
                    meta.len()
                ));
                continue;
            }
        }
        if depth == Depth::Cheap && meta.len() > SMALL_FILE {
            continue;
        }
        let mut h = blake3::Hasher::new();
        let hashed = if meta.len() > SMALL_FILE {
            h.update_mmap_rayon(&path).map(|_| ())
        } else {
            h.update_mmap(&path).map(|_| ())
        };
        match hashed {
            Ok(()) if h.finalize().to_hex().as_str() == want => {}
            Ok(()) => out.push(format!("{name} does not match its blake3 in the manifest")),
            Err(e) => out.push(format!("{name} cannot be read: {e}")),
        }
    }
    out
}
