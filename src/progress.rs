//! Terminal output: how much to say (`-q` / `-v`), whether to colour (`--color`, `NO_COLOR`),
//! and the progress display: one bar for the stage graph and one for the stage being
//! computed (indicatif). When stderr is not a terminal the bars are hidden and each stage is
//! logged as a plain line instead; `-q` hides both, `-v` adds a line with each stage's key
//! when it starts.
//!
//! The settings are process-wide (set once by the CLI before anything prints); a library
//! user that never sets them gets the defaults: normal verbosity, colour on terminals.

use crate::cache::StageKey;
use crate::pipeline::Graph;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// How much saerun says on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Verbosity {
    /// Errors and the command's result only: no progress bars, no per-stage lines.
    Quiet,
    /// Progress bars on a terminal, otherwise a line per finished stage.
    #[default]
    Normal,
    /// Also a line per stage as it starts, with its full cache key.
    Verbose,
}

/// When to colour output (`--color`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless `NO_COLOR` is set (non-empty), `CLICOLOR=0` or
    /// `TERM=dumb`; `CLICOLOR_FORCE` (non-empty, not `0`) colours off a terminal too, but
    /// `NO_COLOR` wins.
    #[default]
    Auto,
    /// Always colour, even when piped and whatever `NO_COLOR` says.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// clap's own setting for the same choice (its `Auto` follows the same variables).
    pub fn for_clap(self) -> clap::ColorChoice {
        match self {
            ColorChoice::Auto => clap::ColorChoice::Auto,
            ColorChoice::Always => clap::ColorChoice::Always,
            ColorChoice::Never => clap::ColorChoice::Never,
        }
    }

    fn decide(self, terminal: bool) -> bool {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                if var("NO_COLOR").is_some() {
                    false
                } else if var("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
                    true
                } else if var("CLICOLOR").is_some_and(|v| v == "0")
                    || var("TERM").is_some_and(|v| v == "dumb")
                {
                    false
                } else {
                    terminal
                }
            }
        }
    }
}

static VERBOSITY: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);
static COLOR: AtomicU8 = AtomicU8::new(ColorChoice::Auto as u8);

/// Set the process-wide output settings (the CLI does, before anything prints).
pub fn configure(verbosity: Verbosity, color: ColorChoice) {
    VERBOSITY.store(verbosity as u8, Ordering::Relaxed);
    COLOR.store(color as u8, Ordering::Relaxed);
}

pub fn verbosity() -> Verbosity {
    match VERBOSITY.load(Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        2 => Verbosity::Verbose,
        _ => Verbosity::Normal,
    }
}

pub fn color_choice() -> ColorChoice {
    match COLOR.load(Ordering::Relaxed) {
        1 => ColorChoice::Always,
        2 => ColorChoice::Never,
        _ => ColorChoice::Auto,
    }
}

/// Whether output written to stdout may carry colour.
pub fn color_stdout() -> bool {
    color_choice().decide(std::io::stdout().is_terminal())
}

/// Whether output written to stderr (logs, progress) may carry colour.
pub fn color_stderr() -> bool {
    color_choice().decide(std::io::stderr().is_terminal())
}

/// An informational line on stderr (not an error, not the result): silent under `-q`.
pub fn info(line: &str) {
    if verbosity() > Verbosity::Quiet {
        eprintln!("{line}");
    }
}

pub struct Progress {
    multi: MultiProgress,
    stages: ProgressBar,
    interactive: bool,
    verbosity: Verbosity,
    color: bool,
    /// `-v`: the keys of the graph's nodes by their `stage label` (the text `stage_started`
    /// gets), in graph order where two nodes share one.
    keys: Mutex<HashMap<String, Vec<StageKey>>>,
}

impl Progress {
    pub fn new(total_stages: usize) -> Progress {
        let verbosity = verbosity();
        let multi = if verbosity == Verbosity::Quiet {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        let interactive = verbosity > Verbosity::Quiet && std::io::stderr().is_terminal();
        let color = color_stderr();
        let stages = multi.add(ProgressBar::new(total_stages as u64));
        stages.set_style(style(
            "stages {pos}/{len} [{bar:30}] {elapsed_precise} {msg}",
            color,
        ));
        Progress {
            multi,
            stages,
            interactive,
            verbosity,
            color,
            keys: Mutex::default(),
        }
    }

    /// A display for `graph`'s stages; under `-v` it names each stage's key as it starts.
    pub fn for_graph(graph: &Graph) -> Progress {
        let progress = Progress::new(graph.nodes().len());
        if progress.verbosity == Verbosity::Verbose {
            let mut keys = progress.keys.lock().unwrap_or_else(|e| e.into_inner());
            for node in graph.nodes() {
                keys.entry(format!("{} {}", node.stage, node.label))
                    .or_default()
                    .push(node.key);
            }
        }
        progress
    }

    /// A log line above the bars (or on stderr when there are none); nothing under `-q`.
    pub fn println(&self, line: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        if self.interactive {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn stage_started(&self, label: &str) {
        if self.verbosity == Verbosity::Verbose {
            let key = {
                let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
                keys.get_mut(label)
                    .filter(|k| !k.is_empty())
                    .map(|k| k.remove(0))
            };
            // Aligned with the executor's `[  n/N] stage  label  outcome` lines.
            let (stage, rest) = label.split_once(' ').unwrap_or((label, ""));
            let key = key
                .map(|k| format!("  key {}", k.hex()))
                .unwrap_or_default();
            self.println(&format!("[start] {stage:<18} {rest}{key}"));
        }
        self.stages.set_message(label.to_string());
    }

    pub fn stage_finished(&self) {
        self.stages.inc(1);
    }

    /// A bar for the steps of one stage.
    pub fn steps(&self, total: u64, prefix: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(style(
            "  {prefix} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta} {msg}",
            self.color,
        ));
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// A bar counting `unit`s (e.g. contexts) for one stage.
    pub fn bar(&self, total: u64, unit: &str, prefix: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(style(
            &format!("  {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"),
            self.color,
        ));
        bar.set_prefix(prefix.to_string());
        bar
    }

    pub fn finish(&self) {
        self.stages.finish_and_clear();
    }
}

/// A bar style from `template`; with colour the bar itself is cyan. Without, the template
/// has no colour at all, so nothing depends on indicatif's own terminal checks.
fn style(template: &str, color: bool) -> ProgressStyle {
    let template = if color {
        template.replace("{bar:30}", "{bar:30.cyan}")
    } else {
        template.to_string()
    };
    ProgressStyle::with_template(&template)
        .expect("valid template")
        .progress_chars("=> ")
}
