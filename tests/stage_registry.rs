//! The stage registry is the single source of the graph, the executor's order keeps each
//! SAE's evaluation and size match next to its training, and lazily loaded inputs are
//! dropped after their last consumer, so memory does not grow with the size of a sweep.

mod support;
use saerun::pipeline::execute::depth_first_order;
use saerun::pipeline::run::{prepare, run, RunOptions};
use saerun::pipeline::Graph;
use saerun::report::tables;
use saerun::stages::REGISTRY;
use std::collections::HashSet;
use support::*;

fn options(ws: &Workspace, spec: &std::path::Path, sets: &[&str]) -> RunOptions {
    RunOptions {
        spec: spec.to_path_buf(),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        cache_dir: ws.cache(),
        results_dir: ws.results(),
        checkpoint_every: None,
    }
}

fn u64s(df: &polars::prelude::DataFrame, name: &str) -> Vec<Option<u64>> {
    let ca = df.column(name).unwrap().u64().unwrap();
    (0..ca.len()).map(|i| ca.get(i)).collect()
}

fn strs(df: &polars::prelude::DataFrame, name: &str) -> Vec<Option<String>> {
    let ca = df.column(name).unwrap().str().unwrap();
    (0..ca.len())
        .map(|i| ca.get(i).map(str::to_string))
        .collect()
}

fn toy_graph(ws: &Workspace, sets: &[&str]) -> Graph {
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_graph", "[0.1, 0.2]", 100));
    prepare(&options(ws, &spec, sets)).unwrap().1
}

#[test]
fn every_planned_node_belongs_to_a_registered_stage() {
    let names: HashSet<&str> = REGISTRY.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), REGISTRY.len(), "stage names must be unique");
    let ws = Workspace::new();
    let graph = toy_graph(&ws, &["sae.dict_ratios=[0.5, 1, 2]"]);
    // 1 data + 6 × (train + eval) + 2 × 2 matches.
    assert_eq!(graph.nodes().len(), 1 + 12 + 4);
    for node in graph.nodes() {
        let stage = REGISTRY.iter().find(|s| s.name == node.stage).unwrap();
        assert_eq!(stage.version, node.version, "{}", node.stage);
        for &i in &node.inputs {
            assert!(i < graph.nodes().len());
        }
    }
}

#[test]
fn execution_order_is_topological_and_depth_first() {
    let ws = Workspace::new();
    let graph = toy_graph(&ws, &["sae.dict_ratios=[0.5, 1, 2]"]);
    let order = depth_first_order(&graph);
    let mut seen = vec![false; graph.nodes().len()];
    for &i in &order {
        for &input in &graph.nodes()[i].inputs {
            assert!(seen[input], "node {i} runs before its input {input}");
        }
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s), "every node is scheduled once");
    let stages: Vec<&str> = order.iter().map(|&i| graph.nodes()[i].stage).collect();
    assert_eq!(
        &stages[..10],
        [
            "toy_data",
            "train_sae",
            "eval_sae",
            "train_sae",
            "eval_sae",
            "match_sizes",
            "train_sae",
            "eval_sae",
            "match_sizes",
            "train_sae",
        ],
        "each SAE is evaluated and matched right after it is trained"
    );
}

#[test]
fn loaded_inputs_do_not_grow_with_the_sweep() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_memory", "[0.1, 0.2]", 60));
    // 8 SAEs. Holding every trained SAE until the size matches at the end would keep 9
    // outputs (data + 8 SAEs); depth-first order and release after the last consumer keep
    // the data, the previous size and the current one.
    let summary = run(&options(
        &ws,
        &spec,
        &["sae.dict_ratios=[0.5, 1, 2, 4]", "train.log_every=20"],
    ))
    .unwrap();
    assert_eq!(summary.record.computed(), 1 + 16 + 6);
    assert!(
        summary.peak_loaded_inputs <= 3,
        "peak of {} loaded stage outputs for 8 SAEs",
        summary.peak_loaded_inputs
    );
    // Everything reused: nothing is loaded at all.
    let again = run(&options(
        &ws,
        &spec,
        &["sae.dict_ratios=[0.5, 1, 2, 4]", "train.log_every=20"],
    ))
    .unwrap();
    assert_eq!(again.record.computed(), 0);
    assert_eq!(again.peak_loaded_inputs, 0);
}

#[test]
fn topk_saes_differing_only_in_k_keep_separate_rows_and_curves() {
    let ws = Workspace::new();
    let spec = tiny_toy_spec("toy_topk", "[0.1]", 100)
        .replace("architecture = \"relu_l1\"", "architecture = \"topk\"")
        .replace("l1 = [0.1]", "k = [2, 4]")
        .replace("dict_ratios = [1, 2]", "dict_ratios = [1]");
    let spec = ws.write("topk.toml", &spec);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = &ws.runs()[0];
    let dir = ws
        .results()
        .join("toy_topk")
        .join(run["run_id"].as_str().unwrap());

    let metrics = tables::read(&dir.join("metrics.parquet")).unwrap();
    assert_eq!(metrics.height(), 2);
    assert_eq!(u64s(&metrics, "k"), vec![Some(2), Some(4)]);
    let arch = strs(&metrics, "architecture");
    assert!(
        arch.iter().all(|a| a.as_deref() == Some("topk")),
        "{arch:?}"
    );

    let curves = tables::read(&dir.join("curves.parquet")).unwrap();
    assert_eq!(curves.height(), 2 * 100 / 50);
    assert_eq!(u64s(&curves, "k"), vec![Some(2), Some(2), Some(4), Some(4)]);
    let keys: HashSet<Option<String>> = strs(&curves, "train_key").into_iter().collect();
    assert_eq!(keys.len(), 2, "one training stage per k");

    // One line per SAE in the training-curve plot, labelled by k.
    let svg = std::fs::read_to_string(dir.join("plots/training_curves.svg")).unwrap();
    assert!(
        svg.contains("d_sae=64 k=2") && svg.contains("d_sae=64 k=4"),
        "legend: {svg}"
    );
}

#[test]
fn validate_graph_prints_the_stage_graph_with_cache_state() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_mermaid", "[0.2]", 50));
    let out = ws.run(&["validate", spec.to_str().unwrap(), "--graph"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("flowchart LR\n"), "{text}");
    // 6 nodes, 7 edges: data → 2 trains, (data, train) → 2 evals, 2 trains → match.
    assert_eq!(text.matches(":::missing").count(), 6, "{text}");
    assert_eq!(text.matches(" --> ").count(), 2 + 4 + 2, "{text}");
    assert!(text.contains("<b>match_sizes</b><br/>d_sae=64 vs 128 l1=0.2 seed=1"));

    assert!(ws.run(&["run", spec.to_str().unwrap()]).status.success());
    let text = stdout(&ws.run(&["validate", spec.to_str().unwrap(), "--graph"]));
    assert_eq!(text.matches(":::cached").count(), 6, "{text}");
    assert_eq!(text.matches(":::missing").count(), 0, "{text}");
}
