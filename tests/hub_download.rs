//! Hub downloads end to end against a real HTTP server on 127.0.0.1 (tests/common/hub_server.rs)
//! reached through the endpoint setting, into a temporary hub cache. Every test passes its
//! own `HubConfig`, so tests run in parallel without touching process environment variables.

#[path = "common/hub_server.rs"]
mod hub_server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hub_server::{dead_endpoint, etag_of, FakeRepo, Fault, HubServer, Kind};
use saerun::hub::{
    resolve_model_files_with, DatasetSource, HubConfig, ModelSource, PARQUET_CONVERT_REVISION,
};
use saerun::Error;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMIT2: &str = "fedcba9876543210fedcba9876543210fedcba98";
const CONFIG: &[u8] = br#"{"model_type":"gpt_neox","hidden_size":8}"#;
const TOKENIZER: &[u8] = br#"{"version":"1.0","model":{"type":"BPE"}}"#;

fn weights() -> Vec<u8> {
    // Big enough that the transfer is more than one read, distinct bytes to catch offsets.
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

fn tiny_model() -> FakeRepo {
    let w = weights();
    FakeRepo::new(
        Kind::Model,
        "acme/tiny-lm",
        COMMIT,
        &[
            ("config.json", CONFIG),
            ("tokenizer.json", TOKENIZER),
            ("model.safetensors", &w),
            ("README.md", b"# tiny"),
        ],
    )
}

fn cfg(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig::new(endpoint, cache)
}

fn offline(cache: &Path) -> HubConfig {
    let mut c = HubConfig::new(dead_endpoint(), cache);
    c.offline = true;
    c
}

fn input_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Input(m)) => m,
        other => panic!("expected Error::Input, got {other:?}"),
    }
}

fn hub_source(s: &str) -> ModelSource {
    ModelSource::parse(s).expect("valid source")
}

/// Checks one snapshot entry is a *relative* symlink into `blobs/<etag>` with the bytes.
fn assert_cached(repo_dir: &Path, commit: &str, name: &str, bytes: &[u8]) {
    let link = repo_dir.join("snapshots").join(commit).join(name);
    let meta =
        std::fs::symlink_metadata(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    assert!(
        meta.file_type().is_symlink(),
        "{} is not a symlink",
        link.display()
    );
    let target = std::fs::read_link(&link).unwrap();
    assert!(
        target.is_relative(),
        "symlink target {} must be relative",
        target.display()
    );
    let blob = repo_dir.join("blobs").join(etag_of(name, bytes));
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(&blob).unwrap(),
        "{name} must point at its blob"
    );
    assert_eq!(std::fs::read(&link).unwrap(), bytes, "{name} content");
}

fn no_partial_files(repo_dir: &Path) {
    no_partial_files_in(repo_dir);
}

/// Nothing half-done anywhere under `dir` (a cache root or one repository): no temporary or
/// `.part`/`.incomplete` file, no dangling snapshot symlink, and every blob holds exactly
/// the bytes of a file of `tiny_model()` (checked by name: blob name = etag of the content).
fn no_partial_files_in(dir: &Path) {
    let known: Vec<(String, Vec<u8>)> = tiny_model()
        .files
        .iter()
        .map(|(n, b)| (etag_of(n, b), b.clone()))
        .collect();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                if name != ".locks" {
                    stack.push(path);
                }
                continue;
            }
            assert!(
                !name.ends_with(".part")
                    && !name.ends_with(".incomplete")
                    && !name.ends_with(".tmp")
                    && !name.starts_with('.'),
                "leftover partial download {}",
                path.display()
            );
            if meta.file_type().is_symlink() {
                assert!(path.exists(), "dangling symlink {}", path.display());
            }
            if d.file_name().is_some_and(|n| n == "blobs") {
                if let Some((_, bytes)) = known.iter().find(|(etag, _)| *etag == name) {
                    assert_eq!(
                        std::fs::read(&path).unwrap().len(),
                        bytes.len(),
                        "blob {} has the wrong size",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn model_download_fills_standard_cache_then_works_without_network() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start(vec![tiny_model()]);
    let source = hub_source("hf:acme/tiny-lm");

    let files = resolve_model_files_with(&source, &cfg(server.endpoint(), &cache)).unwrap();
    let repo_dir = cache.join("models--acme--tiny-lm");
    let snap = repo_dir.join("snapshots").join(COMMIT);
    assert_eq!(files.dir, snap);
    assert_eq!(files.commit.as_deref(), Some(COMMIT));
    assert_eq!(files.config, snap.join("config.json"));
    assert_eq!(files.tokenizer, snap.join("tokenizer.json"));
    assert_eq!(files.weights, vec![snap.join("model.safetensors")]);
    assert_cached(&repo_dir, COMMIT, "config.json", CONFIG);
    assert_cached(&repo_dir, COMMIT, "tokenizer.json", TOKENIZER);
    assert_cached(&repo_dir, COMMIT, "model.safetensors", &weights());
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    // Python writes no ref for a commit, and neither does saerun.
    assert!(!repo_dir.join("refs").join(COMMIT).exists());
    // Only what the model needs was fetched.
    assert!(!snap.join("README.md").exists());
    no_partial_files(&repo_dir);
    // Blobs get a normal file's mode (umask applied), as Python's, not a temp file's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let probe = tmp.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&snap.join("model.safetensors")), mode(&probe));
    }

    let served = server.request_count();
    assert!(served > 0);
    // Second resolve, hub still up: served from the cache, no request at all.
    let again = resolve_model_files_with(&source, &cfg(server.endpoint(), &cache)).unwrap();
    assert_eq!(again, files);
    assert_eq!(
        server.request_count(),
        served,
        "a cached model must not hit the network"
    );

    // Hub gone, online mode: still resolves from the cache.
    let endpoint = server.endpoint().to_string();
    server.shutdown();
    assert_eq!(
        resolve_model_files_with(&source, &cfg(&endpoint, &cache)).unwrap(),
        files
    );
    // HF_HUB_OFFLINE semantics.
    assert_eq!(
        resolve_model_files_with(&source, &offline(&cache)).unwrap(),
        files
    );
    // A pinned commit finds the snapshot directly (no refs/<sha> exists).
    let pinned = hub_source(&format!("hf:acme/tiny-lm@{COMMIT}"));
    assert_eq!(
        resolve_model_files_with(&pinned, &offline(&cache))
            .unwrap()
            .dir,
        snap
    );
}

/// Two resolves of one uncached model at once (two runs started together). The weights
/// take a while to arrive (6 s, less than the default 10 s idle limit); saerun's
/// per-repository download lock makes the second wait and take the first one's download
/// instead of transferring the file again.
#[test]
fn concurrent_downloads_of_one_model_wait_for_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start_slow(vec![tiny_model()], Duration::from_secs(6));
    let source = hub_source("hf:acme/tiny-lm");
    let config = cfg(server.endpoint(), &cache);

    let results: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| resolve_model_files_with(&source, &config)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let first = results[0].as_ref().expect("first resolve");
    let second = results[1].as_ref().expect("second resolve");
    assert_eq!(first, second);
    let repo_dir = cache.join("models--acme--tiny-lm");
    assert_cached(&repo_dir, COMMIT, "model.safetensors", &weights());
    no_partial_files(&repo_dir);
    // The weights were transferred once: the waiting run took the finished download.
    let transfers = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.url.ends_with("/model.safetensors"))
        .count();
    assert_eq!(transfers, 1, "{:#?}", server.requests());
}

#[test]
fn offline_and_uncached_names_repo_cache_dir_and_local_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    // A live server proves offline mode does not even try it.
    let server = HubServer::start(vec![tiny_model()]);
    let mut c = cfg(server.endpoint(), &cache);
    c.offline = true;

    let msg = input_msg(resolve_model_files_with(&hub_source("hf:acme/tiny-lm"), &c));
    assert_eq!(
        server.request_count(),
        0,
        "offline mode made requests: {:?}",
        server.requests()
    );
    let repo_dir = cache.join("models--acme--tiny-lm");
    assert!(msg.contains("hf:acme/tiny-lm@main"), "{msg}");
    assert!(msg.contains(&repo_dir.display().to_string()), "{msg}");
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains("--set model.source=path:"), "{msg}");
    assert_eq!(
        msg.matches("is not available").count(),
        1,
        "one message: {msg}"
    );

    // Same through the `resolve(files)` entry point and for datasets.
    let msg = input_msg(hub_source("hf:acme/tiny-lm").resolve_with(&c, &["config.json"]));
    assert!(
        msg.contains("config.json") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
    let ds = DatasetSource::parse("hf-dataset:acme/pile-mini").unwrap();
    let msg = input_msg(ds.resolve_parquet_with(&c));
    assert!(msg.contains("hf-dataset:acme/pile-mini@main"), "{msg}");
    assert!(
        msg.contains(
            &cache
                .join("datasets--acme--pile-mini")
                .display()
                .to_string()
        ),
        "{msg}"
    );
    assert!(msg.contains("--set data.source=path:"), "{msg}");
    assert_eq!(server.request_count(), 0);
}

#[test]
fn unreachable_hub_fails_fast_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let endpoint = dead_endpoint();
    let started = Instant::now();
    let msg = input_msg(resolve_model_files_with(
        &hub_source("hf:acme/tiny-lm@v1"),
        &cfg(&endpoint, &cache),
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(msg.contains("hf:acme/tiny-lm@v1"), "{msg}");
    assert!(msg.contains("could not reach the hub"), "{msg}");
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(
        msg.contains(&cache.join("models--acme--tiny-lm").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("--set model.source=path:"), "{msg}");

    // An unresolvable host name (RFC 6761 `.invalid`) fails within the resolve timeout.
    let started = Instant::now();
    let ds = DatasetSource::parse("hf-dataset:acme/pile-mini").unwrap();
    let msg = input_msg(ds.resolve_parquet_with(&cfg("http://hub.saerun-test.invalid", &cache)));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        msg.contains("could not reach the hub") && msg.contains("data.source"),
        "{msg}"
    );
}

#[test]
fn missing_repo_and_missing_file_are_input_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start(vec![tiny_model()]);
    let c = cfg(server.endpoint(), &cache);

    let msg = input_msg(resolve_model_files_with(&hub_source("hf:acme/nope"), &c));
    assert!(
        msg.contains("hf:acme/nope@main") && msg.contains("404"),
        "{msg}"
    );
    assert!(msg.contains("models--acme--nope"), "{msg}");
    let msg = input_msg(resolve_model_files_with(
        &hub_source("hf:acme/tiny-lm@no-such-branch"),
        &c,
    ));
    assert!(
        msg.contains("no-such-branch") && msg.contains("404"),
        "{msg}"
    );

    let msg =
        input_msg(hub_source("hf:acme/tiny-lm").resolve_with(&c, &["config.json", "vocab.txt"]));
    assert!(msg.contains("vocab.txt") && msg.contains(COMMIT), "{msg}");
    // Nothing was downloaded for a request that cannot be satisfied.
    assert!(!cache.join("models--acme--tiny-lm/snapshots").exists());

    // `resolve(files)` fetches exactly the named files.
    let dir = hub_source("hf:acme/tiny-lm")
        .resolve_with(&c, &["config.json"])
        .unwrap();
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), CONFIG);
    assert!(!dir.join("model.safetensors").exists());
}

#[test]
fn pytorch_only_revision_says_safetensors_are_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FakeRepo::new(
        Kind::Model,
        "acme/old",
        COMMIT,
        &[
            ("config.json", CONFIG),
            ("tokenizer.json", TOKENIZER),
            ("pytorch_model.bin", b"pickle"),
        ],
    )
    .at(&["step143000"]);
    let server = HubServer::start(vec![repo]);
    let msg = input_msg(resolve_model_files_with(
        &hub_source("hf:acme/old@step143000"),
        &cfg(server.endpoint(), &tmp.path().join("hub")),
    ));
    assert!(
        msg.contains("model.safetensors") && msg.contains("pytorch_model.bin"),
        "{msg}"
    );
}

#[test]
fn sharded_weights_fetch_index_then_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let shard1: Vec<u8> = vec![1; 5000];
    let shard2: Vec<u8> = vec![2; 7000];
    let index = br#"{"metadata":{"total_size":12000},"weight_map":{
        "a.weight":"model-00001-of-00002.safetensors",
        "b.weight":"model-00002-of-00002.safetensors",
        "c.weight":"model-00001-of-00002.safetensors"}}"#;
    let repo = FakeRepo::new(
        Kind::Model,
        "acme/sharded",
        COMMIT2,
        &[
            ("config.json", CONFIG),
            ("tokenizer.json", TOKENIZER),
            ("model.safetensors.index.json", index),
            ("model-00001-of-00002.safetensors", &shard1),
            ("model-00002-of-00002.safetensors", &shard2),
            ("model-00001-of-00002.unused", b"x"),
        ],
    );
    let server = HubServer::start(vec![repo]);
    let source = hub_source("hf:acme/sharded@main");
    let files = resolve_model_files_with(&source, &cfg(server.endpoint(), &cache)).unwrap();
    let snap = cache.join("models--acme--sharded/snapshots").join(COMMIT2);
    assert_eq!(
        files.weights,
        vec![
            snap.join("model-00001-of-00002.safetensors"),
            snap.join("model-00002-of-00002.safetensors")
        ]
    );
    assert_eq!(std::fs::read(&files.weights[1]).unwrap(), shard2);

    // `resolve(["model.safetensors"])` means "the weights": index + shards here.
    let cache2 = tmp.path().join("hub2");
    let dir = source
        .resolve_with(&cfg(server.endpoint(), &cache2), &["model.safetensors"])
        .unwrap();
    assert!(dir.join("model.safetensors.index.json").is_file());
    assert!(dir.join("model-00001-of-00002.safetensors").is_file());
    assert!(dir.join("model-00002-of-00002.safetensors").is_file());
    assert!(!dir.join("config.json").exists());
    // Asking for the index explicitly works from the cache, offline.
    assert_eq!(
        source
            .resolve_with(&offline(&cache2), &["model.safetensors.index.json"])
            .unwrap(),
        dir
    );
    server.shutdown();
    assert_eq!(
        resolve_model_files_with(&source, &offline(&cache)).unwrap(),
        files
    );

    // A shard lost from the cache is noticed offline, and named.
    std::fs::remove_file(snap.join("model-00002-of-00002.safetensors")).unwrap();
    let msg = input_msg(resolve_model_files_with(&source, &offline(&cache)));
    assert!(
        msg.contains("hf:acme/sharded@main") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
}

#[test]
fn token_is_sent_as_bearer_header() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HubServer::start(vec![tiny_model()]);
    let mut c = cfg(server.endpoint(), &tmp.path().join("hub"));
    c.token = Some("hf_test_secret".to_string());
    hub_source("hf:acme/tiny-lm")
        .resolve_with(&c, &["config.json"])
        .unwrap();
    let reqs = server.requests();
    assert!(reqs.len() >= 2, "{reqs:?}");
    for r in &reqs {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer hf_test_secret"),
            "{r:?}"
        );
    }
}

#[test]
fn commit_pinned_download_writes_no_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start(vec![tiny_model()]);
    let source = hub_source(&format!("hf:acme/tiny-lm@{COMMIT}"));
    let files = resolve_model_files_with(&source, &cfg(server.endpoint(), &cache)).unwrap();
    assert_eq!(files.commit.as_deref(), Some(COMMIT));
    let refs = cache.join("models--acme--tiny-lm/refs");
    let entries: Vec<PathBuf> = std::fs::read_dir(&refs)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "unexpected refs {entries:?}");
    server.shutdown();
    assert_eq!(
        resolve_model_files_with(&source, &offline(&cache)).unwrap(),
        files
    );
}

fn pile_mini() -> FakeRepo {
    FakeRepo::new(
        Kind::Dataset,
        "acme/pile-mini",
        COMMIT,
        &[
            (".gitattributes", b"*.parquet filter=lfs"),
            ("README.md", b"# pile mini"),
            (
                "data/train-00000-of-00001-4746b8785c874cc7.parquet",
                b"PAR1 train PAR1",
            ),
            (
                "data/test-00000-of-00001-0000000000000000.parquet",
                b"PAR1 test PAR1",
            ),
        ],
    )
}

#[test]
fn dataset_parquet_download_and_offline_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start(vec![pile_mini()]);
    let ds = DatasetSource::parse("hf-dataset:acme/pile-mini").unwrap();
    let files = ds
        .resolve_parquet_with(&cfg(server.endpoint(), &cache))
        .unwrap();
    let repo_dir = cache.join("datasets--acme--pile-mini");
    let train = "data/train-00000-of-00001-4746b8785c874cc7.parquet";
    assert_eq!(
        files,
        vec![repo_dir.join("snapshots").join(COMMIT).join(train)]
    );
    assert_cached(&repo_dir, COMMIT, train, b"PAR1 train PAR1");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(server
        .requests()
        .iter()
        .any(|r| r.url.starts_with("/datasets/acme/pile-mini/resolve/")));
    no_partial_files(&repo_dir);
    server.shutdown();
    assert_eq!(ds.resolve_parquet_with(&offline(&cache)).unwrap(), files);
}

#[test]
fn dataset_without_parquet_falls_back_to_parquet_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let main = FakeRepo::new(
        Kind::Dataset,
        "acme/jsonl",
        COMMIT,
        &[("data.jsonl", b"{\"text\":\"a\"}\n")],
    );
    let converted = FakeRepo::new(
        Kind::Dataset,
        "acme/jsonl",
        COMMIT2,
        &[
            ("default/train/0000.parquet", b"PAR1 d0 PAR1"),
            ("default/train/0001.parquet", b"PAR1 d1 PAR1"),
            ("default/test/0000.parquet", b"PAR1 t PAR1"),
            ("other/train/0000.parquet", b"PAR1 o PAR1"),
        ],
    )
    .at(&[PARQUET_CONVERT_REVISION]);
    let server = HubServer::start(vec![main, converted]);
    let ds = DatasetSource::parse("hf-dataset:acme/jsonl").unwrap();
    let files = ds
        .resolve_parquet_with(&cfg(server.endpoint(), &cache))
        .unwrap();
    let snap = cache.join("datasets--acme--jsonl/snapshots").join(COMMIT2);
    assert_eq!(
        files,
        vec![
            snap.join("default/train/0000.parquet"),
            snap.join("default/train/0001.parquet")
        ]
    );
    // Python's layout for a slash revision: refs/refs/convert/parquet.
    let r = cache.join("datasets--acme--jsonl/refs/refs/convert/parquet");
    assert_eq!(std::fs::read_to_string(r).unwrap(), COMMIT2);
    assert!(server
        .requests()
        .iter()
        .any(|r| r.url.contains("refs%2Fconvert%2Fparquet")));
    server.shutdown();
    assert_eq!(ds.resolve_parquet_with(&offline(&cache)).unwrap(), files);
}

#[test]
fn dataset_with_no_parquet_anywhere_is_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let main = FakeRepo::new(Kind::Dataset, "acme/csv", COMMIT, &[("data.csv", b"a,b\n")]);
    let server = HubServer::start(vec![main]);
    let ds = DatasetSource::parse("hf-dataset:acme/csv").unwrap();
    let msg = input_msg(ds.resolve_parquet_with(&cfg(server.endpoint(), &tmp.path().join("hub"))));
    assert!(
        msg.contains("hf-dataset:acme/csv@main") && msg.contains("no Parquet"),
        "{msg}"
    );
    assert!(msg.contains("data.csv"), "{msg}");
}

/// Python's huggingface_hub reads the cache saerun writes, and saerun reads Python's.
/// Skipped (with a note) where python3 with huggingface_hub is not installed.
#[test]
fn cache_is_shared_with_python_huggingface_hub() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: python3 with huggingface_hub not available");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    // LFS files through the CDN redirect, as on huggingface.co, for saerun and Python alike.
    let server = HubServer::start_with_cdn(vec![tiny_model(), pile_mini()], &[]);
    resolve_model_files_with(
        &hub_source("hf:acme/tiny-lm"),
        &cfg(server.endpoint(), &cache),
    )
    .unwrap();

    // Python, offline, on saerun's cache.
    let script = r#"
import sys
from huggingface_hub import hf_hub_download, scan_cache_dir
cache = sys.argv[1]
p = hf_hub_download("acme/tiny-lm", "model.safetensors", cache_dir=cache, local_files_only=True)
print(p)
info = scan_cache_dir(cache)
assert not info.warnings, info.warnings
repo = [r for r in info.repos if r.repo_id == "acme/tiny-lm"][0]
refs = sorted(r for rev in repo.revisions for r in rev.refs)
print(refs)
assert refs == ["main"], refs
# Python downloads the dataset into the same cache through the test server.
d = hf_hub_download("acme/pile-mini", "data/train-00000-of-00001-4746b8785c874cc7.parquet",
                    repo_type="dataset", cache_dir=cache)
print(d)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, cache.to_str().unwrap()])
        .env("HF_ENDPOINT", server.endpoint())
        // Keeps Python's own state (token lookup, xet cache, update checks) in the temp dir.
        .env("HF_HOME", tmp.path().join("hf-home"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    let snap = cache.join("models--acme--tiny-lm/snapshots").join(COMMIT);
    assert_eq!(
        stdout.lines().next().unwrap(),
        snap.join("model.safetensors").to_str().unwrap()
    );

    // saerun, offline, on the dataset Python put there.
    server.shutdown();
    let ds = DatasetSource::parse("hf-dataset:acme/pile-mini").unwrap();
    let files = ds.resolve_parquet_with(&offline(&cache)).unwrap();
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"PAR1 train PAR1");
}

/// The real default endpoint: on a machine without hub access this must fail within
/// seconds with the clear message; with access, the bogus repo gives a 404 message.
/// Ignored because it depends on the machine's network.
#[test]
#[ignore]
fn real_hub_unreachable_or_missing_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let c = HubConfig::new(saerun::hub::config::DEFAULT_ENDPOINT, tmp.path());
    let started = Instant::now();
    let msg = input_msg(resolve_model_files_with(
        &hub_source("hf:saerun-test/does-not-exist"),
        &c,
    ));
    eprintln!("after {:?}:\n{msg}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(msg.contains("hf:saerun-test/does-not-exist@main"), "{msg}");
}

/// Short limits, as a test can afford: 1 s without data is a stall, 2 retries, 100 ms back-off.
fn fast(endpoint: &str, cache: &Path) -> HubConfig {
    let mut c = HubConfig::new(endpoint, cache);
    c.download_timeout = Duration::from_secs(1);
    c.etag_timeout = Duration::from_secs(2);
    c.retries = 2;
    c.retry_backoff = Duration::from_millis(100);
    c
}

fn run_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(e @ Error::Run(_)) => {
            assert_eq!(e.exit_code(), 1);
            e.to_string()
        }
        other => panic!("expected Error::Run, got {other:?}"),
    }
}

/// The weights' transfers the CDN saw, with their `Range` headers.
fn weight_ranges(server: &HubServer) -> Vec<Option<String>> {
    let etag = etag_of("model.safetensors", &weights());
    server
        .cdn_requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.url == format!("/{etag}"))
        .map(|r| r.range)
        .collect()
}

/// A broken transfer of the weights, on every attempt: the run fails within the configured
/// limits (3 attempts), names the file, commit, endpoint and what went wrong, keeps nothing
/// partial, and the next run against a healthy hub completes.
fn broken_transfer_fails_cleanly(fault: Fault, reason: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start_with_cdn(vec![tiny_model()], &[fault; 3]);
    let source = hub_source("hf:acme/tiny-lm");
    let started = Instant::now();
    let msg = run_msg(resolve_model_files_with(
        &source,
        &fast(server.endpoint(), &cache),
    ));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{fault:?}: took {took:?}");
    for part in [
        "model.safetensors",
        "hf:acme/tiny-lm",
        COMMIT,
        server.endpoint(),
        reason,
        "of 200000 bytes",
        "gave up after 3 attempts",
    ] {
        assert!(msg.contains(part), "{fault:?}: no `{part}` in: {msg}");
    }
    // Each retry resumed after the bytes already received.
    let ranges = weight_ranges(&server);
    assert_eq!(ranges.len(), 3, "{fault:?}: {ranges:?}");
    assert_eq!(ranges[0], None);
    assert_eq!(ranges[1].as_deref(), Some("bytes=100000-"), "{fault:?}");
    no_partial_files_in(&cache);
    let repo_dir = cache.join("models--acme--tiny-lm");
    assert!(!repo_dir
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());
    // No ref: the branch does not point at an incomplete snapshot.
    assert!(!repo_dir.join("refs/main").exists());
    drop(server);

    let healthy = HubServer::start_with_cdn(vec![tiny_model()], &[]);
    let files = resolve_model_files_with(&source, &fast(healthy.endpoint(), &cache)).unwrap();
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights());
    assert_cached(&repo_dir, COMMIT, "model.safetensors", &weights());
    assert_cached(&repo_dir, COMMIT, "config.json", CONFIG);
    no_partial_files_in(&cache);
}

#[test]
fn stalled_transfer_fails_within_the_idle_timeout() {
    broken_transfer_fails_cleanly(
        Fault::Stall,
        "stalled: no data received for 1 s (HF_HUB_DOWNLOAD_TIMEOUT)",
    );
}

#[test]
fn reset_connection_fails_cleanly() {
    broken_transfer_fails_cleanly(Fault::Reset, "closed or reset before the end of the file");
}

#[test]
fn truncated_body_fails_cleanly() {
    broken_transfer_fails_cleanly(
        Fault::Truncate,
        "closed or reset before the end of the file",
    );
}

/// Transient faults (an HTTP 503, then a stall) are retried with back-off and the download
/// completes, resuming the stalled transfer instead of starting over.
#[test]
fn transient_faults_are_retried_and_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start_with_cdn(vec![tiny_model()], &[Fault::Status(503), Fault::Stall]);
    // What a killed earlier run left behind is cleaned up by the next download.
    let blobs = cache.join("models--acme--tiny-lm/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(".saerun-download-killed.tmp"), b"half").unwrap();
    let files = resolve_model_files_with(
        &hub_source("hf:acme/tiny-lm"),
        &fast(server.endpoint(), &cache),
    )
    .unwrap();
    assert_eq!(std::fs::read(&files.weights[0]).unwrap(), weights());
    assert_cached(
        &cache.join("models--acme--tiny-lm"),
        COMMIT,
        "model.safetensors",
        &weights(),
    );
    let ranges = weight_ranges(&server);
    assert_eq!(
        ranges,
        vec![None, None, Some("bytes=100000-".to_string())],
        "503, stall after half, then the rest"
    );
    no_partial_files_in(&cache);
}

/// A 404 for the file is final: no retry, an input error (exit 2), nothing kept.
#[test]
fn missing_file_is_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let server = HubServer::start_with_cdn(vec![tiny_model()], &[Fault::Status(404)]);
    let msg = input_msg(resolve_model_files_with(
        &hub_source("hf:acme/tiny-lm"),
        &fast(server.endpoint(), &cache),
    ));
    assert!(
        msg.contains("model.safetensors") && msg.contains("404"),
        "{msg}"
    );
    assert_eq!(weight_ranges(&server).len(), 1);
    no_partial_files_in(&cache);
}
