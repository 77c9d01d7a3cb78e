//! The run's outputs people look at: Parquet tables (`tables`), plots (`plots`) and a
//! browsable HTML page (`html`), all assembled from the cached stage outputs.
pub mod html;
pub mod plots;
pub mod rows;
pub mod tables;

use crate::cache::Entry;
use crate::pipeline::Plan;
use crate::record::RunRecord;
use crate::spec::ResolvedSpec;
use crate::Result;
use std::path::Path;

pub use rows::{collect, CurveRow, SaeRow};

pub const METRICS_TABLE: &str = "metrics.parquet";
pub const CURVES_TABLE: &str = "curves.parquet";

/// Write tables, plots and `report.html` into `dir`.
pub fn write(
    resolved: &ResolvedSpec,
    plan: &Plan,
    entries: &[Entry],
    record: &RunRecord,
    dir: &Path,
) -> Result<()> {
    let (saes, curves) = collect(plan, entries)?;
    tables::write_metrics(&saes, &dir.join(METRICS_TABLE))?;
    tables::write_curves(&curves, &dir.join(CURVES_TABLE))?;
    let plots = plots::write_all(&saes, &curves, &dir.join("plots"))?;
    html::write(resolved, record, &saes, &plots, &dir.join("report.html"))
}
