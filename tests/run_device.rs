//! `run.device`: bad values and a CUDA device in a build without the `cuda` feature are
//! rejected with one message naming the key (exit 2, nothing written); the device enters
//! the keys of the stages that compute on it and no others, CPU keys are those of the key
//! derivation from before the GPU build; the run record names the device.

mod support;
use saerun::cache::key::stage_key;
use saerun::device::DeviceChoice;
use saerun::pipeline::run::{prepare, RunOptions};
use saerun::pipeline::Graph;
use saerun::record::RunRecord;
use saerun::spec::ResolvedSpec;
use support::*;

fn options(ws: &Workspace, spec: &std::path::Path, sets: &[String]) -> RunOptions {
    RunOptions {
        spec: spec.to_path_buf(),
        sets: sets.to_vec(),
        cache_dir: ws.cache(),
        results_dir: ws.results(),
        checkpoint_every: None,
    }
}

/// `validate` and `run` both exit 2 with one line holding every needle, and write nothing.
fn assert_rejected(ws: &Workspace, args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    for cmd in ["validate", "run"] {
        let mut full = vec![cmd];
        full.extend_from_slice(args);
        let mut c = ws.cmd(&full);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd} {args:?}: stderr: {err}");
        for n in needles {
            assert!(err.contains(n), "{cmd}: stderr lacks {n:?}:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one message expected:\n{err}"
        );
        assert!(ws.cache_entries().is_empty(), "cache written on bad input");
        assert!(ws.runs().is_empty(), "results written on bad input");
    }
}

#[test]
fn bad_device_values_name_the_key_and_where_they_came_from() {
    let ws = Workspace::new();
    let spec = ws.write("spec.toml", &tiny_toy_spec("dev", "0.05", 100));
    let spec = spec.to_str().unwrap();
    let expected = "expected \"cpu\", \"cuda\" or \"cuda:N\"";
    assert_rejected(
        &ws,
        &[spec, "--set", "run.device=gpu"],
        &[],
        &[
            "--set run.device=gpu",
            "`run.device`",
            expected,
            "got \"gpu\"",
        ],
    );
    assert_rejected(
        &ws,
        &[spec],
        &[("SAERUN_RUN__DEVICE", "cuda:x")],
        &["SAERUN_RUN__DEVICE", "`run.device`", "got \"cuda:x\""],
    );
    let text = format!(
        "{}\n[run]\ndevice = \"cuda:\"\n",
        tiny_toy_spec("dev", "0.05", 100)
    );
    let line = text.lines().position(|l| l.starts_with("device")).unwrap() + 1;
    let in_file = ws.write("in_file.toml", &text);
    assert_rejected(
        &ws,
        &[in_file.to_str().unwrap()],
        &[],
        &[
            "in_file.toml",
            &format!("line {line}"),
            "`run.device`",
            "got \"cuda:\"",
        ],
    );
    let typo = ws.write(
        "typo.toml",
        &format!(
            "{}\n[run]\ndevcie = \"cpu\"\n",
            tiny_toy_spec("dev", "0.05", 100)
        ),
    );
    assert_rejected(
        &ws,
        &[typo.to_str().unwrap()],
        &[],
        &["`run.devcie`", "unknown key"],
    );
}

#[test]
fn cuda_in_a_build_without_the_feature_is_one_clear_error() {
    if cfg!(feature = "cuda") {
        eprintln!("skipped: this build has the `cuda` feature");
        return;
    }
    let ws = Workspace::new();
    let spec = ws.write("spec.toml", &tiny_toy_spec("dev", "0.05", 100));
    for value in ["cuda", "cuda:1"] {
        let set = format!("run.device={value}");
        assert_rejected(
            &ws,
            &[spec.to_str().unwrap(), "--set", &set],
            &[],
            &[
                "`run.device`",
                "built without the `cuda` feature",
                "--features cuda",
            ],
        );
    }
}

/// Keys of every node, by (stage, label).
fn keys(graph: &Graph) -> Vec<(String, String, String)> {
    graph
        .nodes()
        .iter()
        .map(|n| (n.stage.to_string(), n.label.clone(), n.key.hex()))
        .collect()
}

fn with_device(resolved: &ResolvedSpec, device: DeviceChoice) -> Graph {
    // `resolve` rejects CUDA in this build; the planner is what is under test here.
    let mut resolved = resolved.clone();
    resolved.device = device;
    Graph::build(&resolved).unwrap()
}

/// Which stages' keys change between a CPU and a CUDA plan of the same spec.
fn assert_device_keying(resolved: &ResolvedSpec, host_only: &[&str]) {
    let cpu = keys(&with_device(resolved, DeviceChoice::Cpu));
    let cuda0 = keys(&with_device(resolved, DeviceChoice::Cuda(0)));
    let cuda1 = keys(&with_device(resolved, DeviceChoice::Cuda(1)));
    assert_eq!(cuda0, cuda1, "the GPU ordinal must not enter keys");
    assert_eq!(cpu.len(), cuda0.len());
    for (c, g) in cpu.iter().zip(&cuda0) {
        assert_eq!((&c.0, &c.1), (&g.0, &g.1), "same plan");
        if host_only.contains(&c.0.as_str()) {
            assert_eq!(c.2, g.2, "{} {}: computed on the host, shared", c.0, c.1);
        } else {
            assert_ne!(c.2, g.2, "{} {}: computed on the device, keyed", c.0, c.1);
        }
    }
}

#[test]
fn toy_plan_keys_by_device_except_the_data() {
    let ws = Workspace::new();
    let spec = ws.write("spec.toml", &tiny_toy_spec("dev", "[0.05, 0.1]", 100));
    let (resolved, graph, _) = prepare(&options(&ws, &spec, &[])).unwrap();
    assert_eq!(resolved.device, DeviceChoice::Cpu);
    let stages: Vec<&str> = graph.nodes().iter().map(|n| n.stage).collect();
    for s in ["toy_data", "train_sae", "eval_sae", "match_sizes"] {
        assert!(stages.contains(&s), "plan lacks {s}");
    }
    assert_device_keying(&resolved, &["toy_data"]);

    // CPU keys are the plain derivation (no device field): caches from before the GPU
    // build stay valid, whether `run.device = "cpu"` is written or not.
    for node in graph.nodes() {
        let inputs: Vec<_> = node.inputs.iter().map(|&i| graph.nodes()[i].key).collect();
        let plain = stage_key(node.stage, node.version, &node.params, &inputs).unwrap();
        assert_eq!(node.key, plain, "{} {}", node.stage, node.label);
    }
    let explicit = prepare(&options(&ws, &spec, &["run.device=cpu".into()]))
        .unwrap()
        .1;
    assert_eq!(keys(&explicit), keys(&graph));
}

#[test]
fn text_plan_keys_by_device_except_tokenisation() {
    let Some(shared) = shared_dir() else { return };
    let (model, data) = tiny_pythia_sources(&shared);
    let ws = Workspace::new();
    let spec = spec_path("tiny_pythia_sweep.toml");
    let (resolved, graph, _) =
        prepare(&options(&ws, std::path::Path::new(&spec), &[model, data])).unwrap();
    let stages: Vec<&str> = graph.nodes().iter().map(|n| n.stage).collect();
    for s in [
        "tokenize",
        "harvest",
        "ce_baselines",
        "train_sae",
        "feature_browser",
    ] {
        assert!(stages.contains(&s), "plan lacks {s}");
    }
    // The browser renders on the host, but its inputs carry the device.
    assert_device_keying(&resolved, &["tokenize"]);
}

#[test]
fn the_run_record_names_the_device() {
    let ws = Workspace::new();
    let spec = ws.write("spec.toml", &tiny_toy_spec("dev", "0.05", 100));
    let out = ws.run(&[
        "run",
        spec.to_str().unwrap(),
        "--set",
        "run.device=cpu",
        "--set",
        "sae.dict_ratios=[1]",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = ws.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["device"], "cpu", "{}", runs[0]);

    // Records written before the GPU build have no `device`: they were CPU runs.
    let mut old = runs[0].clone();
    old.as_object_mut().unwrap().remove("device");
    let parsed: RunRecord = serde_json::from_value(old).unwrap();
    assert_eq!(parsed.device, "cpu");
}
