//! Command-line interface (clap derive). Exit codes: 0 ok, 1 run failed, 2 bad input.

use crate::cache::{gc, Cache};
use crate::pipeline::run::{graph, run, validate, RunOptions};
use crate::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Delete entries no recorded run references (dry run unless --yes).
    Gc {
        /// Actually delete.
        #[arg(long)]
        yes: bool,
    },
}

pub fn main_with(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let opts = |a: SpecArgs| RunOptions {
        spec: a.spec,
        sets: a.sets,
        cache_dir: g.cache_dir.clone(),
        results_dir: g.results_dir.clone(),
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
        Command::Cache(CacheCommand::Gc { yes }) => {
            let cache = Cache::open(&g.cache_dir)?;
            let plan = gc::plan(&cache, &g.results_dir)?;
            println!(
                "{} runs under {} reference {} entries; {} unreferenced entries ({}), {} stale temporary directories, {} unfinished run directories",
                plan.runs_scanned,
                g.results_dir.display(),
                plan.keep.len(),
                plan.remove.len(),
                human_bytes(plan.bytes_to_free()),
                plan.stale_tmp.len(),
                plan.stale_runs.len()
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
            {
                println!("dry run: pass --yes to delete");
            }
        }
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
