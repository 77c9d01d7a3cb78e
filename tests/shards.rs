//! `run --shard I/N`: shards of one sweep run at once against one cache compute each stage
//! exactly once between them, the run after them reuses everything and reports what a
//! single process reports; a stage another process holds is passed over for other ready
//! work; the shares are deterministic and cover the graph; bad `--shard` values exit 2.

mod support;
use saerun::pipeline::run::{prepare, RunOptions};
use saerun::pipeline::shard::{Shard, Share};
use saerun::report::tables;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use support::*;

/// Six SAEs (3 sizes × 2 l1 values): 1 data + 6 × (train + eval) + 2 × 2 size matches.
const SIX_SAES: &str = "sae.dict_ratios=[0.5, 1, 2]";

fn graph_keys(ws: &Workspace, spec: &str, sets: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["validate", spec, "--json"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = ws.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn table(ws: &Workspace, run: &serde_json::Value, name: &str) -> polars::prelude::DataFrame {
    let dir = ws
        .results()
        .join(run["experiment"].as_str().unwrap())
        .join(run["run_id"].as_str().unwrap());
    tables::read(&dir.join(name)).unwrap()
}

#[test]
fn concurrent_shards_compute_each_stage_once_and_the_final_run_matches_one_process() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_shards", "[0.1, 0.2]", 150));
    let spec = spec.to_str().unwrap();
    let keys = graph_keys(&ws, spec, &[SIX_SAES]);
    assert_eq!(keys.len(), 17);

    let children: Vec<_> = (1..=3)
        .map(|i| {
            let shard = format!("{i}/3");
            ws.cmd(&["run", spec, "--set", SIX_SAES, "--shard", &shard, "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut computed: HashMap<String, usize> = HashMap::new();
    let mut seen = BTreeSet::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "shard {}: {}", i + 1, stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["shard"], format!("{}/3", i + 1));
        assert_eq!(v["planned_stages"], 17);
        for s in v["stages"].as_array().unwrap() {
            let key = s["key"].as_str().unwrap().to_string();
            seen.insert(key.clone());
            *computed.entry(key).or_default() += (s["outcome"] == "computed") as usize;
        }
    }
    // No run record from shards.
    assert!(ws.runs().is_empty(), "a shard wrote a run record");
    let all: BTreeSet<String> = keys.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(seen, all, "the shards together cover the graph");
    assert_eq!(computed.len(), 17);
    assert!(computed.values().all(|&n| n == 1), "{computed:?}");

    // The run after the shards finds everything cached and writes the record.
    let out = ws.run(&["run", spec, "--set", SIX_SAES, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = ws.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(outcomes(&runs[0]), (0, 17));

    // The same sweep in one process, on its own cache: the same tables.
    let single = Workspace::new();
    let spec1 = single.write("toy.toml", &tiny_toy_spec("toy_shards", "[0.1, 0.2]", 150));
    let out = single.run(&["run", spec1.to_str().unwrap(), "--set", SIX_SAES]);
    assert!(out.status.success(), "{}", stderr(&out));
    let one = &single.runs()[0];
    assert_eq!(outcomes(one), (17, 0));
    assert!(
        table(&ws, &runs[0], "metrics.parquet").equals_missing(&table(
            &single,
            one,
            "metrics.parquet"
        )),
        "metrics differ between the sharded and the single-process run"
    );
    // Curves: all but the wall-clock column.
    let curves = |w: &Workspace, r: &serde_json::Value| {
        table(w, r, "curves.parquet").drop("elapsed_s").unwrap()
    };
    assert!(
        curves(&ws, &runs[0]).equals_missing(&curves(&single, one)),
        "curves differ between the sharded and the single-process run"
    );
}

/// Another process holds the first SAE's key: the run trains and evaluates the second
/// meanwhile (the old executor waited at the first in plan order), and finishes the first
/// once the lock is released.
#[test]
fn a_stage_held_by_another_process_is_passed_over_for_other_ready_work() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_busy", "[0.2]", 100));
    let spec = spec.to_str().unwrap();
    let keys = graph_keys(&ws, spec, &[]);
    let trains: Vec<&String> = keys
        .iter()
        .filter(|(s, _)| s == "train_sae")
        .map(|(_, k)| k)
        .collect();
    assert_eq!(trains.len(), 2);
    let locks = ws.cache().join("v1/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let held = saerun::file_lock::open(&locks.join(format!("{}.lock", trains[0]))).unwrap();
    held.lock().unwrap();

    let mut child = ws
        .cmd(&["run", spec])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // toy_data, the second SAE and its evaluation: everything not needing the first SAE.
    let deadline = Instant::now() + Duration::from_secs(120);
    let others_done = || {
        let entries = ws.cache_entries();
        entries
            .iter()
            .any(|(s, k)| s == "train_sae" && k == trains[1])
            && entries.iter().filter(|(s, _)| s == "eval_sae").count() == 1
            && entries.len() == 3
    };
    while !others_done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("run ended while a stage it needs was held: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no other ready work done while the first SAE was held: {:?}",
            ws.cache_entries()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Still waiting for the held stage, and not spinning on it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished without the held stage"
    );
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("being computed by another saerun process"),
        "{}",
        stderr(&out)
    );
    let runs = ws.runs();
    assert_eq!(outcomes(&runs[0]), (6, 0));
}

#[test]
fn shares_are_deterministic_cover_the_graph_and_split_the_grid() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_share", "[0.1, 0.2]", 100));
    let opts = RunOptions {
        spec,
        sets: vec![SIX_SAES.to_string()],
        cache_dir: ws.cache(),
        results_dir: ws.results(),
        checkpoint_every: None,
    };
    let graph = prepare(&opts).unwrap().1;
    let nodes = graph.nodes();
    let trains: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].stage == "train_sae")
        .collect();
    assert_eq!(trains.len(), 6);
    assert_eq!(
        Share::of(&graph, Shard { index: 1, count: 1 }),
        Share::all(&graph)
    );
    for count in 1..=7 {
        let mut covered = vec![false; nodes.len()];
        for index in 1..=count {
            let share = Share::of(&graph, Shard { index, count });
            assert_eq!(share, Share::of(&graph, Shard { index, count }));
            for (i, node) in nodes.iter().enumerate() {
                covered[i] |= share.wanted[i];
                if share.wanted[i] {
                    for &input in &node.inputs {
                        assert!(share.wanted[input], "a wanted node's input is wanted");
                    }
                }
            }
            // Its own SAEs, in grid order: g mod N = I - 1.
            let own: Vec<usize> = (0..trains.len())
                .filter(|&g| share.first[trains[g]])
                .collect();
            let expected: Vec<usize> = (0..trains.len())
                .filter(|g| g % count == index - 1)
                .collect();
            assert_eq!(own, expected, "shard {index}/{count}");
        }
        assert!(covered.iter().all(|&c| c), "{count} shards cover the graph");
    }
}

#[test]
fn bad_shard_values_exit_2_with_a_message() {
    let ws = Workspace::new();
    let spec = spec_path("toy_small.toml");
    for bad in ["0/2", "3/2", "a/b", "2"] {
        let out = ws.run(&["run", &spec, "--shard", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("--shard") && err.contains("expected I/N") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    assert!(ws.cache_entries().is_empty());
}
