//! Parquet tables (polars). Column names are part of the interface (`saerun diff`, users'
//! notebooks): add columns, do not rename them.

use super::rows::{CurveRow, SaeRow};
use crate::metrics::perplexity::PerplexityImpact;
use crate::{Error, Result};
use polars::prelude::*;
use std::path::Path;

pub fn write_metrics(rows: &[SaeRow], path: &Path) -> Result<()> {
    let col = |name: &str, v: Vec<f64>| Column::new(name.into(), v);
    let u = |name: &str, v: Vec<u64>| Column::new(name.into(), v);
    let ou = |name: &str, v: Vec<Option<u64>>| Column::new(name.into(), v);
    let of = |name: &str, v: Vec<Option<f64>>| Column::new(name.into(), v);
    let get = |f: fn(&SaeRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let lm = |f: fn(&PerplexityImpact) -> f64| {
        rows.iter()
            .map(|r| r.lm.as_ref().map(f))
            .collect::<Vec<_>>()
    };
    let columns = vec![
        u("d_sae", rows.iter().map(|r| r.d_sae as u64).collect()),
        col("ratio", get(|r| r.ratio)),
        col("l1", get(|r| r.l1)),
        u("seed", rows.iter().map(|r| r.seed).collect()),
        col("final_loss", get(|r| r.final_loss)),
        col("mse", get(|r| r.mse)),
        col("fve", get(|r| r.fve)),
        col("l0", get(|r| r.l0)),
        u("dead", rows.iter().map(|r| r.dead as u64).collect()),
        u("dense", rows.iter().map(|r| r.dense as u64).collect()),
        of("mmcs_truth", rows.iter().map(|r| r.mmcs_truth).collect()),
        ou(
            "truth_recovered",
            rows.iter()
                .map(|r| r.truth_recovered.map(|v| v as u64))
                .collect(),
        ),
        ou(
            "next_d_sae",
            rows.iter()
                .map(|r| r.next_d_sae.map(|v| v as u64))
                .collect(),
        ),
        of(
            "mean_matched_cos",
            rows.iter().map(|r| r.mean_matched_cos).collect(),
        ),
        ou(
            "features_above",
            rows.iter()
                .map(|r| r.features_above.map(|v| v as u64))
                .collect(),
        ),
        of(
            "fraction_above",
            rows.iter().map(|r| r.fraction_above).collect(),
        ),
        ou("k", rows.iter().map(|r| r.k.map(|v| v as u64)).collect()),
        of("ce_clean", lm(|l| l.ce_clean)),
        of("ce_sae", lm(|l| l.ce_sae)),
        of("ce_zero", lm(|l| l.ce_zero)),
        of("ce_mean", lm(|l| l.ce_mean)),
        of("ce_recovered", lm(|l| l.ce_recovered)),
        of("delta_ce", lm(|l| l.delta_ce)),
        of("perplexity_ratio", lm(|l| l.perplexity_ratio)),
        Column::new(
            "train_key".into(),
            rows.iter().map(|r| r.train_key.clone()).collect::<Vec<_>>(),
        ),
    ];
    write(rows.len(), columns, path)
}

pub fn write_curves(rows: &[CurveRow], path: &Path) -> Result<()> {
    let f = |name: &str, g: fn(&CurveRow) -> f64| {
        Column::new(name.into(), rows.iter().map(g).collect::<Vec<_>>())
    };
    let columns = vec![
        Column::new(
            "d_sae".into(),
            rows.iter().map(|r| r.d_sae as u64).collect::<Vec<_>>(),
        ),
        f("l1", |r| r.l1),
        Column::new(
            "seed".into(),
            rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
        ),
        Column::new(
            "step".into(),
            rows.iter().map(|r| r.point.step).collect::<Vec<_>>(),
        ),
        f("lr", |r| r.point.lr),
        f("loss", |r| r.point.loss),
        f("mse", |r| r.point.mse),
        f("l1_term", |r| r.point.l1_term),
        f("l0", |r| r.point.l0),
        f("dead_fraction", |r| r.point.dead_fraction),
        f("elapsed_s", |r| r.point.elapsed_s),
    ];
    write(rows.len(), columns, path)
}

fn write(height: usize, columns: Vec<Column>, path: &Path) -> Result<()> {
    let err = |e: PolarsError| Error::run(format!("cannot write {}: {e}", path.display()));
    let mut df = DataFrame::new(height, columns).map_err(err)?;
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
