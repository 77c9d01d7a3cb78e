//! From a resolved spec to results. `stage` is the trait every stage implements; `graph`
//! holds the planned nodes with their keys; `execute` runs them against the cache in one
//! generic loop over the ready nodes (`schedule`), loading inputs lazily (`loader`) with a
//! `context`; `shard` picks one process's share of a sweep; `run` ties it all to a
//! run record and the report; `mermaid` draws the graph for `validate --graph`.
pub mod context;
pub mod execute;
pub mod external;
pub mod graph;
pub mod loader;
pub mod mermaid;
pub mod run;
pub mod schedule;
pub mod shard;
pub mod stage;

pub use context::{RunCtx, StageCtx};
pub use graph::{Graph, Node};
pub use stage::{Handle, NodeId, Stage, StageInfo, StageInputs, StageResults};
