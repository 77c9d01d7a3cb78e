//! Plots as PNG and SVG (plotters). Text is drawn with DejaVu Sans compiled into the binary
//! (the `dejavu` crate), so plots render on machines without system fonts.

use crate::cache::StageKey;
use crate::results::Table;
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 600);

/// A named series of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

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
    let size_ticks = sizes.len() <= 12 && sizes.iter().all(|x| x.fract() == 0.0);
    // Log axes get explicit ticks: plotters labels only powers of ten, so a range inside
    // one decade (MSE 340–770) would have no labels at all.
    let x_keys = if size_ticks { sizes } else { log_ticks(x0, x1) };
    let y_keys = log_ticks(y0, y1);
    match (chart.log_x, chart.log_y) {
        (false, false) => body!(builder.build_cartesian_2d(x0..x1, y0..y1)),
        (true, false) => {
            body!(builder.build_cartesian_2d((x0..x1).log_scale().with_key_points(x_keys), y0..y1))
        }
        (false, true) => {
            body!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale().with_key_points(y_keys)))
        }
        (true, true) => body!(builder.build_cartesian_2d(
            (x0..x1).log_scale().with_key_points(x_keys),
            (y0..y1).log_scale().with_key_points(y_keys)
        )),
    }
    Ok(())
}

/// Tick values for a log axis over [lo, hi]: 1-2-5 steps per decade, or every integer
/// multiple when that gives fewer than three ticks.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let decades = lo.log10().floor() as i32..=hi.log10().ceil() as i32;
    let within = |multiples: &[f64]| -> Vec<f64> {
        decades
            .clone()
            .flat_map(|e| multiples.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let ticks = within(&[1.0, 2.0, 5.0]);
    if ticks.len() >= 3 {
        ticks
    } else {
        within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// Axis tick text: at most 4 significant digits, no float noise (0.30000000000000004).
pub(crate) fn tick(v: f64) -> String {
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

/// A sweep plot: one metrics column against dictionary size, a line per sparsity (and seed).
pub struct SizePlot {
    pub stem: &'static str,
    pub column: &'static str,
    pub title: &'static str,
    pub y_label: &'static str,
    pub log_y: bool,
}

/// Drawn when their column is present, in this order.
pub const SIZE_PLOTS: &[SizePlot] = &[
    SizePlot {
        stem: "reconstruction_vs_size",
        column: "mse",
        title: "Reconstruction loss vs dictionary size",
        y_label: "MSE  (mean over samples of ||x - x_hat||^2)",
        log_y: true,
    },
    SizePlot {
        stem: "l0_vs_size",
        column: "l0",
        title: "L0 vs dictionary size",
        y_label: "L0 (active latents per sample)",
        log_y: false,
    },
    SizePlot {
        stem: "feature_count_vs_size",
        column: "features_above",
        title: "Features shared with the next larger dictionary (matched cosine > threshold)",
        y_label: "feature count",
        log_y: false,
    },
    SizePlot {
        stem: "delta_ce_vs_size",
        column: "delta_ce",
        title: "Perplexity impact: CE increase with the SAE spliced in",
        y_label: "delta CE (nats) = CE_sae - CE_clean",
        log_y: false,
    },
    SizePlot {
        stem: "ce_recovered_vs_size",
        column: "ce_recovered",
        title: "CE recovered vs dictionary size",
        y_label: "(CE_zero - CE_sae) / (CE_zero - CE_clean)",
        log_y: false,
    },
];

fn multiple_seeds(table: &Table) -> bool {
    let seeds: BTreeSet<u64> = table.sae_rows().map(|(id, _)| id.seed).collect();
    seeds.len() > 1
}

fn size_chart(metrics: &Table, plot: &SizePlot) -> Option<LineChart> {
    if !metrics.has(plot.column) {
        return None;
    }
    let with_seed = multiple_seeds(metrics);
    let mut groups: BTreeMap<(bool, u64, usize, u64), Series> = BTreeMap::new();
    for (id, r) in metrics.sae_rows() {
        if let Some(v) = r.f64(plot.column) {
            let group = (id.k.is_some(), id.l1.to_bits(), id.k.unwrap_or(0), id.seed);
            let name = match (id.k, with_seed) {
                (Some(k), false) => format!("k={k}"),
                (None, false) => format!("l1={}", id.l1),
                (Some(k), true) => format!("k={k} seed={}", id.seed),
                (None, true) => format!("l1={} seed={}", id.l1, id.seed),
            };
            groups
                .entry(group)
                .or_insert_with(|| (name, Vec::new()))
                .1
                .push((id.d_sae as f64, v));
        }
    }
    Some(LineChart {
        file_stem: plot.stem,
        title: plot.title.into(),
        x_label: "dictionary size (latents)",
        y_label: plot.y_label,
        log_x: true,
        log_y: plot.log_y,
        series: groups.into_values().collect(),
    })
}

/// Lines per dictionary size of `y` against `x`, sorted by x.
fn per_size(metrics: &Table, x: &str, y: &str) -> Vec<Series> {
    let mut series: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    for (id, r) in metrics.sae_rows() {
        let x = if x == "l1" { Some(id.l1) } else { r.f64(x) };
        if let (Some(x), Some(y)) = (x, r.f64(y)) {
            series.entry(id.d_sae).or_default().push((x, y));
        }
    }
    series
        .into_iter()
        .map(|(d, mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (format!("d_sae={d}"), pts)
        })
        .collect()
}

/// The sparsity–fidelity frontier of a language-model sweep: one line per size.
fn frontier(metrics: &Table) -> Option<LineChart> {
    metrics.has("delta_ce").then(|| LineChart {
        file_stem: "l0_fve_frontier",
        title: "Sparsity vs fidelity across the sweep".into(),
        x_label: "L0 (active latents per token)",
        y_label: "fraction of variance explained",
        log_x: true,
        log_y: false,
        series: per_size(metrics, "l0", "fve"),
    })
}

/// Toy data: ground-truth recovery against the l1 coefficient, one line per size.
fn mmcs_vs_l1(metrics: &Table) -> Option<LineChart> {
    metrics.has("mmcs_truth").then(|| LineChart {
        file_stem: "mmcs_vs_l1",
        title: "Ground-truth recovery (MMCS) vs l1".into(),
        x_label: "l1 coefficient",
        y_label: "MMCS with true features",
        log_x: metrics.sae_rows().all(|(id, _)| id.l1 > 0.0),
        log_y: false,
        series: per_size(metrics, "l1", "mmcs_truth"),
    })
}

/// One loss curve per trained SAE (keyed by its training stage, so SAEs differing only in
/// k or seed get their own line).
fn training_curves(curves: &Table) -> LineChart {
    let with_seed = multiple_seeds(curves);
    let mut series: Vec<Series> = Vec::new();
    let mut index: HashMap<StageKey, usize> = HashMap::new();
    for (id, r) in curves.sae_rows() {
        if let (Some(step), Some(loss)) = (r.f64("step"), r.f64("loss")) {
            let i = *index.entry(id.train_key).or_insert_with(|| {
                series.push((id.label(with_seed), Vec::new()));
                series.len() - 1
            });
            series[i].1.push((step, loss));
        }
    }
    LineChart {
        file_stem: "training_curves",
        title: "Training loss".into(),
        x_label: "step",
        y_label: "loss (MSE, + l1 * L1 for ReLU-L1)",
        log_x: false,
        log_y: true,
        series,
    }
}

/// Every plot whose columns are present. Returns (title, svg path relative to `dir`'s parent).
pub fn write_all(metrics: &Table, curves: &Table, dir: &Path) -> Result<Vec<(String, String)>> {
    let mut charts: Vec<LineChart> = SIZE_PLOTS
        .iter()
        .filter_map(|p| size_chart(metrics, p))
        .collect();
    charts.extend(frontier(metrics));
    charts.extend(mmcs_vs_l1(metrics));
    charts.push(training_curves(curves));
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

#[cfg(test)]
mod tests {
    use super::log_ticks;

    #[test]
    fn log_ticks_label_ranges_inside_one_decade() {
        assert_eq!(log_ticks(340.0, 780.0), vec![400.0, 500.0, 600.0, 700.0]);
        assert_eq!(
            log_ticks(0.5, 120.0),
            vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert!(log_ticks(0.0, 1.0).is_empty());
    }
}
