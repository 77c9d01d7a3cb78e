//! The stages of the pipeline, one file each. A stage has a name, a version constant that is
//! bumped whenever its output for the same parameters would change, a typed parameter struct
//! (hashed into its key), and a `run` function that writes its outputs into a directory.
pub mod ce_baselines;
pub mod eval_lm;
pub mod eval_sae;
pub mod harvest;
pub mod match_sizes;
pub mod tokenize;
pub mod toy_data;
pub mod train_sae;

use crate::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::run(format!("cannot encode {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, "cannot write", e))
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::run(format!("cannot decode {}: {e}", path.display())))
}
