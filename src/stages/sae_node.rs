//! An SAE that consumers (eval_lm, the analyses, the browser) read: trained by `train_sae`
//! or imported by `import_sae`. Both stages output the same `Sae` and record the same
//! `SaeMeta`, so a consumer takes either through this one handle.

use super::import_sae::ImportSae;
use super::train_sae::{self, TrainSae};
use crate::pipeline::{Graph, Handle, NodeId, StageCtx};
use crate::results::SaeId;
use crate::sae::Sae;
use crate::spec::GridPoint;
use crate::Result;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SaeNode {
    Trained(Handle<TrainSae>),
    Imported(Handle<ImportSae>),
}

impl SaeNode {
    /// Every SAE of the graph: trained ones in grid order, then imported ones.
    pub fn all(graph: &Graph) -> Vec<SaeNode> {
        let trained = graph.all::<TrainSae>().into_iter().map(SaeNode::Trained);
        let imported = graph.all::<ImportSae>().into_iter().map(SaeNode::Imported);
        trained.chain(imported).collect()
    }

    pub fn id(self) -> NodeId {
        match self {
            SaeNode::Trained(h) => h.id(),
            SaeNode::Imported(h) => h.id(),
        }
    }

    pub fn load(self, ctx: &StageCtx) -> Result<Rc<Sae>> {
        match self {
            SaeNode::Trained(h) => ctx.input(h),
            SaeNode::Imported(h) => ctx.input(h),
        }
    }

    /// What `[analyses]` filters match on.
    pub fn point(self, graph: &Graph) -> GridPoint {
        match self {
            SaeNode::Trained(h) => {
                let p = graph.params(h);
                GridPoint {
                    architecture: p.architecture,
                    d_sae: p.d_sae,
                    ratio: graph.inputs(h).ratio,
                    l1: p.l1,
                    k: p.k,
                    seed: p.seed,
                }
            }
            SaeNode::Imported(h) => graph.inputs(h).point,
        }
    }
}

/// The SAE's identity in result tables; `train_key` is the key of the node that made it
/// (its training, or its import).
pub fn sae_id(graph: &Graph, node: SaeNode) -> SaeId {
    match node {
        SaeNode::Trained(h) => train_sae::sae_id(graph, h),
        SaeNode::Imported(h) => {
            let p = graph.inputs(h).point;
            SaeId {
                architecture: p.architecture,
                d_sae: p.d_sae,
                l1: p.l1,
                k: p.k,
                seed: p.seed,
                train_key: graph.node(h).key,
            }
        }
    }
}
