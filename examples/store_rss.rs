//! Peak resident memory of the activation store on a store larger than the memory budget.
//!
//! Writes a store of random f32 rows of dim 512 (default 2 GiB) into a temp directory,
//! then reads it back twice: shuffled training batches through the `BatchSource`
//! (default: 300 batches of 4096 rows, more than one epoch) and one sequential pass with
//! `read_rows` (the evaluation path). Prints the peak (`VmHWM`) and current (`VmRSS`)
//! resident set after each phase; the last peak is the whole run's, as `time -v` reports.
//!
//!   cargo run --release --example store_rss -- [GIB] [BATCHES] [f32|f16]
//!   /usr/bin/time -v target/release/examples/store_rss 2 300

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use saerun::sae::train::BatchSource;
use saerun::store::{Store, StoreDtype, StoreWriter};
use std::sync::Arc;
use std::time::Instant;

const DIM: usize = 512;
const ROWS_PER_SHARD: usize = 65_536; // 128 MiB f32 shards
const BATCH: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gib: f64 = args.first().map(|s| s.parse()).transpose()?.unwrap_or(2.0);
    let batches: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(300);
    let dtype = match args.get(2).map(String::as_str) {
        None | Some("f32") => StoreDtype::F32,
        Some("f16") => StoreDtype::F16,
        Some(other) => return Err(format!("dtype must be f32 or f16, not {other}").into()),
    };
    let rows = (gib * (1u64 << 30) as f64 / (DIM * 4) as f64) as usize;
    let dir = tempfile::tempdir()?;
    println!(
        "store: {rows} rows × {DIM} ({dtype:?}) = {:.2} GB on disk in {}",
        (rows * DIM * dtype.size()) as f64 / 1e9,
        dir.path().display()
    );

    let t = Instant::now();
    let mut w = StoreWriter::create(dir.path(), DIM, dtype, ROWS_PER_SHARD)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut chunk = vec![0f32; 4096 * DIM];
    let mut left = rows;
    while left > 0 {
        let n = left.min(4096);
        chunk[..n * DIM]
            .iter_mut()
            .for_each(|v| *v = rng.random::<f32>() * 2.0 - 1.0);
        w.push(&chunk[..n * DIM])?;
        left -= n;
    }
    let stats = w.finish()?;
    println!(
        "write: {:.1} s, mean_norm {:.3}; {}",
        t.elapsed().as_secs_f64(),
        stats.mean_norm,
        memory()
    );
    drop(chunk);

    let store = Arc::new(Store::open(dir.path())?);
    let mut out = vec![0f32; BATCH * DIM];
    // The sequential pass first, so that the peak after it bounds that phase alone.
    let t = Instant::now();
    let mut start = 0u64;
    while start < store.len() {
        let n = (store.len() - start).min(BATCH as u64) as usize;
        store.read_rows(start, n, &mut out[..n * DIM])?;
        start += n as u64;
    }
    println!(
        "sequential read_rows over the whole store: {:.1} s; {}",
        t.elapsed().as_secs_f64(),
        memory()
    );

    let t = Instant::now();
    let mut src = store.shuffled(1);
    let mut checksum = 0f64;
    for _ in 0..batches {
        src.next_batch(&mut out)?;
        checksum += out[0] as f64;
    }
    println!(
        "shuffled: {batches} batches of {BATCH} ({:.2} epochs, window {} rows = {} MiB) in \
         {:.1} s, checksum {checksum:.3}; {}",
        (batches * BATCH) as f64 / rows as f64,
        src.window_rows(),
        (src.window_rows() * DIM * 4) >> 20,
        t.elapsed().as_secs_f64(),
        memory()
    );
    Ok(())
}

fn proc_status(key: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    Some(line.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Peak resident set so far and the current one (Linux `/proc/self/status`).
fn memory() -> String {
    let get = |k| proc_status(k).unwrap_or_else(|| format!("{k} unavailable"));
    format!("peak {}, now {}", get("VmHWM"), get("VmRSS"))
}
