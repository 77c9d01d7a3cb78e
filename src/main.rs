use saerun::progress::{self, Verbosity};

// glibc malloc mmaps every large tensor afresh on each op; mimalloc reuses them (measured
// ~5x on 16M-element elementwise ops, ../shared/notes/candle-0.11.md §2).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`saerun runs | head -1`) would
    // panic; end quietly instead, as other command-line tools do.
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = saerun::cli::parse();
    let verbosity = cli.global.verbosity();
    progress::configure(verbosity, cli.global.color);
    let default_log = match verbosity {
        Verbosity::Quiet => "error",
        Verbosity::Normal => "warn",
        Verbosity::Verbose => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAERUN_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .with_ansi(progress::color_stderr())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = saerun::cli::main_with(cli) {
        let prefix = if progress::color_stderr() {
            "\x1b[1;31merror:\x1b[0m"
        } else {
            "error:"
        };
        eprintln!("{prefix} {e}");
        std::process::exit(e.exit_code());
    }
}
