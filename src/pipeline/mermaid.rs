//! The stage graph as a Mermaid flowchart (renders on GitHub, in VS Code and mermaid.live),
//! each node with its stage, label, short key and cache state.

use super::graph::Graph;
use crate::cache::Cache;
use crate::Result;
use std::fmt::Write;

pub fn render(graph: &Graph, cache: &Cache) -> Result<String> {
    let mut out = String::from("flowchart LR\n");
    for (i, node) in graph.nodes().iter().enumerate() {
        let cached = cache.lookup(node.stage, &node.key)?.is_some();
        let _ = writeln!(
            out,
            "  n{i}[\"<b>{}</b><br/>{}<br/><code>{}</code> {}\"]:::{}",
            node.stage,
            escape(&node.label),
            node.key.short(),
            if cached { "cached" } else { "to run" },
            if cached { "cached" } else { "missing" }
        );
    }
    for (i, node) in graph.nodes().iter().enumerate() {
        for input in &node.inputs {
            let _ = writeln!(out, "  n{input} --> n{i}");
        }
    }
    out.push_str("  classDef cached fill:#dff0d8,stroke:#3c763d\n");
    out.push_str("  classDef missing fill:#fcf8e3,stroke:#8a6d3b\n");
    Ok(out)
}

/// Mermaid labels are quoted strings; quotes and angle brackets become entities.
fn escape(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}
