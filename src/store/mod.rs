//! The on-disk activation store: rows of `dim` floats (one per harvested token position),
//! written once by the harvest stage and read many times by SAE training.
//!
//! Layout of a store directory:
//!
//!   shard-000000.bin   raw little-endian rows (f32 or f16), `rows × dim` values
//!   shard-000001.bin   ...
//!   store.json         dim, dtype, shard list (rows, blake3), statistics: written last
//!
//! Every file is written to a temp name and renamed into place, and `store.json` is
//! written only after all shards are complete, so a directory without `store.json` is an
//! unfinished store and [`Store::open`] rejects it. Shards are memory-mapped for reading;
//! pages are released once read (see [`reader`]) so resident memory stays bounded by what
//! a reader is using, not by the store's size.
//!
//! Shuffled training batches ([`ShuffledBatches`]) follow the chunked-dataset / mixing
//! buffer designs of HoagyC's `sparse_coding` and SAELens: per epoch a seeded permutation
//! of fixed-size blocks, a window of blocks copied into a buffer of bounded size, and the
//! window's rows visited in a seeded permutation.

pub(crate) mod atomic;
pub mod reader;
pub mod shuffle;
pub mod stats;
pub mod writer;

pub use reader::Store;
pub use shuffle::{ShuffleConfig, ShuffledBatches};
pub use stats::StoreStats;
pub use writer::StoreWriter;

use serde::{Deserialize, Serialize};

/// File name of the store's metadata; its presence marks a complete store.
pub const STORE_JSON: &str = "store.json";
/// Value of `format` in `store.json`, so an unrelated JSON file is not taken for a store.
const FORMAT: &str = "saerun-activation-store";
/// Layout version of `store.json` and the shard files.
const FORMAT_VERSION: u32 = 1;

/// How values are stored on disk. Readers always return f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreDtype {
    F32,
    F16,
}

impl StoreDtype {
    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            StoreDtype::F32 => 4,
            StoreDtype::F16 => 2,
        }
    }
}

/// One shard as recorded in `store.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardMeta {
    /// File name inside the store directory (no path components).
    pub file: String,
    pub rows: u64,
    /// blake3 of the file's bytes, hex.
    pub blake3: String,
}

/// Contents of `store.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreMeta {
    pub format: String,
    pub version: u32,
    pub dim: usize,
    pub dtype: StoreDtype,
    pub rows_per_shard: u64,
    pub shards: Vec<ShardMeta>,
    pub stats: StoreStats,
}

/// Converts stored little-endian bytes (whole rows) to f32.
fn decode_into(dtype: StoreDtype, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), out.len() * dtype.size());
    match dtype {
        StoreDtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        StoreDtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
}
