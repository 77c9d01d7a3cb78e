//! A killed SAE training resumes from its last checkpoint, not from step 0, and every cached
//! output ends bit-identical to an uninterrupted run's. Checkpoints live in the key's
//! checkpoint area under `tmp/`, never become entries, vanish once the entry is published,
//! and `cache gc` removes those a killed run left.

mod support;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

/// One training of 8,000 steps (a few seconds): long enough for several checkpoints.
fn spec(ws: &Workspace) -> PathBuf {
    let text =
        tiny_toy_spec("resume", "[0.1]", 8000).replace("dict_ratios = [1, 2]", "dict_ratios = [2]");
    ws.write("toy.toml", &text)
}

fn checkpoint_files(ws: &Workspace) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(ws.cache().join("v1/tmp")) else {
        return Vec::new();
    };
    dirs.flatten()
        .map(|d| d.path())
        .filter(|d| d.to_string_lossy().ends_with(".checkpoint"))
        .map(|d| d.join("train_state.safetensors"))
        .filter(|f| f.is_file())
        .collect()
}

/// Start a run checkpointing every 0.2 s and SIGKILL it once a checkpoint has been written
/// (and a little more work done after it).
fn run_and_kill_after_a_checkpoint(ws: &Workspace, spec: &Path) {
    let mut child = ws
        .cmd(&["run", spec.to_str().unwrap(), "--checkpoint-every", "0.2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while checkpoint_files(ws).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before writing a checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Every cached file of every entry, by (stage, key, file) → blake3, except the training
/// curve's wall-clock column, which is compared without its times.
fn cached_outputs(ws: &Workspace) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (stage, key) in ws.cache_entries() {
        let dir = ws.cache().join("v1/entries").join(&stage).join(&key);
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name == "manifest.json" {
                continue;
            }
            let digest = if name == "curve.json" {
                let mut curve: Vec<serde_json::Value> =
                    serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
                curve.iter_mut().for_each(|p| {
                    p.as_object_mut().unwrap().remove("elapsed_s");
                });
                serde_json::to_string(&curve).unwrap()
            } else {
                blake3::hash(&std::fs::read(f.path()).unwrap())
                    .to_hex()
                    .to_string()
            };
            out.push((format!("{stage}/{key}/{name}"), digest));
        }
    }
    out.sort();
    out
}

#[test]
fn killed_training_resumes_from_its_checkpoint_bit_identically() {
    let reference = Workspace::new();
    let out = reference.run(&[
        "run",
        spec(&reference).to_str().unwrap(),
        "--checkpoint-every",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        checkpoint_files(&reference).is_empty(),
        "checkpoints were off"
    );

    let ws = Workspace::new();
    let spec = spec(&ws);
    run_and_kill_after_a_checkpoint(&ws, &spec);
    assert!(
        !ws.cache_entries().iter().any(|(s, _)| s == "train_sae"),
        "a killed training published an entry"
    );
    assert_eq!(checkpoint_files(&ws).len(), 1);

    // The rerun (checkpoint interval from the environment this time) resumes.
    let out = ws
        .cmd(&["run", spec.to_str().unwrap()])
        .env("SAERUN_CHECKPOINT_EVERY", "0.2")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let resumed_at: u64 = err
        .lines()
        .find_map(|l| l.split("resuming from its checkpoint after step ").nth(1))
        .unwrap_or_else(|| panic!("the rerun did not resume:\n{err}"))
        .trim()
        .parse()
        .unwrap();
    assert!(resumed_at > 0 && resumed_at < 8000, "{resumed_at}");
    assert!(
        checkpoint_files(&ws).is_empty(),
        "checkpoint left after the entry was published"
    );
    let tmp_left = std::fs::read_dir(ws.cache().join("v1/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_left, 0, "tmp/ not empty after a completed run");

    let (a, b) = (cached_outputs(&reference), cached_outputs(&ws));
    assert!(!a.is_empty() && a.len() == b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "resumed run differs from the uninterrupted one");
    }
}

#[test]
fn gc_removes_checkpoints_of_killed_runs() {
    let ws = Workspace::new();
    let spec = spec(&ws);
    run_and_kill_after_a_checkpoint(&ws, &spec);
    assert_eq!(checkpoint_files(&ws).len(), 1);
    let out = ws.run(&["cache", "gc", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(checkpoint_files(&ws).is_empty(), "{}", stdout(&out));
    assert_eq!(
        std::fs::read_dir(ws.cache().join("v1/tmp"))
            .unwrap()
            .count(),
        0
    );

    // A negative interval is bad input.
    let out = ws.run(&["run", spec.to_str().unwrap(), "--checkpoint-every=-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected a number of seconds"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn checkpoint_of_a_running_training_survives_gc() {
    let ws = Workspace::new();
    let spec = spec(&ws);
    let mut child = ws
        .cmd(&["run", spec.to_str().unwrap(), "--checkpoint-every", "0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while checkpoint_files(&ws).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = ws.run(&["cache", "gc", "--yes", "--min-age", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        checkpoint_files(&ws).len(),
        1,
        "gc removed a live checkpoint"
    );
    let lines: Vec<String> = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
        .collect();
    assert!(child.wait().unwrap().success(), "{}", lines.join("\n"));
}
