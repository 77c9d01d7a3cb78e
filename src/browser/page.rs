//! One feature's page: statistics and histogram, the logit lens, direction ablation, top and
//! uniform examples shaded by activation, ablated text shaded by effect, and the matched
//! feature in the next smaller and next larger dictionary.

use super::tokens::{activation_shade, esc, signed_shade, token_html};
use super::{document, feature_file, slug, SaeView};
use crate::analysis::examples::{Example, ExampleKind};
use crate::analysis::stats::LatentStats;
use crate::analysis::TokenValue;
use std::fmt::Write;

pub fn render(sae: &SaeView, i: usize) -> String {
    let f = &sae.features[i];
    let feature = f.feature;
    let st = &sae.stats[feature];
    let mut h = String::new();
    nav(&mut h, sae, i);
    let _ = write!(
        h,
        "<h1>Feature {feature} <span class=\"muted\">· {}</span></h1>\
<p>active on <b>{:.3}%</b> of scanned tokens · max <b>{:.3}</b> · mean when active <b>{:.3}</b></p>",
        esc(&sae.label()),
        100.0 * st.frequency,
        st.max,
        st.mean_active
    );
    across(&mut h, sae, feature);
    h.push_str("<div class=\"grid\"><div><h2>Activation histogram</h2>");
    histogram(&mut h, st);
    if let Some(l) = sae.lens.iter().find(|l| l.feature == feature) {
        h.push_str("<h2>Logit lens</h2><p class=\"small muted\">decoder direction · W<sub>U</sub>; tokens with large W<sub>U</sub> norm excluded</p><table class=\"lens\"><tr><th>top</th><th></th><th>bottom</th><th></th></tr>");
        for r in 0..l.top.len().max(l.bottom.len()) {
            let cell = |list: &[TokenValue]| {
                list.get(r).map_or("<td></td><td></td>".to_string(), |t| {
                    format!(
                        "<td><span class=\"pill\">{}</span></td><td class=\"num\">{:+.3}</td>",
                        token_html(&t.token),
                        t.value
                    )
                })
            };
            let _ = write!(h, "<tr>{}{}</tr>", cell(&l.top), cell(&l.bottom));
        }
        h.push_str("</table>");
    }
    h.push_str("</div><div>");
    direction(&mut h, sae, feature);
    h.push_str("</div></div>");

    h.push_str("<h2>Top examples</h2>");
    for ex in f
        .examples
        .iter()
        .filter(|e| matches!(e.kind, ExampleKind::Top { .. }))
    {
        example_line(&mut h, ex, st.max);
    }
    h.push_str("<h2>Uniform examples</h2><p class=\"small muted\">one token drawn at random from each non-empty activation bin</p>");
    for ex in f.examples.iter() {
        if let ExampleKind::Bin { lo, hi, .. } = ex.kind {
            let _ = write!(h, "<div class=\"small muted\">bin [{lo:.2}, {hi:.2})</div>");
            example_line(&mut h, ex, st.max);
        }
    }
    ablated(&mut h, sae, i);
    document(&format!("feature {feature} · {}", sae.label()), &h)
}

fn nav(h: &mut String, sae: &SaeView, i: usize) {
    h.push_str("<nav><a href=\"../index.html\">← all features</a><a href=\"../../report.html\">run report</a>");
    if i > 0 {
        let _ = write!(
            h,
            "<a href=\"{}\">‹ previous</a>",
            feature_file(sae.features[i - 1].feature)
        );
    }
    if i + 1 < sae.features.len() {
        let _ = write!(
            h,
            "<a href=\"{}\">next ›</a>",
            feature_file(sae.features[i + 1].feature)
        );
    }
    h.push_str("</nav>");
}

fn across(h: &mut String, sae: &SaeView, feature: usize) {
    h.push_str(
        "<div class=\"across\"><b>Across dictionary sizes</b> (one-to-one max-cosine matching): ",
    );
    let mut parts = Vec::new();
    for (what, side) in [("next smaller", &sae.smaller), ("next larger", &sae.larger)] {
        let Some(a) = side else {
            parts.push(format!("no {what} dictionary in this sweep"));
            continue;
        };
        let Some(&(other, cos)) = a.partner.get(&feature) else {
            // One-to-one: a larger dictionary has features no smaller atom is matched to.
            parts.push(format!(
                "{what} ({}): no one-to-one match",
                esc(&a.id.label(false))
            ));
            continue;
        };
        let target = format!("{what} {}: feature {other}", esc(&a.id.label(false)));
        parts.push(if a.analysed.contains(&other) {
            format!(
                "<a href=\"../{}/{}\">{target}</a> (cos {cos:.3})",
                slug(&a.id),
                feature_file(other)
            )
        } else {
            format!("{target} (cos {cos:.3}; not analysed)")
        });
    }
    h.push_str(&parts.join(" · "));
    h.push_str("</div>");
}

/// Bars of log(1 + count) per activation bin, as inline SVG.
fn histogram(h: &mut String, st: &LatentStats) {
    let (w, ht, pad) = (520.0, 130.0, 28.0);
    let n = st.hist.len().max(1) as f64;
    let top = st
        .hist
        .iter()
        .map(|&c| ((1 + c) as f64).ln())
        .fold(0.0, f64::max)
        .max(1e-9);
    let _ = write!(
        h,
        "<svg width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"histogram\">",
        ht + pad
    );
    for (b, &c) in st.hist.iter().enumerate() {
        let bh = ((1 + c) as f64).ln() / top * ht;
        let _ = write!(
            h,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#f08c00\"><title>[{:.3}, {:.3}): {c}</title></rect>",
            b as f64 / n * w,
            ht - bh,
            w / n - 1.0,
            b as f64 / n * st.hist_range as f64,
            (b + 1) as f64 / n * st.hist_range as f64,
        );
    }
    let _ = write!(
        h,
        "<text x=\"0\" y=\"{y}\">0</text><text x=\"{w}\" y=\"{y}\" text-anchor=\"end\">{}</text>\
<text x=\"{mid}\" y=\"{y}\" text-anchor=\"middle\">activation (bar height: log(1 + count))</text></svg>",
        crate::report::plots::tick(st.hist_range as f64),
        y = ht + 16.0,
        mid = w / 2.0
    );
}

/// The context up to the example's token (later tokens faded), shaded by activation.
fn example_line(h: &mut String, ex: &Example, max: f32) {
    let _ = write!(
        h,
        "<div class=\"ctx\"><span class=\"val\">{:.3}</span>",
        ex.activation
    );
    for (p, s) in ex.strings.iter().enumerate() {
        let class = if p == ex.position {
            " sel"
        } else if p > ex.position {
            " after"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<span class=\"tok{class}\" style=\"{}\" title=\"{:.3}\">{}</span>",
            activation_shade(ex.acts[p], max),
            ex.acts[p],
            token_html(s)
        );
    }
    h.push_str("</div>");
}

fn direction(h: &mut String, sae: &SaeView, feature: usize) {
    let Some(d) = sae.direction.iter().find(|d| d.feature == feature) else {
        return;
    };
    let Some(ex) = sae
        .features
        .iter()
        .find(|f| f.feature == feature)
        .and_then(|f| f.examples.first())
    else {
        return;
    };
    h.push_str("<h2>Ablating the direction</h2><p class=\"small muted\">activation × decoder direction removed at the hook at every position; \
each next token shaded by its change in log-probability (<span style=\"background:rgba(220,40,40,.6)\">falls</span> / \
<span style=\"background:rgba(40,90,220,.6)\">rises</span>; hover for values)</p><div class=\"ctx\">");
    let scale = d.delta_logprob.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (p, s) in ex.strings.iter().enumerate() {
        // Token p is predicted at position p − 1.
        let delta = p
            .checked_sub(1)
            .and_then(|q| d.delta_logprob.get(q))
            .copied();
        let sel = if p == d.position { " sel" } else { "" };
        let _ = write!(
            h,
            "<span class=\"tok{sel}\" style=\"{}\" title=\"{}\">{}</span>",
            delta.map(|v| signed_shade(v, scale)).unwrap_or_default(),
            delta.map_or("first token".to_string(), |v| format!("Δ log p = {v:+.3}")),
            token_html(s)
        );
    }
    let pills = |list: &[TokenValue]| -> String {
        list.iter()
            .map(|t| {
                format!(
                    "<span class=\"pill\" title=\"{:+.3}\">{} {:+.2}</span>",
                    t.value,
                    token_html(&t.token),
                    t.value
                )
            })
            .collect()
    };
    let _ = write!(
        h,
        "</div><p class=\"small\">After the selected token, most raised: {}</p><p class=\"small\">most lowered: {}</p>",
        pills(&d.rises),
        pills(&d.falls)
    );
}

fn ablated(h: &mut String, sae: &SaeView, i: usize) {
    let f = &sae.features[i];
    let Some(a) = sae.ablated.iter().find(|a| a.feature == f.feature) else {
        return;
    };
    h.push_str("<h2>Ablated text</h2><p class=\"small muted\">each earlier token deleted in turn: \
<span style=\"background:rgba(220,40,40,.6)\">red</span> where removing it lowers the activation at the selected token, \
<span style=\"background:rgba(40,90,220,.6)\">blue</span> where it raises it (hover for values)</p>");
    let scale = a
        .items
        .iter()
        .flat_map(|it| it.deltas.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    for item in &a.items {
        let Some(ex) = f.examples.get(item.example) else {
            continue;
        };
        let what = match ex.kind {
            ExampleKind::Top { .. } => "max".to_string(),
            ExampleKind::Bin { lo, hi, .. } => format!("bin [{lo:.2}, {hi:.2})"),
        };
        let _ = write!(
            h,
            "<div class=\"small muted\">{what} · activation {:.3}</div><div class=\"ctx\"><span class=\"val\">{:.3}</span>",
            item.original, item.original
        );
        for p in 0..=item.position {
            let delta = item.deltas.get(p).copied();
            let sel = if p == item.position { " sel" } else { "" };
            let _ = write!(
                h,
                "<span class=\"tok{sel}\" style=\"{}\" title=\"{}\">{}</span>",
                delta.map(|v| signed_shade(v, scale)).unwrap_or_default(),
                delta.map_or("selected token".to_string(), |v| format!(
                    "removing this token: Δ = {v:+.3}"
                )),
                token_html(&ex.strings[p])
            );
        }
        h.push_str("</div>");
    }
}
