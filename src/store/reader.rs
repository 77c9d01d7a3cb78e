//! Opening a store read-only: `store.json` is validated, every shard's size is checked
//! against it, and shards are memory-mapped.
//!
//! Memory: pages of a mapping that have been touched count towards the process's resident
//! set until they are unmapped or the kernel is pressed for memory. Reading a 100 GB store
//! through long-lived mappings would therefore show a resident set of 100 GB (reclaimable,
//! but it is what schedulers and `time -v` see). Every read path here copies the rows out
//! and then drops the pages it touched from this process's mapping (`MADV_DONTNEED`), so
//! residency stays bounded by the caller's buffers; the data stays in the page cache.

use super::{
    decode_into, ShardMeta, StoreDtype, StoreMeta, StoreStats, FORMAT, FORMAT_VERSION, STORE_JSON,
};
use crate::{Error, Result};
use memmap2::{Mmap, UncheckedAdvice};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

struct Shard {
    meta: ShardMeta,
    map: Mmap,
    /// Global index of the shard's first row.
    first_row: u64,
}

/// A complete store, opened read-only.
pub struct Store {
    dir: PathBuf,
    dim: usize,
    dtype: StoreDtype,
    stats: StoreStats,
    shards: Vec<Shard>,
    len: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .field("dtype", &self.dtype)
            .field("len", &self.len)
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Store {
    /// Open the store in `dir`. A missing or unreadable `store.json` (an unfinished
    /// store), metadata that does not add up, or a shard whose size disagrees with it is an
    /// `Error::Run` naming the file.
    pub fn open(dir: &Path) -> Result<Self> {
        let json_path = dir.join(STORE_JSON);
        let bytes = match fs::read(&json_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::run(format!(
                    "activation store {} is incomplete: it has no {STORE_JSON} (the writer did \
                     not finish); recompute it",
                    dir.display()
                )))
            }
            Err(e) => return Err(Error::io(&json_path, "cannot read", e)),
        };
        let corrupt = |what: String| {
            Error::run(format!(
                "activation store {}: corrupt {}: {what}",
                dir.display(),
                json_path.display()
            ))
        };
        let meta: StoreMeta =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{e}")))?;
        if meta.format != FORMAT || meta.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format {:?} version {}, expected {FORMAT:?} version {FORMAT_VERSION}",
                meta.format, meta.version
            )));
        }
        if meta.dim == 0 {
            return Err(corrupt("dim is 0".into()));
        }
        if meta.stats.mean.len() != meta.dim {
            return Err(corrupt(format!(
                "stats.mean has {} entries, dim is {}",
                meta.stats.mean.len(),
                meta.dim
            )));
        }
        let row_bytes = (meta.dim * meta.dtype.size()) as u64;
        let mut shards = Vec::with_capacity(meta.shards.len());
        let mut len = 0u64;
        for s in meta.shards {
            // A file name from the metadata must not reach outside the store directory.
            let plain = Path::new(&s.file).file_name().map(|n| n == s.file.as_str());
            if plain != Some(true) || s.rows == 0 {
                return Err(corrupt(format!(
                    "bad shard entry {:?} with {} rows",
                    s.file, s.rows
                )));
            }
            let path = dir.join(&s.file);
            let file = File::open(&path).map_err(|e| {
                Error::run(format!(
                    "activation store {}: cannot open shard {}: {e}",
                    dir.display(),
                    path.display()
                ))
            })?;
            let size = file
                .metadata()
                .map_err(|e| Error::io(&path, "cannot stat", e))?
                .len();
            let expected = s.rows.checked_mul(row_bytes);
            if expected != Some(size) {
                return Err(Error::run(format!(
                    "activation store {}: shard {} has {size} bytes, expected {} ({} rows × {} \
                     bytes); the store is truncated or corrupt",
                    dir.display(),
                    path.display(),
                    s.rows as u128 * row_bytes as u128,
                    s.rows,
                    row_bytes
                )));
            }
            // SAFETY: the mapping is read-only and shard files are immutable once published
            // (written under a temp name, renamed into place, never modified afterwards);
            // the size was checked just above. Truncating a published shard while a store
            // is open is outside the contract and could fault, as with any mmap reader.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, "cannot map", e))?;
            let first_row = len;
            len += s.rows;
            shards.push(Shard {
                meta: s,
                map,
                first_row,
            });
        }
        if len != meta.stats.count {
            return Err(corrupt(format!(
                "shards hold {len} rows, stats.count is {}",
                meta.stats.count
            )));
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            dim: meta.dim,
            dtype: meta.dtype,
            stats: meta.stats,
            shards,
            len,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn dtype(&self) -> StoreDtype {
        self.dtype
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// Rows in shard `i`.
    pub fn shard_rows(&self, i: usize) -> u64 {
        self.shards[i].meta.rows
    }

    /// Copy rows `start..start + count` into `out` (`count × dim` values), across shard
    /// boundaries, converting f16 to f32.
    pub fn read_rows(&self, start: u64, count: usize, out: &mut [f32]) -> Result<()> {
        let end = start.checked_add(count as u64).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(Error::run(format!(
                "activation store {}: rows {start}..{start}+{count} out of range (store has {} rows)",
                self.dir.display(),
                self.len
            )));
        }
        if out.len() != count * self.dim {
            return Err(Error::run(format!(
                "activation store: output buffer holds {} values, {count} rows of dim {} need {}",
                out.len(),
                self.dim,
                count * self.dim
            )));
        }
        let mut row = start;
        let mut out = out;
        while !out.is_empty() {
            // The shard holding `row`: the last one starting at or before it.
            let i = self.shards.partition_point(|s| s.first_row <= row) - 1;
            let shard = &self.shards[i];
            let in_shard = row - shard.first_row;
            let n = ((shard.meta.rows - in_shard) as usize).min(out.len() / self.dim);
            let (head, rest) = out.split_at_mut(n * self.dim);
            self.copy_from_shard(i, in_shard, n, head);
            out = rest;
            row += n as u64;
        }
        Ok(())
    }

    /// Copy `n` rows starting at row `first` of shard `i` (all in range) into `out`, then
    /// release the pages read.
    pub(crate) fn copy_from_shard(&self, i: usize, first: u64, n: usize, out: &mut [f32]) {
        let row_bytes = self.dim * self.dtype.size();
        let offset = first as usize * row_bytes;
        let len = n * row_bytes;
        let map = &self.shards[i].map;
        decode_into(self.dtype, &map[offset..offset + len], out);
        release(map, offset, len);
    }

    /// Recompute every shard's blake3 and compare it with `store.json` (reads the whole
    /// store; `open` only checks sizes so that opening stays cheap).
    pub fn verify(&self) -> Result<()> {
        const PIECE: usize = 16 << 20;
        for s in &self.shards {
            let mut hasher = blake3::Hasher::new();
            for start in (0..s.map.len()).step_by(PIECE) {
                let end = (start + PIECE).min(s.map.len());
                hasher.update(&s.map[start..end]);
                release(&s.map, start, end - start);
            }
            let got = hasher.finalize().to_hex().to_string();
            if got != s.meta.blake3 {
                return Err(Error::run(format!(
                    "activation store {}: shard {} has blake3 {got}, {STORE_JSON} records {}",
                    self.dir.display(),
                    s.meta.file,
                    s.meta.blake3
                )));
            }
        }
        Ok(())
    }
}

/// Drop the pages of `map[offset..offset + len]` from this process's resident set.
fn release(map: &Mmap, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: MADV_DONTNEED on a read-only, file-backed shared mapping only unmaps the
    // pages from this process; later accesses fault them in again from the file (page
    // cache) with identical contents, so no reader can observe a change. (The advice is
    // "unchecked" in memmap2 because on private or anonymous mappings it discards data.)
    // A failure only means the pages stay resident, so it is ignored.
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len) };
}
