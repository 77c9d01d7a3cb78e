//! Training checkpoints: everything the training loop carries from one step to the next
//! (parameters, Adam's moments and step count, firing counts, resampling state, the curve so
//! far, the batch source's position), so that a killed training resumes where it stopped
//! and ends bit-identical to an uninterrupted one.
//!
//! One safetensors file: the six float buffers as tensors, the rest as JSON in its
//! metadata. It is written to a temporary file beside it and renamed, so a kill leaves the
//! previous checkpoint or the new one. A checkpoint that does not parse or was written for
//! another job is ignored with a warning: losing it costs time, trusting it would cost
//! correctness.

use super::params::SaeParams;
use super::train::CurvePoint;
use crate::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// When and where a training saves its state.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    pub file: PathBuf,
    /// Wall time between checkpoints; a training shorter than this never writes one.
    pub every: Duration,
    /// Identifies the job (its stage key): a checkpoint written for another job is ignored.
    pub job: String,
}

/// Bumped when the layout changes; older checkpoints are then ignored.
const FORMAT: u32 = 1;
const METADATA_KEY: &str = "saerun_checkpoint";
const PARAM_NAMES: [&str; 4] = ["w_enc", "b_enc", "w_dec", "b_dec"];

/// A training's state after `done` steps.
pub struct Checkpoint {
    pub params: SaeParams,
    pub adam_steps: i32,
    /// Adam's (first, second) moments in `PARAM_NAMES` order.
    pub moments: Vec<(Vec<f32>, Vec<f32>)>,
    pub progress: Progress,
}

/// The non-tensor part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub elapsed_s: f64,
    pub fired: Vec<u64>,
    pub alive: Vec<bool>,
    pub resampled_total: u64,
    pub curve: Vec<CurvePoint>,
    /// The batch source's position (`BatchSource::position`).
    pub source: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct Metadata {
    format: u32,
    job: String,
    adam_steps: i32,
    progress: Progress,
}

impl Checkpoint {
    /// Write atomically (temporary file in the same directory, fsync, rename).
    pub fn save(&self, policy: &Checkpointing) -> Result<()> {
        let path = &policy.file;
        let dir = path.parent().ok_or_else(|| {
            Error::run(format!("checkpoint path {} has no parent", path.display()))
        })?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create", e))?;
        let meta = serde_json::to_string(&Metadata {
            format: FORMAT,
            job: policy.job.clone(),
            adam_steps: self.adam_steps,
            progress: self.progress.clone(),
        })
        .map_err(|e| Error::run(format!("cannot encode checkpoint: {e}")))?;
        let p = &self.params;
        let (d_sae, d_in) = (p.d_sae, p.d_in);
        let shapes = [
            vec![d_sae, d_in],
            vec![d_sae],
            vec![d_sae, d_in],
            vec![d_in],
        ];
        let buffers = [&p.w_enc, &p.b_enc, &p.w_dec, &p.b_dec];
        let mut named: Vec<(String, &[f32], &[usize])> = Vec::new();
        for (i, name) in PARAM_NAMES.iter().enumerate() {
            named.push((name.to_string(), buffers[i], &shapes[i]));
            let (m, v) = &self.moments[i];
            named.push((format!("adam_m.{name}"), m, &shapes[i]));
            named.push((format!("adam_v.{name}"), v, &shapes[i]));
        }
        // Native byte order is little-endian on every target saerun builds for, as in safetensors.
        let views = named
            .iter()
            .map(|(name, data, shape)| {
                TensorView::new(Dtype::F32, shape.to_vec(), bytemuck::cast_slice(data))
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::run(format!("checkpoint tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([(METADATA_KEY.to_string(), meta)]);
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::run(format!("cannot encode checkpoint: {e}")))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::io(dir, "cannot create a temporary file in", e))?;
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| Error::io(tmp.path(), "cannot write checkpoint", e))?;
        tmp.persist(path)
            .map_err(|e| Error::io(path, "cannot move checkpoint into place", e.error))?;
        Ok(())
    }

    /// The checkpoint at `policy.file` if there is a usable one for this job, with the
    /// expected shapes; `None` (with a warning for anything but a missing file) otherwise.
    pub fn load(policy: &Checkpointing, d_in: usize, d_sae: usize) -> Option<Checkpoint> {
        let path = &policy.file;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("ignoring checkpoint {}: {e}", path.display());
                return None;
            }
        };
        match Self::parse(&bytes, &policy.job, d_in, d_sae) {
            Ok(c) => Some(c),
            Err(why) => {
                tracing::warn!(
                    "ignoring checkpoint {} ({why}); training from step 0",
                    path.display()
                );
                None
            }
        }
    }

    fn parse(
        bytes: &[u8],
        job: &str,
        d_in: usize,
        d_sae: usize,
    ) -> std::result::Result<Checkpoint, String> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or("no checkpoint metadata")?;
        let meta: Metadata = serde_json::from_str(meta).map_err(|e| e.to_string())?;
        if meta.format != FORMAT {
            return Err(format!("format {} (expected {FORMAT})", meta.format));
        }
        if meta.job != job {
            return Err(format!("written for job {}", meta.job));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let lens = [d_sae * d_in, d_sae, d_sae * d_in, d_in];
        let take = |name: &str, len: usize| -> std::result::Result<Vec<f32>, String> {
            let t = tensors.tensor(name).map_err(|e| e.to_string())?;
            if t.dtype() != Dtype::F32 || t.data().len() != len * 4 {
                return Err(format!("tensor {name} has the wrong dtype or shape"));
            }
            // The view's bytes need not be 4-aligned, so no cast: copy out little-endian floats.
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut buffers = Vec::new();
        let mut moments = Vec::new();
        for (name, len) in PARAM_NAMES.iter().zip(lens) {
            buffers.push(take(name, len)?);
            moments.push((
                take(&format!("adam_m.{name}"), len)?,
                take(&format!("adam_v.{name}"), len)?,
            ));
        }
        let p = &meta.progress;
        if p.fired.len() != d_sae || p.alive.len() != d_sae {
            return Err("firing counts of the wrong size".into());
        }
        let [w_enc, b_enc, w_dec, b_dec]: [Vec<f32>; 4] =
            buffers.try_into().map_err(|_| "missing tensors")?;
        Ok(Checkpoint {
            params: SaeParams {
                d_in,
                d_sae,
                w_enc,
                b_enc,
                w_dec,
                b_dec,
            },
            adam_steps: meta.adam_steps,
            moments,
            progress: meta.progress,
        })
    }
}

/// A ChaCha generator's exact position, as JSON-friendly values (its 128-bit word position
/// as a decimal string: JSON numbers stop at 64 bits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RngPosition {
    seed: [u8; 32],
    stream: u64,
    word_pos: String,
}

impl RngPosition {
    pub fn of(rng: &ChaCha8Rng) -> RngPosition {
        RngPosition {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn rng(&self) -> Result<ChaCha8Rng> {
        let word_pos: u128 = self
            .word_pos
            .parse()
            .map_err(|_| Error::run(format!("checkpoint: bad RNG position {}", self.word_pos)))?;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        Ok(rng)
    }
}
