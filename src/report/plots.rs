//! Plots as PNG and SVG (plotters). Text is drawn with DejaVu Sans compiled into the binary
//! (the `dejavu` crate), so plots render on machines without system fonts.

use super::rows::{CurveRow, SaeRow};
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 600);

/// A named series of (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// A line chart: named series of (x, y) points.
pub struct LineChart {
    pub file_stem: &'static str,
    pub title: String,
    pub x_label: &'static str,
    pub y_label: &'static str,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font bytes are a known-good TTF shipped by the crate.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Render `chart` to `<dir>/<stem>.png` and `.svg`; returns the SVG's path.
pub fn render(chart: &LineChart, dir: &Path) -> Result<PathBuf> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create", e))?;
    let png = dir.join(format!("{}.png", chart.file_stem));
    let svg = dir.join(format!("{}.svg", chart.file_stem));
    let fail = |p: &Path, e: String| Error::run(format!("cannot draw {}: {e}", p.display()));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(chart, &root).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(chart, &root).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    Ok(svg)
}

fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if log { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 1.25, hi * 1.25)
    } else {
        let pad = ((hi - lo) * 0.06).max(hi.abs() * 1e-3).max(1e-9);
        (lo - pad, hi + pad)
    }
}

fn draw<DB: DrawingBackend>(chart: &LineChart, root: &DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let pts = || chart.series.iter().flat_map(|(_, p)| p.iter());
    let (x0, x1) = bounds(pts().map(|p| p.0), chart.log_x);
    let (y0, y1) = bounds(pts().map(|p| p.1), chart.log_y);
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&chart.title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72);
    macro_rules! body {
        ($ctx:expr) => {{
            let mut ctx = $ctx.map_err(|e| e.to_string())?;
            ctx.configure_mesh()
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .light_line_style(WHITE.mix(0.0))
                .x_desc(chart.x_label)
                .y_desc(chart.y_label)
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, (name, points)) in chart.series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|(x, y)| {
                        x.is_finite()
                            && y.is_finite()
                            && (!chart.log_x || *x > 0.0)
                            && (!chart.log_y || *y > 0.0)
                    })
                    .collect();
                ctx.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                if points.len() <= 40 {
                    ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| e.to_string())?;
                }
            }
            ctx.configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    // Dictionary sizes are powers of two: label every size, not just powers of ten.
    let sizes: Vec<f64> = {
        let mut v: Vec<f64> = pts().map(|p| p.0).filter(|x| *x > 0.0).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.dedup();
        v
    };
    let size_ticks = chart.log_x && sizes.len() <= 12 && sizes.iter().all(|x| x.fract() == 0.0);
    match (chart.log_x, chart.log_y) {
        (true, false) if size_ticks => {
            body!(builder
                .build_cartesian_2d((x0..x1).log_scale().with_key_points(sizes.clone()), y0..y1))
        }
        (true, true) if size_ticks => body!(builder.build_cartesian_2d(
            (x0..x1).log_scale().with_key_points(sizes.clone()),
            (y0..y1).log_scale()
        )),
        (false, false) => body!(builder.build_cartesian_2d(x0..x1, y0..y1)),
        (true, false) => body!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
        (false, true) => body!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
        (true, true) => {
            body!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale()))
        }
    }
    Ok(())
}

/// Axis tick text: at most 4 significant digits, no float noise (0.30000000000000004).
fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn sparsity_label(r: &SaeRow) -> String {
    match r.k {
        Some(k) => format!("k={k}"),
        None => format!("l1={}", r.l1),
    }
}

/// Series per (l1, seed) of `y(row)` against d_sae.
fn by_l1(rows: &[SaeRow], y: impl Fn(&SaeRow) -> Option<f64>) -> Vec<Series> {
    let seeds: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.seed).collect();
    let mut groups: BTreeMap<(u64, u64, u64), Series> = BTreeMap::new();
    for r in rows {
        if let Some(v) = y(r) {
            let name = if seeds.len() > 1 {
                format!("{} seed={}", sparsity_label(r), r.seed)
            } else {
                sparsity_label(r)
            };
            groups
                .entry((r.l1.to_bits(), r.k.unwrap_or(0) as u64, r.seed))
                .or_insert_with(|| (name, Vec::new()))
                .1
                .push((r.d_sae as f64, v));
        }
    }
    groups.into_values().collect()
}

/// All of a toy or LM run's standard plots. Returns (title, svg path relative to `dir`'s parent).
pub fn write_all(
    rows: &[SaeRow],
    curves: &[CurveRow],
    dir: &Path,
) -> Result<Vec<(String, String)>> {
    let mut charts = vec![
        LineChart {
            file_stem: "reconstruction_vs_size",
            title: "Reconstruction loss vs dictionary size".into(),
            x_label: "dictionary size (latents)",
            y_label: "MSE  (mean over samples of ||x - x_hat||^2)",
            log_x: true,
            log_y: true,
            series: by_l1(rows, |r| Some(r.mse)),
        },
        LineChart {
            file_stem: "l0_vs_size",
            title: "L0 vs dictionary size".into(),
            x_label: "dictionary size (latents)",
            y_label: "L0 (active latents per sample)",
            log_x: true,
            log_y: false,
            series: by_l1(rows, |r| Some(r.l0)),
        },
        LineChart {
            file_stem: "feature_count_vs_size",
            title: "Features shared with the next larger dictionary (matched cosine > threshold)"
                .into(),
            x_label: "dictionary size (latents)",
            y_label: "feature count",
            log_x: true,
            log_y: false,
            series: by_l1(rows, |r| r.features_above.map(|v| v as f64)),
        },
    ];
    if rows.iter().any(|r| r.lm.is_some()) {
        charts.push(LineChart {
            file_stem: "delta_ce_vs_size",
            title: "Perplexity impact: CE increase with the SAE spliced in".into(),
            x_label: "dictionary size (latents)",
            y_label: "delta CE (nats) = CE_sae - CE_clean",
            log_x: true,
            log_y: false,
            series: by_l1(rows, |r| r.lm.as_ref().map(|l| l.delta_ce)),
        });
        charts.push(LineChart {
            file_stem: "ce_recovered_vs_size",
            title: "CE recovered vs dictionary size".into(),
            x_label: "dictionary size (latents)",
            y_label: "(CE_zero - CE_sae) / (CE_zero - CE_clean)",
            log_x: true,
            log_y: false,
            series: by_l1(rows, |r| r.lm.as_ref().map(|l| l.ce_recovered)),
        });
        // The sparsity–fidelity frontier: one curve per size across the l1 (or k) sweep.
        let mut frontier: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
        for r in rows {
            frontier.entry(r.d_sae).or_default().push((r.l0, r.fve));
        }
        charts.push(LineChart {
            file_stem: "l0_fve_frontier",
            title: "Sparsity vs fidelity across the sweep".into(),
            x_label: "L0 (active latents per token)",
            y_label: "fraction of variance explained",
            log_x: true,
            log_y: false,
            series: frontier
                .into_iter()
                .map(|(d, mut pts)| {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (format!("d_sae={d}"), pts)
                })
                .collect(),
        });
    }
    if rows.iter().any(|r| r.mmcs_truth.is_some()) {
        let mut series: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
        for r in rows {
            if let Some(m) = r.mmcs_truth {
                series.entry(r.d_sae).or_default().push((r.l1, m));
            }
        }
        let log_x = rows.iter().all(|r| r.l1 > 0.0);
        charts.push(LineChart {
            file_stem: "mmcs_vs_l1",
            title: "Ground-truth recovery (MMCS) vs l1".into(),
            x_label: "l1 coefficient",
            y_label: "MMCS with true features",
            log_x,
            log_y: false,
            series: series
                .into_iter()
                .map(|(d, mut pts)| {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (format!("d_sae={d}"), pts)
                })
                .collect(),
        });
    }
    let mut curve_series: BTreeMap<(u64, usize, u64), Series> = BTreeMap::new();
    for c in curves {
        curve_series
            .entry((c.l1.to_bits(), c.d_sae, c.seed))
            .or_insert_with(|| (format!("d_sae={} l1={}", c.d_sae, c.l1), Vec::new()))
            .1
            .push((c.point.step as f64, c.point.loss));
    }
    charts.push(LineChart {
        file_stem: "training_curves",
        title: "Training loss".into(),
        x_label: "step",
        y_label: "loss (MSE + l1 * L1)",
        log_x: false,
        log_y: true,
        series: curve_series.into_values().collect(),
    });

    let mut out = Vec::new();
    for chart in &charts {
        render(chart, dir)?;
        out.push((
            chart.title.clone(),
            format!("plots/{}.svg", chart.file_stem),
        ));
    }
    Ok(out)
}
