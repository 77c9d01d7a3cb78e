//! Result tables as Parquet (polars). Column names are part of the interface (`saerun
//! diff`, users' notebooks, README "Result tables"): add columns, do not rename them.

use crate::results::identity::ID_COLUMNS;
use crate::results::{Table, Value};
use crate::{Error, Result};
use polars::prelude::*;
use std::path::Path;

/// The table as a data frame: the identity columns, then the others in first-seen order.
pub fn to_frame(table: &Table) -> Result<DataFrame> {
    let rows = table.rows();
    let ids: Vec<_> = rows
        .iter()
        .map(|r| r.id.as_ref().map(|id| id.values()))
        .collect();
    let mut columns = Vec::new();
    // Tables that are not per SAE (no row has an identity) have no identity columns.
    if ids.iter().any(Option::is_some) {
        for (i, name) in ID_COLUMNS.iter().enumerate() {
            columns.push(column(
                name,
                ids.iter().map(|v| v.as_ref().and_then(|v| v[i].as_ref())),
            ));
        }
    }
    for name in table.columns() {
        columns.push(column(name, rows.iter().map(|r| r.get(name))));
    }
    DataFrame::new(rows.len(), columns)
        .map_err(|e| Error::run(format!("internal: cannot build table: {e}")))
}

/// One column; its type is the widest of its values (text > float > integer).
fn column<'a>(name: &str, values: impl Iterator<Item = Option<&'a Value>> + Clone) -> Column {
    let any = |f: fn(&Value) -> bool| values.clone().flatten().any(f);
    if any(|v| matches!(v, Value::Str(_))) {
        let v: Vec<Option<String>> = values
            .map(|v| {
                v.map(|v| match v {
                    Value::Str(s) => s.clone(),
                    Value::F64(x) => x.to_string(),
                    Value::U64(x) => x.to_string(),
                })
            })
            .collect();
        Column::new(name.into(), v)
    } else if any(|v| matches!(v, Value::F64(_))) {
        let v: Vec<Option<f64>> = values.map(|v| v.and_then(Value::as_f64)).collect();
        Column::new(name.into(), v)
    } else {
        let v: Vec<Option<u64>> = values
            .map(|v| match v {
                Some(Value::U64(x)) => Some(*x),
                _ => None,
            })
            .collect();
        Column::new(name.into(), v)
    }
}

pub fn write(table: &Table, path: &Path) -> Result<()> {
    let err = |e: PolarsError| Error::run(format!("cannot write {}: {e}", path.display()));
    let mut df = to_frame(table)?;
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, "cannot create", e))?;
    ParquetWriter::new(file).finish(&mut df).map_err(err)?;
    Ok(())
}

/// Read a Parquet table (used by tests and `diff`).
pub fn read(path: &Path) -> Result<DataFrame> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| Error::run(format!("cannot read {}: {e}", path.display())))
}
