//! Reading a Hugging Face safetensors checkpoint: one `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.
//!
//! Opening reads and checks only each file's header; a tensor's bytes are read from the file
//! when it is asked for, converted, and dropped. So checking a checkpoint reads kilobytes,
//! and loading one never holds the whole file beside the converted weights (Pythia-70M: a
//! 166 MB file, 282 MB of f32 weights). Plain reads, not a memory map: a map would bring
//! `unsafe` (a file changed under the map is undefined behaviour) and save nothing, since
//! every tensor is converted to the compute dtype at load time anyway.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::SafeTensorError;
use serde::Deserialize;

use crate::{Error, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The header of a safetensors file may not exceed this (the `safetensors` crate's limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A safetensors header as JSON (the `safetensors` crate's own, private, `HashMetadata`).
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "__metadata__")]
    metadata: Option<HashMap<String, String>>,
    #[serde(flatten)]
    tensors: HashMap<String, TensorInfo>,
}

/// One safetensors file: its parsed, validated header and the open file to read tensors from.
struct SafetensorsFile {
    path: PathBuf,
    file: Mutex<File>,
    /// Where the data section starts: 8 (the header length) + the header.
    data_start: u64,
    meta: Metadata,
}

impl SafetensorsFile {
    /// Open `path` and check its header as `SafeTensors::deserialize` does (the same errors:
    /// too short, header length out of range, invalid JSON, offsets that do not tile the
    /// data, data that does not end exactly at the end of the file).
    fn open(path: &Path) -> Result<Self> {
        let io = |e: std::io::Error| Error::io(path, "reading", e);
        let invalid = |e: SafeTensorError| {
            Error::input(format!(
                "{}: not a valid safetensors file: {e}",
                path.display()
            ))
        };
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < 8 {
            return Err(invalid(SafeTensorError::HeaderTooSmall));
        }
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(io)?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER_BYTES {
            return Err(invalid(SafeTensorError::HeaderTooLarge));
        }
        if 8 + n > len {
            return Err(invalid(SafeTensorError::InvalidHeaderLength));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(io)?;
        let header =
            std::str::from_utf8(&header).map_err(|e| invalid(SafeTensorError::InvalidHeader(e)))?;
        let header: Header = serde_json::from_str(header)
            .map_err(|e| invalid(SafeTensorError::InvalidHeaderDeserialization(e)))?;
        let mut tensors: Vec<(String, TensorInfo)> = header.tensors.into_iter().collect();
        tensors.sort_by_key(|(_, t)| t.data_offsets);
        // Checks that the offsets tile the data section and match the dtypes and shapes.
        let meta = Metadata::new(header.metadata, tensors).map_err(invalid)?;
        if 8 + n + meta.data_len() as u64 != len {
            return Err(invalid(SafeTensorError::MetadataIncompleteBuffer));
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            data_start: 8 + n,
            meta,
        })
    }

    fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.meta.tensors().into_keys()
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.meta.info(name)
    }

    /// The stored bytes of a tensor of this file.
    fn read(&self, info: &TensorInfo) -> Result<Vec<u8>> {
        let (start, end) = info.data_offsets;
        let mut bytes = vec![0u8; end - start];
        let mut file = self
            .file
            .lock()
            .map_err(|_| Error::run("internal: a checkpoint reader panicked"))?;
        file.seek(SeekFrom::Start(self.data_start + start as u64))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| Error::io(&self.path, "reading", e))?;
        Ok(bytes)
    }
}

/// The raw tensors of a checkpoint, looked up by their HF names.
pub struct Checkpoint {
    files: Vec<SafetensorsFile>,
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
            let file = SafetensorsFile::open(p)?;
            for name in file.names() {
                routing.insert(name, i);
            }
            files.push(file);
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
        self.routing
            .get(name)
            .map(|&i| self.files[i].path.as_path())
    }

    /// Load `name`, check its shape, and convert it to `dtype` on `device`.
    pub fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (file, info, stored) = self.checked_info(name, shape)?;
        let bytes = file.read(info)?;
        let t = Tensor::from_raw_buffer(&bytes, stored, shape, device)?;
        drop(bytes);
        Ok(t.to_dtype(dtype)?)
    }

    /// Check that `name` is present with this shape and a float dtype, without building a
    /// tensor (the same checks, and messages, as [`Checkpoint::tensor`]).
    pub fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        self.checked_info(name, shape).map(|_| ())
    }

    /// The file, header entry and stored dtype of `name`, after the presence, shape and
    /// dtype checks.
    fn checked_info(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(&SafetensorsFile, &TensorInfo, DType)> {
        let &i = self.routing.get(name).ok_or_else(|| {
            let files: Vec<String> = self
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            Error::input(format!(
                "tensor {name} is missing from the checkpoint ({})",
                files.join(", ")
            ))
        })?;
        let file = &self.files[i];
        let bad =
            |what: String| Error::input(format!("{}: tensor {name}: {what}", file.path.display()));
        let info = file
            .info(name)
            .ok_or_else(|| bad("missing from the file's header".into()))?;
        if info.shape != shape {
            return Err(bad(format!(
                "shape {:?} does not match the config, expected {shape:?}",
                info.shape
            )));
        }
        let stored = match info.dtype {
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
        Ok((file, info, stored))
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
        match self.files[i].info(name)?.dtype {
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
