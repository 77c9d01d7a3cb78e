//! `features/index.html`: one sortable, filterable row per analysed feature.

use super::tokens::{activation_shade, esc, token_html};
use super::{document, feature_file, slug, Browser};
use crate::analysis::examples::Example;
use std::collections::HashMap;
use std::fmt::Write;

/// The last few tokens up to an example's token, the token itself shaded.
pub fn snippet(ex: &Example, max: f32, before: usize) -> String {
    let start = ex.position.saturating_sub(before);
    let mut s = String::new();
    if start > 0 {
        s.push_str("<span class=\"muted\">…</span>");
    }
    for p in start..=ex.position {
        let sel = if p == ex.position { " sel" } else { "" };
        let _ = write!(
            s,
            "<span class=\"tok{sel}\" style=\"{}\">{}</span>",
            activation_shade(ex.acts[p], max),
            token_html(&ex.strings[p])
        );
    }
    s
}

pub fn render(b: &Browser) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<nav><a href=\"../report.html\">← run report</a></nav><h1>{}</h1>\
<p class=\"muted\">Feature browser: {} analysed dictionaries. Click a column to sort; type to filter \
(matches tokens, examples and dictionary names).</p><ul>",
        esc(&b.title),
        b.saes.len()
    );
    for sae in &b.saes {
        let _ = write!(
            h,
            "<li>{}: {} features analysed of {}</li>",
            esc(&sae.label()),
            sae.features.len(),
            sae.id.d_sae
        );
    }
    h.push_str(
        "</ul><input type=\"search\" id=\"filter\" placeholder=\"filter features…\" aria-label=\"filter\">\
<table id=\"features\" class=\"sortable\"><thead><tr><th>dictionary</th><th class=\"num\">feature</th>\
<th class=\"num\">frequency</th><th class=\"num\">max</th><th>logit lens (top)</th><th>top example</th></tr></thead><tbody>",
    );
    for sae in &b.saes {
        let lens: HashMap<usize, _> = sae.lens.iter().map(|l| (l.feature, l)).collect();
        let dir = slug(&sae.id);
        for f in sae.features {
            let st = &sae.stats[f.feature];
            let top: String = lens
                .get(&f.feature)
                .map(|l| {
                    l.top
                        .iter()
                        .take(4)
                        .map(|t| format!("<span class=\"pill\">{}</span>", token_html(&t.token)))
                        .collect()
                })
                .unwrap_or_default();
            let example = f
                .examples
                .first()
                .map(|ex| snippet(ex, st.max, 8))
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td data-v=\"{d}\">{label}</td><td class=\"num\" data-v=\"{id}\"><a href=\"{dir}/{file}\">#{id}</a></td>\
<td class=\"num\" data-v=\"{freq}\">{freq_pct:.3}%</td><td class=\"num\" data-v=\"{max}\">{max:.3}</td><td>{top}</td>\
<td class=\"ctx\">{example}</td></tr>",
                d = sae.id.d_sae,
                label = esc(&sae.label()),
                id = f.feature,
                file = feature_file(f.feature),
                freq = st.frequency,
                freq_pct = 100.0 * st.frequency,
                max = st.max,
            );
        }
    }
    h.push_str("</tbody></table>");
    document(&format!("{} · features", b.title), &h)
}
