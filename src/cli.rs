//! Command-line interface (clap derive). Exit codes: 0 ok, 1 run failed, 2 bad input.
//!
//! The clap definitions below are the one list of commands and flags: parsing, `--help`
//! and the shell completions (`saerun completions SHELL`) are all generated from them, so
//! a new flag is one field with its doc comment. Every command carries examples in its
//! `after_help` (a test walks the command tree to check).

use crate::cache::{gc, Cache};
use crate::compare::diff::{self, DiffOptions, Side};
use crate::compare::reference::{self, Check, Verdict};
use crate::compare::run_data::read_metrics;
use crate::compare::{render, run_ref};
use crate::pipeline::run::{
    graph, plan_status, run, run_shard, RunOptions, RunOutputs, RunSummary, ShardSummary,
};
use crate::pipeline::shard::Shard;
use crate::progress::{self, ColorChoice, Verbosity};
use crate::record::StageRecord;
use crate::Result;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueHint};
use serde::Serialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `saerun --version`: the crate version and the commit it was built from (`+dirty` when
/// the sources differed from it; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SAERUN_BUILD_INFO"),
    ")"
);

const EXAMPLES: &str = "\
Examples:
  saerun run experiments/toy_small.toml                 compute what is missing, write a run record
  saerun run experiments/toy_small.toml --json -q       the same, one JSON summary on stdout
  saerun validate experiments/toy_small.toml --graph    the stage graph as a Mermaid flowchart
  saerun runs toy_small                                 the experiment's run records
  saerun diff toy_small@~1 toy_small@latest             what changed between the last two runs
  saerun completions bash > ~/.local/share/bash-completion/completions/saerun";

const EXAMPLES_RUN: &str = "\
Examples:
  saerun run experiments/toy_small.toml
  saerun run experiments/toy_small.toml --set train.lr=3e-3 --set 'sae.l1=[0.03,0.05]'
  saerun run experiments/toy_small.toml --json -q | jq -r .report
  saerun run experiments/toy_small.toml --shard 2/4      one of 4 processes of a sweep (e.g. Slurm)
  bash experiments/slurm/sweep.sbatch experiments/toy_small.toml 4    4 Slurm tasks + the report";

const EXAMPLES_VALIDATE: &str = "\
Examples:
  saerun validate experiments/toy_small.toml
  saerun validate experiments/toy_small.toml --graph > graph.mmd
  saerun validate experiments/toy_small.toml --json | jq .to_compute";

const EXAMPLES_CACHE: &str = "\
Examples:
  saerun cache ls
  saerun cache verify --repair
  saerun cache gc --yes";

const EXAMPLES_CACHE_LS: &str = "\
Example:
  saerun --cache-dir /shared/saerun-cache cache ls";

const EXAMPLES_CACHE_VERIFY: &str = "\
Examples:
  saerun cache verify
  saerun cache verify --repair";

const EXAMPLES_CACHE_GC: &str = "\
Examples:
  saerun cache gc                        dry run: what would be deleted
  saerun cache gc --yes --min-age 3600";

const EXAMPLES_RUNS: &str = "\
Examples:
  saerun runs
  saerun runs toy_small
  saerun runs toy_small --json | jq -r '.[-1].dir'";

const EXAMPLES_DIFF: &str = "\
Examples:
  saerun diff toy_small@~1 toy_small@latest
  saerun diff toy_small@latest experiments/toy_small.reference.toml --threshold 0.01
  saerun diff 20261130-101500-1a2b 20261130-103000-3c4d --md > diff.md";

const EXAMPLES_REPRODUCE: &str = "\
Examples:
  saerun reproduce experiments/toy_small.toml
  saerun reproduce experiments/toy_small.toml --reference other.reference.toml --json";

const EXAMPLES_PROMOTE: &str = "\
Examples:
  saerun promote toy_small@latest
  saerun promote results/toy_small/20261130-101500-1a2b --out /tmp/ref.toml";

const EXAMPLES_EXPORT: &str = "\
Examples:
  saerun export tiny_pythia_sweep@latest --format saelens exported/
  saerun export results/toy_small/20261130-101500-1a2b --format saelens out/ --json | jq -r '.[].dir'
Load one in Python: sae_lens.SAE.load_from_disk(\"exported/relu_l1_d512_l1-0.05_s0\")";

const EXAMPLES_COMPLETIONS: &str = "\
Examples:
  saerun completions bash > ~/.local/share/bash-completion/completions/saerun
  saerun completions zsh > ~/.zfunc/_saerun
  saerun completions fish > ~/.config/fish/completions/saerun.fish";

#[derive(Parser)]
#[command(
    name = "saerun",
    version = VERSION,
    about = "Run sparse-autoencoder (dictionary learning) experiments from TOML specs, reproducibly.",
    after_help = EXAMPLES
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
        default_value = ".saerun/cache",
        value_hint = ValueHint::DirPath
    )]
    pub cache_dir: PathBuf,
    /// Where run records are written (`<results-dir>/<experiment>/<run-id>/`).
    #[arg(
        long,
        global = true,
        env = "SAERUN_RESULTS_DIR",
        default_value = "results",
        value_hint = ValueHint::DirPath
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
    /// Print only errors and the command's result: no progress bars, no per-stage lines, no
    /// warnings.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        overrides_with = "quiet"
    )]
    pub quiet: bool,
    /// Also print a line for each stage as it starts, with its cache key, and info-level
    /// logs (e.g. hub downloads).
    #[arg(short, long, global = true, overrides_with = "verbose")]
    pub verbose: bool,
    /// When to colour output: `auto` colours a terminal unless NO_COLOR is set (non-empty).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorChoice::Auto
    )]
    pub color: ColorChoice,
}

impl GlobalOpts {
    pub fn verbosity(&self) -> Verbosity {
        if self.quiet {
            Verbosity::Quiet
        } else if self.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run an experiment: compute the stages that are not cached, write a run record.
    #[command(after_help = EXAMPLES_RUN)]
    Run(RunArgs),
    /// Check a spec and print its stage graph with what is already cached; runs nothing.
    #[command(after_help = EXAMPLES_VALIDATE)]
    Validate(ValidateArgs),
    /// Inspect or clean the stage cache.
    #[command(subcommand, after_help = EXAMPLES_CACHE)]
    Cache(CacheCommand),
    /// List run records (id, time, spec hash, stages computed/reused, commit, headline metric).
    #[command(after_help = EXAMPLES_RUNS)]
    Runs {
        /// Only this experiment's runs.
        experiment: Option<String>,
        /// Print a JSON array (one object per run, oldest first) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Compare two runs: spec keys that differ, then metrics per SAE (matched on identity).
    /// A run is a run directory, a run id, EXPERIMENT@latest, EXPERIMENT@~N, or a committed
    /// reference file (`experiments/NAME.reference.toml`).
    #[command(after_help = EXAMPLES_DIFF)]
    Diff(DiffArgs),
    /// Run a spec (reusing the cache) and check it against its committed reference
    /// (`<spec>.reference.toml`); exit 1 if any value is outside its tolerance.
    #[command(after_help = EXAMPLES_REPRODUCE)]
    Reproduce {
        #[command(flatten)]
        spec: SpecArgs,
        /// Reference file (default: beside the spec, `<spec stem>.reference.toml`).
        #[arg(long, value_hint = ValueHint::FilePath)]
        reference: Option<PathBuf>,
        /// Print one JSON document (the run's summary as `run --json` prints it, and every
        /// check) instead of the table; the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's metrics as its experiment's reference, with the documented tolerances.
    #[command(after_help = EXAMPLES_PROMOTE)]
    Promote {
        /// The run (directory, id, EXPERIMENT@latest, EXPERIMENT@~N).
        run: String,
        /// Where to write (default: beside the run's spec, `<spec stem>.reference.toml`).
        #[arg(long, value_hint = ValueHint::FilePath)]
        out: Option<PathBuf>,
    },
    /// Write every SAE of a run (trained or imported) in another tool's format: SAELens,
    /// one folder per SAE (cfg.json + sae_weights.safetensors), from the SAEs' cache entries.
    #[command(after_help = EXAMPLES_EXPORT)]
    Export {
        /// The run (directory, id, EXPERIMENT@latest, EXPERIMENT@~N).
        run: String,
        /// The format to write.
        #[arg(long, value_enum, default_value = "saelens")]
        format: crate::export::ExportFormat,
        /// Where to write the folders (created if missing; existing folders are never
        /// overwritten).
        #[arg(value_hint = ValueHint::DirPath)]
        dir: PathBuf,
        /// Print a JSON array (each SAE's folder, stage, key and label) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script on stdout.
    #[command(after_help = EXAMPLES_COMPLETIONS)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
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
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub plots: Option<PathBuf>,
}

#[derive(Args)]
pub struct SpecArgs {
    /// The experiment spec (TOML).
    #[arg(value_hint = ValueHint::FilePath)]
    pub spec: PathBuf,
    /// Override a spec value, e.g. `--set train.lr=3e-3` (applied after the file and
    /// SAERUN_<SECTION>__<KEY> environment variables). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print one JSON summary on stdout instead of the text lines: run directory and id,
    /// every stage (computed or reused, wall time), the tables, plots and report.
    #[arg(long)]
    pub json: bool,
    /// Compute only shard I of N of the sweep (1 ≤ I ≤ N; Slurm: `--array=1-N` and
    /// `--shard $SLURM_ARRAY_TASK_ID/N`): the SAEs whose grid index mod N is I-1, what
    /// belongs to them, and what they need, against a cache the shards share. Writes no
    /// run record: once every shard is done, `saerun run SPEC` (without --shard) finds
    /// everything cached and writes it.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
}

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the stage graph as a Mermaid flowchart (each node's stage, label, key and
    /// cache state) instead of a table.
    #[arg(long)]
    pub graph: bool,
    /// Print the planned stages and their cache state as JSON instead of a table.
    #[arg(long, conflicts_with = "graph")]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// List cache entries.
    #[command(after_help = EXAMPLES_CACHE_LS)]
    Ls,
    /// Hash every file of every entry against its manifest; list corrupt entries (exit 1),
    /// or with --repair move them aside so the next run recomputes them.
    #[command(after_help = EXAMPLES_CACHE_VERIFY)]
    Verify {
        #[arg(long)]
        repair: bool,
    },
    /// Delete entries no recorded run references (dry run unless --yes).
    #[command(after_help = EXAMPLES_CACHE_GC)]
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

/// Parse the process's arguments. clap's own help and errors follow `--color` too, which
/// is why it is looked up before clap parses; bad arguments exit with code 2, `--help` and
/// `--version` with 0.
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let color = color_arg(&args);
    let matches = Cli::command()
        .color(color.for_clap())
        .get_matches_from(args);
    Cli::from_arg_matches(&matches)
        .unwrap_or_else(|e| e.format(&mut Cli::command().color(color.for_clap())).exit())
}

/// The last `--color WHEN` / `--color=WHEN` before a `--`; `auto` if none (or not a valid
/// choice: clap reports that).
fn color_arg(args: &[OsString]) -> ColorChoice {
    use clap::ValueEnum;
    let mut choice = ColorChoice::Auto;
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        let value = match arg.as_ref() {
            "--" => break,
            "--color" => args.next().map(|v| v.into_owned()),
            a => a.strip_prefix("--color=").map(str::to_string),
        };
        if let Some(c) = value.and_then(|v| ColorChoice::from_str(&v, true).ok()) {
            choice = c;
        }
    }
    choice
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
        Command::Run(RunArgs {
            spec,
            json,
            shard: Some(shard),
        }) => {
            let started = Instant::now();
            let summary = run_shard(&opts(spec), shard)?;
            if json {
                print_json(&ShardJson::new(&summary, started))?;
            } else {
                let computed = ShardJson::computed(&summary);
                println!(
                    "shard {} of `{}` finished: {} stages computed, {} reused ({} of the \
                     sweep's {} stages)\nno run record for a shard: once every shard has \
                     finished, `saerun run` without --shard writes it",
                    summary.shard,
                    summary.experiment,
                    computed,
                    summary.stages.len() - computed,
                    summary.stages.len(),
                    summary.planned
                );
            }
        }
        Command::Run(a) => {
            let started = Instant::now();
            let summary = run(&opts(a.spec))?;
            if a.json {
                print_json(&RunJson::new(&summary, started))?;
            } else {
                println!(
                    "run {} finished: {} stages computed, {} reused\nresults: {}\nreport:  {}",
                    summary.record.run_id,
                    summary.record.computed(),
                    summary.record.stages.len() - summary.record.computed(),
                    summary.run_dir.display(),
                    summary.run_dir.join("report.html").display()
                );
            }
        }
        Command::Validate(a) if a.graph => print!("{}", graph(&opts(a.spec))?),
        Command::Validate(a) => {
            let status = plan_status(&opts(a.spec))?;
            if a.json {
                print_json(&status)?;
            } else {
                print!("{}", status.table());
            }
        }
        Command::Runs { experiment, json } => runs(&g.results_dir, experiment.as_deref(), json)?,
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
                    progress::info(&format!("wrote {}", svg.display()));
                }
            }
            match (a.md, a.json) {
                (true, _) => print!("{}", render::markdown(&d)),
                (_, true) => println!("{}", render::json(&d)),
                _ => print!("{}", render::terminal(&d, progress::color_stdout())),
            }
        }
        Command::Reproduce {
            spec,
            reference,
            json,
        } => {
            let reference = reference.unwrap_or_else(|| reference::path_for_spec(&spec.spec));
            reproduce(&opts(spec), &reference, json)?
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "saerun", &mut script);
            use std::io::Write;
            std::io::stdout()
                .write_all(&script)
                .map_err(|e| crate::Error::run(format!("cannot write to stdout: {e}")))?;
        }
        Command::Export {
            run,
            format,
            dir,
            json,
        } => {
            let cache = Cache::open(&g.cache_dir)?;
            let done = crate::export::export(&cache, &g.results_dir, &run, format, &dir)?;
            if json {
                print_json(&done)?;
            } else {
                for e in &done {
                    println!("wrote {}  ({} {})", e.dir.display(), e.stage, e.label);
                }
            }
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

/// One run in `saerun runs --json`.
#[derive(Serialize)]
struct RunsRow {
    run_id: String,
    experiment: String,
    dir: PathBuf,
    finished_at: String,
    /// blake3 of the run's resolved `spec.toml`, 12 hex digits.
    spec_hash: Option<String>,
    computed: usize,
    reused: usize,
    git_commit: String,
    headline: String,
}

/// `saerun runs`: one line per run record, oldest first (or a JSON array).
fn runs(results_dir: &Path, experiment: Option<&str>, json: bool) -> Result<()> {
    let found = run_ref::list(results_dir, experiment)?;
    let rows: Vec<RunsRow> = found
        .iter()
        .map(|r| RunsRow {
            run_id: r.record.run_id.clone(),
            experiment: r.record.experiment.clone(),
            dir: absolute(&r.dir),
            finished_at: r.record.finished_at.clone(),
            spec_hash: std::fs::read(r.dir.join("spec.toml"))
                .ok()
                .map(|b| blake3::hash(&b).to_hex()[..12].to_string()),
            computed: r.record.computed(),
            reused: r.record.stages.len() - r.record.computed(),
            git_commit: r.record.git_commit.clone(),
            headline: headline(&r.dir),
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    println!(
        "{:<22} {:<20} {:<19} {:<12} {:>8} {:>6}  {:<10} headline",
        "run", "experiment", "finished (UTC)", "spec", "computed", "reused", "commit"
    );
    for r in &rows {
        println!(
            "{:<22} {:<20} {:<19} {:<12} {:>8} {:>6}  {:<10} {}",
            r.run_id,
            r.experiment,
            r.finished_at
                .get(..19)
                .unwrap_or(&r.finished_at)
                .replace('T', " "),
            r.spec_hash.as_deref().unwrap_or("–"),
            r.computed,
            r.reused,
            r.git_commit.get(..10).unwrap_or(&r.git_commit),
            r.headline
        );
    }
    println!("{} runs under {}", rows.len(), results_dir.display());
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

/// `saerun reproduce --json`.
#[derive(Serialize)]
struct ReproduceJson<'a> {
    run: RunJson<'a>,
    reference: PathBuf,
    /// The reference file's `source`.
    reference_source: &'a str,
    passed: usize,
    failed: usize,
    informational: usize,
    checks: &'a [Check],
}

/// `saerun reproduce`: run, compare with the reference, print the table; failures exit 1.
fn reproduce(opts: &RunOptions, reference_file: &Path, json: bool) -> Result<()> {
    let reference = reference::load(reference_file)?;
    let started = Instant::now();
    let summary = run(opts)?;
    let rows = read_metrics(&summary.run_dir)?;
    let checks = reference::check(&reference, &rows);
    let count = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
    let (pass, fail, info) = (
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Informational),
    );
    if json {
        print_json(&ReproduceJson {
            run: RunJson::new(&summary, started),
            reference: absolute(reference_file),
            reference_source: &reference.source,
            passed: pass,
            failed: fail,
            informational: info,
            checks: &checks,
        })?;
    } else {
        print_checks(&summary, reference_file, &reference, &checks);
        println!("{pass} passed, {fail} failed, {info} informational");
    }
    if fail > 0 {
        return Err(crate::Error::run(format!(
            "{fail} of {} reference values are outside their tolerance",
            pass + fail
        )));
    }
    Ok(())
}

/// The table of `saerun reproduce`.
fn print_checks(
    summary: &RunSummary,
    reference_file: &Path,
    reference: &reference::Reference,
    checks: &[Check],
) {
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
    for c in checks {
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
}

/// `saerun run --json`: one document a script can act on. Paths are absolute.
#[derive(Serialize)]
struct RunJson<'a> {
    run_id: &'a str,
    experiment: &'a str,
    run_dir: PathBuf,
    spec_file: &'a str,
    git_commit: &'a str,
    started_at: &'a str,
    finished_at: &'a str,
    /// The whole command, planning and report included.
    wall_seconds: f64,
    /// Stages computed by this run / found in the cache.
    computed: usize,
    reused: usize,
    /// Every stage in execution order: `stage`, `label`, `key`, `outcome`
    /// (`computed` / `reused`), `wall_seconds`.
    stages: &'a [StageRecord],
    /// `report`, `tables`, `plots`, `browsers`.
    #[serde(flatten)]
    outputs: &'a RunOutputs,
}

impl<'a> RunJson<'a> {
    fn new(summary: &'a RunSummary, started: Instant) -> RunJson<'a> {
        let r = &summary.record;
        RunJson {
            run_id: &r.run_id,
            experiment: &r.experiment,
            run_dir: absolute(&summary.run_dir),
            spec_file: &r.spec_file,
            git_commit: &r.git_commit,
            started_at: &r.started_at,
            finished_at: &r.finished_at,
            wall_seconds: started.elapsed().as_secs_f64(),
            computed: r.computed(),
            reused: r.stages.len() - r.computed(),
            stages: &r.stages,
            outputs: &summary.outputs,
        }
    }
}

/// `saerun run --shard I/N --json`: what the shard did (no run record, so no run
/// directory or tables).
#[derive(Serialize)]
struct ShardJson<'a> {
    /// `I/N`.
    shard: String,
    experiment: &'a str,
    wall_seconds: f64,
    computed: usize,
    reused: usize,
    /// Stages in the whole sweep (this shard ran `stages.len()` of them).
    planned_stages: usize,
    /// The shard's stages in execution order, as in `run --json`.
    stages: &'a [StageRecord],
}

impl<'a> ShardJson<'a> {
    fn computed(s: &ShardSummary) -> usize {
        s.stages
            .iter()
            .filter(|r| r.outcome == crate::cache::Outcome::Computed)
            .count()
    }

    fn new(summary: &'a ShardSummary, started: Instant) -> ShardJson<'a> {
        let computed = Self::computed(summary);
        ShardJson {
            shard: summary.shard.to_string(),
            experiment: &summary.experiment,
            wall_seconds: started.elapsed().as_secs_f64(),
            computed,
            reused: summary.stages.len() - computed,
            planned_stages: summary.planned,
            stages: &summary.stages,
        }
    }
}

/// A JSON document on stdout, pretty-printed, with a final newline.
fn print_json(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::Error::run(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let has = cmd
                .get_after_help()
                .is_some_and(|h| h.to_string().contains("Example"));
            if !has {
                missing.push(path.to_string());
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "saerun", &mut missing);
        assert!(missing.is_empty(), "no example in the help of {missing:?}");
    }

    #[test]
    fn color_is_read_before_clap_parses() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(color_arg(&args(&["saerun", "runs"])), ColorChoice::Auto);
        assert_eq!(
            color_arg(&args(&["saerun", "--color", "never", "runs"])),
            ColorChoice::Never
        );
        assert_eq!(
            color_arg(&args(&["saerun", "runs", "--color=always"])),
            ColorChoice::Always
        );
        assert_eq!(
            color_arg(&args(&["saerun", "run", "--", "--color=always"])),
            ColorChoice::Auto
        );
    }
}
