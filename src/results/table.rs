//! A table whose rows are keyed by SAE identity and whose columns are whatever stages add.

use super::identity::SaeId;
use crate::cache::StageKey;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F64(f64),
    U64(u64),
    Str(String),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::U64(v) => Some(*v as f64),
            Value::Str(_) => None,
        }
    }
}

/// A table cell: a value or null.
pub type Cell = Option<Value>;

/// `x.cell()` turns numbers and options of numbers into cells.
pub trait IntoCell {
    fn cell(self) -> Cell;
}

impl IntoCell for f64 {
    fn cell(self) -> Cell {
        Some(Value::F64(self))
    }
}

impl IntoCell for u64 {
    fn cell(self) -> Cell {
        Some(Value::U64(self))
    }
}

impl IntoCell for usize {
    fn cell(self) -> Cell {
        Some(Value::U64(self as u64))
    }
}

impl IntoCell for String {
    fn cell(self) -> Cell {
        Some(Value::Str(self))
    }
}

impl<T: IntoCell> IntoCell for Option<T> {
    fn cell(self) -> Cell {
        self.and_then(IntoCell::cell)
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    /// The SAE the row is about; `None` in tables that are not per SAE (e.g. per model).
    pub id: Option<SaeId>,
    values: HashMap<&'static str, Value>,
}

impl Row {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.values.get(column)
    }

    pub fn f64(&self, column: &str) -> Option<f64> {
        self.get(column).and_then(Value::as_f64)
    }
}

/// Rows in first-seen order; columns beyond the identity in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Row>,
    row_of: HashMap<StageKey, usize>,
}

impl Table {
    /// Set columns of the SAE's row (one row per SAE; created on first use). A later value
    /// for the same column replaces the earlier one.
    pub fn set(&mut self, id: &SaeId, values: impl IntoIterator<Item = (&'static str, Cell)>) {
        let row = match self.row_of.get(&id.train_key) {
            Some(&r) => r,
            None => {
                self.rows.push(Row {
                    id: Some(id.clone()),
                    values: HashMap::new(),
                });
                self.row_of.insert(id.train_key, self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        self.put(row, values);
    }

    /// Append a row for the SAE (long tables: one row per SAE and step, feature, …).
    pub fn push(&mut self, id: &SaeId, values: impl IntoIterator<Item = (&'static str, Cell)>) {
        self.push_row(Some(id.clone()), values);
    }

    /// Append a row that is not about one SAE.
    pub fn push_plain(&mut self, values: impl IntoIterator<Item = (&'static str, Cell)>) {
        self.push_row(None, values);
    }

    fn push_row(
        &mut self,
        id: Option<SaeId>,
        values: impl IntoIterator<Item = (&'static str, Cell)>,
    ) {
        self.rows.push(Row {
            id,
            values: HashMap::new(),
        });
        self.put(self.rows.len() - 1, values);
    }

    fn put(&mut self, row: usize, values: impl IntoIterator<Item = (&'static str, Cell)>) {
        for (column, value) in values {
            if !self.columns.contains(&column) {
                self.columns.push(column);
            }
            if let Some(v) = value {
                self.rows[row].values.insert(column, v);
            }
        }
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The rows that are about one SAE, with its identity.
    pub fn sae_rows(&self) -> impl Iterator<Item = (&SaeId, &Row)> {
        self.rows
            .iter()
            .filter_map(|r| r.id.as_ref().map(|id| (id, r)))
    }

    /// Columns beyond the identity, in first-seen order.
    pub fn columns(&self) -> &[&'static str] {
        &self.columns
    }

    /// Whether any row has a value in `column`.
    pub fn has(&self, column: &str) -> bool {
        self.rows.iter().any(|r| r.get(column).is_some())
    }
}
