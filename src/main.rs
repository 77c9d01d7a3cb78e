use clap::Parser;
use saerun::cli::{main_with, Cli};

// glibc malloc mmaps every large tensor afresh on each op; mimalloc reuses them (measured
// ~5x on 16M-element elementwise ops, ../shared/notes/candle-0.11.md §2).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAERUN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = main_with(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
