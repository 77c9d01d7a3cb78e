//! From a resolved spec to results: `plan` builds the stage graph with every stage's key,
//! `execute` runs it against the cache, `run` ties both to a run record and the report.
pub mod execute;
pub mod plan;
pub mod run;

pub use plan::{build_plan, Plan};
