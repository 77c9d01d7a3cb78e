//! A flipped byte or a truncated file in a cached artifact is detected before the artifact is
//! used, moved aside and recomputed, never served: small files on every reuse, large files
//! before a computing stage loads them, everything by `saerun cache verify`.

mod support;
use saerun::report::tables;
use std::path::{Path, PathBuf};
use support::*;

fn entry_file(ws: &Workspace, stage: &str, file: &str) -> PathBuf {
    let dir = ws.cache().join("v1/entries").join(stage);
    let mut keys: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    keys.sort();
    keys[0].join(file)
}

/// `file` of the first `stage` entry the latest run used (not just any entry of the cache:
/// which key sorts first changes whenever a stage version does).
fn latest_run_entry_file(ws: &Workspace, stage: &str, file: &str) -> PathBuf {
    let run = ws.runs().pop().unwrap();
    let key = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    ws.cache()
        .join("v1/entries")
        .join(stage)
        .join(key)
        .join(file)
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

fn latest_metrics(ws: &Workspace) -> polars::prelude::DataFrame {
    let run = ws.runs().pop().unwrap();
    let dir = ws
        .results()
        .join(run["experiment"].as_str().unwrap())
        .join(run["run_id"].as_str().unwrap());
    tables::read(&dir.join("metrics.parquet")).unwrap()
}

fn run_ok(ws: &Workspace, spec: &Path) -> (usize, usize) {
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    outcomes(&ws.runs().pop().unwrap())
}

#[test]
fn corrupted_entries_are_detected_moved_aside_and_recomputed() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("corrupt", "[0.2]", 200));
    assert_eq!(run_ok(&ws, &spec), (6, 0));
    let clean = latest_metrics(&ws);

    // Small artifacts: caught by the cheap check on reuse; only that entry is recomputed.
    for (stage, file) in [
        ("train_sae", "sae.safetensors"),
        ("train_sae", "curve.json"),
        ("eval_sae", "metrics.json"),
        ("match_sizes", "match.json"),
    ] {
        flip_byte(&entry_file(&ws, stage, file));
        let verify = ws.run(&["cache", "verify"]);
        assert_eq!(verify.status.code(), Some(1), "{stage}/{file}");
        let report = stdout(&verify);
        assert!(report.contains(stage) && report.contains(file), "{report}");
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("is corrupt"), "{}", stderr(&out));
        assert_eq!(
            outcomes(&ws.runs().pop().unwrap()),
            (1, 5),
            "{stage}/{file}"
        );
        assert!(latest_metrics(&ws).equals_missing(&clean), "{stage}/{file}");
        assert!(ws.run(&["cache", "verify"]).status.success());
    }

    // A large artifact (the toy data, 2.4 MB): a byte flip keeps its size, so a rerun that
    // only reuses it does not read it; a stage that loads it checks every byte first.
    let data = entry_file(&ws, "toy_data", "data.safetensors");
    flip_byte(&data);
    assert_eq!(run_ok(&ws, &spec), (0, 6));
    assert_eq!(ws.run(&["cache", "verify"]).status.code(), Some(1));
    let more = ws.write("more.toml", &tiny_toy_spec("corrupt", "[0.2, 0.3]", 200));
    // The data is recomputed before the new SAEs train on it (2 trains, 2 evals, 1 match).
    assert_eq!(run_ok(&ws, &more), (1 + 5, 5));
    assert!(ws.run(&["cache", "verify"]).status.success());

    // Truncation changes the size: caught on reuse.
    let data = entry_file(&ws, "toy_data", "data.safetensors");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_eq!(run_ok(&ws, &spec), (1, 5));

    // `cache verify --repair` moves a corrupt entry aside; gc deletes what was moved aside.
    flip_byte(&latest_run_entry_file(&ws, "eval_sae", "metrics.json"));
    let repair = ws.run(&["cache", "verify", "--repair"]);
    assert!(repair.status.success(), "{}", stderr(&repair));
    assert!(stdout(&repair).contains("1 corrupt"), "{}", stdout(&repair));
    assert!(ws.run(&["cache", "verify"]).status.success());
    let corrupt = ws.cache().join("v1/corrupt");
    assert!(std::fs::read_dir(&corrupt).unwrap().count() >= 6);
    assert!(ws.run(&["cache", "gc", "--yes"]).status.success());
    assert_eq!(std::fs::read_dir(&corrupt).unwrap().count(), 0);
    assert_eq!(run_ok(&ws, &spec), (1, 5));
    assert!(latest_metrics(&ws).equals_missing(&clean));
}

/// Language-model artifacts (needs ../shared): an activation-store shard and the tokenized
/// contexts. A flipped byte in the 12 MB shard is found before training reads it; the
/// tokens (small) on any reuse.
#[test]
fn corrupted_activation_shards_and_tokens_are_recomputed() {
    let Some(shared) = shared_dir() else { return };
    let ws = Workspace::new();
    let spec = spec_path("tiny_pythia_sweep.toml");
    let (model, data) = tiny_pythia_sources(&shared);
    let run = |l1: &str| {
        let l1 = format!("sae.l1={l1}");
        let out = ws.run(&[
            "run",
            &spec,
            "--set",
            &model,
            "--set",
            &data,
            "--set",
            "sae.dict_ratios=[1]",
            "--set",
            &l1,
            "--set",
            "train.steps=100",
            "--set",
            "eval.contexts=32",
            "--set",
            "data.max_documents=600",
            "--set",
            "analyses.enabled=false",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        outcomes(&ws.runs().pop().unwrap())
    };
    // tokenize, harvest, ce_baselines, train, eval
    assert_eq!(run("[0.05]"), (5, 0));
    let clean = latest_metrics(&ws);

    flip_byte(&entry_file(&ws, "harvest", "train/shard-000000.bin"));
    let verify = ws.run(&["cache", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        stdout(&verify).contains("train/shard-000000.bin"),
        "{}",
        stdout(&verify)
    );
    // A new l1 trains on the store: the harvest is redone first (tokenize, baselines and the
    // l1 = 0.05 stages stay reused), then the new SAE is trained and evaluated.
    assert_eq!(run("[0.05, 0.1]"), (1 + 2, 4));
    assert!(ws.run(&["cache", "verify"]).status.success());

    flip_byte(&entry_file(&ws, "tokenize", "tokens.safetensors"));
    assert_eq!(run("[0.05]"), (1, 4));
    assert!(latest_metrics(&ws).equals_missing(&clean));
}
