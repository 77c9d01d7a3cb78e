//! `saerun diff` output: an aligned terminal table (coloured when the CLI's colour setting
//! says so: `progress::color_stdout`), Markdown, or the JSON document of `diff::RunDiff`.

use super::diff::{MetricChange, RowStatus, RunDiff};
use crate::report::plots::tick;
use std::fmt::Write;

fn num(v: Option<f64>) -> String {
    v.map_or("–".into(), tick)
}

fn delta(v: Option<f64>) -> String {
    v.map_or("–".into(), |d| {
        if d >= 0.0 {
            format!("+{}", tick(d))
        } else {
            tick(d)
        }
    })
}

fn rel(v: Option<f64>) -> String {
    v.map_or("–".into(), |r| format!("{:+.2}%", 100.0 * r))
}

fn status_text(s: RowStatus) -> &'static str {
    match s {
        RowStatus::Same => "unchanged",
        RowStatus::Changed => "changed",
        RowStatus::OnlyA => "only in A",
        RowStatus::OnlyB => "only in B",
    }
}

fn summary(d: &RunDiff) -> String {
    let count = |s: RowStatus| d.rows.iter().filter(|r| r.status == s).count();
    format!(
        "{} changed, {} only in A, {} only in B",
        count(RowStatus::Changed),
        count(RowStatus::OnlyA),
        count(RowStatus::OnlyB)
    )
}

pub fn terminal(d: &RunDiff, colour: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    if !d.same_experiment {
        let _ = writeln!(
            out,
            "{}",
            paint(
                "1;33",
                &format!(
                    "note: different experiments: `{}` vs `{}`",
                    d.a.experiment, d.b.experiment
                )
            )
        );
    }
    let _ = writeln!(
        out,
        "A: {} ({})\nB: {} ({})\n",
        d.a.run_id, d.a.dir, d.b.run_id, d.b.dir
    );
    if d.spec.is_empty() {
        out.push_str("spec: identical\n");
    } else {
        let _ = writeln!(out, "spec: {} keys differ", d.spec.len());
        let w = d.spec.iter().map(|c| c.key.len()).max().unwrap_or(0);
        for c in &d.spec {
            let _ = writeln!(
                out,
                "  {:<w$}  {}  →  {}",
                c.key,
                c.a.as_deref().unwrap_or("(absent)"),
                c.b.as_deref().unwrap_or("(absent)")
            );
        }
    }
    let _ = writeln!(out, "\nSAEs: {}", summary(d));
    for r in &d.rows {
        let head = format!("{}  [{}]", r.sae.label(), status_text(r.status));
        let code = match r.status {
            RowStatus::OnlyA => "31",
            RowStatus::OnlyB => "32",
            _ => "1",
        };
        let _ = writeln!(out, "\n{}", paint(code, &head));
        if r.metrics.is_empty() {
            continue;
        }
        let w = r
            .metrics
            .iter()
            .map(|m| m.metric.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "  {:<w$}  {:>12}  {:>12}  {:>12}  {:>9}",
            "metric", "A", "B", "Δ", "rel Δ"
        );
        for m in &r.metrics {
            let line = format!(
                "  {:<w$}  {:>12}  {:>12}  {:>12}  {:>9}",
                m.metric,
                num(m.a),
                num(m.b),
                delta(m.abs_delta),
                rel(m.rel_delta)
            );
            let changed =
                m.a != m.b && !(m.a.is_some_and(f64::is_nan) && m.b.is_some_and(f64::is_nan));
            let _ = writeln!(out, "{}", if changed { paint("33", &line) } else { line });
        }
    }
    out
}

pub fn markdown(d: &RunDiff) -> String {
    let mut out = String::new();
    if !d.same_experiment {
        let _ = writeln!(
            out,
            "> **Different experiments:** `{}` vs `{}`\n",
            d.a.experiment, d.b.experiment
        );
    }
    let _ = writeln!(out, "**A:** `{}` · **B:** `{}`\n", d.a.run_id, d.b.run_id);
    if !d.spec.is_empty() {
        out.push_str("| spec key | A | B |\n|---|---|---|\n");
        for c in &d.spec {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | `{}` |",
                c.key,
                c.a.as_deref().unwrap_or("(absent)"),
                c.b.as_deref().unwrap_or("(absent)")
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "SAEs: {}\n", summary(d));
    out.push_str(
        "| SAE | status | metric | A | B | Δ | rel Δ |\n|---|---|---|---:|---:|---:|---:|\n",
    );
    for r in &d.rows {
        let blank = [MetricChange {
            metric: "–".into(),
            a: None,
            b: None,
            abs_delta: None,
            rel_delta: None,
        }];
        let metrics = if r.metrics.is_empty() {
            &blank[..]
        } else {
            &r.metrics[..]
        };
        for m in metrics {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.sae.label(),
                status_text(r.status),
                m.metric,
                num(m.a),
                num(m.b),
                delta(m.abs_delta),
                rel(m.rel_delta)
            );
        }
    }
    out
}

pub fn json(d: &RunDiff) -> String {
    serde_json::to_string_pretty(d).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
