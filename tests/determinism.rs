//! The same spec and seed give bit-identical metrics, run after run, from empty caches; and
//! the thread count does not change them either (the CPU kernels split work into fixed
//! chunks whose partial results are combined in a fixed order, never by thread). These two
//! facts set the reproduce tolerances: any spread comes from another CPU or build, not
//! from rerunning. Toy always; tiny-pythia (the language-model path) where ../shared is.

mod support;
use saerun::report::tables;
use support::*;

/// metrics.parquet and curves.parquet of one run from an empty cache with `threads` workers
/// (curves without their wall-clock column).
fn run_tables(args: &[&str], threads: &str) -> Vec<polars::prelude::DataFrame> {
    let ws = Workspace::new();
    let out = ws
        .cmd(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let run = ws.runs().pop().unwrap();
    let dir = ws
        .results()
        .join(run["experiment"].as_str().unwrap())
        .join(run["run_id"].as_str().unwrap());
    let metrics = tables::read(&dir.join("metrics.parquet")).unwrap();
    let curves = tables::read(&dir.join("curves.parquet"))
        .unwrap()
        .drop("elapsed_s")
        .unwrap();
    vec![metrics, curves]
}

fn assert_identical(args: &[&str]) {
    let first = run_tables(args, "2");
    for (threads, label) in [("2", "a second run"), ("1", "one thread")] {
        let again = run_tables(args, threads);
        for (a, b) in first.iter().zip(&again) {
            assert!(a.height() > 0);
            assert!(a.equals_missing(b), "{label} differs:\n{a}\nvs\n{b}");
        }
    }
}

#[test]
fn toy_runs_are_bit_identical_across_reruns_and_thread_counts() {
    let ws = Workspace::new();
    let spec = ws.write(
        "toy.toml",
        &tiny_toy_spec("determinism", "[0.05, 0.1]", 300),
    );
    assert_identical(&["run", spec.to_str().unwrap()]);
}

#[test]
fn language_model_runs_are_bit_identical_across_reruns_and_thread_counts() {
    let Some(shared) = shared_dir() else { return };
    let spec = spec_path("tiny_pythia_sweep.toml");
    let (model, data) = tiny_pythia_sources(&shared);
    assert_identical(&[
        "run",
        &spec,
        "--set",
        &model,
        "--set",
        &data,
        "--set",
        "sae.dict_ratios=[1, 2]",
        "--set",
        "sae.l1=0.05",
        "--set",
        "train.steps=200",
        "--set",
        "eval.contexts=32",
        "--set",
        "data.max_documents=600",
        "--set",
        "analyses.n_features=8",
    ]);
}
