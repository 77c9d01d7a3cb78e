//! The stage graph of one experiment. Stages add their own nodes (`Stage::plan`, called in
//! registry order); each node's key covers its parameters, its stage's version and its
//! inputs' keys, so changing the data changes every key downstream while adding an l1
//! value adds only new nodes.

use super::context::{RunCtx, StageCtx};
use super::external::ModelRef;
use super::stage::{Handle, NodeId, Stage, StageInputs, StageResults};
use crate::cache::key::{canonical_value, stage_key_on};
use crate::cache::{Entry, StageKey};
use crate::results::ResultTables;
use crate::spec::ResolvedSpec;
use crate::stages::REGISTRY;
use crate::{Error, Result};
use std::any::Any;
use std::path::Path;
use std::rc::Rc;

/// One stage invocation, as the executor and cache see it.
pub struct Node {
    pub stage: &'static str,
    pub version: u32,
    /// Human-readable identity, e.g. `d_sae=512 l1=0.05 seed=0`.
    pub label: String,
    pub key: StageKey,
    /// Upstream nodes, in key order.
    pub inputs: Vec<NodeId>,
    /// Canonical parameters, as hashed into the key (recorded in the entry's manifest).
    pub params: serde_json::Value,
    body: Box<dyn ErasedNode>,
}

impl Node {
    pub fn model(&self) -> Option<&ModelRef> {
        self.body.model()
    }

    pub fn detail(&self) -> Option<String> {
        self.body.detail()
    }

    /// Where in the run directory the entry's files are copied, if anywhere.
    pub fn run_dir(&self) -> Option<&'static str> {
        self.body.run_dir()
    }

    /// Whether the node is one point of the sweep's grid (`Stage::GRID_POINT`).
    pub fn is_grid_point(&self) -> bool {
        self.body.grid_point()
    }

    pub(super) fn run(&self, ctx: &StageCtx, out: &Path) -> Result<()> {
        self.body.run(ctx, out)
    }

    pub(super) fn load(&self, ctx: &RunCtx, entry: &Entry) -> Result<Rc<dyn Any>> {
        self.body.load(ctx, entry)
    }

    pub fn results(
        &self,
        graph: &Graph,
        id: NodeId,
        entry: &Entry,
        tables: &mut ResultTables,
    ) -> Result<()> {
        self.body.results(graph, id, entry, tables)
    }
}

/// A stage's typed node behind an object-safe interface.
trait ErasedNode {
    fn as_any(&self) -> &dyn Any;
    fn model(&self) -> Option<&ModelRef>;
    fn detail(&self) -> Option<String>;
    fn run_dir(&self) -> Option<&'static str>;
    fn grid_point(&self) -> bool;
    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<()>;
    fn load(&self, ctx: &RunCtx, entry: &Entry) -> Result<Rc<dyn Any>>;
    fn results(
        &self,
        graph: &Graph,
        id: NodeId,
        entry: &Entry,
        tables: &mut ResultTables,
    ) -> Result<()>;
}

struct TypedNode<S: Stage> {
    params: S::Params,
    inputs: S::Inputs,
}

impl<S: Stage> ErasedNode for TypedNode<S> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn model(&self) -> Option<&ModelRef> {
        self.inputs.model()
    }

    fn detail(&self) -> Option<String> {
        S::detail(&self.params)
    }

    fn run_dir(&self) -> Option<&'static str> {
        S::RUN_DIR
    }

    fn grid_point(&self) -> bool {
        S::GRID_POINT
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<()> {
        S::run(ctx, &self.params, &self.inputs, out)
    }

    fn load(&self, ctx: &RunCtx, entry: &Entry) -> Result<Rc<dyn Any>> {
        Ok(Rc::new(S::load(ctx, entry)?))
    }

    fn results(
        &self,
        graph: &Graph,
        id: NodeId,
        entry: &Entry,
        tables: &mut ResultTables,
    ) -> Result<()> {
        S::results(&mut StageResults {
            graph,
            node: Handle::new(id),
            entry,
            tables,
        })
    }
}

#[derive(Default)]
pub struct Graph {
    nodes: Vec<Node>,
    /// `run.device`'s part of the keys of device-dependent stages (`None`: the CPU).
    device: Option<&'static str>,
}

impl Graph {
    /// The graph of `spec`: every registered stage adds its nodes, upstream stages first.
    pub fn build(spec: &ResolvedSpec) -> Result<Graph> {
        let mut graph = Graph {
            device: spec.device.key_material(),
            ..Graph::default()
        };
        for stage in REGISTRY {
            (stage.plan)(&mut graph, spec)?;
        }
        Ok(graph)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Add a node of stage `S`; its key is derived here, once.
    pub fn add<S: Stage>(
        &mut self,
        label: impl Into<String>,
        params: S::Params,
        inputs: S::Inputs,
    ) -> Result<Handle<S>> {
        let upstream = inputs.nodes();
        if let Some(&bad) = upstream.iter().find(|&&i| i >= self.nodes.len()) {
            return Err(Error::run(format!(
                "internal: {} names node {bad}, which is not planned yet",
                S::NAME
            )));
        }
        let input_keys: Vec<StageKey> = upstream.iter().map(|&i| self.nodes[i].key).collect();
        let device = self.device.filter(|_| !S::SAME_ON_EVERY_DEVICE);
        let key = stage_key_on(S::NAME, S::VERSION, &params, &input_keys, device)?;
        let params_json = canonical_value(&params)
            .map_err(|e| Error::run(format!("cannot encode {} parameters: {e}", S::NAME)))?;
        self.nodes.push(Node {
            stage: S::NAME,
            version: S::VERSION,
            label: label.into(),
            key,
            inputs: upstream,
            params: params_json,
            body: Box::new(TypedNode::<S> { params, inputs }),
        });
        Ok(Handle::new(self.nodes.len() - 1))
    }

    fn typed<S: Stage>(&self, h: Handle<S>) -> &TypedNode<S> {
        self.nodes[h.id()]
            .body
            .as_any()
            .downcast_ref::<TypedNode<S>>()
            .expect("a Handle<S> is only made for a node of stage S in this graph")
    }

    /// Every node of stage `S`, in planning order.
    pub fn all<S: Stage>(&self) -> Vec<Handle<S>> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].body.as_any().is::<TypedNode<S>>())
            .map(Handle::new)
            .collect()
    }

    /// The node of a stage planned at most once per experiment (e.g. the data stage).
    pub fn only<S: Stage>(&self) -> Option<Handle<S>> {
        self.all::<S>().into_iter().next()
    }

    pub fn params<S: Stage>(&self, h: Handle<S>) -> &S::Params {
        &self.typed(h).params
    }

    pub fn inputs<S: Stage>(&self, h: Handle<S>) -> &S::Inputs {
        &self.typed(h).inputs
    }

    pub fn node<S>(&self, h: Handle<S>) -> &Node {
        &self.nodes[h.id()]
    }
}
