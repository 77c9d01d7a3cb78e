//! The language-model pipeline end to end on the trained tiny GPT-NeoX in ../shared
//! (path from SAERUN_SHARED_DIR, set by .ci/run), and the original study's spec failing
//! fast and clearly where the hub is unreachable.

mod support;
use saerun::report::tables;
use support::*;

fn column(df: &polars::prelude::DataFrame, name: &str) -> Vec<f64> {
    let ca = df.column(name).unwrap().f64().unwrap();
    (0..ca.len())
        .map(|i| ca.get(i).unwrap_or(f64::NAN))
        .collect()
}

#[test]
fn tiny_pythia_sae_recovers_cross_entropy_and_reuses_activations() {
    let Some(shared) = shared_dir() else { return };
    let ws = Workspace::new();
    let (model, data) = tiny_pythia_sources(&shared);
    let spec = spec_path("tiny_pythia_sweep.toml");
    let small = [
        "--set",
        &model,
        "--set",
        &data,
        "--set",
        "sae.dict_ratios=[1, 2]",
        "--set",
        "train.steps=400",
        "--set",
        "train.resample_every=200",
        "--set",
        "eval.contexts=128",
        "--set",
        "analyses.enabled=false",
    ];
    let mut args = vec!["run", spec.as_str()];
    args.extend_from_slice(&small);
    args.extend_from_slice(&["--set", "sae.l1=[0.02]"]);
    let out = ws.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = ws.runs();
    // tokenize, harvest, ce_baselines, 2 × (train + eval), 1 match
    assert_eq!(outcomes(&runs[0]), (8, 0));
    let roles: Vec<&str> = runs[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["model", "tokenizer", "data"],
        "run.json records the external inputs"
    );

    let run_dir = ws
        .results()
        .join("tiny_pythia_sweep")
        .join(runs[0]["run_id"].as_str().unwrap());
    let df = tables::read(&run_dir.join("metrics.parquet")).unwrap();
    let (mse, recovered, delta) = (
        column(&df, "mse"),
        column(&df, "ce_recovered"),
        column(&df, "delta_ce"),
    );
    for i in 0..2 {
        assert!(
            recovered[i] > 0.0 && recovered[i] <= 1.0,
            "CE recovered {recovered:?}"
        );
        assert!(delta[i] > 0.0, "ΔCE {delta:?}");
    }
    assert!(
        mse[1] < mse[0],
        "the 2x dictionary should reconstruct better: {mse:?}"
    );
    let clean = column(&df, "ce_clean")[0];
    let zero = column(&df, "ce_zero")[0];
    assert!(
        zero > clean + 1.0,
        "zero-ablating the residual stream must hurt: {zero} vs {clean}"
    );
    for plot in [
        "delta_ce_vs_size",
        "ce_recovered_vs_size",
        "l0_fve_frontier",
        "feature_count_vs_size",
    ] {
        assert!(
            run_dir.join(format!("plots/{plot}.png")).is_file(),
            "missing {plot}"
        );
    }

    // Only SAE parameters change: tokens, activations and baselines are reused.
    let mut args = vec!["run", spec.as_str()];
    args.extend_from_slice(&small);
    args.extend_from_slice(&["--set", "sae.l1=[0.05]"]);
    let out = ws.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = &ws.runs()[1];
    for stage in run["stages"].as_array().unwrap() {
        let reused = stage["outcome"] == "reused";
        match stage["stage"].as_str().unwrap() {
            "tokenize" | "harvest" | "ce_baselines" => assert!(reused, "{stage}"),
            _ => assert!(!reused, "{stage}"),
        }
    }
}

#[test]
fn original_study_spec_stops_at_once_without_the_hub() {
    let ws = Workspace::new();
    let hf_home = ws.path().join("hf-home");
    let spec = spec_path("resid_l2_sweep.toml");
    for offline in [true, false] {
        let mut cmd = ws.cmd(&["run", spec.as_str()]);
        cmd.env("HF_HOME", &hf_home)
            .env_remove("HF_HUB_CACHE")
            .env_remove("HUGGINGFACE_HUB_CACHE");
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        } else {
            // A closed local port: an unreachable hub without depending on DNS.
            cmd.env_remove("HF_HUB_OFFLINE")
                .env("HF_ENDPOINT", "http://127.0.0.1:9");
        }
        let started = std::time::Instant::now();
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "offline={offline}: {err}");
        assert!(started.elapsed().as_secs() < 30, "must fail fast");
        assert!(err.contains("EleutherAI/pythia-70m"), "{err}");
        assert!(
            err.contains(&hf_home.join("hub").display().to_string()),
            "names the cache searched: {err}"
        );
        assert!(
            err.contains("model.source=path:"),
            "says how to use a local copy: {err}"
        );
        assert!(ws.cache_entries().is_empty());
    }
}
