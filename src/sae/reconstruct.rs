//! A batch's reconstruction for evaluation, with the per-latent firing counts that the
//! reconstruction metrics need: the codes are used once and not kept.
//!
//! On the CPU (f32) this works on host buffers: the pre-activations as the training step
//! computes them (`grads::encoder_pre`), then ReLU (or TopK) row by row in parallel. A
//! trained SAE fires a few dozen to a few hundred of its thousands of latents per row, so
//! when at most `SPARSE_MAX_DENSITY` of the codes are active the decoder adds up only the
//! active atoms of each row, instead of a dense product over all latents: at L0 64 of 4096
//! latents that is 1/64 of the arithmetic. Other devices and dtypes compose candle ops (`encode`, `decode`).

use super::grads::{axpy, encoder_pre, top_k, EncoderSlices};
use super::Sae;
use crate::device::HostF32;
use crate::host_matmul::{product, Mat};
use crate::Result;
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// Above this fraction of active codes the decoder is a dense product. A row's sparse sum
/// reads each active atom (d floats) from cache or memory, where the product streams packed
/// panels at near the core's peak. 5% is a cautious guess at the crossover, not a tuned
/// value; a trained SAE sits far below it (L0 64 of 4096 latents is 1.6%).
const SPARSE_MAX_DENSITY: f64 = 0.05;

/// `Sae::reconstruct`'s result.
pub struct Reconstructed {
    /// x̂, (batch, d_in).
    pub x_hat: Tensor,
    /// Per latent, the rows of the batch it was active in, (d_sae) f32 (integers below 2^24,
    /// exact).
    pub fired: Tensor,
}

impl Sae {
    /// The reconstruction of the rows of `x` (batch, d_in) and each latent's firing count.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Reconstructed> {
        let x = x.contiguous()?;
        let (b, d) = x.dims2()?;
        let host = [&x, &self.w_enc, &self.b_enc, &self.w_dec, &self.b_dec].map(HostF32::of);
        let empty = b * d * self.d_sae() == 0;
        if let (false, [Some(x), Some(w_enc), Some(b_enc), Some(w_dec), Some(b_dec)]) =
            (empty, &host)
        {
            let (x_hat, fired) = reconstruct_host(
                Params {
                    encoder: EncoderSlices {
                        w_enc: w_enc.as_slice(),
                        b_enc: b_enc.as_slice(),
                        b_dec: b_dec.as_slice(),
                    },
                    w_dec: w_dec.as_slice(),
                    top_k: self.top_k,
                },
                x.as_slice(),
            );
            let n = fired.len();
            return Ok(Reconstructed {
                x_hat: Tensor::from_vec(x_hat, (b, d), self.b_dec.device())?,
                fired: Tensor::from_vec(fired, n, self.b_dec.device())?,
            });
        }
        let codes = self.encode(&x)?;
        let active = codes.gt(0f64)?.to_dtype(DType::F32)?;
        // A product with a row of ones: candle's column sum of a (batch × latents) tensor
        // runs on one core.
        let ones = Tensor::ones((1, b), DType::F32, x.device())?;
        Ok(Reconstructed {
            x_hat: self.decode(&codes)?,
            fired: ones.matmul(&active)?.squeeze(0)?,
        })
    }
}

/// The SAE's parameters as host slices (row-major, shapes as in `Sae`).
struct Params<'a> {
    encoder: EncoderSlices<'a>,
    w_dec: &'a [f32],
    top_k: Option<usize>,
}

/// (x̂, per-latent firing counts) of the rows of `x`.
fn reconstruct_host(p: Params, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let b_dec = p.encoder.b_dec;
    let (d, n) = (b_dec.len(), p.encoder.b_enc.len());
    let b = x.len() / d;
    let mut codes = Vec::new();
    encoder_pre(p.encoder, x, &mut Vec::new(), &mut codes);
    codes.par_chunks_mut(n).for_each(|row| match p.top_k {
        None => row.iter_mut().for_each(|v| *v = v.max(0.0)),
        Some(k) => {
            let kept = top_k(row, k);
            row.fill(0.0);
            for (j, v) in kept {
                row[j as usize] = v;
            }
        }
    });
    // Integer counts per row block, summed in a fixed order: exact whatever the split.
    let fired = codes
        .par_chunks(n)
        .fold(
            || vec![0u32; n],
            |mut counts, row| {
                for (c, &v) in counts.iter_mut().zip(row) {
                    *c += u32::from(v > 0.0);
                }
                counts
            },
        )
        .reduce(
            || vec![0u32; n],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        );
    let active: u64 = fired.iter().map(|&c| c as u64).sum();
    let x_hat = if active as f64 <= SPARSE_MAX_DENSITY * codes.len() as f64 {
        let mut x_hat = vec![0f32; b * d];
        x_hat
            .par_chunks_mut(d)
            .zip(codes.par_chunks(n))
            .for_each(|(out, row)| {
                out.copy_from_slice(b_dec);
                for (j, &f) in row.iter().enumerate() {
                    if f > 0.0 {
                        axpy(out, f, &p.w_dec[j * d..(j + 1) * d]);
                    }
                }
            });
        x_hat
    } else {
        let mut x_hat = product(Mat::row_major(&codes, b, n), Mat::row_major(p.w_dec, n, d));
        x_hat.par_chunks_mut(d).for_each(|row| {
            row.iter_mut().zip(b_dec).for_each(|(v, c)| *v += c);
        });
        x_hat
    };
    (x_hat, fired.into_iter().map(|c| c as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// x̂ and the firing counts in f64 from plain loops, with the number of (row, latent)
    /// pre-activations too close to zero (or to the k-th largest) for f32 to decide.
    fn reference(sae: &Sae, x: &[Vec<f32>]) -> (Vec<Vec<f64>>, Vec<f64>, Vec<u32>) {
        let w_enc = sae.w_enc.to_vec2::<f32>().unwrap();
        let b_enc = sae.b_enc.to_vec1::<f32>().unwrap();
        let w_dec = sae.w_dec.to_vec2::<f32>().unwrap();
        let b_dec = sae.b_dec.to_vec1::<f32>().unwrap();
        let (n, d) = (w_enc.len(), b_dec.len());
        let (mut fired, mut unsure) = (vec![0f64; n], vec![0u32; n]);
        let x_hat = x
            .iter()
            .map(|row| {
                let mut pre: Vec<f64> = (0..n)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|i| (row[i] as f64 - b_dec[i] as f64) * w_enc[j][i] as f64)
                            .sum();
                        dot + b_enc[j] as f64
                    })
                    .collect();
                let mut threshold = 0.0;
                if let Some(k) = sae.top_k {
                    let mut sorted = pre.clone();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    threshold = sorted[k].max(0.0);
                }
                for (j, v) in pre.iter_mut().enumerate() {
                    if (*v - threshold).abs() < 1e-4 {
                        unsure[j] += 1;
                    }
                    if *v <= threshold {
                        *v = 0.0;
                    } else {
                        fired[j] += 1.0;
                    }
                }
                (0..d)
                    .map(|i| {
                        b_dec[i] as f64 + (0..n).map(|j| pre[j] * w_dec[j][i] as f64).sum::<f64>()
                    })
                    .collect()
            })
            .collect();
        (x_hat, fired, unsure)
    }

    /// The host path (dense and sparse decoder, ReLU and TopK) and the candle path against
    /// `reference`.
    #[test]
    fn reconstruct_matches_f64_loops() -> Result<()> {
        let dev = Device::Cpu;
        let (b, d, n) = (37, 24, 200);
        let x = Tensor::randn(0f32, 1.0, (b, d), &dev)?;
        let xs = x.to_vec2::<f32>()?;
        let b_dec = Tensor::randn(0f32, 0.1, d, &dev)?;
        // Zero encoder bias: about half the codes active (dense decoder); -2: a few
        // percent (sparse decoder); TopK 5 of 200 (sparse).
        for (b_enc, top_k, want_sparse) in
            [(0.0, None, false), (-2.0, None, true), (0.0, Some(5), true)]
        {
            let mut sae = Sae::init(d, n, b_dec.clone(), 3)?;
            sae.b_enc = (Tensor::ones(n, DType::F32, &dev)? * b_enc)?;
            sae.top_k = top_k;
            let (want_x_hat, want_fired, unsure) = reference(&sae, &xs);
            let density = want_fired.iter().sum::<f64>() / (b * n) as f64;
            assert_eq!(
                density <= SPARSE_MAX_DENSITY,
                want_sparse,
                "density {density}"
            );
            // A transposed view of the encoder is not a contiguous host slice: the candle path.
            let mut strided = sae.clone();
            strided.w_enc = sae.w_enc.t()?.contiguous()?.t()?;
            assert!(HostF32::of(&strided.w_enc).is_none());
            for (path, r) in [
                ("host", sae.reconstruct(&x)?),
                ("candle", strided.reconstruct(&x)?),
            ] {
                let got = r.x_hat.to_dtype(DType::F64)?.to_vec2::<f64>()?;
                for (g, w) in got.iter().flatten().zip(want_x_hat.iter().flatten()) {
                    assert!((g - w).abs() < 1e-4, "{path} x̂ {g} vs {w}");
                }
                let fired = r.fired.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                for j in 0..n {
                    assert!(
                        (fired[j] - want_fired[j]).abs() <= unsure[j] as f64,
                        "{path} latent {j} fired {} vs {}",
                        fired[j],
                        want_fired[j]
                    );
                }
            }
        }
        Ok(())
    }
}
