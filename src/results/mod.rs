//! The run's open result tables. Stages that produce per-SAE results add columns to rows keyed
//! by SAE identity (`identity`); the report writes each table to Parquet and draws the HTML
//! table and plots from whatever columns are present (`table`). No stage's results are a
//! fixed struct, so a new stage adds columns without touching the report.

pub mod identity;
pub mod table;

pub use identity::SaeId;
pub use table::{Cell, IntoCell, Table, Value};

use std::collections::BTreeMap;

/// `metrics`: one row per SAE, every stage's per-SAE numbers joined on identity.
pub const METRICS: &str = "metrics";
/// `curves`: one row per SAE and logged training step.
pub const CURVES: &str = "curves";

#[derive(Default)]
pub struct ResultTables {
    tables: BTreeMap<&'static str, Table>,
}

impl ResultTables {
    pub fn table(&mut self, name: &'static str) -> &mut Table {
        self.tables.entry(name).or_default()
    }

    pub fn get(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Table)> {
        self.tables.iter().map(|(k, v)| (*k, v))
    }
}
