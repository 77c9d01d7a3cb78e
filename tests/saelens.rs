//! SAELens interchange: import checked against SAELens' own outputs (fixtures written by
//! `scripts/saelens_interchange.py fixtures` with sae-lens 6.54.12), cfg.json errors, the
//! format's write → read round trip, `saerun export` of a toy run, and (with ../shared)
//! export → import of a tiny-pythia SAE giving the same evaluation, imported SAELens
//! fixtures evaluated and analysed, and mismatched imports rejected.

mod support;
use candle_core::{Device, Tensor};
use saerun::model::Processing;
use saerun::report::tables;
use saerun::sae::meta::{SaeMeta, TrainedOn};
use saerun::sae::{saelens, Sae};
use saerun::spec::Architecture;
use std::path::{Path, PathBuf};
use support::*;

const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saelens")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn saelens_fixtures_encode_and_decode_as_saelens_does() {
    for (name, k) in [
        ("standard", None),
        ("standard_no_b_dec_in", None),
        ("topk", Some(8)),
        ("topk_rescaled", Some(8)),
    ] {
        let dir = fixtures().join(name);
        let cfg = saelens::read_cfg(&dir).unwrap();
        assert_eq!(cfg.meta.k, k, "{name}");
        assert_eq!((cfg.meta.d_in, cfg.meta.d_sae), (128, 64), "{name}");
        let on = cfg.meta.trained_on.as_ref().expect("hook recorded");
        assert_eq!(on.hook, "blocks.2.hook_resid_post");
        assert_eq!(on.processing, Processing::TransformerLens);
        assert_eq!((on.context_tokens, on.prepend_bos), (25, false));
        let sae = saelens::load(&dir, &cfg).unwrap();
        let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu).unwrap();
        let codes = sae.encode(&io["x"]).unwrap();
        let recon = sae.decode(&codes).unwrap();
        let (de, dd) = (
            max_abs_diff(&codes, &io["feature_acts"]),
            max_abs_diff(&recon, &io["sae_out"]),
        );
        assert!(de <= TOL, "{name}: encode differs from SAELens by {de}");
        assert!(dd <= TOL, "{name}: decode differs from SAELens by {dd}");
        let active: f32 = codes
            .gt(0f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            active > 0.0,
            "{name}: no active latent, the comparison says nothing"
        );
    }
}

/// Copy fixture `name` into a temp dir `tag` with its cfg.json edited by `edit`.
fn edited(ws: &Workspace, name: &str, tag: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let dir = ws.path().join(format!("edited-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixtures().join(name);
    std::fs::copy(
        src.join("sae_weights.safetensors"),
        dir.join("sae_weights.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("cfg.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("cfg.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    dir
}

/// An edit of a cfg.json.
type Edit = dyn Fn(&mut serde_json::Value);

#[test]
fn bad_cfg_json_names_the_file_and_key() {
    let ws = Workspace::new();
    let cases: Vec<(&str, Box<Edit>, &[&str])> = vec![
        (
            "standard",
            Box::new(|c| c["architecture"] = "jumprelu".into()),
            &[
                "cfg.json",
                "`architecture`",
                "\"standard\" or \"topk\"",
                "jumprelu",
            ],
        ),
        (
            "standard",
            Box::new(|c| c["normalize_activations"] = "expected_average_only_in".into()),
            &["`normalize_activations`", "\"none\""],
        ),
        (
            "topk",
            Box::new(|c| c["k"] = 0.into()),
            &["`k`", "positive integer"],
        ),
        (
            "standard",
            Box::new(|c| {
                c["metadata"]["model_from_pretrained_kwargs"] =
                    serde_json::json!({"center_writing_weights": false, "fold_ln": true})
            }),
            &["`metadata.model_from_pretrained_kwargs`", "fold_ln"],
        ),
        (
            "standard",
            Box::new(|c| c["metadata"]["hook_head_index"] = 2.into()),
            &["`metadata.hook_head_index`", "null"],
        ),
    ];
    for (i, (fixture, edit, needles)) in cases.into_iter().enumerate() {
        let dir = edited(&ws, fixture, &i.to_string(), edit);
        let err = saelens::read_cfg(&dir).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        for n in needles {
            assert!(err.to_string().contains(n), "case {i}: {n:?} not in: {err}");
        }
    }
    // A cfg.json that promises another shape than the weights have.
    let dir = edited(&ws, "standard", "shape", |c| c["d_sae"] = 65.into());
    let cfg = saelens::read_cfg(&dir).unwrap();
    let err = saelens::load(&dir, &cfg).unwrap_err();
    assert!(
        err.to_string()
            .contains("`W_enc` has shape [128, 64], expected [128, 65]"),
        "{err}"
    );
}

fn random_sae(d_in: usize, d_sae: usize, k: Option<usize>) -> Sae {
    let dev = Device::Cpu;
    let mut sae = Sae::init(
        d_in,
        d_sae,
        Tensor::randn(0f32, 1.0, d_in, &dev).unwrap(),
        7,
    )
    .unwrap();
    sae.w_enc = Tensor::randn(0f32, 0.2, (d_sae, d_in), &dev).unwrap();
    sae.b_enc = Tensor::randn(0f32, 0.3, d_sae, &dev).unwrap();
    sae.top_k = k;
    sae
}

#[test]
fn written_saelens_folders_read_back_identically() {
    let ws = Workspace::new();
    for (arch, k, hook, processing) in [
        (
            Architecture::ReluL1,
            None,
            "blocks.1.mlp.hook_post",
            Processing::None,
        ),
        (
            Architecture::TopK,
            Some(5),
            "blocks.2.hook_resid_post",
            Processing::TransformerLens,
        ),
    ] {
        let sae = random_sae(24, 40, k);
        let meta = SaeMeta {
            architecture: arch,
            d_in: 24,
            d_sae: 40,
            l1: if k.is_some() { 0.0 } else { 0.125 },
            k,
            seed: 3,
            trained_on: Some(TrainedOn {
                model_source: "hf:EleutherAI/pythia-70m@main".into(),
                model_hash: Some("ab".repeat(32)),
                processing,
                model_dtype: "f32".into(),
                hook: hook.into(),
                context_tokens: 25,
                prepend_bos: true,
                data_source: "hf-dataset:NeelNanda/pile-10k".into(),
            }),
        };
        let dir = ws.path().join(format!("{arch:?}"));
        std::fs::create_dir(&dir).unwrap();
        saelens::write(&dir, &sae, &meta, Some("00ff")).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap();
        assert_eq!(cfg["metadata"]["model_name"], "EleutherAI/pythia-70m");
        assert_eq!(cfg["metadata"]["hook_name"], hook);
        assert_eq!(cfg["metadata"]["dataset_path"], "NeelNanda/pile-10k");
        let back = saelens::read_cfg(&dir).unwrap();
        assert_eq!(back.meta, meta);
        let loaded = saelens::load(&dir, &back).unwrap();
        for (a, b, what) in [
            (&loaded.w_enc, &sae.w_enc, "w_enc"),
            (&loaded.b_enc, &sae.b_enc, "b_enc"),
            (&loaded.w_dec, &sae.w_dec, "w_dec"),
            (&loaded.b_dec, &sae.b_dec, "b_dec"),
        ] {
            assert_eq!(max_abs_diff(a, b), 0.0, "{what}");
        }
        assert_eq!(loaded.top_k, k);
        // SAELens' layout: W_enc is (d_in, d_sae).
        let w = candle_core::safetensors::load(dir.join("sae_weights.safetensors"), &Device::Cpu)
            .unwrap();
        assert_eq!(w["W_enc"].dims(), [24, 40]);
        assert_eq!(w["W_dec"].dims(), [40, 24]);
    }
}

#[test]
fn export_writes_every_sae_of_a_toy_run() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy", "0.05", 100));
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&[
        "export",
        "toy@latest",
        "--format",
        "saelens",
        "exported",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 2, "{}", stdout(&out));
    for e in &listed {
        let dir = PathBuf::from(e["dir"].as_str().unwrap());
        assert_eq!(e["stage"], "train_sae");
        let cfg = saelens::read_cfg(&dir).unwrap();
        assert!(cfg.meta.trained_on.is_none(), "toy SAEs have no model");
        let exported = saelens::load(&dir, &cfg).unwrap();
        let entry = ws
            .cache()
            .join("v1/entries/train_sae")
            .join(e["key"].as_str().unwrap());
        let trained = Sae::load(&entry.join("sae.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&exported.w_enc, &trained.w_enc), 0.0);
        assert_eq!(max_abs_diff(&exported.w_dec, &trained.w_dec), 0.0);
        assert_eq!(max_abs_diff(&exported.b_enc, &trained.b_enc), 0.0);
        assert_eq!(max_abs_diff(&exported.b_dec, &trained.b_dec), 0.0);
        assert_eq!(cfg.meta.d_in, 32);
        assert_eq!(cfg.meta.l1, 0.05);
    }
    let names: Vec<String> = std::fs::read_dir(ws.path().join("exported"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temporary folder left: {names:?}"
    );
    // Never overwritten.
    let again = ws.run(&["export", "toy@latest", "--format", "saelens", "exported"]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
}

fn import_spec(shared: &Path, source: &Path, hook: &str, extra: &str) -> String {
    format!(
        r#"[experiment]
name = "imported"

[model]
source = "path:{model}"
batch_size = 64

[hook]
name = "{hook}"

[data]
source = "path:{data}"
context_tokens = 25
packing = "pack"

[sae]
source = "saelens:{source}"

[eval]
contexts = 64
{extra}"#,
        model = shared.join("data/tiny-pythia").display(),
        data = shared.join("data/tinyshakespeare.txt").display(),
        source = source.display(),
    )
}

fn metric(run_dir: &Path, name: &str) -> Vec<f64> {
    let df = tables::read(&run_dir.join("metrics.parquet")).unwrap();
    let col = df
        .column(name)
        .unwrap()
        .cast(&polars::prelude::DataType::Float64)
        .unwrap();
    let ca = col.f64().unwrap().clone();
    (0..ca.len())
        .map(|i| ca.get(i).unwrap_or(f64::NAN))
        .collect()
}

fn run_dir(ws: &Workspace, run: &serde_json::Value) -> PathBuf {
    ws.results()
        .join(run["experiment"].as_str().unwrap())
        .join(run["run_id"].as_str().unwrap())
}

#[test]
fn tiny_pythia_sae_exported_and_imported_evaluates_identically() {
    let Some(shared) = shared_dir() else { return };
    let ws = Workspace::new();
    let (model, data) = tiny_pythia_sources(&shared);
    let spec = spec_path("tiny_pythia_sweep.toml");
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
        "sae.l1=[0.05]",
        "--set",
        "train.steps=200",
        "--set",
        "train.resample_every=100",
        "--set",
        "eval.contexts=64",
        "--set",
        "analyses.enabled=false",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&[
        "export",
        "tiny_pythia_sweep@latest",
        "--format",
        "saelens",
        "exported",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = ws.path().join("exported");
    let folder = exported.join("relu_l1_d128_l1-0.05_s0");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.2.hook_resid_post");
    assert_eq!(cfg["metadata"]["context_size"], 25);
    assert_eq!(cfg["metadata"]["model_name"], "tiny-pythia");
    assert_eq!(
        cfg["metadata"]["model_from_pretrained_kwargs"]["center_writing_weights"],
        true
    );

    let spec = ws.write(
        "import.toml",
        &import_spec(&shared, &exported, "blocks.2.hook_resid_post", ""),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = ws.runs();
    let stages: Vec<&str> = runs[1]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(
        stages.contains(&"import_sae") && !stages.contains(&"train_sae"),
        "{stages:?}"
    );
    // Same model, hook and contexts: tokenize, harvest and the baselines are reused.
    let reused: Vec<&str> = runs[1]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == "reused")
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(reused.contains(&"harvest"), "{reused:?}");
    let (trained, imported) = (run_dir(&ws, &runs[0]), run_dir(&ws, &runs[1]));
    for m in ["mse", "fve", "l0", "ce_sae", "ce_recovered", "l1", "seed"] {
        let (a, b) = (metric(&trained, m), metric(&imported, m));
        assert_eq!(a, b, "{m}: trained {a:?}, imported {b:?}");
    }

    // A second import of the same files is a cache hit (the key is their content).
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&ws.runs()[2]).0, 0, "everything reused");

    // Another hook: rejected before anything runs, naming the key and the cfg.json.
    let spec = ws.write(
        "bad.toml",
        &import_spec(&shared, &exported, "blocks.1.hook_resid_post", ""),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for n in [
        "`sae.source`",
        "cfg.json",
        "`metadata.hook_name`",
        "blocks.2.hook_resid_post",
    ] {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    // Training keys beside `source`: rejected.
    let spec = ws.write(
        "bad2.toml",
        &import_spec(
            &shared,
            &exported,
            "blocks.2.hook_resid_post",
            "[train]\nsteps = 10\n",
        ),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`train.steps`"), "{}", stderr(&out));
}

#[test]
fn saelens_fixtures_import_into_tiny_pythia_with_analyses() {
    let Some(shared) = shared_dir() else { return };
    let ws = Workspace::new();
    let analyses = "[analyses]\nn_features = 3\ncontexts = 32\n";
    let spec = ws.write(
        "import.toml",
        &import_spec(&shared, &fixtures(), "blocks.2.hook_resid_post", analyses),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = &ws.runs()[0];
    let count = |stage: &str| {
        run["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["stage"] == stage)
            .count()
    };
    assert_eq!(count("import_sae"), 4);
    assert_eq!(count("eval_lm"), 4);
    assert_eq!(count("logit_lens"), 4);
    let dir = run_dir(&ws, run);
    let ce = metric(&dir, "ce_sae");
    assert!(ce.iter().all(|c| c.is_finite()), "{ce:?}");
    assert!(dir.join("features/index.html").is_file());

    // Processing "none" against SAEs trained with TransformerLens processing: rejected.
    let spec = ws.write(
        "none.toml",
        &import_spec(
            &shared,
            &fixtures().join("topk"),
            "blocks.2.hook_resid_post",
            "",
        )
        .replace("batch_size = 64", "batch_size = 64\nprocessing = \"none\""),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("model_from_pretrained_kwargs"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_mlp_hook_sae_reads_d_mlp_wide_activations() {
    let Some(shared) = shared_dir() else { return };
    let ws = Workspace::new();
    let (model, data) = tiny_pythia_sources(&shared);
    let spec = spec_path("tiny_pythia_sweep.toml");
    let out = ws.run(&[
        "run",
        &spec,
        "--set",
        &model,
        "--set",
        &data,
        "--set",
        "hook.name=blocks.1.mlp.hook_post",
        "--set",
        "data.max_documents=300",
        "--set",
        "sae.dict_ratios=[0.25]",
        "--set",
        "sae.l1=[0.05]",
        "--set",
        "train.steps=50",
        "--set",
        "train.batch_size=256",
        "--set",
        "train.resample_every=25",
        "--set",
        "train.warmup_steps=10",
        "--set",
        "eval.contexts=32",
        "--set",
        "analyses.enabled=false",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&["export", "tiny_pythia_sweep@latest", "exported", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let dir = PathBuf::from(listed[0]["dir"].as_str().unwrap());
    let cfg = saelens::read_cfg(&dir).unwrap();
    // tiny-pythia: d_model 128, d_mlp 512; ratio 0.25 of the hook's width.
    assert_eq!((cfg.meta.d_in, cfg.meta.d_sae), (512, 128));
    assert_eq!(cfg.meta.trained_on.unwrap().hook, "blocks.1.mlp.hook_post");
    let run = &ws.runs()[0];
    let ce = metric(&run_dir(&ws, run), "ce_sae");
    assert!(ce[0].is_finite(), "{ce:?}");
}
