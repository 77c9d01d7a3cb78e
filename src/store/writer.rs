//! Writing a store: rows are streamed into the current shard's temp file (memory stays at
//! one I/O buffer, not one shard), each full shard is fsynced and renamed into place, and
//! `store.json` is written last.

use super::atomic::{self, create_new, is_tmp_name, publish, sync_dir, tmp_name};
use super::stats::StatsAccumulator;
use super::{ShardMeta, StoreDtype, StoreMeta, StoreStats, FORMAT, FORMAT_VERSION, STORE_JSON};
use crate::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// I/O buffer of the shard being written.
const WRITE_BUFFER: usize = 4 << 20;

/// The shard currently being filled: a temp file, hashed as it is written.
struct OpenShard {
    file: BufWriter<File>,
    tmp: PathBuf,
    name: String,
    hasher: blake3::Hasher,
    rows: u64,
}

/// Streams rows into a new store directory. Call [`StoreWriter::finish`] to complete the
/// store; a writer dropped without it (or after an error) removes its temp file and leaves
/// no `store.json`, so the partial store is never taken for a complete one.
pub struct StoreWriter {
    dir: PathBuf,
    dim: usize,
    dtype: StoreDtype,
    rows_per_shard: u64,
    shards: Vec<ShardMeta>,
    open: Option<OpenShard>,
    stats: StatsAccumulator,
    /// Reused encoding buffer and decoded copy of one row (for f16, the stats are taken
    /// over the rounded values that readers will see).
    bytes: Vec<u8>,
    stored_row: Vec<f32>,
    total_rows: u64,
}

impl StoreWriter {
    /// Start a store in `dir` (created if missing). `dir` must not already hold a finished
    /// store; temp files of an earlier killed writer are removed.
    pub fn create(
        dir: &Path,
        dim: usize,
        dtype: StoreDtype,
        rows_per_shard: usize,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(Error::run("activation store: dim must be at least 1"));
        }
        if rows_per_shard == 0 {
            return Err(Error::run(
                "activation store: rows_per_shard must be at least 1",
            ));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create store directory", e))?;
        if dir.join(STORE_JSON).exists() {
            return Err(Error::run(format!(
                "activation store {} is already complete (has {STORE_JSON}); refusing to overwrite it",
                dir.display()
            )));
        }
        // One writer per directory: any temp file here is a leftover of a killed writer.
        let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list", e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(is_tmp_name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(StoreWriter {
            dir: dir.to_path_buf(),
            dim,
            dtype,
            rows_per_shard: rows_per_shard as u64,
            shards: Vec::new(),
            open: None,
            stats: StatsAccumulator::new(dim),
            bytes: Vec::with_capacity(dim * dtype.size()),
            stored_row: vec![0.0; dim],
            total_rows: 0,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows written so far.
    pub fn len(&self) -> u64 {
        self.total_rows
    }

    pub fn is_empty(&self) -> bool {
        self.total_rows == 0
    }

    /// Append rows (`rows.len()` a multiple of `dim`, row-major). Full shards are
    /// published as they fill. Non-finite values are rejected: one NaN would silently
    /// poison the stored mean and every SAE trained on the store.
    pub fn push(&mut self, rows: &[f32]) -> Result<()> {
        if !rows.len().is_multiple_of(self.dim) {
            return Err(Error::run(format!(
                "activation store: pushed {} values, not a multiple of dim {}",
                rows.len(),
                self.dim
            )));
        }
        for row in rows.chunks_exact(self.dim) {
            self.encode_row(row)?;
            if self.open.is_none() {
                self.open = Some(self.open_shard()?);
            }
            let shard = self.open.as_mut().expect("opened above");
            shard
                .file
                .write_all(&self.bytes)
                .map_err(|e| Error::io(&shard.tmp, "cannot write", e))?;
            shard.hasher.update(&self.bytes);
            shard.rows += 1;
            self.stats.add(&self.stored_row);
            self.total_rows += 1;
            if shard.rows == self.rows_per_shard {
                self.close_shard()?;
            }
        }
        Ok(())
    }

    /// Publish the last shard and `store.json`; returns the store's statistics.
    pub fn finish(mut self) -> Result<StoreStats> {
        if self.open.is_some() {
            self.close_shard()?;
        }
        // The shard renames must be durable before store.json can vouch for them.
        sync_dir(&self.dir)?;
        let stats = self.stats.finish();
        let meta = StoreMeta {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            dim: self.dim,
            dtype: self.dtype,
            rows_per_shard: self.rows_per_shard,
            shards: std::mem::take(&mut self.shards),
            stats: stats.clone(),
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::run(format!("cannot encode {STORE_JSON}: {e}")))?;
        atomic::write_file(&self.dir, STORE_JSON, &json)?;
        Ok(stats)
    }

    /// Encode one row into `self.bytes` and its stored (possibly rounded) values into
    /// `self.stored_row`, rejecting values the dtype cannot hold.
    fn encode_row(&mut self, row: &[f32]) -> Result<()> {
        self.bytes.clear();
        for (i, (&v, s)) in row.iter().zip(self.stored_row.iter_mut()).enumerate() {
            if !v.is_finite() {
                return Err(Error::run(format!(
                    "activation store: non-finite value {v} at row {}, dimension {i}",
                    self.total_rows
                )));
            }
            match self.dtype {
                StoreDtype::F32 => {
                    self.bytes.extend_from_slice(&v.to_le_bytes());
                    *s = v;
                }
                StoreDtype::F16 => {
                    let h = half::f16::from_f32(v);
                    if !h.is_finite() {
                        return Err(Error::input(format!(
                            "activation store: value {v} at row {}, dimension {i} overflows f16 \
                             (max {}); store these activations as f32",
                            self.total_rows,
                            half::f16::MAX
                        )));
                    }
                    self.bytes.extend_from_slice(&h.to_le_bytes());
                    *s = h.to_f32();
                }
            }
        }
        Ok(())
    }

    fn open_shard(&self) -> Result<OpenShard> {
        let name = format!("shard-{:06}.bin", self.shards.len());
        let tmp = tmp_name(&self.dir, &name);
        let file = create_new(&tmp)?;
        Ok(OpenShard {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            tmp,
            name,
            hasher: blake3::Hasher::new(),
            rows: 0,
        })
    }

    fn close_shard(&mut self) -> Result<()> {
        let Some(shard) = self.open.take() else {
            return Ok(());
        };
        let tmp = shard.tmp.clone();
        let result = shard
            .file
            .into_inner()
            .map_err(|e| Error::io(&tmp, "cannot write", e.into_error()))
            .and_then(|file| publish(file, &tmp, &self.dir.join(&shard.name)));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.shards.push(ShardMeta {
            file: shard.name,
            rows: shard.rows,
            blake3: shard.hasher.finalize().to_hex().to_string(),
        });
        Ok(())
    }
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .field("dtype", &self.dtype)
            .field("rows", &self.total_rows)
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Drop for StoreWriter {
    /// An abandoned writer removes its temp file; finished shards stay, but without
    /// `store.json` the directory is an incomplete store that `Store::open` rejects.
    fn drop(&mut self) {
        if let Some(shard) = self.open.take() {
            drop(shard.file);
            let _ = fs::remove_file(&shard.tmp);
        }
    }
}
