//! `saerun diff --plots DIR`: each sweep plot of the report with both runs overlaid, one line
//! per run and sparsity (and seed).

use super::diff::Side;
use super::run_data::MetricRow;
use crate::report::plots::{render, LineChart, Series, SIZE_PLOTS};
use crate::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn series(run: &str, rows: &[MetricRow], column: &str) -> Vec<Series> {
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        if let Some(&v) = r.values.get(column) {
            let sparsity = match r.key.k {
                Some(k) => format!("k={k}"),
                None => format!("l1={}", r.key.l1),
            };
            let name = format!("{run} {sparsity} seed={}", r.key.seed);
            lines.entry(name).or_default().push((r.key.d_sae as f64, v));
        }
    }
    lines.into_iter().collect()
}

/// Writes `<stem>.png` / `.svg` into `dir` for every sweep metric either run has; returns
/// the SVG paths.
pub fn write(a: &Side, b: &Side, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in SIZE_PLOTS {
        let mut lines = series(&format!("A {}", a.info.run_id), &a.rows, p.column);
        lines.extend(series(&format!("B {}", b.info.run_id), &b.rows, p.column));
        if lines.is_empty() {
            continue;
        }
        let chart = LineChart {
            file_stem: p.stem,
            title: format!("{} (A vs B)", p.title),
            x_label: "dictionary size (latents)",
            y_label: p.y_label,
            log_x: true,
            log_y: p.log_y,
            series: lines,
        };
        out.push(render(&chart, dir)?);
    }
    Ok(out)
}
