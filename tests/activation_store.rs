//! The on-disk activation store: round trips, statistics, sequential reads, shuffled
//! batches (coverage, determinism, mixing) and rejection of incomplete or corrupt stores.

use saerun::sae::train::BatchSource;
use saerun::store::{ShuffleConfig, ShuffledBatches, Store, StoreDtype, StoreWriter};
use saerun::Error;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

const DIM: usize = 8;
const ROWS: usize = 1000;
const PER_SHARD: usize = 128;

/// Deterministic test rows: column 0 is the row's index (so a row can be identified after
/// shuffling), the rest are varied values of both signs.
fn rows(n: usize, dim: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * dim);
    for i in 0..n {
        v.push(i as f32);
        for j in 1..dim {
            let x = ((i * 31 + j * 17) % 97) as f32 / 13.0 - 3.5;
            v.push(x * (1.0 + j as f32 * 0.25));
        }
    }
    v
}

/// Write `data` in uneven pieces (so pushes straddle shard boundaries).
fn write_store(dir: &Path, data: &[f32], dtype: StoreDtype) -> saerun::store::StoreStats {
    let mut w = StoreWriter::create(dir, DIM, dtype, PER_SHARD).unwrap();
    let mut rest = data;
    let mut piece = 1;
    while !rest.is_empty() {
        let n = (piece * DIM).min(rest.len());
        w.push(&rest[..n]).unwrap();
        rest = &rest[n..];
        piece = piece % 50 + 7;
    }
    w.finish().unwrap()
}

fn small_store(dir: &Path) -> Arc<Store> {
    write_store(dir, &rows(ROWS, DIM), StoreDtype::F32);
    Arc::new(Store::open(dir).unwrap())
}

/// Windows of 100 rows drawn from blocks of 16 rows: several windows per epoch.
fn small_window() -> ShuffleConfig {
    ShuffleConfig {
        window_bytes: 100 * DIM * 4,
        block_rows: 16,
    }
}

/// Row ids of the next `n` rows of `src`, read in batches of `batch` rows.
fn take_ids(src: &mut dyn BatchSource, n: usize, batch: usize) -> Vec<usize> {
    assert_eq!(n % batch, 0);
    let mut out = vec![0f32; batch * DIM];
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n / batch {
        src.next_batch(&mut out).unwrap();
        ids.extend(out.chunks(DIM).map(|r| r[0] as usize));
    }
    ids
}

fn run_error(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Run(msg)) => msg,
        other => panic!("expected Error::Run, got {other:?}"),
    }
}

#[test]
fn f32_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(ROWS, DIM);
    write_store(dir.path(), &data, StoreDtype::F32);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.len(), ROWS as u64);
    assert_eq!(store.dim(), DIM);
    assert_eq!(store.dtype(), StoreDtype::F32);
    assert_eq!(store.n_shards(), ROWS.div_ceil(PER_SHARD));
    assert_eq!(
        store.shard_rows(store.n_shards() - 1),
        (ROWS % PER_SHARD) as u64
    );
    let mut back = vec![0f32; ROWS * DIM];
    store.read_rows(0, ROWS, &mut back).unwrap();
    assert_eq!(back, data);
    store.verify().unwrap();
}

#[test]
fn f16_round_trip_within_f16_precision() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(ROWS, DIM);
    let stats = write_store(dir.path(), &data, StoreDtype::F16);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.dtype(), StoreDtype::F16);
    // Half the bytes of f32.
    let bytes = std::fs::metadata(dir.path().join("shard-000000.bin"))
        .unwrap()
        .len();
    assert_eq!(bytes, (PER_SHARD * DIM * 2) as u64);
    let mut back = vec![0f32; ROWS * DIM];
    store.read_rows(0, ROWS, &mut back).unwrap();
    let mut rounded = 0;
    for (a, b) in data.iter().zip(&back) {
        // f16 has an 11-bit significand: relative error ≤ 2^-11 after rounding to nearest.
        assert!(
            (a - b).abs() <= a.abs() * 2f32.powi(-11),
            "{a} stored as {b}"
        );
        rounded += (a != b) as usize;
    }
    assert!(
        rounded > 0,
        "f16 store returned f32-exact values: not stored as f16?"
    );
    // Statistics describe the values as stored, i.e. what readers get back.
    let direct_mean0 = back.chunks(DIM).map(|r| r[1] as f64).sum::<f64>() / ROWS as f64;
    assert!((stats.mean[1] as f64 - direct_mean0).abs() < 1e-6);
}

#[test]
fn stats_match_a_direct_computation() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(ROWS, DIM);
    let stats = write_store(dir.path(), &data, StoreDtype::F32);
    let n = ROWS as f64;
    let mut mean = vec![0f64; DIM];
    let (mut norm, mut sq) = (0f64, 0f64);
    for r in data.chunks(DIM) {
        let s: f64 = r.iter().map(|&v| (v as f64).powi(2)).sum();
        sq += s;
        norm += s.sqrt();
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    assert_eq!(stats.count, ROWS as u64);
    for (got, want) in stats.mean.iter().zip(&mean) {
        assert!((*got as f64 - want / n).abs() <= 1e-6 * (1.0 + (want / n).abs()));
    }
    assert!((stats.mean_norm - norm / n).abs() <= 1e-9 * norm / n);
    assert!((stats.mean_sq_norm - sq / n).abs() <= 1e-9 * sq / n);
    // The same statistics come back from store.json and through the BatchSource.
    let store = Arc::new(Store::open(dir.path()).unwrap());
    assert_eq!(store.stats(), &stats);
    let src = store.shuffled(0);
    assert_eq!(src.dim(), DIM);
    assert_eq!(src.mean(), stats.mean);
}

#[test]
fn read_rows_crosses_shard_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(ROWS, DIM);
    let store = small_store(dir.path());
    for (start, count) in [(120, 20), (127, 1), (128, 1), (250, 600), (990, 10), (0, 0)] {
        let mut out = vec![0f32; count * DIM];
        store.read_rows(start as u64, count, &mut out).unwrap();
        assert_eq!(
            out,
            data[start * DIM..(start + count) * DIM],
            "rows {start}+{count}"
        );
    }
    let mut out = vec![0f32; 20 * DIM];
    let msg = run_error(store.read_rows(990, 20, &mut out));
    assert!(msg.contains("out of range"), "{msg}");
    let msg = run_error(store.read_rows(0, 19, &mut out));
    assert!(msg.contains("output buffer"), "{msg}");
    let msg = run_error(store.read_rows(u64::MAX, 1, &mut out[..DIM]));
    assert!(msg.contains("out of range"), "{msg}");
}

#[test]
fn every_row_is_visited_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let mut src = ShuffledBatches::with_config(store, 7, small_window());
    assert!(src.window_rows() <= 100);
    let mut previous: Option<Vec<usize>> = None;
    for epoch in 1..=3 {
        let ids = take_ids(&mut src, ROWS, 8);
        assert_eq!(src.epoch(), epoch);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..ROWS).collect::<Vec<_>>(), "epoch {epoch}");
        if let Some(prev) = &previous {
            assert_ne!(prev, &ids, "epochs repeat the same order");
        }
        previous = Some(ids);
    }
}

#[test]
fn batches_straddle_epochs_without_losing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    // One odd batch of 3 rows shifts the alignment, so later batches straddle the epoch
    // boundary: 3 + 1990 rows = the whole first epoch and 993 rows of the second.
    let mut src = ShuffledBatches::with_config(store, 1, small_window());
    let mut odd = vec![0f32; 3 * DIM];
    src.next_batch(&mut odd).unwrap();
    let mut ids: Vec<usize> = odd.chunks(DIM).map(|r| r[0] as usize).collect();
    ids.extend(take_ids(&mut src, 1990, 10));
    let mut first: Vec<usize> = ids[..ROWS].to_vec();
    first.sort_unstable();
    assert_eq!(first, (0..ROWS).collect::<Vec<_>>());
    let mut second: Vec<usize> = ids[ROWS..].to_vec();
    second.sort_unstable();
    second.dedup();
    assert_eq!(second.len(), 993, "the second epoch repeats a row early");
}

#[test]
fn same_seed_same_batches_other_seed_other_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let read = |seed: u64| {
        let mut src = ShuffledBatches::with_config(store.clone(), seed, small_window());
        take_ids(&mut src, 2 * ROWS, 40)
    };
    assert_eq!(read(3), read(3));
    assert_ne!(read(3), read(4));
    // Also with the default window, which holds this whole store.
    let a = take_ids(&mut store.shuffled(9), 400, 40);
    assert_eq!(a, take_ids(&mut store.shuffled(9), 400, 40));
    assert_ne!(a, take_ids(&mut store.shuffled(10), 400, 40));
}

/// A fresh source restored to a saved position continues with exactly the same rows, at
/// every point: mid-window, on a window boundary, across an epoch boundary.
#[test]
fn restored_position_continues_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let make = || ShuffledBatches::with_config(store.clone(), 7, small_window());
    let mut reference = make();
    let all = take_ids(&mut reference, 3000, 10);
    for cut in [0, 10, 100, 200, 990, 1000, 1010, 2500] {
        let mut first = make();
        assert_eq!(take_ids(&mut first, cut, 10), all[..cut]);
        let saved = serde_json::to_string(&first.position()).unwrap();
        let mut resumed = make();
        resumed
            .restore(&serde_json::from_str(&saved).unwrap())
            .unwrap();
        assert_eq!(
            take_ids(&mut resumed, 3000 - cut, 10),
            all[cut..],
            "after {cut} rows"
        );
    }
    // A position from another store's layout is refused, not misapplied.
    let other_dir = tempfile::tempdir().unwrap();
    write_store(other_dir.path(), &rows(300, DIM), StoreDtype::F32);
    let other = Arc::new(Store::open(other_dir.path()).unwrap());
    let mut wrong = ShuffledBatches::with_config(other, 7, small_window());
    assert!(wrong.restore(&make().position()).is_err());
}

#[test]
fn shuffling_mixes_shards() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let mut src = ShuffledBatches::with_config(store, 11, small_window());
    let batch = 20;
    let ids = take_ids(&mut src, ROWS, batch);
    let shards_per_batch: Vec<usize> = ids
        .chunks(batch)
        .map(|b| {
            b.iter()
                .map(|i| i / PER_SHARD)
                .collect::<BTreeSet<_>>()
                .len()
        })
        .collect();
    let mixed = shards_per_batch.iter().filter(|&&s| s > 1).count();
    assert!(
        mixed * 10 >= shards_per_batch.len() * 9,
        "only {mixed} of {} batches draw from more than one shard",
        shards_per_batch.len()
    );
    // And the order is not the store's order: the first batch is not rows 0..16.
    assert_ne!(&ids[..batch], &(0..batch).collect::<Vec<_>>()[..]);
}

#[test]
fn incomplete_store_without_store_json_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = StoreWriter::create(dir.path(), DIM, StoreDtype::F32, PER_SHARD).unwrap();
        w.push(&rows(300, DIM)).unwrap();
        // Dropped without finish(): two shards were published, the third is half written.
    }
    assert!(dir.path().join("shard-000001.bin").exists());
    let msg = run_error(Store::open(dir.path()));
    assert!(
        msg.contains("incomplete") && msg.contains("store.json"),
        "{msg}"
    );
    assert_no_temp_files(dir.path());
    // A fresh writer can redo the store in the same directory.
    write_store(dir.path(), &rows(ROWS, DIM), StoreDtype::F32);
    assert_eq!(Store::open(dir.path()).unwrap().len(), ROWS as u64);
    // But it will not overwrite a finished one.
    let msg = run_error(StoreWriter::create(
        dir.path(),
        DIM,
        StoreDtype::F32,
        PER_SHARD,
    ));
    assert!(msg.contains("already complete"), "{msg}");
}

#[test]
fn truncated_missing_or_corrupt_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path());
    let shard = dir.path().join("shard-000002.bin");
    let bytes = std::fs::read(&shard).unwrap();

    std::fs::write(&shard, &bytes[..bytes.len() - 4]).unwrap();
    let msg = run_error(Store::open(dir.path()));
    assert!(
        msg.contains("shard-000002.bin") && msg.contains("truncated"),
        "{msg}"
    );

    std::fs::remove_file(&shard).unwrap();
    let msg = run_error(Store::open(dir.path()));
    assert!(msg.contains("shard-000002.bin"), "{msg}");

    // Same size, one byte changed: open (which checks sizes) accepts it, verify does not.
    let mut flipped = bytes.clone();
    flipped[100] ^= 0x40;
    std::fs::write(&shard, &flipped).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let msg = run_error(store.verify());
    assert!(
        msg.contains("blake3") && msg.contains("shard-000002.bin"),
        "{msg}"
    );

    std::fs::write(&shard, &bytes).unwrap();
    let json_path = dir.path().join("store.json");
    let json = std::fs::read_to_string(&json_path).unwrap();
    std::fs::write(&json_path, &json[..json.len() / 2]).unwrap();
    let msg = run_error(Store::open(dir.path()));
    assert!(
        msg.contains("corrupt") && msg.contains("store.json"),
        "{msg}"
    );

    // A shard entry may not point outside the store directory.
    let evil = json.replace("\"shard-000002.bin\"", "\"../shard-000002.bin\"");
    std::fs::write(&json_path, evil).unwrap();
    let msg = run_error(Store::open(dir.path()));
    assert!(msg.contains("bad shard entry"), "{msg}");

    std::fs::write(&json_path, &json).unwrap();
    Store::open(dir.path()).unwrap().verify().unwrap();
}

fn assert_no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "store.json" || (name.starts_with("shard-") && name.ends_with(".bin")),
            "unexpected file {name} left in the store"
        );
    }
}

#[test]
fn writer_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in [StoreDtype::F32, StoreDtype::F16] {
        let sub = dir.path().join(format!("{dtype:?}"));
        write_store(&sub, &rows(ROWS, DIM), dtype);
        assert_no_temp_files(&sub);
        let n = std::fs::read_dir(&sub).unwrap().count();
        assert_eq!(n, ROWS.div_ceil(PER_SHARD) + 1);
    }
}

#[test]
fn bad_rows_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), DIM, StoreDtype::F32, PER_SHARD).unwrap();
    let msg = run_error(w.push(&[1.0; DIM + 1]));
    assert!(msg.contains("multiple of dim"), "{msg}");
    let mut nan = rows(2, DIM);
    nan[DIM + 3] = f32::NAN;
    let msg = run_error(w.push(&nan));
    assert!(
        msg.contains("non-finite") && msg.contains("dimension 3"),
        "{msg}"
    );

    let mut w = StoreWriter::create(&dir.path().join("h"), DIM, StoreDtype::F16, 4).unwrap();
    match w.push(&[1e6; DIM]) {
        Err(Error::Input(msg)) => assert!(msg.contains("overflows f16"), "{msg}"),
        other => panic!("expected Error::Input, got {other:?}"),
    }
    assert!(StoreWriter::create(dir.path(), 0, StoreDtype::F32, 4).is_err());
    assert!(StoreWriter::create(dir.path(), DIM, StoreDtype::F32, 0).is_err());
}

#[test]
fn empty_store_opens_but_yields_no_batches() {
    let dir = tempfile::tempdir().unwrap();
    let stats = StoreWriter::create(dir.path(), DIM, StoreDtype::F32, PER_SHARD)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(stats.count, 0);
    let store = Arc::new(Store::open(dir.path()).unwrap());
    assert!(store.is_empty());
    let mut out = vec![0f32; DIM];
    let msg = run_error(store.shuffled(0).next_batch(&mut out));
    assert!(msg.contains("empty"), "{msg}");
}
