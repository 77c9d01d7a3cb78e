//! Shuffled, endless training batches from a store with bounded memory.
//!
//! Per epoch: the store's rows, cut into blocks of `block_rows` consecutive rows (never
//! crossing a shard), are put in a seeded random order; consecutive blocks of that order
//! fill a window of at most `window_bytes` of f32 rows; the window's rows are visited in a
//! seeded random permutation; then the next window is filled. Every row is visited exactly
//! once per epoch, and epochs repeat with fresh permutations.
//!
//! Compared with permuting whole shards (HoagyC's chunked datasets) the blocks are smaller
//! than a shard, so one window mixes rows from many places of the store (and of the
//! harvested corpus), like SAELens' mixing buffer, while every read is still a contiguous
//! run of `block_rows` rows. With `block_rows` ≥ the shard size it is exactly "a window
//! of W shards". Memory: the window buffer plus 16 bytes per block; the mapped pages are
//! released as soon as they are copied into the window (see `reader`).

use super::reader::Store;
use crate::sae::checkpoint::RngPosition;
use crate::sae::train::BatchSource;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Keeps the batch order independent of other users of the same seed (the SAE's
/// initialisation is seeded with the training seed too).
const SEED_SALT: u64 = 0x5707_e5f1_u64;

/// Sizes of the shuffling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleConfig {
    /// Upper bound of the window buffer in bytes (rows are held as f32). At least one block
    /// is always held.
    pub window_bytes: usize,
    /// Rows per block, the unit of the per-epoch permutation (clamped to the window).
    pub block_rows: usize,
}

impl Default for ShuffleConfig {
    /// A 256 MiB window (131 072 rows of dim 512) drawn from blocks of 4096 rows (8 MiB at
    /// dim 512 f32, large enough for sequential disk reads).
    fn default() -> Self {
        ShuffleConfig {
            window_bytes: 256 << 20,
            block_rows: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Block {
    shard: u32,
    first: u64,
    rows: u32,
}

/// Endless shuffled batches over a store; deterministic for a seed. Owns an `Arc<Store>`
/// so it can be handed to the trainer as `&mut dyn BatchSource` without lifetimes.
pub struct ShuffledBatches {
    store: Arc<Store>,
    rng: ChaCha8Rng,
    /// All blocks; permuted in place at the start of every epoch.
    blocks: Vec<Block>,
    /// Next block of the current epoch's order; `blocks.len()` once the epoch is used up.
    next_block: usize,
    /// The current window's rows (row-major f32) and their visiting order.
    window: Vec<f32>,
    order: Vec<u32>,
    cursor: usize,
    /// The first block of the current window (`next_block` is one past its last).
    window_start: usize,
    window_rows: usize,
    epoch: u64,
}

/// `ShuffledBatches`' position: the blocks in this epoch's order (by shard and first row),
/// which of them the window holds, the visiting order in it, and the generator.
#[derive(Serialize, Deserialize)]
struct Position {
    blocks: Vec<(u32, u64)>,
    window_start: usize,
    next_block: usize,
    order: Vec<u32>,
    cursor: usize,
    epoch: u64,
    rng: RngPosition,
}

impl ShuffledBatches {
    pub fn new(store: Arc<Store>, seed: u64) -> Self {
        Self::with_config(store, seed, ShuffleConfig::default())
    }

    pub fn with_config(store: Arc<Store>, seed: u64, config: ShuffleConfig) -> Self {
        let dim = store.dim();
        // Never allocate more window than the store has rows.
        let window_rows = (config.window_bytes / (dim * 4))
            .min(usize::try_from(store.len()).unwrap_or(usize::MAX))
            .min(u32::MAX as usize)
            .max(1);
        let block_rows = config.block_rows.clamp(1, window_rows) as u64;
        let mut blocks = Vec::new();
        for shard in 0..store.n_shards() {
            let rows = store.shard_rows(shard);
            let mut first = 0;
            while first < rows {
                let n = block_rows.min(rows - first);
                blocks.push(Block {
                    shard: shard as u32,
                    first,
                    rows: n as u32,
                });
                first += n;
            }
        }
        let next_block = blocks.len();
        ShuffledBatches {
            store,
            rng: ChaCha8Rng::seed_from_u64(seed ^ SEED_SALT),
            blocks,
            next_block,
            window: Vec::new(),
            order: Vec::new(),
            cursor: 0,
            window_start: next_block,
            window_rows,
            epoch: 0,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Epochs started so far (1 during the first pass over the store).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Rows the window holds at most (its buffer is `window_rows × dim` f32).
    pub fn window_rows(&self) -> usize {
        self.window_rows
    }

    /// Load the next window: the following blocks of this epoch's order (starting a new
    /// epoch with a fresh block order when the current one is used up).
    fn fill_window(&mut self) {
        if self.next_block == self.blocks.len() {
            self.blocks.shuffle(&mut self.rng);
            self.next_block = 0;
            self.epoch += 1;
        }
        let mut rows = 0usize;
        let mut end = self.next_block;
        while end < self.blocks.len() && rows + self.blocks[end].rows as usize <= self.window_rows {
            rows += self.blocks[end].rows as usize;
            end += 1;
        }
        self.window_start = self.next_block;
        self.next_block = end;
        self.load_window();
        self.order.clear();
        self.order.extend(0..rows as u32);
        self.order.shuffle(&mut self.rng);
        self.cursor = 0;
    }

    /// Copy the rows of blocks `window_start..next_block` into the window buffer.
    fn load_window(&mut self) {
        let dim = self.store.dim();
        let blocks = &self.blocks[self.window_start..self.next_block];
        let rows: usize = blocks.iter().map(|b| b.rows as usize).sum();
        // Windows differ in size (a shard's last block is short), so a later window may be
        // larger than the first. Growing the buffer then would double its capacity and copy
        // it, holding the old and the new window at once (measured: +256 MB for a moment in
        // every training from a large store). Allocate the largest window once instead; the
        // old buffer is dropped before any of the new one is written.
        if self.window.capacity() < rows * dim {
            self.window = Vec::with_capacity(self.window_rows.max(rows) * dim);
        }
        self.window.resize(rows * dim, 0.0);
        let mut offset = 0;
        for b in blocks {
            let n = b.rows as usize;
            let out = &mut self.window[offset * dim..(offset + n) * dim];
            self.store
                .copy_from_shard(b.shard as usize, b.first, n, out);
            offset += n;
        }
    }
}

impl BatchSource for ShuffledBatches {
    fn dim(&self) -> usize {
        self.store.dim()
    }

    /// The stored mean (computed by the writer over all rows).
    fn mean(&self) -> Vec<f32> {
        self.store.stats().mean.clone()
    }

    fn next_batch(&mut self, out: &mut [f32]) -> Result<()> {
        let dim = self.store.dim();
        if !out.len().is_multiple_of(dim) {
            return Err(Error::run(format!(
                "activation store: batch buffer of {} values is not a multiple of dim {dim}",
                out.len()
            )));
        }
        if self.store.is_empty() {
            return Err(Error::run(format!(
                "activation store {} is empty: no training batches",
                self.store.dir().display()
            )));
        }
        for row in out.chunks_exact_mut(dim) {
            if self.cursor == self.order.len() {
                self.fill_window();
            }
            let i = self.order[self.cursor] as usize;
            self.cursor += 1;
            row.copy_from_slice(&self.window[i * dim..(i + 1) * dim]);
        }
        Ok(())
    }

    fn position(&self) -> serde_json::Value {
        serde_json::json!(Position {
            blocks: self.blocks.iter().map(|b| (b.shard, b.first)).collect(),
            window_start: self.window_start,
            next_block: self.next_block,
            order: self.order.clone(),
            cursor: self.cursor,
            epoch: self.epoch,
            rng: RngPosition::of(&self.rng),
        })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<()> {
        let bad = |why: &str| Error::run(format!("checkpoint: batch position {why}"));
        let p: Position =
            serde_json::from_value(position.clone()).map_err(|e| bad(&e.to_string()))?;
        // The same store gives the same blocks; look each one up by where it starts.
        let by_start: std::collections::HashMap<(u32, u64), Block> = self
            .blocks
            .iter()
            .map(|b| ((b.shard, b.first), *b))
            .collect();
        let blocks = p
            .blocks
            .iter()
            .map(|k| by_start.get(k).copied())
            .collect::<Option<Vec<Block>>>()
            .filter(|b| b.len() == self.blocks.len())
            .ok_or_else(|| bad("names blocks this store does not have"))?;
        if !(p.window_start <= p.next_block && p.next_block <= blocks.len())
            || p.cursor > p.order.len()
        {
            return Err(bad("is out of range"));
        }
        self.blocks = blocks;
        self.window_start = p.window_start;
        self.next_block = p.next_block;
        self.load_window();
        if p.order.len() * self.store.dim() != self.window.len() {
            return Err(bad("does not fit its window"));
        }
        self.order = p.order;
        self.cursor = p.cursor;
        self.epoch = p.epoch;
        self.rng = p.rng.rng()?;
        Ok(())
    }
}

impl Store {
    /// Shuffled batches with the default window (see [`ShuffleConfig`]).
    pub fn shuffled(self: &Arc<Self>, seed: u64) -> ShuffledBatches {
        ShuffledBatches::new(Arc::clone(self), seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreDtype, StoreWriter};

    /// Windows differ in size when a shard ends in a short block; the buffer must still be
    /// allocated once at the largest window, never grown by doubling (which copied the whole
    /// window and reserved twice its size in the middle of a training).
    #[test]
    fn window_buffer_never_exceeds_the_window() {
        const DIM: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        // 1000 rows in shards of 128: the last shard's last block has 8 rows, not 16.
        let mut w = StoreWriter::create(dir.path(), DIM, StoreDtype::F32, 128).unwrap();
        let data: Vec<f32> = (0..1000 * DIM).map(|i| i as f32).collect();
        w.push(&data).unwrap();
        w.finish().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let config = ShuffleConfig {
            window_bytes: 100 * DIM * 4,
            block_rows: 16,
        };
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..8 {
            let mut src = ShuffledBatches::with_config(store.clone(), seed, config);
            let mut out = vec![0f32; 32 * DIM];
            for _ in 0..200 {
                src.next_batch(&mut out).unwrap();
                sizes.insert(src.order.len());
                assert!(
                    src.window.capacity() <= src.window_rows * DIM,
                    "seed {seed}: window buffer of {} values for windows of at most {} rows",
                    src.window.capacity(),
                    src.window_rows
                );
            }
        }
        // The case that used to grow the buffer: windows of different sizes.
        assert!(sizes.len() > 1, "all windows had {sizes:?} rows");
    }
}
