//! Command-line interface (clap derive). Exit codes: 0 ok, 1 run failed, 2 bad input.

use crate::cache::{gc, Cache};
use crate::compare::diff::{self, DiffOptions, Side};
use crate::compare::reference::{self, Verdict};
use crate::compare::run_data::read_metrics;
use crate::compare::{render, run_ref};
use crate::pipeline::run::{graph, run, validate, RunOptions};
use crate::Result;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "saerun",
    version,
    about = "Run sparse-autoencoder (dictionary learning) experiments from TOML specs, reproducibly."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct GlobalOpts {
    /// Stage cache directory.
    #[arg(
        long,
        global = true,
        env = "SAERUN_CACHE_DIR",
        default_value = ".saerun/cache"
    )]
    pub cache_dir: PathBuf,
    /// Where run records are written (`<results-dir>/<experiment>/<run-id>/`).
    #[arg(
        long,
        global = true,
        env = "SAERUN_RESULTS_DIR",
        default_value = "results"
    )]
    pub results_dir: PathBuf,
    /// Seconds between checkpoints of a long stage (SAE training), from which a killed run
    /// resumes; 0 turns checkpoints off.
    #[arg(
        long,
        global = true,
        env = "SAERUN_CHECKPOINT_EVERY",
        default_value = "60",
        value_name = "SECONDS",
        value_parser = parse_seconds
    )]
    pub checkpoint_every: std::time::Duration,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run an experiment: compute the stages that are not cached, write a run record.
    Run(SpecArgs),
    /// Check a spec and print its stage graph with what is already cached; runs nothing.
    Validate(ValidateArgs),
    /// Inspect or clean the stage cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// List run records (id, time, spec hash, stages computed/reused, commit, headline metric).
    Runs {
        /// Only this experiment's runs.
        experiment: Option<String>,
    },
    /// Compare two runs: spec keys that differ, then metrics per SAE (matched on identity).
    /// A run is a run directory, a run id, EXPERIMENT@latest, EXPERIMENT@~N, or a committed
    /// reference file (`experiments/NAME.reference.toml`).
    Diff(DiffArgs),
    /// Run a spec (reusing the cache) and check it against its committed reference
    /// (`<spec>.reference.toml`); exit 1 if any value is outside its tolerance.
    Reproduce {
        #[command(flatten)]
        spec: SpecArgs,
        /// Reference file (default: beside the spec, `<spec stem>.reference.toml`).
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Write a run's metrics as its experiment's reference, with the documented tolerances.
    Promote {
        /// The run (directory, id, EXPERIMENT@latest, EXPERIMENT@~N).
        run: String,
        /// Where to write (default: beside the run's spec, `<spec stem>.reference.toml`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct DiffArgs {
    pub a: String,
    pub b: String,
    /// Also show unchanged SAEs and metrics.
    #[arg(long)]
    pub all: bool,
    /// Only count a metric as changed if |relative change| exceeds this (e.g. 0.01 = 1%).
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f64,
    /// Markdown instead of the terminal table.
    #[arg(long, conflicts_with = "json")]
    pub md: bool,
    /// JSON (the schema of `compare::diff::RunDiff`).
    #[arg(long)]
    pub json: bool,
    /// Also write each sweep plot with both runs overlaid into this directory.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
}

#[derive(Args)]
pub struct SpecArgs {
    /// The experiment spec (TOML).
    pub spec: PathBuf,
    /// Override a spec value, e.g. `--set train.lr=3e-3` (applied after the file and
    /// SAERUN_<SECTION>__<KEY> environment variables). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the stage graph as a Mermaid flowchart (each node's stage, label, key and
    /// cache state) instead of a table.
    #[arg(long)]
    pub graph: bool,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// List cache entries.
    Ls,
    /// Hash every file of every entry against its manifest; list corrupt entries (exit 1),
    /// or with --repair move them aside so the next run recomputes them.
    Verify {
        #[arg(long)]
        repair: bool,
    },
    /// Delete entries no recorded run references (dry run unless --yes).
    Gc {
        /// Actually delete.
        #[arg(long)]
        yes: bool,
        /// Keep unreferenced entries younger than this many seconds (a running run records
        /// its stages only when it finishes).
        #[arg(long, default_value_t = 60)]
        min_age: u64,
    },
}

/// A non-negative number of seconds.
fn parse_seconds(text: &str) -> std::result::Result<std::time::Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("expected a number of seconds (0 or more), got `{text}`"))
}

pub fn main_with(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let opts = |a: SpecArgs| RunOptions {
        spec: a.spec,
        sets: a.sets,
        cache_dir: g.cache_dir.clone(),
        results_dir: g.results_dir.clone(),
        checkpoint_every: Some(g.checkpoint_every).filter(|d| !d.is_zero()),
    };
    match cli.command {
        Command::Run(a) => {
            let summary = run(&opts(a))?;
            println!(
                "run {} finished: {} stages computed, {} reused\nresults: {}\nreport:  {}",
                summary.record.run_id,
                summary.record.computed(),
                summary.record.stages.len() - summary.record.computed(),
                summary.run_dir.display(),
                summary.run_dir.join("report.html").display()
            );
        }
        Command::Validate(a) if a.graph => print!("{}", graph(&opts(a.spec))?),
        Command::Validate(a) => print!("{}", validate(&opts(a.spec))?),
        Command::Runs { experiment } => runs(&g.results_dir, experiment.as_deref())?,
        Command::Diff(a) => {
            let (sa, sb) = (
                diff_side(&g.results_dir, &a.a)?,
                diff_side(&g.results_dir, &a.b)?,
            );
            let opts = DiffOptions {
                all: a.all,
                threshold: a.threshold,
            };
            let d = diff::diff(&sa, &sb, &opts);
            if let Some(dir) = &a.plots {
                for svg in crate::compare::overlay::write(&sa, &sb, dir)? {
                    eprintln!("wrote {}", svg.display());
                }
            }
            match (a.md, a.json) {
                (true, _) => print!("{}", render::markdown(&d)),
                (_, true) => println!("{}", render::json(&d)),
                _ => print!("{}", render::terminal(&d, render::use_colour())),
            }
        }
        Command::Reproduce { spec, reference } => {
            let reference = reference.unwrap_or_else(|| reference::path_for_spec(&spec.spec));
            reproduce(&opts(spec), &reference)?
        }
        Command::Promote { run, out } => {
            let found = run_ref::resolve(&g.results_dir, &run)?;
            let r = reference::promote(&found, &reference::cpu_description())?;
            let out =
                out.unwrap_or_else(|| reference::path_for_spec(Path::new(&found.record.spec_file)));
            let text = format!(
                "# Written by `saerun promote {run}`; edit sources and tolerances as needed.\n{}",
                reference::to_toml(&r)?
            );
            let dir = out
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = out
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("reference.toml");
            crate::store::atomic::write_file(dir, name, text.as_bytes())?;
            println!("wrote {} ({} values)", out.display(), r.expect.len());
        }
        Command::Cache(CacheCommand::Ls) => {
            let cache = Cache::open(&g.cache_dir)?;
            let entries = cache.entries()?;
            let mut total = 0;
            println!(
                "{:<12} {:<12} {:>10}  {:<25}  params",
                "stage", "key", "size", "created"
            );
            for e in &entries {
                let size = e.size_bytes();
                total += size;
                println!(
                    "{:<12} {:<12} {:>10}  {:<25}  {}",
                    e.manifest.stage,
                    e.manifest.key.short(),
                    human_bytes(size),
                    e.manifest
                        .created_at
                        .get(..19)
                        .unwrap_or(&e.manifest.created_at),
                    e.manifest.params
                );
            }
            println!(
                "{} entries, {} in {}",
                entries.len(),
                human_bytes(total),
                cache.root().display()
            );
        }
        Command::Cache(CacheCommand::Verify { repair }) => {
            cache_verify(&Cache::open(&g.cache_dir)?, repair)?
        }
        Command::Cache(CacheCommand::Gc { yes, min_age }) => {
            let cache = Cache::open(&g.cache_dir)?;
            let min_age = std::time::Duration::from_secs(min_age);
            let plan = gc::plan(&cache, &g.results_dir, min_age)?;
            println!(
                "{} runs under {} reference {} entries; {} unreferenced entries ({}), {} stale temporary directories, {} unfinished run directories, {} corrupt entries moved aside",
                plan.runs_scanned,
                g.results_dir.display(),
                plan.keep.len(),
                plan.remove.len(),
                human_bytes(plan.bytes_to_free()),
                plan.stale_tmp.len(),
                plan.stale_runs.len(),
                plan.corrupt.len()
            );
            for e in &plan.remove {
                println!(
                    "  {} {:<12} {}",
                    if yes { "delete" } else { "would delete" },
                    e.manifest.stage,
                    e.manifest.key.short()
                );
            }
            if yes {
                let n = gc::execute(&cache, &plan)?;
                println!("deleted {n} entries");
            } else if !plan.remove.is_empty()
                || !plan.stale_tmp.is_empty()
                || !plan.stale_runs.is_empty()
                || !plan.corrupt.is_empty()
            {
                println!("dry run: pass --yes to delete");
            }
        }
    }
    Ok(())
}

/// `saerun cache verify`: every entry hashed against its manifest.
fn cache_verify(cache: &Cache, repair: bool) -> Result<()> {
    let entries = cache.entries()?;
    let mut bad = 0;
    for e in &entries {
        let problems = crate::cache::verify::problems(e, crate::cache::verify::Depth::Full);
        if problems.is_empty() {
            continue;
        }
        bad += 1;
        println!(
            "corrupt {:<18} {}  {}",
            e.manifest.stage,
            e.manifest.key.short(),
            problems.join("; ")
        );
        if repair {
            cache.repair_if_corrupt(e)?;
        }
    }
    println!("{} entries checked, {bad} corrupt", entries.len());
    if bad > 0 && !repair {
        return Err(crate::Error::run(format!(
            "{bad} corrupt cache entries; `saerun cache verify --repair` moves them aside so the next run recomputes them"
        )));
    }
    if bad > 0 {
        println!("moved {bad} aside; the next run recomputes them");
    }
    Ok(())
}

/// A run, or a committed reference file (`*.reference.toml`), to diff.
fn diff_side(results_dir: &Path, name: &str) -> Result<Side> {
    let path = Path::new(name);
    if name.ends_with(".reference.toml") && path.is_file() {
        return Ok(Side::of_reference(path, &reference::load(path)?));
    }
    Side::of_run(&run_ref::resolve(results_dir, name)?)
}

/// `saerun runs`: one line per run record, oldest first.
fn runs(results_dir: &Path, experiment: Option<&str>) -> Result<()> {
    let found = run_ref::list(results_dir, experiment)?;
    println!(
        "{:<22} {:<20} {:<19} {:<12} {:>8} {:>6}  {:<10} headline",
        "run", "experiment", "finished (UTC)", "spec", "computed", "reused", "commit"
    );
    for r in &found {
        let rec = &r.record;
        let spec_hash = std::fs::read(r.dir.join("spec.toml"))
            .map(|b| blake3::hash(&b).to_hex()[..12].to_string())
            .unwrap_or_else(|_| "–".into());
        println!(
            "{:<22} {:<20} {:<19} {:<12} {:>8} {:>6}  {:<10} {}",
            rec.run_id,
            rec.experiment,
            rec.finished_at
                .get(..19)
                .unwrap_or(&rec.finished_at)
                .replace('T', " "),
            spec_hash,
            rec.computed(),
            rec.stages.len() - rec.computed(),
            rec.git_commit.get(..10).unwrap_or(&rec.git_commit),
            headline(&r.dir)
        );
    }
    println!("{} runs under {}", found.len(), results_dir.display());
    Ok(())
}

/// The mean of the first of these metrics a run has: what most tells runs apart.
fn headline(dir: &Path) -> String {
    let Ok(rows) = read_metrics(dir) else {
        return "–".into();
    };
    for metric in ["ce_recovered", "mmcs_truth", "fve"] {
        let v: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.values.get(metric).copied())
            .collect();
        if !v.is_empty() {
            return format!(
                "mean {metric} {:.4}",
                v.iter().sum::<f64>() / v.len() as f64
            );
        }
    }
    "–".into()
}

/// `saerun reproduce`: run, compare with the reference, print the table; failures exit 1.
fn reproduce(opts: &RunOptions, reference_file: &Path) -> Result<()> {
    let reference = reference::load(reference_file)?;
    let summary = run(opts)?;
    let rows = read_metrics(&summary.run_dir)?;
    let checks = reference::check(&reference, &rows);
    println!(
        "run {} against {} ({} values; source: {})",
        summary.record.run_id,
        reference_file.display(),
        checks.len(),
        reference.source
    );
    println!(
        "{:<14} {:<42} {:<18} {:>12} {:>12} {:>10}",
        "verdict", "SAE", "metric", "expected", "observed", "tolerance"
    );
    for c in &checks {
        let verdict = match c.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Informational => "informational",
        };
        println!(
            "{:<14} {:<42} {:<18} {:>12.6} {:>12} {:>10.4}",
            verdict,
            c.sae.label(),
            c.metric,
            c.expected,
            c.observed.map_or("missing".into(), |o| format!("{o:.6}")),
            c.tolerance
        );
    }
    let count = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
    let (pass, fail, info) = (
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Informational),
    );
    println!("{pass} passed, {fail} failed, {info} informational");
    if fail > 0 {
        return Err(crate::Error::run(format!(
            "{fail} of {} reference values are outside their tolerance",
            pass + fail
        )));
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
