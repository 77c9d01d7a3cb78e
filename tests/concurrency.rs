//! Several `saerun run` processes against one cache: each stage is computed exactly once,
//! every run finishes with the same results, and `cache gc --yes` looping meanwhile never
//! deletes an entry a run uses. Different specs sharing stages share them too.

mod support;
use saerun::report::tables;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;

/// How many runs computed each stage key.
fn computed_per_key(runs: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for run in runs {
        for s in run["stages"].as_array().unwrap() {
            *out.entry(s["key"].as_str().unwrap().to_string())
                .or_default() += (s["outcome"] == "computed") as usize;
        }
    }
    out
}

fn metrics_of(ws: &Workspace, run: &serde_json::Value) -> polars::prelude::DataFrame {
    let dir = ws
        .results()
        .join(run["experiment"].as_str().unwrap())
        .join(run["run_id"].as_str().unwrap());
    tables::read(&dir.join("metrics.parquet")).unwrap()
}

#[test]
fn four_runs_and_a_gc_loop_compute_each_stage_once() {
    let ws = Workspace::new();
    // Long enough that entries outlive the grace period while the runs still use them.
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_four", "[0.2]", 3000));
    let stop = AtomicBool::new(false);
    let outputs = std::thread::scope(|s| {
        // gc over and over while the runs work, with a 1 s grace period (instead of 60):
        // the runs' entries soon become deletable by age, and only the runs' locks keep them.
        let gc = s.spawn(|| {
            let mut passes = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = ws.run(&["cache", "gc", "--yes", "--min-age", "1"]);
                assert!(out.status.success(), "{}", stderr(&out));
                passes += 1;
            }
            passes
        });
        let children: Vec<_> = (0..4).map(|_| spawn_run(&ws, &spec)).collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        assert!(gc.join().unwrap() > 1, "gc ran during the runs");
        outputs
    });
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let runs = ws.runs();
    assert_eq!(runs.len(), 4);
    let per_key = computed_per_key(&runs);
    assert_eq!(per_key.len(), 6);
    assert!(per_key.values().all(|&n| n == 1), "{per_key:?}");
    let first = metrics_of(&ws, &runs[0]);
    for run in &runs[1..] {
        assert!(metrics_of(&ws, run).equals_missing(&first));
    }
}

#[test]
fn different_specs_run_at_once_share_their_common_stages() {
    let ws = Workspace::new();
    let a = ws.write("a.toml", &tiny_toy_spec("share_a", "[0.2]", 800));
    let b = ws.write("b.toml", &tiny_toy_spec("share_b", "[0.2, 0.3]", 800));
    let children: Vec<_> = [&a, &b].iter().map(|spec| spawn_run(&ws, spec)).collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let runs = ws.runs();
    let per_key = computed_per_key(&runs);
    // b's grid contains a's: 6 shared stages, 5 more for l1 = 0.3.
    assert_eq!(per_key.len(), 6 + 5);
    assert!(per_key.values().all(|&n| n == 1), "{per_key:?}");
    assert_eq!(ws.cache_entries().len(), 11);
}
