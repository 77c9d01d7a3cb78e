//! experiments/slurm/sweep.sbatch on a real (single-node, localhost) Slurm: the job array's
//! shards compute each stage exactly once between them, and the dependent report job finds
//! everything cached and writes the tables a single process writes.
//!
//! Needs a running Slurm (`bash experiments/slurm/localhost-cluster.sh start`, which .ci/run
//! calls and then sets SAERUN_TEST_SLURM=1); skipped with a message when that is unset.

mod support;
use saerun::report::tables;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const SHARDS: usize = 3;
const SETS: &[&str] = &[
    "--set",
    "sae.dict_ratios=[1, 2]",
    "--set",
    "sae.l1=[0.1, 0.2]",
];

fn json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// Every file in the sweep directory (the jobs' logs), for a failure message.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_file() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.push_str(&format!("== {}\n{text}\n", e.path().display()));
        }
    }
    out
}

fn squeue(args: &[&str]) -> String {
    let out = Command::new("squeue").args(args).output().expect("squeue");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_slurm_job_array_computes_each_stage_once_and_the_report_job_matches_one_process() {
    if std::env::var_os("SAERUN_TEST_SLURM").is_none() {
        eprintln!(
            "skipped: SAERUN_TEST_SLURM is not set (.ci/run starts a localhost Slurm with \
             experiments/slurm/localhost-cluster.sh and sets it)"
        );
        return;
    }
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_slurm", "[0.2]", 150));
    let sweep_dir = ws.path().join("sweep");
    let mut submit = Command::new("bash");
    for (k, _) in std::env::vars() {
        if k.starts_with("SAERUN_") {
            submit.env_remove(k);
        }
    }
    let out = submit
        .arg(format!(
            "{}/experiments/slurm/sweep.sbatch",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&spec)
        .arg(SHARDS.to_string())
        .args(SETS)
        .env("SAERUN_BIN", env!("CARGO_BIN_EXE_saerun"))
        .env("SAERUN_CACHE_DIR", ws.cache())
        .env("SAERUN_RESULTS_DIR", ws.results())
        .env("SAERUN_SWEEP_DIR", &sweep_dir)
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "sbatch: {}", stderr(&out));
    let ids: Vec<String> = stdout(&out)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2, "expected `ARRAY REPORT`: {}", stdout(&out));
    let (array, report) = (&ids[0], &ids[1]);
    let out_dir = sweep_dir.join(array);

    // Wait for the report job (it starts only after every shard succeeded).
    let deadline = Instant::now() + Duration::from_secs(900);
    let report_file = out_dir.join("report.json");
    loop {
        let queued = squeue(&["-h", "-j", &format!("{array},{report}"), "-o", "%i %T %r"]);
        if report_file.is_file() && queued.trim().is_empty() {
            break;
        }
        if queued.contains("DependencyNeverSatisfied") || Instant::now() > deadline {
            let _ = Command::new("scancel").args([array, report]).status();
            panic!(
                "the sweep did not finish: squeue says {queued:?}\n{}",
                logs(&sweep_dir)
            );
        }
        if queued.trim().is_empty() && !report_file.is_file() {
            panic!(
                "the jobs left the queue without a report\n{}",
                logs(&sweep_dir)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every stage computed by exactly one shard.
    let mut computed: HashMap<String, usize> = HashMap::new();
    for i in 1..=SHARDS {
        let shard = json(&out_dir.join(format!("shard-{i}-of-{SHARDS}.json")));
        assert_eq!(shard["shard"], format!("{i}/{SHARDS}"));
        for s in shard["stages"].as_array().unwrap() {
            *computed
                .entry(s["key"].as_str().unwrap().to_string())
                .or_default() += (s["outcome"] == "computed") as usize;
        }
    }
    let report = json(&report_file);
    let stages = report["stages"].as_array().unwrap();
    // 1 data + 4 × (train + eval) + 2 size matches.
    assert_eq!(stages.len(), 11);
    assert_eq!(report["computed"], 0, "the report job computed something");
    for s in stages {
        let key = s["key"].as_str().unwrap();
        assert_eq!(computed.get(key), Some(&1), "stage {} {key}", s["stage"]);
    }
    assert_eq!(computed.len(), 11);

    // The same sweep in one process on its own cache writes the same tables.
    let single = Workspace::new();
    let spec1 = single.write("toy.toml", &tiny_toy_spec("toy_slurm", "[0.2]", 150));
    let mut args = vec!["run", spec1.to_str().unwrap()];
    args.extend(SETS);
    let out = single.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let one = &single.runs()[0];
    let one_dir = single
        .results()
        .join("toy_slurm")
        .join(one["run_id"].as_str().unwrap());
    let sweep_run = Path::new(report["run_dir"].as_str().unwrap());
    for name in ["metrics.parquet", "curves.parquet"] {
        let mut a = tables::read(&sweep_run.join(name)).unwrap();
        let mut b = tables::read(&one_dir.join(name)).unwrap();
        if name == "curves.parquet" {
            // All but the wall-clock column.
            a = a.drop("elapsed_s").unwrap();
            b = b.drop("elapsed_s").unwrap();
        }
        assert!(
            a.equals_missing(&b),
            "{name} differs from the single-process run"
        );
    }
}
