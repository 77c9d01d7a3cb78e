//! Runs a graph (or a shard's share of it) against the cache: one generic loop, no
//! per-stage code. A node whose key is cached is reused without loading anything; a missing
//! one is computed by its stage, with inputs loaded lazily (see `loader`) and dropped after
//! their last consumer. The loop takes ready nodes best first (see `schedule`); one whose
//! key another process holds is passed over and retried, with a growing pause when nothing
//! else is ready, so the loop never waits on a lock while it has other work.

use super::context::{RunCtx, StageCtx};
use super::graph::{Graph, Node};
use super::loader::{Loaded, Loader};
use super::schedule::{Backoff, Schedule};
use super::shard::Share;
use crate::cache::store::StageRequest;
use crate::cache::{Entry, Outcome, StageKey};
use crate::record::StageRecord;
use crate::{Error, Result};
use std::cell::Cell;
use std::time::Instant;

pub use super::schedule::depth_first_order;

/// The cache entry of every node (indexed like the graph), with how each was obtained.
pub struct Executed {
    pub entries: Vec<Entry>,
    /// In execution order.
    pub records: Vec<StageRecord>,
    /// The most stage outputs held in memory at once.
    pub peak_loaded: usize,
}

/// Run every node of the graph.
pub fn execute(graph: &Graph, ctx: &RunCtx) -> Result<Executed> {
    let (entries, records, peak_loaded) = execute_share(graph, ctx, &Share::all(graph))?;
    let entries = entries
        .into_iter()
        .collect::<Option<Vec<Entry>>>()
        .ok_or_else(|| Error::run("internal: a node was never scheduled"))?;
    Ok(Executed {
        entries,
        records,
        peak_loaded,
    })
}

/// The entries of the wanted nodes (others `None`), the records in execution order, and
/// the most stage outputs held at once.
type ShareExecuted = (Vec<Option<Entry>>, Vec<StageRecord>, usize);

/// Run the wanted nodes of `share`.
pub fn execute_share(graph: &Graph, ctx: &RunCtx, share: &Share) -> Result<ShareExecuted> {
    verify_inputs_to_compute(graph, ctx, share)?;
    let nodes = graph.nodes();
    let total = share.len();
    let mut consumers_left = vec![0usize; nodes.len()];
    for node in nodes.iter().enumerate().filter(|(i, _)| share.wanted[*i]) {
        for &i in &node.1.inputs {
            consumers_left[i] += 1;
        }
    }
    let mut model_users_left = (0..nodes.len())
        .filter(|&i| share.wanted[i] && nodes[i].model().is_some())
        .count();
    let mut entries: Vec<Option<Entry>> = vec![None; nodes.len()];
    let mut records = Vec::with_capacity(total);
    let loaded = Loaded::default();
    let mut schedule = Schedule::new(graph, share);
    // Nodes found held by another process, told once each.
    let mut told_busy = vec![false; nodes.len()];
    let mut backoff = Backoff::new();
    while !schedule.is_done() {
        let ready = schedule.ready();
        if ready.is_empty() {
            return Err(Error::run(
                "internal: no node is ready but some are unfinished",
            ));
        }
        let mut got = None;
        for id in ready {
            let started = Instant::now();
            let loader = Loader {
                graph,
                ctx,
                entries: &entries,
                loaded: &loaded,
            };
            match try_get_or_compute(graph, &nodes[id], ctx, loader)? {
                Some((entry, outcome)) => {
                    got = Some((id, entry, outcome, started));
                    break;
                }
                None if !told_busy[id] => {
                    told_busy[id] = true;
                    let node = &nodes[id];
                    ctx.progress.println(&format!(
                        "        {} {} ({}) is being computed by another saerun process; \
                         doing other work meanwhile",
                        node.stage,
                        node.label,
                        node.key.short()
                    ));
                }
                None => {}
            }
        }
        let Some((id, entry, outcome, started)) = got else {
            // Every ready node is held elsewhere: wait a little, then look again.
            backoff.pause();
            continue;
        };
        backoff.reset();
        let node = &nodes[id];
        entries[id] = Some(entry);
        schedule.finish(id);

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
        // evaluation loads it again (about a second for Pythia-70M). "Next" is the node the
        // schedule will try first; if another process holds it, the model may be reloaded.
        let next_uses_model = schedule
            .ready()
            .first()
            .is_some_and(|&next| nodes[next].model().is_some());
        if model_users_left == 0 || !next_uses_model {
            loaded.release_model();
        }

        let wall = started.elapsed().as_secs_f64();
        let title = format!(
            "[{:>3}/{}] {:<18} {}",
            schedule.finished(),
            total,
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
    Ok((entries, records, loaded.peak()))
}

/// The node's entry, computed if missing, or `None` if another process holds its key.
/// The progress display hears of the node only once it is ours: when its computation
/// starts, or when it is found cached.
fn try_get_or_compute(
    graph: &Graph,
    node: &Node,
    ctx: &RunCtx,
    loader: Loader,
) -> Result<Option<(Entry, Outcome)>> {
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
    let announced = Cell::new(false);
    let announce = || {
        if !announced.replace(true) {
            ctx.progress
                .stage_started(&format!("{} {}", node.stage, node.label));
        }
    };
    let got = ctx.cache.try_get_or_compute(&req, |out| {
        announce();
        node.run(&stage_ctx, out)
    })?;
    if got.is_some() {
        announce();
    }
    Ok(got)
}

/// Every cached entry that a node to be computed will load is checked in full (every byte
/// hashed) before anything runs; a corrupt one is moved aside, which makes it a node to
/// compute too, whose own inputs are then checked. Entries only reused get the cheap check
/// of `Cache::get_or_compute`.
fn verify_inputs_to_compute(graph: &Graph, ctx: &RunCtx, share: &Share) -> Result<()> {
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
            if entries[i].is_some() || !share.wanted[i] {
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
