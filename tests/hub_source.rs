//! Source-string parsing, environment precedence of `HubConfig`, `path:` sources and
//! Parquet file selection: everything of the hub module that needs no network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use saerun::hub::dataset::select_parquet;
use saerun::hub::{resolve_model_files_with, DatasetSource, HubConfig, ModelSource};
use saerun::Error;

fn input_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Input(m)) => m,
        other => panic!("expected Error::Input, got {other:?}"),
    }
}

fn hub(repo: &str, revision: &str) -> ModelSource {
    ModelSource::Hub {
        repo: repo.to_string(),
        revision: revision.to_string(),
    }
}

#[test]
fn model_sources_parse() {
    assert_eq!(
        ModelSource::parse("path:/models/pythia").unwrap(),
        ModelSource::Path(PathBuf::from("/models/pythia"))
    );
    assert_eq!(
        ModelSource::parse("hf:EleutherAI/pythia-70m").unwrap(),
        hub("EleutherAI/pythia-70m", "main")
    );
    assert_eq!(
        ModelSource::parse(" hf:gpt2 ").unwrap(),
        hub("gpt2", "main")
    );
    for rev in [
        "main",
        "step143000",
        "refs/pr/5",
        "v1.0",
        "0123456789abcdef0123456789abcdef01234567",
    ] {
        let s = format!("hf:EleutherAI/pythia-70m@{rev}");
        let parsed = ModelSource::parse(&s).unwrap();
        assert_eq!(parsed, hub("EleutherAI/pythia-70m", rev));
        // Display round-trips, so messages and recorded specs use the canonical form.
        assert_eq!(ModelSource::parse(&parsed.to_string()).unwrap(), parsed);
    }
    assert_eq!(
        DatasetSource::parse("hf-dataset:NeelNanda/pile-10k").unwrap(),
        DatasetSource::Hub {
            repo: "NeelNanda/pile-10k".into(),
            revision: "main".into()
        }
    );
    assert_eq!(
        DatasetSource::parse("hf-dataset:NeelNanda/pile-10k@refs/convert/parquet")
            .unwrap()
            .to_string(),
        "hf-dataset:NeelNanda/pile-10k@refs/convert/parquet"
    );
    assert_eq!(
        DatasetSource::parse("path:data/pile.parquet").unwrap(),
        DatasetSource::Path(PathBuf::from("data/pile.parquet"))
    );
}

#[test]
fn bad_model_sources_name_the_value_and_the_accepted_forms() {
    for bad in [
        "",
        "pythia-70m.safetensors",
        "hf:",
        "hf:a/b/c",
        "hf:../etc",
        "hf:org/na--me",
        "hf:org/name@",
        "hf:org/name@../../outside",
        "hf:org/name@refs//x",
        "hf:org/name@rev with space",
        "hf:-org/name",
        "path:",
        "s3://bucket/model",
    ] {
        let msg = input_msg(ModelSource::parse(bad));
        assert!(msg.contains(&format!("`{}`", bad.trim())), "{bad}: {msg}");
        assert!(
            msg.contains("accepted forms") && msg.contains("hf:ORG/NAME"),
            "{bad}: {msg}"
        );
    }
    let msg = input_msg(ModelSource::parse("EleutherAI/pythia-70m"));
    assert!(
        msg.contains("did you mean `hf:EleutherAI/pythia-70m`"),
        "{msg}"
    );
    let msg = input_msg(ModelSource::parse("hf-dataset:NeelNanda/pile-10k"));
    assert!(msg.contains("`hf:`"), "{msg}");
}

#[test]
fn bad_dataset_sources_point_at_the_right_prefix() {
    let msg = input_msg(DatasetSource::parse("hf:NeelNanda/pile-10k"));
    assert!(
        msg.contains("hf-dataset:") && msg.contains("data.source"),
        "{msg}"
    );
    let msg = input_msg(DatasetSource::parse("NeelNanda/pile-10k"));
    assert!(
        msg.contains("did you mean `hf-dataset:NeelNanda/pile-10k`"),
        "{msg}"
    );
    let msg = input_msg(DatasetSource::parse("hf-dataset:a/b@.."));
    assert!(msg.contains("accepted forms"), "{msg}");
}

fn config_from(vars: &[(&str, &str)]) -> HubConfig {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HubConfig::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn cache_dir_precedence_matches_huggingface_hub() {
    let home = [("HOME", "/home/u")];
    assert_eq!(
        config_from(&home).cache_dir,
        Path::new("/home/u/.cache/huggingface/hub")
    );
    assert_eq!(
        config_from(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]).cache_dir,
        Path::new("/xdg/huggingface/hub")
    );
    assert_eq!(
        config_from(&[
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_HOME", "/hf")
        ])
        .cache_dir,
        Path::new("/hf/hub")
    );
    assert_eq!(
        config_from(&[("HOME", "/home/u"), ("HF_HOME", "~/hf")]).cache_dir,
        Path::new("/home/u/hf/hub")
    );
    assert_eq!(
        config_from(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]).cache_dir,
        Path::new("/old")
    );
    assert_eq!(
        config_from(&[
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/old"),
            ("HF_HUB_CACHE", "/new")
        ])
        .cache_dir,
        Path::new("/new")
    );
    // Empty means unset, as in Python's `os.getenv(...) or default`.
    assert_eq!(
        config_from(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "")]).cache_dir,
        Path::new("/hf/hub")
    );
}

/// Timeouts and retries: huggingface_hub's variable names (seconds, fractions allowed),
/// defaults 10 s / 10 s / 5 retries; nonsense values fall back to the default.
#[test]
fn timeouts_and_retries_from_environment() {
    use std::time::Duration;
    let d = config_from(&[("HOME", "/home/u")]);
    assert_eq!(d.download_timeout, Duration::from_secs(10));
    assert_eq!(d.etag_timeout, Duration::from_secs(10));
    assert_eq!(d.retries, 5);
    let c = config_from(&[
        ("HOME", "/home/u"),
        ("HF_HUB_DOWNLOAD_TIMEOUT", "2.5"),
        ("HF_HUB_ETAG_TIMEOUT", "30"),
        ("SAERUN_HUB_RETRIES", "0"),
    ]);
    assert_eq!(c.download_timeout, Duration::from_millis(2500));
    assert_eq!(c.etag_timeout, Duration::from_secs(30));
    assert_eq!(c.retries, 0);
    let bad = config_from(&[
        ("HOME", "/home/u"),
        ("HF_HUB_DOWNLOAD_TIMEOUT", "-1"),
        ("HF_HUB_ETAG_TIMEOUT", "soon"),
        ("SAERUN_HUB_RETRIES", "many"),
    ]);
    assert_eq!(
        (bad.download_timeout, bad.etag_timeout, bad.retries),
        (d.download_timeout, d.etag_timeout, d.retries)
    );
    // Back-off: doubles from retry_backoff (1 s), capped at 8 s as huggingface_hub's.
    let waits: Vec<u64> = (0..6).map(|i| d.backoff(i).as_secs()).collect();
    assert_eq!(waits, vec![1, 2, 4, 8, 8, 8]);
}

#[test]
fn endpoint_offline_and_token_from_environment() {
    let c = config_from(&[("HOME", "/nonexistent-home")]);
    assert_eq!(c.endpoint, "https://huggingface.co");
    assert!(!c.offline);
    assert_eq!(c.token, None);
    assert!(c.progress);
    assert_eq!(
        config_from(&[("HF_ENDPOINT", "http://mirror.local/")]).endpoint,
        "http://mirror.local"
    );
    for on in ["1", "true", "TRUE", "yes", "On"] {
        assert!(config_from(&[("HF_HUB_OFFLINE", on)]).offline, "{on}");
    }
    for off in ["0", "false", "no", ""] {
        assert!(!config_from(&[("HF_HUB_OFFLINE", off)]).offline, "{off}");
    }
    assert!(config_from(&[("TRANSFORMERS_OFFLINE", "1")]).offline);
    assert!(!config_from(&[("HF_HUB_DISABLE_PROGRESS_BARS", "1")]).progress);

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("token"), "hf_from_file\n").unwrap();
    let hf_home = tmp.path().to_str().unwrap();
    assert_eq!(
        config_from(&[("HF_HOME", hf_home)]).token.as_deref(),
        Some("hf_from_file")
    );
    assert_eq!(
        config_from(&[("HF_HOME", hf_home), ("HF_TOKEN", "hf_env")])
            .token
            .as_deref(),
        Some("hf_env")
    );
    // The token lives under HF_HOME even when the cache is elsewhere (hf-hub 0.5, used before, got this wrong).
    assert_eq!(
        config_from(&[("HF_HOME", hf_home), ("HF_HUB_CACHE", "/elsewhere")])
            .token
            .as_deref(),
        Some("hf_from_file")
    );
}

fn touch(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

#[test]
fn local_model_dir_is_checked_file_by_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let cfg = HubConfig::new("http://unused.invalid", tmp.path().join("hub"));
    let source = ModelSource::Path(dir.clone());

    let msg = input_msg(resolve_model_files_with(&source, &cfg));
    assert!(
        msg.contains("does not exist") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );

    std::fs::create_dir_all(&dir).unwrap();
    touch(&dir, "config.json", "{}");
    let msg = input_msg(resolve_model_files_with(&source, &cfg));
    assert!(
        msg.contains("tokenizer.json") && msg.contains("model.safetensors"),
        "{msg}"
    );
    assert!(
        !msg.contains("config.json,"),
        "config.json is present: {msg}"
    );
    let msg = input_msg(source.resolve_with(&cfg, &["config.json", "special.json"]));
    assert!(
        msg.contains("special.json") && msg.contains("path:"),
        "{msg}"
    );
    assert_eq!(source.resolve_with(&cfg, &["config.json"]).unwrap(), dir);
    let msg = input_msg(source.resolve_with(&cfg, &["../escape.json"]));
    assert!(msg.contains("../escape.json"), "{msg}");

    // Sharded: the index names a shard that is missing.
    touch(&dir, "tokenizer.json", "{}");
    touch(
        &dir,
        "model.safetensors.index.json",
        r#"{"weight_map":{"a":"s-1.safetensors","b":"s-2.safetensors"}}"#,
    );
    touch(&dir, "s-1.safetensors", "x");
    let msg = input_msg(resolve_model_files_with(&source, &cfg));
    assert!(
        msg.contains("s-2.safetensors") && !msg.contains("s-1.safetensors"),
        "{msg}"
    );
    let msg = input_msg(source.resolve_with(&cfg, &["model.safetensors"]));
    assert!(msg.contains("s-2.safetensors"), "{msg}");
    touch(&dir, "s-2.safetensors", "y");
    assert_eq!(
        source.resolve_with(&cfg, &["model.safetensors"]).unwrap(),
        dir
    );
    let files = resolve_model_files_with(&source, &cfg).unwrap();
    assert_eq!(
        files.weights,
        vec![dir.join("s-1.safetensors"), dir.join("s-2.safetensors")]
    );
    assert_eq!(files.commit, None);

    // An index pointing outside the directory is rejected, not followed.
    touch(
        &dir,
        "model.safetensors.index.json",
        r#"{"weight_map":{"a":"../../etc/passwd"}}"#,
    );
    let msg = input_msg(resolve_model_files_with(&source, &cfg));
    assert!(msg.contains("../../etc/passwd"), "{msg}");

    // The single-file layout wins when present.
    touch(&dir, "model.safetensors", "w");
    let files = resolve_model_files_with(&source, &cfg).unwrap();
    assert_eq!(files.weights, vec![dir.join("model.safetensors")]);
    assert_eq!(files.config, dir.join("config.json"));
}

#[test]
fn local_dataset_files_and_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = HubConfig::new("http://unused.invalid", tmp.path().join("hub"));
    let root = tmp.path().join("data");

    let missing = DatasetSource::Path(root.join("nope.parquet"));
    let msg = input_msg(missing.resolve_parquet_with(&cfg));
    assert!(
        msg.contains("nope.parquet") && msg.contains("does not exist"),
        "{msg}"
    );

    std::fs::create_dir_all(&root).unwrap();
    let empty = DatasetSource::Path(root.clone());
    let msg = input_msg(empty.resolve_parquet_with(&cfg));
    assert!(msg.contains("no .parquet"), "{msg}");

    touch(&root, "b.jsonl", "{}");
    touch(&root, "a.txt", "t");
    touch(&root, "data/train-0.parquet", "p");
    touch(&root, "notes.md", "skip");
    touch(&root, ".cache/x.parquet", "hidden");
    let files = DatasetSource::Path(root.clone())
        .resolve_parquet_with(&cfg)
        .unwrap();
    assert_eq!(
        files,
        vec![
            root.join("a.txt"),
            root.join("b.jsonl"),
            root.join("data/train-0.parquet")
        ]
    );
    let single = DatasetSource::Path(root.join("b.jsonl"));
    assert_eq!(
        single.resolve_parquet_with(&cfg).unwrap(),
        vec![root.join("b.jsonl")]
    );
}

#[test]
fn parquet_selection_prefers_train_split_and_one_config() {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        select_parquet(
            &v(&["README.md", "data/train-00000-of-00001-abc.parquet"]),
            false
        ),
        v(&["data/train-00000-of-00001-abc.parquet"])
    );
    assert_eq!(
        select_parquet(
            &v(&[
                "data/test-0.parquet",
                "data/train-1.parquet",
                "data/train-0.parquet"
            ]),
            false
        ),
        v(&["data/train-0.parquet", "data/train-1.parquet"])
    );
    // No split markers: everything.
    assert_eq!(
        select_parquet(&v(&["b.parquet", "a.parquet", "c.json"]), false),
        v(&["a.parquet", "b.parquet"])
    );
    assert_eq!(
        select_parquet(
            &v(&[
                "zz/train/0000.parquet",
                "default/test/0000.parquet",
                "default/train/0000.parquet"
            ]),
            true
        ),
        v(&["default/train/0000.parquet"])
    );
    assert_eq!(
        select_parquet(&v(&["b/train/0.parquet", "a/validation/0.parquet"]), true),
        v(&["a/validation/0.parquet"])
    );
    assert!(select_parquet(&v(&["x.csv"]), false).is_empty());
}
