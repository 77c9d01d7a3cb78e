//! `report.html`: a self-contained page per run (plots, the metrics table, the stage list),
//! readable straight from the file system.

use super::rows::SaeRow;
use crate::cache::Outcome;
use crate::record::RunRecord;
use crate::spec::ResolvedSpec;
use crate::{Error, Result};
use std::fmt::Write;
use std::path::Path;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".to_string(), |v| v.to_string())
}

pub fn write(
    resolved: &ResolvedSpec,
    record: &RunRecord,
    rows: &[SaeRow],
    plots: &[(String, String)],
    path: &Path,
) -> Result<()> {
    let exp = &resolved.spec.experiment;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} · {id}</title>\
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}\
th{{background:#f3f3f3}}img{{max-width:100%;border:1px solid #eee;margin:.5em 0}}code{{background:#f6f6f6}}</style>\
</head><body><h1>{name}</h1><p>{desc}</p>\
<p>run <code>{id}</code> · spec <code>{spec}</code> · saerun {ver} (<code>{git}</code>) · \
{computed} stages computed, {reused} reused · <a href=\"spec.toml\">resolved spec</a> · \
<a href=\"run.json\">run record</a> · tables: <a href=\"metrics.parquet\">metrics.parquet</a>, \
<a href=\"curves.parquet\">curves.parquet</a></p>",
        name = esc(&exp.name),
        desc = esc(&exp.description),
        id = esc(&record.run_id),
        spec = esc(&record.spec_file),
        ver = esc(&record.saerun_version),
        git = esc(&record.git_commit),
        computed = record.computed(),
        reused = record.stages.iter().filter(|s| s.outcome == Outcome::Reused).count(),
    );
    h.push_str(
        "<h2>Metrics</h2><table><tr><th>d_sae</th><th>ratio</th><th>l1</th><th>seed</th>\
<th>MSE</th><th>FVE</th><th>L0</th><th>dead</th><th>MMCS truth</th><th>recovered</th>\
<th>vs size</th><th>matched cos</th><th>features &gt; thr</th></tr>",
    );
    for r in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{:.5}</td><td>{:.4}</td><td>{:.2}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.d_sae,
            r.ratio,
            r.l1,
            r.seed,
            r.mse,
            r.fve,
            r.l0,
            r.dead,
            opt(r.mmcs_truth.map(|v| format!("{v:.4}"))),
            opt(r.truth_recovered),
            opt(r.next_d_sae),
            opt(r.mean_matched_cos.map(|v| format!("{v:.4}"))),
            opt(r.features_above),
        );
    }
    h.push_str("</table><h2>Plots</h2>");
    for (title, src) in plots {
        let _ = write!(
            h,
            "<h3>{}</h3><img src=\"{}\" alt=\"{0}\">",
            esc(title),
            esc(src)
        );
    }
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
    h.push_str("</table></body></html>\n");
    std::fs::write(path, h).map_err(|e| Error::io(path, "cannot write", e))
}
