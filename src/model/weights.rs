//! Reading a Hugging Face safetensors checkpoint: one `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.
//!
//! Files are read into memory rather than memory-mapped: every tensor is converted to the
//! compute dtype (and possibly re-processed) at load time anyway, so a map would save nothing
//! and would bring `unsafe` (a file changed under the map is undefined behaviour).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::{Error, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The raw tensors of a checkpoint, looked up by their HF names.
pub struct Checkpoint {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Tensor name -> index into `files`.
    routing: HashMap<String, usize>,
}

impl Checkpoint {
    /// Open the checkpoint in `dir`: the sharded index if present, else `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::from_index(&index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::from_files(&[single]);
        }
        Err(Error::input(format!(
            "{}: no {SINGLE_FILE} or {INDEX_FILE} (only safetensors checkpoints are supported)",
            dir.display()
        )))
    }

    /// Open a sharded checkpoint through its `model.safetensors.index.json`.
    pub fn from_index(index: &Path) -> Result<Self> {
        let map = read_weight_map(index)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&str> = Vec::new();
        let mut wanted: Vec<(&str, usize)> = Vec::new();
        for (tensor, file) in &map {
            let idx = match shard_names.iter().position(|f| f == file) {
                Some(i) => i,
                None => {
                    shard_names.push(file);
                    shard_names.len() - 1
                }
            };
            wanted.push((tensor, idx));
        }
        let paths: Vec<PathBuf> = shard_names.iter().map(|f| dir.join(f)).collect();
        let mut ck = Self::from_files(&paths)?;
        // The index is the authority on where a tensor lives; check it against the shards so a
        // stale index is reported instead of silently loading a tensor from the wrong file.
        for (tensor, idx) in wanted {
            match ck.routing.get(tensor) {
                Some(&found) if found == idx => {}
                _ => {
                    return Err(Error::input(format!(
                        "{}: weight_map says {tensor} is in {}, but that shard does not contain it",
                        index.display(),
                        shard_names[idx]
                    )))
                }
            }
        }
        ck.routing
            .retain(|name, _| map.iter().any(|(t, _)| t == name));
        Ok(ck)
    }

    /// Open one or more safetensors files (a later file wins for a duplicated name).
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut routing = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, "reading", e))?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| {
                Error::input(format!(
                    "{}: not a valid safetensors file: {e}",
                    p.display()
                ))
            })?;
            for name in st.names() {
                routing.insert(name.to_string(), i);
            }
            files.push((p.clone(), bytes));
        }
        Ok(Self { files, routing })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.routing.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The file that holds `name`, for error messages.
    fn file_of(&self, name: &str) -> Option<&Path> {
        self.routing.get(name).map(|&i| self.files[i].0.as_path())
    }

    /// Load `name`, check its shape, and convert it to `dtype` on `device`.
    pub fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (view, stored) = self.checked_view(name, shape)?;
        let t = Tensor::from_raw_buffer(view.data(), stored, shape, device)?;
        Ok(t.to_dtype(dtype)?)
    }

    /// Check that `name` is present with this shape and a float dtype, without building a
    /// tensor (the same checks, and messages, as [`Checkpoint::tensor`]).
    pub fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        self.checked_view(name, shape).map(|_| ())
    }

    /// The view of `name` and its stored dtype, after the presence, shape and dtype checks.
    fn checked_view(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(safetensors::tensor::TensorView<'_>, DType)> {
        let &i = self.routing.get(name).ok_or_else(|| {
            let files: Vec<String> = self
                .files
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            Error::input(format!(
                "tensor {name} is missing from the checkpoint ({})",
                files.join(", ")
            ))
        })?;
        let (path, bytes) = &self.files[i];
        let bad = |what: String| Error::input(format!("{}: tensor {name}: {what}", path.display()));
        // Re-parsing the header per tensor costs microseconds; keeping the parsed view would
        // need a self-referential struct.
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        if view.shape() != shape {
            return Err(bad(format!(
                "shape {:?} does not match the config, expected {shape:?}",
                view.shape()
            )));
        }
        let stored = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(bad(format!(
                    "dtype {other:?} is not a float type (expected F32, F16, BF16 or F64)"
                )))
            }
        };
        Ok((view, stored))
    }

    /// Like `tensor`, but `None` when absent (for optional biases).
    pub fn opt_tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.tensor(name, shape, dtype, device).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The stored dtype of `name` (`None` if absent or not a float type).
    pub fn dtype_of(&self, name: &str) -> Option<DType> {
        let &i = self.routing.get(name)?;
        let st = SafeTensors::deserialize(&self.files[i].1).ok()?;
        match st.tensor(name).ok()?.dtype() {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F64 => Some(DType::F64),
            _ => None,
        }
    }

    /// Describe where `name` lives (for diagnostics).
    pub fn location(&self, name: &str) -> String {
        self.file_of(name)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<absent>".into())
    }
}

/// The `weight_map` of a `model.safetensors.index.json`: (tensor name, shard file) pairs.
/// Shards must sit beside the index, so a name that is not a plain file name (a path that
/// could climb out of the directory, e.g. in an index downloaded from the hub) is an error.
pub fn read_weight_map(index: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, "reading", e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::input(format!("{}: not valid JSON: {e}", index.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            Error::input(format!(
                "{}: missing field weight_map (an object of tensor name -> shard file)",
                index.display()
            ))
        })?;
    let mut out = Vec::with_capacity(map.len());
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::input(format!(
                "{}: weight_map.{tensor} must be a file name",
                index.display()
            ))
        })?;
        let plain = Path::new(file).components().count() == 1
            && !matches!(file, "" | "." | "..")
            && !file.contains(['/', '\\']);
        if !plain {
            return Err(Error::input(format!(
                "{}: weight_map.{tensor} = {file:?} is not a plain file name",
                index.display()
            )));
        }
        out.push((tensor.clone(), file.to_string()));
    }
    if out.is_empty() {
        return Err(Error::input(format!(
            "{}: `weight_map` is empty",
            index.display()
        )));
    }
    Ok(out)
}
