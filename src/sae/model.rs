//! A ReLU sparse autoencoder with an untied encoder and unit-norm decoder atoms:
//!   f = ReLU((x − b_dec) W_encᵀ + b_enc),   x̂ = f W_dec + b_dec.
//! Atoms are the rows of `w_dec` (d_sae × d_in), kept at unit norm so the L1 penalty on f
//! cannot be dodged by shrinking codes and growing atoms.

use crate::device::HOST;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Sae {
    /// (d_sae, d_in): row j is latent j's encoder direction.
    pub w_enc: Tensor,
    /// (d_sae)
    pub b_enc: Tensor,
    /// (d_sae, d_in), unit-norm rows.
    pub w_dec: Tensor,
    /// (d_in)
    pub b_dec: Tensor,
    /// TopK SAEs keep only the k largest codes per sample; `None` for ReLU SAEs.
    pub top_k: Option<usize>,
}

impl Sae {
    /// Random unit-norm atoms; the encoder starts equal to the decoder (as in
    /// Anthropic's April 2024 update and SAELens), which avoids a burst of dead latents.
    /// The tensors are created on `b_dec`'s device.
    pub fn init(d_in: usize, d_sae: usize, b_dec: Tensor, seed: u64) -> Result<Sae> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let raw: Vec<f32> = (0..d_in * d_sae)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let dev = b_dec.device();
        let w_dec = normalise_rows(&Tensor::from_vec(raw, (d_sae, d_in), dev)?)?;
        Ok(Sae {
            w_enc: w_dec.clone(),
            b_enc: Tensor::zeros(d_sae, DType::F32, dev)?,
            w_dec,
            b_dec,
            top_k: None,
        })
    }

    pub fn d_in(&self) -> usize {
        self.w_dec.dim(1).unwrap_or(0)
    }

    pub fn d_sae(&self) -> usize {
        self.w_dec.dim(0).unwrap_or(0)
    }

    /// Pre-activations (before the ReLU), (batch, d_sae).
    pub fn pre_activations(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_sub(&self.b_dec)?
            .matmul(&self.w_enc.t()?)?
            .broadcast_add(&self.b_enc)?)
    }

    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let pre = self.pre_activations(x)?;
        let Some(k) = self.top_k else {
            return Ok(pre.relu()?);
        };
        let (b, n) = pre.dims2()?;
        let mut codes = vec![0f32; b * n];
        for (row, out) in pre.to_vec2::<f32>()?.iter().zip(codes.chunks_mut(n)) {
            for (j, v) in super::grads::top_k(row, k) {
                out[j as usize] = v;
            }
        }
        Ok(Tensor::from_vec(codes, (b, n), pre.device())?)
    }

    pub fn decode(&self, f: &Tensor) -> Result<Tensor> {
        Ok(f.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = [
            ("w_enc", &self.w_enc),
            ("b_enc", &self.b_enc),
            ("w_dec", &self.w_dec),
            ("b_dec", &self.b_dec),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let mut tensors = tensors;
        if let Some(k) = self.top_k {
            tensors.insert("top_k".into(), Tensor::new(&[k as u32], &HOST)?);
        }
        // candle's error would not name the file (a full disk read "I/O error: No space
        // left on device" with no path).
        candle_core::safetensors::save(&tensors, path)
            .map_err(|e| Error::run(format!("cannot write {}: {e}", path.display())))?;
        Ok(())
    }

    /// Load what `save` wrote, with the tensors on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Sae> {
        let mut t = candle_core::safetensors::load(path, device)?;
        let top_k = match t.remove("top_k") {
            Some(k) => Some(k.to_vec1::<u32>()?.first().copied().unwrap_or(0) as usize),
            None => None,
        };
        let mut take = |k: &str| {
            t.remove(k)
                .ok_or_else(|| Error::run(format!("{}: missing tensor `{k}`", path.display())))
        };
        Ok(Sae {
            w_enc: take("w_enc")?,
            b_enc: take("b_enc")?,
            w_dec: take("w_dec")?,
            b_dec: take("b_dec")?,
            top_k,
        })
    }
}

/// Each row divided by its L2 norm.
pub fn normalise_rows(w: &Tensor) -> Result<Tensor> {
    let norms = w
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(w.broadcast_div(&norms)?)
}
