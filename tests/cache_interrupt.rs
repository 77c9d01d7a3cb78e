//! A run killed mid-stage leaves no partial cache entry or run directory, and the rerun
//! completes, reusing the stages that had finished. Two concurrent runs of one spec compute
//! each stage once.

mod support;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn killed_run_leaves_nothing_partial_and_rerun_completes() {
    let ws = Workspace::new();
    // Long enough (several seconds) that the first training stage is certainly still
    // running when killed.
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_kill", "[0.2]", 6000));
    let mut child = ws
        .cmd(&["run", spec.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("saerun exited before finishing the data stage")
            .unwrap();
        if line.contains("toy_data") && line.contains("computed") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "data stage too slow"
        );
    }
    // Now inside train_sae: wait until its temporary directory exists, then kill -9.
    let tmp = ws.cache().join("v1/tmp");
    while std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let entries = ws.cache_entries(); // asserts every entry has its manifest
    assert_eq!(
        entries.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        vec!["toy_data"]
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "the killed stage's work is in tmp/ only"
    );
    assert!(ws.runs().is_empty(), "no run record for a killed run");
    let gc = ws.run(&["cache", "gc"]);
    assert!(
        stdout(&gc).contains("1 stale temporary directories"),
        "{}",
        stdout(&gc)
    );

    // The rerun resumes after the last completed stage: the data is reused, the killed
    // stage is computed from scratch (its stale temporary directory removed first).
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&ws.runs()[0]), (5, 1));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "stale tmp removed"
    );
    assert_eq!(ws.cache_entries().len(), 6);
}

#[test]
fn concurrent_runs_compute_each_stage_once() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_race", "[0.2]", 1500));
    let spawn = || {
        ws.cmd(&["run", spec.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));

    let runs = ws.runs();
    assert_eq!(
        runs.len(),
        2,
        "both runs are recorded, under distinct run ids"
    );
    let mut computed_per_key = std::collections::HashMap::<String, usize>::new();
    for run in &runs {
        for s in run["stages"].as_array().unwrap() {
            *computed_per_key
                .entry(s["key"].as_str().unwrap().to_string())
                .or_default() += (s["outcome"] == "computed") as usize;
        }
    }
    assert_eq!(computed_per_key.len(), 6);
    assert!(
        computed_per_key.values().all(|&n| n == 1),
        "{computed_per_key:?}"
    );
    assert_eq!(ws.cache_entries().len(), 6);
}
