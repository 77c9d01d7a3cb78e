//! `saerun run` and `saerun validate`: spec → plan → cache → run record and report.

use super::context::RunCtx;
use super::execute::{execute, execute_share};
use super::graph::Graph;
use super::mermaid;
use super::shard::{Shard, Share};
use crate::cache::{Cache, StageKey};
use crate::device::{DeviceChoice, HOST};
use crate::progress::Progress;
use crate::record::{RunDir, RunRecord, SourceRecord, StageRecord, RUN_FILE};
use crate::report;
use crate::spec::resolve::DataParams;
use crate::spec::{load_spec, resolve, ResolvedSpec};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

pub struct RunOptions {
    pub spec: PathBuf,
    pub sets: Vec<String>,
    pub cache_dir: PathBuf,
    pub results_dir: PathBuf,
    /// Wall time between checkpoints of stages that write them (`None`: never).
    pub checkpoint_every: Option<std::time::Duration>,
}

pub struct RunSummary {
    pub run_dir: PathBuf,
    pub record: RunRecord,
    /// The most stage outputs held in memory at once during execution.
    pub peak_loaded_inputs: usize,
    /// What the run directory holds, for `saerun run --json`.
    pub outputs: RunOutputs,
}

/// The files of a finished run directory that a script may want, each sorted by name.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunOutputs {
    pub report: PathBuf,
    /// The Parquet tables (`metrics.parquet`, `curves.parquet`, analysis tables).
    pub tables: Vec<PathBuf>,
    /// The plots (`plots/*.png`, `plots/*.svg`).
    pub plots: Vec<PathBuf>,
    /// Browsable pages copied in by stages (`features/index.html`).
    pub browsers: Vec<PathBuf>,
}

impl RunOutputs {
    /// Read from the run directory itself, so the list is what is there.
    pub fn scan(run_dir: &Path) -> RunOutputs {
        let files = |dir: &Path, exts: &[&str]| {
            let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| exts.contains(&e))
                })
                .collect();
            out.sort();
            out
        };
        let mut browsers: Vec<PathBuf> = std::fs::read_dir(run_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("index.html"))
            .filter(|p| p.is_file())
            .collect();
        browsers.sort();
        RunOutputs {
            report: run_dir.join("report.html"),
            tables: files(run_dir, &["parquet"]),
            plots: files(&run_dir.join("plots"), &["png", "svg"]),
            browsers,
        }
    }
}

/// Load, check and plan a spec. Bad input fails here, before anything is written.
pub fn prepare(opts: &RunOptions) -> Result<(ResolvedSpec, Graph, String)> {
    let (spec, origin) = load_spec(&opts.spec, &opts.sets)?;
    let resolved = resolve(spec, &origin)?;
    let graph = Graph::build(&resolved)?;
    let spec_toml = toml::to_string_pretty(&resolved.spec)
        .map_err(|e| Error::run(format!("cannot encode the resolved spec: {e}")))?;
    Ok((resolved, graph, spec_toml))
}

pub fn run(opts: &RunOptions) -> Result<RunSummary> {
    let (resolved, graph, spec_toml) = prepare(opts)?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let ctx = run_context(opts, &resolved, &graph, Progress::for_graph(&graph))?;
    let executed = execute(&graph, &ctx)?;
    ctx.progress.finish();

    let run_dir = RunDir::create(&opts.results_dir, &resolved.spec.experiment.name)?;
    let record = RunRecord {
        experiment: resolved.spec.experiment.name.clone(),
        run_id: run_dir.run_id.clone(),
        spec_file: opts.spec.display().to_string(),
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339(),
        saerun_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("SAERUN_GIT_COMMIT").to_string(),
        cache_dir: absolute(&opts.cache_dir).display().to_string(),
        device: resolved.device.to_string(),
        sources: sources(&resolved),
        stages: executed.records.clone(),
    };
    let written = (|| {
        let dir = run_dir.path();
        write_file(&dir.join("spec.toml"), spec_toml.as_bytes())?;
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::run(format!("cannot encode run record: {e}")))?;
        write_file(&dir.join(RUN_FILE), &json)?;
        report::write(&resolved, &graph, &executed.entries, &record, dir)
    })();
    if let Err(e) = written {
        run_dir.abandon();
        return Err(e);
    }
    let path = run_dir.finish()?;
    Ok(RunSummary {
        outputs: RunOutputs::scan(&absolute(&path)),
        run_dir: path,
        record,
        peak_loaded_inputs: executed.peak_loaded,
    })
}

/// What `run --shard` did. A shard writes no run record: the run that follows the shards
/// (`saerun run SPEC`, without `--shard`) finds every stage cached and writes it.
pub struct ShardSummary {
    pub shard: Shard,
    pub experiment: String,
    /// The shard's stages in execution order.
    pub stages: Vec<StageRecord>,
    /// Stages in the whole sweep.
    pub planned: usize,
}

/// `run --shard I/N`: compute this shard's share of the graph (see `shard`) and what it
/// needs; stages another process holds are left to it while other work is ready.
pub fn run_shard(opts: &RunOptions, shard: Shard) -> Result<ShardSummary> {
    let (resolved, graph, _) = prepare(opts)?;
    let share = Share::of(&graph, shard);
    let progress = Progress::for_graph(&graph);
    progress.set_stage_count(share.len());
    let ctx = run_context(opts, &resolved, &graph, progress)?;
    let (_, stages, _) = execute_share(&graph, &ctx, &share)?;
    ctx.progress.finish();
    Ok(ShardSummary {
        shard,
        experiment: resolved.spec.experiment.name.clone(),
        stages,
        planned: graph.nodes().len(),
    })
}

/// What `validate` finds: the planned stages and which are cached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanStatus {
    pub spec: PathBuf,
    pub experiment: String,
    /// Grid points (SAEs).
    pub saes: usize,
    pub stages: Vec<PlannedStage>,
    pub cached: usize,
    pub to_compute: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedStage {
    pub stage: String,
    pub label: String,
    pub key: StageKey,
    pub cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Check the spec and look up every planned stage in the cache.
pub fn plan_status(opts: &RunOptions) -> Result<PlanStatus> {
    let (resolved, graph, _) = prepare(opts)?;
    let cache = Cache::open(&opts.cache_dir)?;
    let mut stages = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        stages.push(PlannedStage {
            stage: node.stage.to_string(),
            label: node.label.clone(),
            key: node.key,
            cached: cache.lookup(node.stage, &node.key)?.is_some(),
            detail: node.detail(),
        });
    }
    let cached = stages.iter().filter(|s| s.cached).count();
    Ok(PlanStatus {
        spec: opts.spec.clone(),
        experiment: resolved.spec.experiment.name.clone(),
        saes: resolved.grid.len() + resolved.imports.len(),
        to_compute: stages.len() - cached,
        cached,
        stages,
    })
}

/// The stage graph as a table, with each stage's cache status.
pub fn validate(opts: &RunOptions) -> Result<String> {
    Ok(plan_status(opts)?.table())
}

impl PlanStatus {
    /// The table `saerun validate` prints.
    pub fn table(&self) -> String {
        let mut out = format!(
            "spec {} is valid: experiment `{}`, {} SAEs, {} stages\n\n",
            self.spec.display(),
            self.experiment,
            self.saes,
            self.stages.len()
        );
        for s in &self.stages {
            let detail = s
                .detail
                .as_ref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<8} {:<18} {}  {}{detail}\n",
                if s.cached { "cached" } else { "to run" },
                s.stage,
                s.key.short(),
                s.label
            ));
        }
        out.push_str(&format!(
            "\n{} of {} stages cached; {} to compute\n",
            self.cached,
            self.stages.len(),
            self.to_compute
        ));
        out
    }
}

/// The stage graph as a Mermaid flowchart with each node's cache state.
pub fn graph(opts: &RunOptions) -> Result<String> {
    let (_, graph, _) = prepare(opts)?;
    let cache = Cache::open(&opts.cache_dir)?;
    mermaid::render(&graph, &cache)
}

/// What a run or a shard executes with: the cache, the checkpoint interval, the device.
fn run_context(
    opts: &RunOptions,
    resolved: &ResolvedSpec,
    graph: &Graph,
    progress: Progress,
) -> Result<RunCtx> {
    let mut ctx = RunCtx::new(Cache::open(&opts.cache_dir)?, progress);
    ctx.checkpoint_every = opts.checkpoint_every;
    ctx.device = compute_device(resolved, graph, &ctx.cache)?;
    Ok(ctx)
}

/// The device stages compute on. A run with every stage cached computes nothing, so it
/// opens no GPU: a report job after a GPU sweep may run where there is none (the keys come
/// from the spec, not from the hardware).
fn compute_device(
    resolved: &ResolvedSpec,
    graph: &Graph,
    cache: &Cache,
) -> Result<candle_core::Device> {
    if resolved.device == DeviceChoice::Cpu {
        return Ok(HOST);
    }
    for node in graph.nodes() {
        if cache.lookup(node.stage, &node.key)?.is_none() {
            return resolved.device.open();
        }
    }
    Ok(HOST)
}

fn sources(resolved: &ResolvedSpec) -> Vec<SourceRecord> {
    let DataParams::Text(t) = &resolved.data else {
        return Vec::new();
    };
    vec![
        SourceRecord {
            role: "model".into(),
            source: t.model_source.clone(),
            content_blake3: t.model_hash.clone(),
            hub_commit: t.model_files.commit.clone(),
        },
        SourceRecord {
            role: "tokenizer".into(),
            source: t.model_source.clone(),
            content_blake3: t.tokenizer_hash.clone(),
            hub_commit: t.model_files.commit.clone(),
        },
        SourceRecord {
            role: "data".into(),
            source: t.data_source.clone(),
            content_blake3: t.data_hash.clone(),
            hub_commit: None,
        },
    ]
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, "cannot write", e))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
