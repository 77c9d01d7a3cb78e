//! Which node runs next. The executor works from the set of ready nodes (every input
//! finished) and takes the best one it can have: a node whose key another process holds
//! (computing it) is passed over for the next ready one and tried again later, so
//! concurrent runs and shards of one sweep keep busy instead of queueing in plan order.
//!
//! Best = own work first (`Share::first`), then the node whose most recently finished input
//! finished last (ties: planning order). So an SAE's evaluation and size match follow its
//! training, and a trained SAE is released before the next one is trained instead of after
//! the whole sweep. Alone on a cache, a run takes exactly `depth_first_order`.

use super::graph::Graph;
use super::shard::Share;
use super::stage::NodeId;
use std::time::Duration;

pub struct Schedule<'a> {
    graph: &'a Graph,
    share: &'a Share,
    /// Position in finishing order, per node.
    finished_at: Vec<Option<usize>>,
    finished: usize,
}

impl<'a> Schedule<'a> {
    pub fn new(graph: &'a Graph, share: &'a Share) -> Schedule<'a> {
        Schedule {
            graph,
            share,
            finished_at: vec![None; graph.nodes().len()],
            finished: 0,
        }
    }

    /// Wanted nodes not finished yet whose inputs all are, best first.
    pub fn ready(&self) -> Vec<NodeId> {
        let nodes = self.graph.nodes();
        let mut ready: Vec<(bool, usize, NodeId)> = (0..nodes.len())
            .filter(|&i| self.share.wanted[i] && self.finished_at[i].is_none())
            .filter_map(|i| {
                let mut latest = Some(0usize);
                for &input in &nodes[i].inputs {
                    // `+ 1` so that "no inputs" (0) sorts before "input finished first".
                    latest = latest
                        .zip(self.finished_at[input])
                        .map(|(l, f)| l.max(f + 1));
                }
                latest.map(|l| (self.share.first[i], l, i))
            })
            .collect();
        ready.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        ready.into_iter().map(|(_, _, i)| i).collect()
    }

    pub fn finish(&mut self, id: NodeId) {
        self.finished_at[id] = Some(self.finished);
        self.finished += 1;
    }

    /// Nodes finished so far.
    pub fn finished(&self) -> usize {
        self.finished
    }

    pub fn is_done(&self) -> bool {
        self.finished == self.share.len()
    }
}

/// The order a run alone on its cache takes: always the best ready node.
pub fn depth_first_order(graph: &Graph) -> Vec<NodeId> {
    let share = Share::all(graph);
    let mut schedule = Schedule::new(graph, &share);
    let mut order = Vec::with_capacity(graph.nodes().len());
    // Inputs always precede their consumers in planning order, so something is ready.
    while let Some(&next) = schedule.ready().first() {
        schedule.finish(next);
        order.push(next);
    }
    order
}

/// Pauses between rounds in which every ready node was held by another process: short at
/// first (a lock held for a moment), growing to a few seconds (a stage computed elsewhere).
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// Sleep, and make the next pause longer.
    pub fn pause(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(Self::MAX);
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
