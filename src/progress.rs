//! Progress display: one bar for the stage graph and one for the stage being computed
//! (indicatif). When stderr is not a terminal the bars are hidden and each stage is logged
//! as a plain line instead.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct Progress {
    multi: MultiProgress,
    stages: ProgressBar,
    interactive: bool,
}

impl Progress {
    pub fn new(total_stages: usize) -> Progress {
        let multi = MultiProgress::new();
        let interactive = std::io::stderr().is_terminal();
        let stages = multi.add(ProgressBar::new(total_stages as u64));
        stages.set_style(
            ProgressStyle::with_template("stages {pos}/{len} [{bar:30}] {elapsed_precise} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Progress {
            multi,
            stages,
            interactive,
        }
    }

    /// A log line above the bars (or on stderr when there are none).
    pub fn println(&self, line: &str) {
        if self.interactive {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn stage_started(&self, label: &str) {
        self.stages.set_message(label.to_string());
    }

    pub fn stage_finished(&self) {
        self.stages.inc(1);
    }

    /// A bar for the steps of one stage.
    pub fn steps(&self, total: u64, prefix: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "  {prefix} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// A bar counting `unit`s (e.g. contexts) for one stage.
    pub fn bar(&self, total: u64, unit: &str, prefix: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "  {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar
    }

    pub fn finish(&self) {
        self.stages.finish_and_clear();
    }
}
