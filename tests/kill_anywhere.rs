//! Kill anywhere: `saerun run` on a reduced tiny-pythia sweep is SIGKILLed at 20 seeded
//! random moments, one in each twentieth of an uninterrupted run's duration (so they fall in
//! tokenize, harvest, baselines, training, evaluation, report writing and the run-directory
//! rename), each time from an empty cache, then rerun. Every time: no partial cache entry or
//! finished-looking run directory is visible, the rerun completes, and its metrics.parquet
//! equals the uninterrupted run's. Killed runs and reruns checkpoint training every 10 ms
//! (the uninterrupted run never does), so kills inside training resume from a checkpoint.

mod support;
use rand::{Rng, SeedableRng};
use saerun::report::tables;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

const KILLS: usize = 20;

fn args<'a>(spec: &'a str, model: &'a str, data: &'a str, checkpoint: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        spec,
        "--checkpoint-every",
        checkpoint,
        "--set",
        model,
        "--set",
        data,
        "--set",
        "sae.dict_ratios=[1, 2]",
        "--set",
        "sae.l1=0.05",
        "--set",
        "train.steps=200",
        "--set",
        "train.batch_size=256",
        "--set",
        "eval.contexts=32",
        "--set",
        "data.max_documents=600",
        "--set",
        "analyses.enabled=false",
    ]
}

fn metrics(ws: &Workspace) -> polars::prelude::DataFrame {
    let run = ws.runs().pop().expect("a finished run");
    let dir = ws
        .results()
        .join(run["experiment"].as_str().unwrap())
        .join(run["run_id"].as_str().unwrap());
    tables::read(&dir.join("metrics.parquet")).unwrap()
}

/// No run directory that looks finished without its record, and every entry complete.
fn nothing_partial_visible(ws: &Workspace) {
    let _ = ws.cache_entries(); // asserts every entry has its manifest
    let Ok(exps) = std::fs::read_dir(ws.results()) else {
        return;
    };
    for exp in exps.flatten() {
        for run in std::fs::read_dir(exp.path()).unwrap().flatten() {
            let name = run.file_name().to_string_lossy().into_owned();
            assert!(
                name.starts_with(".partial-") || run.path().join("run.json").is_file(),
                "visible run directory without a record: {name}"
            );
        }
    }
}

#[test]
fn twenty_kills_then_the_same_metrics_as_an_uninterrupted_run() {
    let Some(shared) = shared_dir() else { return };
    let spec = spec_path("tiny_pythia_sweep.toml");
    let (model, data) = tiny_pythia_sources(&shared);

    let started = Instant::now();
    let reference = Workspace::new();
    let run_started = Instant::now();
    let out = reference.run(&args(&spec, &model, &data, "0"));
    assert!(out.status.success(), "{}", stderr(&out));
    let uninterrupted = run_started.elapsed();
    let want = metrics(&reference);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut resumes = 0;
    for kill in 0..KILLS {
        let mut at =
            uninterrupted.mul_f64((kill as f64 + rng.random_range(0.0..1.0)) / KILLS as f64);
        // A run may finish before a moment near the end: try again a little earlier, so that
        // all 20 are real kills and the last ones fall in report writing and the rename.
        let ws = loop {
            let ws = Workspace::new();
            let mut child = ws
                .cmd(&args(&spec, &model, &data, "0.01"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(at);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                break ws;
            }
            at = at.mul_f64(0.93);
        };
        nothing_partial_visible(&ws);
        let entries = ws.cache_entries().len();
        let out = ws.run(&args(&spec, &model, &data, "0.01"));
        assert!(out.status.success(), "kill {kill}: {}", stderr(&out));
        let resumed = stderr(&out).contains("resuming from its checkpoint");
        resumes += usize::from(resumed);
        nothing_partial_visible(&ws);
        let got = metrics(&ws);
        assert!(
            got.equals_missing(&want),
            "kill {kill}: {got}\nvs uninterrupted\n{want}"
        );
        eprintln!(
            "kill {kill} after {at:?}: {entries} stages were complete{}",
            if resumed {
                ", training resumed from a checkpoint"
            } else {
                ""
            }
        );
    }
    eprintln!("{resumes} of {KILLS} reruns resumed a training from a checkpoint");
    assert!(resumes > 0, "no kill landed in a checkpointed training");
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "the harness must stay short"
    );
}
