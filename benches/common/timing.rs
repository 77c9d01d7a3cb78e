//! Timing and the PyTorch reference (`../shared/bench/torch_ref.py`), shared by the benches.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The options every bench takes: `--rounds R --repeats N --torch-ref PATH --no-torch`;
/// anything else (a bench's own switches, and cargo's `--bench`) is kept in `flags`.
pub struct Args {
    pub rounds: usize,
    pub repeats: usize,
    pub torch_ref: Option<PathBuf>,
    pub flags: Vec<String>,
}

pub fn parse_args() -> Args {
    let mut args = Args {
        rounds: 3,
        repeats: 10,
        torch_ref: Some(default_torch_ref()),
        flags: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |default: usize| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
                .max(1)
        };
        match a.as_str() {
            "--rounds" => args.rounds = num(args.rounds),
            "--repeats" => args.repeats = num(args.repeats),
            "--torch-ref" => args.torch_ref = it.next().map(PathBuf::from),
            "--no-torch" => args.torch_ref = None,
            _ => args.flags.push(a),
        }
    }
    args
}

/// `$SAERUN_TORCH_REF`, else `../shared/bench/torch_ref.py` beside the crate.
pub fn default_torch_ref() -> PathBuf {
    match std::env::var_os("SAERUN_TORCH_REF") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/torch_ref.py"),
    }
}

/// Mean seconds per call after `warm` untimed calls.
pub fn time(repeats: usize, warm: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    let t = Instant::now();
    for _ in 0..repeats {
        f();
    }
    t.elapsed().as_secs_f64() / repeats as f64
}

/// The Python that runs the reference: `$SAERUN_BENCH_PYTHON` (e.g. a virtualenv's
/// `bin/python` with torch), else `python3` on the `PATH`.
pub fn python() -> PathBuf {
    std::env::var_os("SAERUN_BENCH_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// Run `torch_ref.py` with `args`; its JSON output, or `None` (with the reason printed).
pub fn run_torch_with(script: &Path, args: &[String]) -> Option<serde_json::Value> {
    if !script.is_file() {
        println!("torch reference: {} not found, skipped", script.display());
        return None;
    }
    let out = Command::new(python()).arg(script).args(args).output();
    match out {
        Ok(o) if o.status.success() => match serde_json::from_slice(&o.stdout) {
            Ok(v) => Some(v),
            Err(e) => {
                println!("torch reference: unreadable output ({e}), skipped");
                None
            }
        },
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("");
            println!("torch reference: python3/torch unavailable or failed ({last}), skipped");
            None
        }
        Err(e) => {
            println!("torch reference: cannot run python3 ({e}), skipped");
            None
        }
    }
}

/// (best, median) of the present values.
pub fn best_and_median(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[v.len() - 1], v[v.len() / 2]))
}

/// Two cases timed in tokens/s by saerun and torch, round by round, then printed side by
/// side (best, median, ratio of the bests): the forward and evaluation benches' table.
pub struct TokensTable {
    /// The two cases' names, and what a round line calls them (e.g. "harvest / full").
    pub cases: [String; 2],
    pub short: &'static str,
    /// Per round: [saerun case 0, saerun case 1, torch case 0, torch case 1].
    rows: Vec<[Option<f64>; 4]>,
    torch_version: Option<String>,
}

impl TokensTable {
    pub fn new(cases: [String; 2], short: &'static str) -> Self {
        TokensTable {
            cases,
            short,
            rows: Vec::new(),
            torch_version: None,
        }
    }

    /// One round: saerun's two figures, and torch's under `keys` in its JSON output (if any).
    pub fn round(&mut self, ours: [f64; 2], torch: Option<&serde_json::Value>, keys: [&str; 2]) {
        let get = |k: &str| torch.and_then(|v| v.get(k)).and_then(|v| v.as_f64());
        let row = [Some(ours[0]), Some(ours[1]), get(keys[0]), get(keys[1])];
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "round {}: saerun {} / {} tok/s, torch {} / {} tok/s ({})",
            self.rows.len(),
            fmt(row[0]),
            fmt(row[1]),
            fmt(row[2]),
            fmt(row[3]),
            self.short
        );
        if let Some(t) = torch {
            self.torch_version = Some(format!(
                "torch {} with {} threads",
                t.get("torch").and_then(|v| v.as_str()).unwrap_or("?"),
                t.get("threads").map(|v| v.to_string()).unwrap_or_default()
            ));
        }
        self.rows.push(row);
    }

    pub fn print(&self) {
        let w = self
            .cases
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(0)
            .max(16)
            + 2;
        println!(
            "{:<w$} {:>12} {:>14} {:>11} {:>13} {:>7}",
            "case (tokens/s)",
            "saerun best",
            "saerun median",
            "torch best",
            "torch median",
            "ratio"
        );
        for (i, name) in self.cases.iter().enumerate() {
            let (ob, om) =
                best_and_median(self.rows.iter().map(|r| r[i])).unwrap_or((f64::NAN, f64::NAN));
            match best_and_median(self.rows.iter().map(|r| r[i + 2])) {
                Some((tb, tm)) => println!(
                    "{name:<w$} {ob:>12.0} {om:>14.0} {tb:>11.0} {tm:>13.0} {:>6.2}x",
                    ob / tb
                ),
                None => println!(
                    "{name:<w$} {ob:>12.0} {om:>14.0} {:>11} {:>13} {:>7}",
                    "-", "-", "-"
                ),
            }
        }
        println!("ratio = best saerun / best torch");
        if let Some(v) = &self.torch_version {
            println!("{v}");
        }
    }
}
