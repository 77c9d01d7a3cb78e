//! The run's outputs people look at: Parquet tables (`tables`), plots (`plots`) and a
//! browsable HTML page (`html`), all assembled from the result tables the stages fill from
//! their cache entries (`collect`).
pub mod html;
pub mod plots;
pub mod tables;

use crate::cache::Entry;
use crate::pipeline::Graph;
use crate::record::RunRecord;
use crate::results::{ResultTables, CURVES, METRICS};
use crate::spec::ResolvedSpec;
use crate::{Error, Result};
use std::path::Path;

pub const METRICS_TABLE: &str = "metrics.parquet";
pub const CURVES_TABLE: &str = "curves.parquet";

/// Every stage's contribution to the result tables, in planning order.
pub fn collect(graph: &Graph, entries: &[Entry]) -> Result<ResultTables> {
    let mut tables = ResultTables::default();
    // Written even when empty, so every run has them.
    tables.table(METRICS);
    tables.table(CURVES);
    for (id, (node, entry)) in graph.nodes().iter().zip(entries).enumerate() {
        node.results(graph, id, entry, &mut tables)?;
    }
    Ok(tables)
}

/// Write `<table>.parquet` for every result table, plots and `report.html` into `dir`.
pub fn write(
    resolved: &ResolvedSpec,
    graph: &Graph,
    entries: &[Entry],
    record: &RunRecord,
    dir: &Path,
) -> Result<()> {
    let results = collect(graph, entries)?;
    let mut browsable = Vec::new();
    for (node, entry) in graph.nodes().iter().zip(entries) {
        if let Some(sub) = node.run_dir() {
            copy_entry(entry, &dir.join(sub))?;
            if entry.manifest.files.contains_key("index.html") {
                browsable.push(format!("{sub}/index.html"));
            }
        }
    }
    let mut table_files = Vec::new();
    for (name, table) in results.iter() {
        let file = format!("{name}.parquet");
        tables::write(table, &dir.join(&file))?;
        table_files.push(file);
    }
    let empty = Default::default();
    let metrics = results.get(METRICS).unwrap_or(&empty);
    let curves = results.get(CURVES).unwrap_or(&empty);
    let plots = plots::write_all(metrics, curves, &dir.join("plots"))?;
    let page = html::Page {
        resolved,
        record,
        metrics,
        tables: &table_files,
        plots: &plots,
        browsable: &browsable,
    };
    html::write(&page, &dir.join("report.html"))
}

/// Copy a cache entry's files (not its manifest) into `dest`.
fn copy_entry(entry: &Entry, dest: &Path) -> Result<()> {
    for name in entry.manifest.files.keys() {
        let to = dest.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "cannot create", e))?;
        }
        std::fs::copy(entry.dir.join(name), &to).map_err(|e| Error::io(&to, "cannot write", e))?;
    }
    Ok(())
}
