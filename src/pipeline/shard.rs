//! `run --shard I/N`: the deterministic share of a sweep that one of N processes (one task
//! of a Slurm job array) computes against a cache they all share.
//!
//! The grid points are the graph's `Stage::GRID_POINT` nodes (`train_sae`, one per SAE) in
//! planning order, numbered 0, 1, …. Every node belongs to the first grid point it depends
//! on, itself included: an SAE's evaluation and analyses to that SAE, a size match of two
//! SAEs to the first, the feature browser to the first analysed SAE. Nodes that depend on
//! no grid point (the data: `toy_data`, `tokenize`, `harvest`, `ce_baselines`,
//! `unembed_norms`) belong to every shard. Shard I (1-based, like `--array=1-N`) owns the
//! nodes of grid points g with g mod N = I − 1 and the nodes of none, and computes them and
//! everything they need. So the shards together cover the whole graph; where their shares
//! overlap (the data, and the other shard's SAE that a size match needs) the cache's
//! per-key locks have each stage computed once, by whichever shard gets there first.
//!
//! A shard does its own work first: the owned nodes and what they need, except what only
//! an owned node of several grid points (a size match across shards) needs; that comes
//! last, by when the shard owning it has usually computed it.

use super::graph::Graph;
use super::stage::NodeId;
use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count`, 1 ≤ index ≤ count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let expected = || {
            format!(
                "expected I/N with whole numbers 1 ≤ I ≤ N (shard I of N, counted from 1 like \
                 Slurm's --array=1-N), got `{text}`"
            )
        };
        let (i, n) = text.trim().split_once('/').ok_or_else(expected)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| expected())?,
            n.trim().parse::<usize>().map_err(|_| expected())?,
        );
        if index == 0 || index > count {
            return Err(expected());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Which nodes of a graph one process executes, and which of them first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Nodes to execute (the owned ones and everything they need).
    pub wanted: Vec<bool>,
    /// Wanted nodes to run before the others (all of them without sharding).
    pub first: Vec<bool>,
}

impl Share {
    /// The whole graph, in the order an unsharded run takes.
    pub fn all(graph: &Graph) -> Share {
        let n = graph.nodes().len();
        Share {
            wanted: vec![true; n],
            first: vec![true; n],
        }
    }

    pub fn of(graph: &Graph, shard: Shard) -> Share {
        let nodes = graph.nodes();
        // The lowest and highest grid point each node depends on (inputs precede consumers).
        let mut span: Vec<Option<(usize, usize)>> = Vec::with_capacity(nodes.len());
        let mut points = 0;
        for node in nodes {
            let mut s: Option<(usize, usize)> = None;
            let mut widen = |(lo, hi): (usize, usize)| {
                s = Some(s.map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))));
            };
            for &i in &node.inputs {
                if let Some(x) = span[i] {
                    widen(x);
                }
            }
            if node.is_grid_point() {
                widen((points, points));
                points += 1;
            }
            span.push(s);
        }
        let owned: Vec<bool> = span
            .iter()
            .map(|s| s.is_none_or(|(lo, _)| lo % shard.count == shard.index - 1))
            .collect();
        let single = |i: NodeId| span[i].is_none_or(|(lo, hi)| lo == hi);
        let wanted = with_ancestors(graph, owned.clone());
        let mut first = with_ancestors(
            graph,
            (0..nodes.len()).map(|i| owned[i] && single(i)).collect(),
        );
        for (f, o) in first.iter_mut().zip(&owned) {
            *f |= o;
        }
        Share { wanted, first }
    }

    pub fn len(&self) -> usize {
        self.wanted.iter().filter(|&&w| w).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `marked` plus every ancestor of a marked node.
fn with_ancestors(graph: &Graph, mut marked: Vec<bool>) -> Vec<bool> {
    // Consumers come after their inputs in planning order: one backward pass suffices.
    for i in (0..marked.len()).rev() {
        if marked[i] {
            for &input in &graph.nodes()[i].inputs {
                marked[input] = true;
            }
        }
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_one_based() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!("1/1".parse::<Shard>().unwrap().to_string(), "1/1");
        for bad in ["0/2", "3/2", "a/b", "1", "1/0", "-1/2", "1/2/3", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("expected I/N"), "{bad}: {e}");
        }
    }
}
