//! Helpers shared by the integration tests: a scratch workspace with its own cache and
//! results directories, and the saerun binary.
#![allow(dead_code)]

pub mod chromium;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    pub fn results(&self) -> PathBuf {
        self.path().join("results")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write spec");
        p
    }

    /// `saerun <args>` with this workspace's cache and results, and no SAERUN_* spec
    /// variables inherited from the environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_saerun"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SAERUN_") {
                c.env_remove(k);
            }
        }
        c.args(args)
            .arg("--cache-dir")
            .arg(self.cache())
            .arg("--results-dir")
            .arg(self.results())
            .current_dir(self.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn saerun")
    }

    /// Complete cache entries: (stage, key) per `manifest.json` found.
    pub fn cache_entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let root = self.cache().join("v1/entries");
        let Ok(stages) = std::fs::read_dir(&root) else {
            return out;
        };
        for stage in stages.flatten() {
            for entry in std::fs::read_dir(stage.path()).unwrap().flatten() {
                assert!(
                    entry.path().join("manifest.json").is_file(),
                    "entry without manifest: {}",
                    entry.path().display()
                );
                out.push((
                    stage.file_name().to_string_lossy().into_owned(),
                    entry.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
        out.sort();
        out
    }

    /// The run records written so far, oldest first.
    pub fn runs(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let Ok(exps) = std::fs::read_dir(self.results()) else {
            return out;
        };
        for exp in exps.flatten() {
            for run in std::fs::read_dir(exp.path()).unwrap().flatten() {
                let f = run.path().join("run.json");
                if f.is_file() {
                    out.push(serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap());
                }
            }
        }
        // Run ids are unique but not ordered within a second; finish times are.
        out.sort_by_key(|r: &serde_json::Value| r["finished_at"].as_str().unwrap().to_string());
        out
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (stage, outcome) counts of a run record.
pub fn outcomes(run: &serde_json::Value) -> (usize, usize) {
    let stages = run["stages"].as_array().unwrap();
    let computed = stages.iter().filter(|s| s["outcome"] == "computed").count();
    (computed, stages.len() - computed)
}

/// A toy spec small enough to train in seconds: 32 dims, 64 true features.
pub fn tiny_toy_spec(name: &str, l1: &str, steps: u64) -> String {
    format!(
        r#"[experiment]
name = "{name}"
seed = 1

[data]
source = "toy"
activation_dim = 32
n_features = 64
mean_active = 3.0
prob_decay = 0.99
train_samples = 16384

[sae]
architecture = "relu_l1"
ratio_base = "n_features"
dict_ratios = [1, 2]
l1 = {l1}

[train]
batch_size = 256
steps = {steps}
lr = 3e-3
warmup_steps = 50
log_every = 50

[eval]
samples = 2048
"#
    )
}

/// ../shared (from SAERUN_SHARED_DIR, which .ci/run sets), or `None` with a skip message.
pub fn shared_dir() -> Option<PathBuf> {
    match std::env::var_os("SAERUN_SHARED_DIR") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipped: SAERUN_SHARED_DIR is not set (CI sets it to ../shared)");
            None
        }
    }
}

/// `--set` values pointing a tiny-pythia spec at the checkpoint and corpus in `shared`.
pub fn tiny_pythia_sources(shared: &Path) -> (String, String) {
    (
        format!(
            "model.source=path:{}",
            shared.join("data/tiny-pythia").display()
        ),
        format!(
            "data.source=path:{}",
            shared.join("data/tinyshakespeare.txt").display()
        ),
    )
}

/// A committed spec under `experiments/`, as an absolute path.
pub fn spec_path(name: &str) -> String {
    format!("{}/experiments/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `saerun run SPEC` as a child with stdout discarded and stderr captured.
pub fn spawn_run(ws: &Workspace, spec: &Path) -> std::process::Child {
    ws.cmd(&["run", spec.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
