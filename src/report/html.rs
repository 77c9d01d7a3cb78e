//! `report.html`: a self-contained page per run (plots, the metrics table, the stage list),
//! readable straight from the file system. The metrics table shows whatever columns the
//! run's stages produced.

use super::plots::tick;
use crate::browser::tokens::esc;
use crate::cache::Outcome;
use crate::record::RunRecord;
use crate::results::{Table, Value};
use crate::spec::ResolvedSpec;
use crate::{Error, Result};
use std::fmt::Write;
use std::path::Path;

pub struct Page<'a> {
    pub resolved: &'a ResolvedSpec,
    pub record: &'a RunRecord,
    pub metrics: &'a Table,
    /// Parquet files written beside the page.
    pub tables: &'a [String],
    /// (title, svg path relative to the page).
    pub plots: &'a [(String, String)],
    /// Index pages of browsable outputs (the feature browser), relative to the page.
    pub browsable: &'a [String],
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None => "–".to_string(),
        Some(Value::U64(x)) => x.to_string(),
        Some(Value::F64(x)) => tick(*x),
        Some(Value::Str(s)) => esc(s),
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}\
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f6f6f6}\
.scroll{overflow-x:auto}";

pub fn write(page: &Page, path: &Path) -> Result<()> {
    let mut h = String::new();
    header(&mut h, page);
    for index in page.browsable {
        let _ = write!(
            h,
            "<p style=\"font-size:1.1em\"><b>Feature browser:</b> <a href=\"{0}\">{0}</a></p>",
            esc(index)
        );
    }
    metrics_table(&mut h, page.metrics);
    h.push_str("<h2>Plots</h2>");
    for (title, src) in page.plots {
        let _ = write!(
            h,
            "<h3>{}</h3><img src=\"{}\" alt=\"{0}\">",
            esc(title),
            esc(src)
        );
    }
    stages_table(&mut h, page.record);
    h.push_str("</body></html>\n");
    std::fs::write(path, h).map_err(|e| Error::io(path, "cannot write", e))
}

fn header(h: &mut String, page: &Page) {
    let (exp, record) = (&page.resolved.spec.experiment, page.record);
    let tables: Vec<String> = page
        .tables
        .iter()
        .map(|t| format!("<a href=\"{0}\">{0}</a>", esc(t)))
        .collect();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} · {id}</title>\
<style>{STYLE}</style></head><body><h1>{name}</h1><p>{desc}</p>\
<p>run <code>{id}</code> · spec <code>{spec}</code> · saerun {ver} (<code>{git}</code>) · \
{computed} stages computed, {reused} reused · <a href=\"spec.toml\">resolved spec</a> · \
<a href=\"run.json\">run record</a> · tables: {tables}</p>",
        name = esc(&exp.name),
        desc = esc(&exp.description),
        id = esc(&record.run_id),
        spec = esc(&record.spec_file),
        ver = esc(&record.saerun_version),
        git = esc(&record.git_commit),
        computed = record.computed(),
        reused = record
            .stages
            .iter()
            .filter(|s| s.outcome == Outcome::Reused)
            .count(),
        tables = tables.join(", "),
    );
}

/// One row per SAE: its identity, then every column the stages produced.
fn metrics_table(h: &mut String, metrics: &Table) {
    let rows: Vec<_> = metrics.sae_rows().collect();
    let show_l1 = rows.iter().any(|(id, _)| id.k.is_none());
    let show_k = rows.iter().any(|(id, _)| id.k.is_some());
    h.push_str("<h2>Metrics</h2><div class=\"scroll\"><table><tr><th>d_sae</th>");
    if show_l1 {
        h.push_str("<th>l1</th>");
    }
    if show_k {
        h.push_str("<th>k</th>");
    }
    h.push_str("<th>seed</th>");
    for c in metrics.columns() {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("<th>train key</th></tr>");
    for (id, r) in rows {
        let _ = write!(h, "<tr><td>{}</td>", id.d_sae);
        if show_l1 {
            let _ = write!(h, "<td>{}</td>", id.l1);
        }
        if show_k {
            let _ = write!(
                h,
                "<td>{}</td>",
                cell(id.k.map(|k| Value::U64(k as u64)).as_ref())
            );
        }
        let _ = write!(h, "<td>{}</td>", id.seed);
        for c in metrics.columns() {
            let _ = write!(h, "<td>{}</td>", cell(r.get(c)));
        }
        let _ = write!(h, "<td><code>{}</code></td></tr>", id.train_key.short());
    }
    h.push_str("</table></div>");
}

fn stages_table(h: &mut String, record: &RunRecord) {
    h.push_str("<h2>Stages</h2><table><tr><th>stage</th><th>parameters</th><th>key</th><th>outcome</th><th>wall s</th></tr>");
    for s in &record.stages {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{:?}</td><td>{:.1}</td></tr>",
            esc(&s.stage),
            esc(&s.label),
            s.key.short(),
            s.outcome,
            s.wall_seconds
        );
    }
    h.push_str("</table>");
}
