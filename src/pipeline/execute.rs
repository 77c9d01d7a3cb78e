//! Runs a graph against the cache: one generic loop, no per-stage code. A node whose key is
//! cached is reused without loading anything; a missing one is computed by its stage, with
//! inputs loaded lazily (see `loader`) and dropped after their last consumer.

use super::context::{RunCtx, StageCtx};
use super::graph::{Graph, Node};
use super::loader::{Loaded, Loader};
use super::stage::NodeId;
use crate::cache::store::StageRequest;
use crate::cache::{Entry, Outcome, StageKey};
use crate::record::StageRecord;
use crate::{Error, Result};
use std::time::Instant;

/// The cache entry of every node (indexed like the graph), with how each was obtained.
pub struct Executed {
    pub entries: Vec<Entry>,
    /// In execution order.
    pub records: Vec<StageRecord>,
    /// The most stage outputs held in memory at once.
    pub peak_loaded: usize,
}

pub fn execute(graph: &Graph, ctx: &RunCtx) -> Result<Executed> {
    verify_inputs_to_compute(graph, ctx)?;
    let nodes = graph.nodes();
    let order = depth_first_order(graph);
    let mut consumers_left = vec![0usize; nodes.len()];
    for node in nodes {
        for &i in &node.inputs {
            consumers_left[i] += 1;
        }
    }
    let mut model_users_left = nodes.iter().filter(|n| n.model().is_some()).count();
    let mut entries: Vec<Option<Entry>> = vec![None; nodes.len()];
    let mut records = Vec::with_capacity(nodes.len());
    let loaded = Loaded::default();
    for (position, &id) in order.iter().enumerate() {
        let node = &nodes[id];
        let started = Instant::now();
        ctx.progress
            .stage_started(&format!("{} {}", node.stage, node.label));
        let loader = Loader {
            graph,
            ctx,
            entries: &entries,
            loaded: &loaded,
        };
        let (entry, outcome) = get_or_compute(graph, node, ctx, loader)?;
        entries[id] = Some(entry);

        for &i in &node.inputs {
            consumers_left[i] -= 1;
            if consumers_left[i] == 0 {
                loaded.release(i);
            }
        }
        if node.model().is_some() {
            model_users_left -= 1;
        }
        // The model (282 MB for Pythia-70M in f32) is kept only across consecutive nodes
        // that run it: a training between two evaluations runs without it, and the next
        // evaluation loads it again (about a second for Pythia-70M).
        let next_uses_model = order
            .get(position + 1)
            .is_some_and(|&next| nodes[next].model().is_some());
        if model_users_left == 0 || !next_uses_model {
            loaded.release_model();
        }

        let wall = started.elapsed().as_secs_f64();
        let title = format!(
            "[{:>3}/{}] {:<18} {}",
            position + 1,
            nodes.len(),
            node.stage,
            node.label
        );
        ctx.progress.println(&match outcome {
            Outcome::Reused => format!("{title}  reused"),
            Outcome::Computed => format!("{title}  computed in {wall:.1}s"),
        });
        ctx.progress.stage_finished();
        records.push(StageRecord {
            stage: node.stage.to_string(),
            label: node.label.clone(),
            key: node.key,
            outcome,
            wall_seconds: wall,
        });
    }
    let entries = entries
        .into_iter()
        .collect::<Option<Vec<Entry>>>()
        .ok_or_else(|| Error::run("internal: a node was never scheduled"))?;
    Ok(Executed {
        entries,
        records,
        peak_loaded: loaded.peak(),
    })
}

fn get_or_compute(
    graph: &Graph,
    node: &Node,
    ctx: &RunCtx,
    loader: Loader,
) -> Result<(Entry, Outcome)> {
    let input_keys: Vec<StageKey> = node.inputs.iter().map(|&i| graph.nodes()[i].key).collect();
    let req = StageRequest {
        stage: node.stage,
        version: node.version,
        key: node.key,
        params: &node.params,
        inputs: &input_keys,
    };
    let stage_ctx = StageCtx {
        run: ctx,
        label: &node.label,
        key: node.key,
        loader,
    };
    ctx.cache.get_or_compute(
        &req,
        |out| node.run(&stage_ctx, out),
        || {
            ctx.progress.println(&format!(
                "        waiting for another saerun process computing {} {} ({})",
                node.stage,
                node.label,
                node.key.short()
            ))
        },
    )
}

/// Every cached entry that a node to be computed will load is checked in full (every byte
/// hashed) before anything runs; a corrupt one is moved aside, which makes it a node to
/// compute too, whose own inputs are then checked. Entries only reused get the cheap check
/// of `Cache::get_or_compute`.
fn verify_inputs_to_compute(graph: &Graph, ctx: &RunCtx) -> Result<()> {
    let nodes = graph.nodes();
    let mut entries = Vec::with_capacity(nodes.len());
    for n in nodes {
        entries.push(ctx.cache.lookup(n.stage, &n.key)?);
    }
    let mut checked = vec![false; nodes.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..nodes.len() {
            if entries[i].is_some() {
                continue;
            }
            for &input in &nodes[i].inputs {
                let Some(entry) = entries[input].as_ref().filter(|_| !checked[input]) else {
                    continue;
                };
                checked[input] = true;
                if ctx.cache.repair_if_corrupt(entry)? {
                    entries[input] = None;
                    changed = true;
                }
            }
        }
    }
    Ok(())
}

/// A topological order that runs each node as soon after its inputs as possible: among the
/// ready nodes, the one whose most recently finished input finished last (ties: planning
/// order). So an SAE's evaluation and size match follow its training, and a trained SAE is
/// released before the next one is trained instead of after the whole sweep.
pub fn depth_first_order(graph: &Graph) -> Vec<NodeId> {
    let nodes = graph.nodes();
    let mut finished_at: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    while order.len() < nodes.len() {
        let next = (0..nodes.len())
            .filter(|&i| finished_at[i].is_none())
            .filter_map(|i| {
                let mut latest = Some(0usize);
                for &input in &nodes[i].inputs {
                    // `+ 1` so that "no inputs" (0) sorts before "input finished first".
                    latest = latest.zip(finished_at[input]).map(|(l, f)| l.max(f + 1));
                }
                latest.map(|l| (l, i))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        // Inputs always precede their consumers in planning order, so something is ready.
        let Some((_, i)) = next else { break };
        finished_at[i] = Some(order.len());
        order.push(i);
    }
    order
}
