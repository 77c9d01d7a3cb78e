//! The SAE's parameters as flat row-major buffers, the representation the training loop
//! updates in place. Latent-major layout for both matrices (row j = latent j), so the
//! sparse gradient of a latent is one contiguous row.

use super::model::Sae;
use crate::device::HOST;
use crate::Result;
use candle_core::{Device, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct SaeParams {
    pub d_in: usize,
    pub d_sae: usize,
    /// (d_sae, d_in)
    pub w_enc: Vec<f32>,
    /// (d_sae)
    pub b_enc: Vec<f32>,
    /// (d_sae, d_in), unit-norm rows
    pub w_dec: Vec<f32>,
    /// (d_in)
    pub b_dec: Vec<f32>,
}

impl SaeParams {
    pub fn from_sae(sae: &Sae) -> Result<SaeParams> {
        Ok(SaeParams {
            d_in: sae.d_in(),
            d_sae: sae.d_sae(),
            w_enc: sae.w_enc.flatten_all()?.to_vec1()?,
            b_enc: sae.b_enc.to_vec1()?,
            w_dec: sae.w_dec.flatten_all()?.to_vec1()?,
            b_dec: sae.b_dec.to_vec1()?,
        })
    }

    pub fn to_sae(&self) -> Result<Sae> {
        self.to_sae_on(&HOST)
    }

    /// As `to_sae`, with the tensors copied to `dev`.
    pub fn to_sae_on(&self, dev: &Device) -> Result<Sae> {
        Ok(Sae {
            w_enc: Tensor::from_slice(&self.w_enc, (self.d_sae, self.d_in), dev)?,
            b_enc: Tensor::from_slice(&self.b_enc, self.d_sae, dev)?,
            w_dec: Tensor::from_slice(&self.w_dec, (self.d_sae, self.d_in), dev)?,
            b_dec: Tensor::from_slice(&self.b_dec, self.d_in, dev)?,
            top_k: None,
        })
    }

    /// Rescale every decoder atom to unit norm.
    pub fn normalise_decoder(&mut self) {
        use rayon::prelude::*;
        self.w_dec
            .par_chunks_mut(self.d_in)
            .for_each(normalise_atom);
    }
}

/// Rescale one decoder atom to unit norm (compiled for each vector ISA).
#[multiversion::multiversion(targets = "simd")]
pub fn normalise_atom(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    row.iter_mut().for_each(|v| *v /= norm);
}
