//! The one abstraction every stage implements. A stage is a type with a name, a version, typed
//! parameters (hashed into its key), typed inputs (handles to upstream nodes, plus locations
//! that are not part of the key), a way to add its nodes to the graph, a `run` that writes its
//! outputs into a directory, and a `load` that reads them back for downstream stages.
//!
//! The executor and the cache only ever see the erased form (`graph::Node`): they know
//! nothing of particular stages, as in DVC's stage cache.

use super::context::{RunCtx, StageCtx};
use super::external::ModelRef;
use super::graph::Graph;
use crate::cache::Entry;
use crate::results::{Cell, ResultTables, SaeId, METRICS};
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

/// Index of a node in its graph.
pub type NodeId = usize;

/// A typed reference to a node of stage `S`: loading it yields `S::Output`.
pub struct Handle<S> {
    id: NodeId,
    stage: PhantomData<fn() -> S>,
}

impl<S> Handle<S> {
    pub(super) fn new(id: NodeId) -> Self {
        Handle {
            id,
            stage: PhantomData,
        }
    }

    pub fn id(self) -> NodeId {
        self.id
    }
}

// Derives would demand `S: Clone` etc.; a handle is an index whatever the stage.
impl<S> Clone for Handle<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Handle<S> {}
impl<S> PartialEq for Handle<S> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl<S> fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({})", self.id)
    }
}

/// What a stage reads. Upstream nodes enter the key (in the order `nodes` gives them);
/// everything else an inputs struct carries (file locations, the model to run) does not:
/// those are identified in the parameters by content hash.
pub trait StageInputs {
    /// Upstream nodes, in the order their keys enter this stage's key.
    fn nodes(&self) -> Vec<NodeId>;

    /// The language model this stage runs, if any: loaded on first use, shared by
    /// consecutive stages that name it, dropped before a stage that does not (and after the
    /// last user).
    fn model(&self) -> Option<&ModelRef> {
        None
    }
}

impl StageInputs for () {
    fn nodes(&self) -> Vec<NodeId> {
        Vec::new()
    }
}

pub trait Stage: Sized + 'static {
    /// Directory name in the cache and name in run records; never reuse one.
    const NAME: &'static str;
    /// Bump whenever the output for the same parameters and inputs would change.
    const VERSION: u32;
    /// One line for `validate --graph` and the docs.
    const DESCRIPTION: &'static str;

    /// Everything that determines the output besides the inputs' keys.
    type Params: Serialize + 'static;
    type Inputs: StageInputs + 'static;
    /// What downstream stages get from `Handle<Self>` (loaded lazily, dropped after the
    /// last consumer).
    type Output: 'static;

    /// Add this stage's nodes to `graph` for `spec`. Called in registry order, so every
    /// upstream stage's nodes are already there (find them with `Graph::all`/`Graph::only`).
    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()>;

    /// Compute the output into `out` (a fresh temporary directory the cache publishes
    /// atomically). Inputs are loaded on demand with `ctx.input(handle)`.
    fn run(ctx: &StageCtx, params: &Self::Params, inputs: &Self::Inputs, out: &Path) -> Result<()>;

    /// Read a published entry back.
    fn load(ctx: &RunCtx, entry: &Entry) -> Result<Self::Output>;

    /// Set when the output is the same bits whatever `run.device` is, because the stage
    /// computes on the host only (a generator, the tokenizer, page rendering). Otherwise a
    /// non-CPU device enters the key (`DeviceChoice::key_material`): on a GPU the model
    /// runs the generic kernels (`model::Kernels`), the SAE trainer the dense step
    /// (`sae::grads::StepPath`), and cuBLAS and candle's CUDA kernels sum in another order
    /// than the CPU's, so the bits differ and must not share an entry with a CPU run's.
    const SAME_ON_EVERY_DEVICE: bool = false;

    /// If set, the entry's files are also copied into `<run dir>/<RUN_DIR>/` (e.g. the
    /// feature browser's pages).
    const RUN_DIR: Option<&'static str> = None;

    /// Each node of this stage is one point of the sweep's grid (one SAE). `run --shard I/N`
    /// splits a sweep by these nodes (see `pipeline::shard`).
    const GRID_POINT: bool = false;

    /// Contribute to the run's result tables, keyed by SAE identity. Most stages have none.
    fn results(_out: &mut StageResults<Self>) -> Result<()> {
        Ok(())
    }

    /// A short note for `validate` (e.g. the number of training steps).
    fn detail(_params: &Self::Params) -> Option<String> {
        None
    }
}

/// What `Stage::results` reads (its node and cache entry) and writes (the result tables).
pub struct StageResults<'a, S: Stage> {
    pub graph: &'a Graph,
    pub node: Handle<S>,
    pub entry: &'a Entry,
    pub tables: &'a mut ResultTables,
}

impl<S: Stage> StageResults<'_, S> {
    pub fn inputs(&self) -> &S::Inputs {
        self.graph.inputs(self.node)
    }

    /// A JSON file of the node's cache entry.
    pub fn read_json<T: DeserializeOwned>(&self, file: &str) -> Result<T> {
        crate::stages::read_json(&self.entry.file(file))
    }

    /// Set columns of the SAE's row in the `metrics` table.
    pub fn metrics(&mut self, id: &SaeId, columns: impl IntoIterator<Item = (&'static str, Cell)>) {
        self.tables.table(METRICS).set(id, columns);
    }
}

/// A stage as the registry lists it.
pub struct StageInfo {
    pub name: &'static str,
    pub version: u32,
    pub description: &'static str,
    pub plan: fn(&mut Graph, &ResolvedSpec) -> Result<()>,
}

impl StageInfo {
    pub const fn of<S: Stage>() -> StageInfo {
        StageInfo {
            name: S::NAME,
            version: S::VERSION,
            description: S::DESCRIPTION,
            plan: S::plan,
        }
    }
}
