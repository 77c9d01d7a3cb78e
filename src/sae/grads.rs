//! Loss and gradients of one SAE training step, written out by hand.
//!
//! Loss, per batch of B samples of dimension d:
//!   MSE  = Σ_b ‖x_b − x̂_b‖² / B      (squared error summed over dimensions, averaged over
//!                                     the batch; the same scale as the eval metric `mse`)
//!   L1   = Σ_b Σ_j f_bj / B          (summed over latents, averaged over the batch; f ≥ 0)
//!   loss = MSE + l1 · L1
//! (`mse_scale` = 1/d gives the mean over elements instead, the convention of the original
//! study's code, whose l1 values are therefore d times smaller.)
//! With both terms per sample, l1 does not depend on the activation dimension; this is the
//! convention of the reference figures in the toy issue (l1 = 0.05 recovers the ground
//! truth), of Anthropic's "Towards Monosemanticity" and of SAELens' standard SAE.
//!
//! Three implementations of the same gradients:
//! - `dense_step`: candle tensor ops, five matrix products (checked against candle's
//!   autograd in `tests/sae_gradients.rs`); it runs on any candle device;
//! - `dense_grads`: the same five products on host buffers (`host_matmul`, from the
//!   parameters in place) with each element-wise step one parallel pass;
//! - `sparse_codes` + `SparseGrads`: host buffers. After the dense encoder product,
//!   everything touches only the active (sample, latent) pairs. Once training has made the
//!   codes sparse (L0 of a few tens out of thousands of latents) that removes four of the
//!   five matrix products of the step.
//!
//! None computes ∂loss/∂xc (a sixth product, which autograd needs for b_dec's gradient
//! through xc = x − b_dec): Σ_b ∂loss/∂xc_b = −(Σ_b ∂loss/∂pre_b) · W_enc, a vector–matrix
//! product.
//!
//! `step` (the `StepPath::Fused` path) picks sparse when at most `SPARSE_MAX_DENSITY` of the
//! codes are active, dense otherwise (early in training, when half of the latents fire).
//! The `StepPath::Generic` path (`dense_step_on`) is always dense, on the device it is given.

use super::model::Sae;
use super::params::SaeParams;
use crate::host_matmul::{matmul, Dst, Mat};
use crate::Result;
use candle_core::{DType, Device, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;
use std::cell::RefCell;

/// Above this fraction of active codes the dense path is faster.
pub const SPARSE_MAX_DENSITY: f64 = 0.2;

/// Gradients, same layout as `SaeParams`.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct BatchStats {
    pub mse: f64,
    pub l1_term: f64,
    /// Mean active latents per sample.
    pub l0: f64,
}

/// Loss terms and gradients of a batch, as tensors (the dense reference).
pub struct DenseStep {
    pub mse: Tensor,
    pub l1_term: Tensor,
    /// Active-latent indicator (batch, d_sae) as f32.
    pub active: Tensor,
    /// Gradients in the order w_enc, b_enc, w_dec, b_dec.
    pub grads: [Tensor; 4],
}

/// Forward pass and gradients of a ReLU-L1 SAE with candle tensor ops.
pub fn dense_step(sae: &Sae, x: &Tensor, l1: f64, mse_scale: f64) -> Result<DenseStep> {
    dense_step_with(sae, x, Activation::ReluL1(l1), mse_scale)
}

/// Forward pass and gradients with candle tensor ops, for either activation: TopK is the
/// ReLU step with the codes outside the top k masked out and no L1 term.
pub fn dense_step_with(
    sae: &Sae,
    x: &Tensor,
    activation: Activation,
    mse_scale: f64,
) -> Result<DenseStep> {
    let b = x.dim(0)?;
    let xc = x.broadcast_sub(&sae.b_dec)?;
    let pre = xc.matmul(&sae.w_enc.t()?)?.broadcast_add(&sae.b_enc)?;
    let positive = pre.gt(0f64)?.to_dtype(DType::F32)?;
    let (active, f, l1) = match activation {
        Activation::ReluL1(l1) => (positive, pre.relu()?, l1),
        Activation::TopK(k) => {
            let active = (top_k_mask(&pre, k)? * positive)?;
            let f = (pre.relu()? * &active)?;
            (active, f, 0.0)
        }
    };
    let err = (f.matmul(&sae.w_dec)?.broadcast_add(&sae.b_dec)? - x)?;
    let mse = (err.sqr()?.sum_all()? * (mse_scale / b as f64))?;
    let l1_term = (f.sum_all()? / b as f64)?;

    let g = (err * (2.0 * mse_scale / b as f64))?; // ∂loss/∂x̂
    let d_w_dec = f.t()?.matmul(&g)?;
    let d_f = (g.matmul(&sae.w_dec.t()?)? + l1 / b as f64)?;
    let h = (d_f * &active)?; // ∂loss/∂pre
    let d_b_enc = h.sum(0)?;
    let d_w_enc = h.t()?.matmul(&xc)?;
    // b_dec enters through x̂ directly and through xc = x − b_dec.
    let d_b_dec = (g.sum(0)? - d_b_enc.unsqueeze(0)?.matmul(&sae.w_enc)?.squeeze(0)?)?;
    Ok(DenseStep {
        mse,
        l1_term,
        active,
        grads: [d_w_enc, d_b_enc, d_w_dec, d_b_dec],
    })
}

/// 1 at the k largest entries of each row of `pre` (b, n), 0 elsewhere, as f32.
///
/// Ones scattered at the first k indices of a descending sort rather than a comparison with
/// each row's k-th value: equal pre-activations (two latents resampled towards the same
/// input) must not select more than k codes. Which of tied codes wins is arbitrary, as in
/// `top_k`. candle's CUDA `arg_sort_last_dim` sorts a whole row in shared memory (4 bytes
/// per column, padded to a power of two, within the default 48 KiB), so wider rows on a
/// device go through the host (`top_k_mask_host`).
fn top_k_mask(pre: &Tensor, k: usize) -> Result<Tensor> {
    let (b, n) = pre.dims2()?;
    let k = k.min(n);
    let dev = pre.device();
    if !dev.is_cpu() && n > DEVICE_SORT_MAX_COLS {
        return top_k_mask_host(pre, k);
    }
    let top = pre
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k)?
        .contiguous()?;
    let ones = Tensor::ones((b, k), DType::F32, dev)?;
    Ok(Tensor::zeros((b, n), DType::F32, dev)?.scatter_add(&top, &ones, 1)?)
}

/// The widest row candle's CUDA `arg_sort_last_dim` sorts (8192 · 4 bytes fit 48 KiB of
/// shared memory; 16384 · 4 do not).
const DEVICE_SORT_MAX_COLS: usize = 8192;

/// `top_k_mask` by `top_k` on the host, row by row (as `Sae::encode` chooses TopK codes):
/// 1 at the k largest positive entries. Only positive entries matter, since the mask is
/// multiplied by `pre > 0`.
fn top_k_mask_host(pre: &Tensor, k: usize) -> Result<Tensor> {
    let (b, n) = pre.dims2()?;
    let mut mask = vec![0f32; b * n];
    for (row, out) in pre.to_vec2::<f32>()?.iter().zip(mask.chunks_mut(n)) {
        for (j, _) in top_k(row, k) {
            out[j as usize] = 1.0;
        }
    }
    Ok(Tensor::from_vec(mask, (b, n), pre.device())?)
}

/// An active (sample, latent) pair: the latent (or, grouped by latent, the sample) and the
/// code f.
pub type Code = (u32, f32);

/// Reusable buffers of the training loop.
#[derive(Default)]
pub struct Scratch {
    /// The batch minus the decoder bias, (B, d_in).
    xc: Vec<f32>,
    /// Encoder pre-activations, (B, d_sae); the dense path turns them into codes in place.
    pre: Vec<f32>,
    /// The dense path's ∂loss/∂pre, (B, d_sae).
    d_pre: Vec<f32>,
    /// The dense path's ∂loss/∂x̂, (B, d_in).
    g: Vec<f32>,
    /// The sparse path's ∂loss/∂x̂ and `xc`, side by side per sample, (B, 2·d_in): a
    /// latent's gradient rows read both rows of each of its active samples, so each sample
    /// is one stretch of memory.
    gx: Vec<f32>,
    /// Active pairs grouped by latent: (sample, f); latent j's are
    /// `by_latent[offsets[j]..offsets[j + 1]]`.
    by_latent: Vec<Code>,
    offsets: Vec<usize>,
    /// The counting sort's write positions.
    cursor: Vec<usize>,
    /// The sparse path's codes per block of `CODE_BLOCK` samples.
    row_codes: Vec<RowCodes>,
}

/// Samples per block of `RowCodes`.
const CODE_BLOCK: usize = 64;

/// The active codes of a block of samples, row after row.
#[derive(Default)]
struct RowCodes {
    codes: Vec<Code>,
    /// Where each row's codes end in `codes`.
    ends: Vec<usize>,
    /// Each row's sum of codes (its L1 term).
    l1_sums: Vec<f64>,
}

impl RowCodes {
    /// Each row's codes, in row order.
    fn rows(&self) -> impl Iterator<Item = &[Code]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.codes[start..end])
    }
}

/// What `encode` left in the scratch buffers for the step to continue from.
pub(crate) enum Codes<'a> {
    /// Too many active codes for the sparse path: `dense_grads` continues from the
    /// pre-activations in the scratch buffers with this batch and loss.
    Dense(BatchLoss<'a>),
    /// The sparse path's per-latent lists and ∂loss/∂x̂ are in the scratch buffers;
    /// `SparseGrads` makes the gradients from them latent by latent.
    Sparse(SparseCodes),
}

/// What the sparse path knows once the codes are chosen.
pub(crate) struct SparseCodes {
    pub stats: BatchStats,
    /// ∂(l1 · L1)/∂f of an active code.
    pub l1_grad: f32,
}

/// How codes are chosen from pre-activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// f = ReLU(pre), trained with an L1 penalty of this coefficient.
    ReluL1(f64),
    /// f = the k largest positive pre-activations, the rest 0 (no L1 penalty).
    TopK(usize),
}

/// Where the gradients of a training step are computed. Either way they land in host
/// `Grads`, where Adam and the decoder renormalisation run.
#[derive(Debug, Clone)]
pub enum StepPath {
    /// `step`: host buffers, sparse once the codes are.
    Fused,
    /// `dense_step_on` this device, then `DenseStep::to_host`.
    Generic(Device),
}

impl StepPath {
    /// The fused path needs host memory; any other device gets the generic one.
    pub fn for_device(device: &Device) -> StepPath {
        if device.is_cpu() {
            StepPath::Fused
        } else {
            StepPath::Generic(device.clone())
        }
    }
}

/// Gradients of the batch `x` (B × d_in, row-major) into `grads`; adds each latent's
/// number of activations to `fired`.
pub fn step(
    p: &SaeParams,
    x: &[f32],
    activation: Activation,
    mse_scale: f64,
    grads: &mut Grads,
    fired: &mut [u64],
    scratch: &mut Scratch,
) -> Result<BatchStats> {
    match encode(p, x, activation, mse_scale, fired, scratch)? {
        Codes::Dense(loss) => Ok(dense_grads(loss, grads, fired, scratch)),
        Codes::Sparse(codes) => {
            let (d, n) = (p.d_in, p.d_sae);
            grads.w_enc.resize(n * d, 0.0);
            grads.w_dec.resize(n * d, 0.0);
            grads.b_enc.resize(n, 0.0);
            let rows = SparseGrads::new(d, &codes, scratch);
            let chunk = LATENT_CHUNK * d;
            let parts: Vec<Vec<f32>> = grads
                .w_dec
                .par_chunks_mut(chunk)
                .zip(grads.w_enc.par_chunks_mut(chunk))
                .zip(grads.b_enc.par_chunks_mut(LATENT_CHUNK))
                .enumerate()
                .map(|(c, ((dw_dec, dw_enc), db_enc))| {
                    let mut part = vec![0f32; d];
                    let latents = dw_dec.chunks_mut(d).zip(dw_enc.chunks_mut(d));
                    for (i, ((dw_dec, dw_enc), db)) in latents.zip(db_enc).enumerate() {
                        let j = c * LATENT_CHUNK + i;
                        let atom = &p.w_dec[j * d..][..d];
                        *db = rows.latent(j, atom, dw_dec, dw_enc);
                        add_encoder_part(&mut part, *db, &p.w_enc[j * d..][..d]);
                    }
                    part
                })
                .collect();
            rows.decoder_bias(&parts, &mut grads.b_dec);
            Ok(codes.stats)
        }
    }
}

/// The encoder product and the choice of codes: for the sparse path also the reconstruction
/// error, the active pairs grouped by latent, the bias gradients and the firing counts
/// (added to `fired`); for the dense path nothing beyond the choice.
pub(crate) fn encode<'a>(
    p: &'a SaeParams,
    x: &'a [f32],
    activation: Activation,
    mse_scale: f64,
    fired: &mut [u64],
    scratch: &mut Scratch,
) -> Result<Codes<'a>> {
    let encoder = EncoderSlices {
        w_enc: &p.w_enc,
        b_enc: &p.b_enc,
        b_dec: &p.b_dec,
    };
    let active = encoder_pre(encoder, x, &mut scratch.xc, &mut scratch.pre);
    let pre = std::mem::take(&mut scratch.pre);
    let l1 = match activation {
        Activation::ReluL1(l1) => l1,
        Activation::TopK(_) => 0.0,
    };
    let loss = BatchLoss {
        p,
        x,
        l1,
        mse_scale,
    };
    let codes = match activation {
        Activation::ReluL1(_) => {
            if active as f64 > SPARSE_MAX_DENSITY * pre.len() as f64 {
                Codes::Dense(loss)
            } else {
                let codes = |row: &[f32], out: &mut Vec<Code>| {
                    let active = row.iter().enumerate().filter(|(_, v)| **v > 0.0);
                    out.extend(active.map(|(j, &v)| (j as u32, v)));
                };
                Codes::Sparse(sparse_codes(loss, &pre, codes, fired, scratch))
            }
        }
        Activation::TopK(k) => Codes::Sparse(sparse_codes(
            loss,
            &pre,
            |row, out| top_k_into(row, k, out),
            fired,
            scratch,
        )),
    };
    scratch.pre = pre;
    Ok(codes)
}

/// A batch and its loss: what both host gradient paths start from.
#[derive(Clone, Copy)]
pub(crate) struct BatchLoss<'a> {
    pub p: &'a SaeParams,
    /// (B, d_in), row-major.
    pub x: &'a [f32],
    pub l1: f64,
    pub mse_scale: f64,
}

impl BatchLoss<'_> {
    fn batch(&self) -> usize {
        self.x.len() / self.p.d_in
    }

    /// ∂loss/∂x̂ = (x̂ − x) times this.
    fn g_scale(&self) -> f32 {
        (2.0 * self.mse_scale / self.batch() as f64) as f32
    }

    /// ∂(l1 · L1)/∂f of an active code.
    fn l1_grad(&self) -> f32 {
        (self.l1 / self.batch() as f64) as f32
    }

    /// The batch statistics from the summed squared errors, L1 terms and active codes.
    fn stats(&self, squared_errors: f64, l1_sum: f64, active: u64) -> BatchStats {
        let b = self.batch() as f64;
        BatchStats {
            mse: squared_errors * self.mse_scale / b,
            l1_term: l1_sum / b,
            l0: active as f64 / b,
        }
    }
}

/// The encoder's host buffers, row-major: W_enc (d_sae × d_in), b_enc (d_sae), and the
/// b_dec (d_in) it subtracts from its input.
#[derive(Clone, Copy)]
pub(crate) struct EncoderSlices<'a> {
    pub w_enc: &'a [f32],
    pub b_enc: &'a [f32],
    pub b_dec: &'a [f32],
}

/// Encoder pre-activations `(x − b_dec) · W_encᵀ + b_enc` of the rows of `x` into `pre`,
/// with `x − b_dec` left in `xc` (both resized); returns how many are positive. The product
/// goes straight from the parameter buffers into `pre` (`host_matmul`): wrapping the buffers
/// in tensors would copy the whole encoder every step.
pub(crate) fn encoder_pre(
    e: EncoderSlices,
    x: &[f32],
    xc: &mut Vec<f32>,
    pre: &mut Vec<f32>,
) -> usize {
    let (d, n) = (e.b_dec.len(), e.b_enc.len());
    let b = x.len() / d;
    xc.clear();
    xc.extend(
        x.chunks(d)
            .flat_map(|row| row.iter().zip(e.b_dec).map(|(v, c)| v - c)),
    );
    pre.resize(b * n, 0.0);
    let w_enc_t = Mat::row_major(e.w_enc, n, d).t();
    matmul(pre, Mat::row_major(xc, b, d), w_enc_t, Dst::Overwrite);
    pre.par_chunks_mut(n)
        .map(|row| add_bias_count_positive(row, e.b_enc))
        .sum()
}

/// row += bias; returns how many entries are then positive (the active codes of a ReLU),
/// counted in the same pass so the step does not read the pre-activations again for it.
#[multiversion(targets = "simd")]
fn add_bias_count_positive(row: &mut [f32], bias: &[f32]) -> usize {
    row.iter_mut()
        .zip(bias)
        .map(|(v, c)| {
            *v += c;
            (*v > 0.0) as usize
        })
        .sum()
}

/// The dense path's gradients into `grads`, continuing from the pre-activations and `xc`
/// that `encoder_pre` left in `s`; adds the firing counts to `fired`. Every sum runs in an
/// order fixed by the shapes (products by `gemm`, which splits its output, not its inner
/// dimension, between threads; column sums row by row), so the result does not depend on
/// the number of threads.
pub(crate) fn dense_grads(
    loss: BatchLoss,
    grads: &mut Grads,
    fired: &mut [u64],
    s: &mut Scratch,
) -> BatchStats {
    let BatchLoss { p, x, .. } = loss;
    let (d, n, b) = (p.d_in, p.d_sae, loss.batch());
    let (g_scale, l1_grad) = (loss.g_scale(), loss.l1_grad());

    // f = ReLU(pre), in place, and each sample's L1 sum.
    let l1_sums: Vec<f64> = s.pre.par_chunks_mut(n).map(relu_in_place_sum).collect();
    let f = Mat::row_major(&s.pre, b, n);
    let w_dec = Mat::row_major(&p.w_dec, n, d);

    // g = ∂loss/∂x̂ = (f·W_dec + b_dec − x)·g_scale, with each sample's squared error.
    s.g.resize(b * d, 0.0);
    matmul(&mut s.g, f, w_dec, Dst::Overwrite);
    let squared_errors: Vec<f64> =
        s.g.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .map(|(g_row, x_row)| error_gradient(g_row, &p.b_dec, x_row, g_scale))
            .collect();
    let g = Mat::row_major(&s.g, b, d);

    // ∂loss/∂W_dec = fᵀ·g.
    grads.w_dec.resize(n * d, 0.0);
    matmul(&mut grads.w_dec, f.t(), g, Dst::Overwrite);

    // ∂loss/∂pre = (g·W_decᵀ + l1/B) where f > 0, else 0.
    s.d_pre.resize(b * n, 0.0);
    matmul(&mut s.d_pre, g, w_dec.t(), Dst::Overwrite);
    s.d_pre
        .par_chunks_mut(n)
        .zip(s.pre.par_chunks(n))
        .for_each(|(h_row, f_row)| mask_code_gradient(h_row, f_row, l1_grad));

    // ∂loss/∂W_enc = (∂loss/∂pre)ᵀ·xc.
    grads.w_enc.resize(n * d, 0.0);
    let h = Mat::row_major(&s.d_pre, b, n);
    matmul(
        &mut grads.w_enc,
        h.t(),
        Mat::row_major(&s.xc, b, d),
        Dst::Overwrite,
    );

    // ∂loss/∂b_enc and the firing counts: column sums, each column summed over the samples
    // in order, blocks of columns in parallel.
    const COLUMNS: usize = 64;
    let (d_pre, codes) = (&s.d_pre, &s.pre);
    grads.b_enc.resize(n, 0.0);
    let active: u64 = grads
        .b_enc
        .par_chunks_mut(COLUMNS)
        .zip(fired.par_chunks_mut(COLUMNS))
        .enumerate()
        .map(|(c, (db, fired))| {
            let first = c * COLUMNS;
            let mut counts = [0u32; COLUMNS];
            let counts = &mut counts[..db.len()];
            db.fill(0.0);
            for (h_row, f_row) in d_pre.chunks(n).zip(codes.chunks(n)) {
                let (h_row, f_row) = (&h_row[first..][..db.len()], &f_row[first..][..db.len()]);
                add_column_block(db, counts, h_row, f_row);
            }
            fired
                .iter_mut()
                .zip(&*counts)
                .for_each(|(f, c)| *f += *c as u64);
            counts.iter().map(|&c| c as u64).sum::<u64>()
        })
        .sum();
    let parts: Vec<Vec<f32>> = grads
        .b_enc
        .par_chunks(LATENT_CHUNK)
        .zip(p.w_enc.par_chunks(LATENT_CHUNK * d))
        .map(|(db_enc, w_enc)| {
            let mut part = vec![0f32; d];
            for (&db, w_enc_row) in db_enc.iter().zip(w_enc.chunks(d)) {
                add_encoder_part(&mut part, db, w_enc_row);
            }
            part
        })
        .collect();
    decoder_bias_grad(s.g.chunks(d), &parts, d, &mut grads.b_dec);

    loss.stats(squared_errors.iter().sum(), l1_sums.iter().sum(), active)
}

/// ReLU in place; returns the row's sum (the L1 term) in f64, over 8 partial sums so the
/// loop vectorises.
#[multiversion(targets = "simd")]
fn relu_in_place_sum(row: &mut [f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            c[i] = c[i].max(0.0);
            acc[i] += c[i] as f64;
        }
    }
    let tail: f64 = chunks
        .into_remainder()
        .iter_mut()
        .map(|v| {
            *v = v.max(0.0);
            *v as f64
        })
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// One sample's reconstruction error: `g_row` holds x̂ − b_dec on entry and
/// (x̂ − x)·g_scale on return; returns ‖x̂ − x‖² in f64 (8 partial sums).
#[multiversion(targets = "simd")]
fn error_gradient(g_row: &mut [f32], b_dec: &[f32], x_row: &[f32], g_scale: f32) -> f64 {
    let mut acc = [0f64; 8];
    let (mut g8, b8, x8) = (
        g_row.chunks_exact_mut(8),
        b_dec.chunks_exact(8),
        x_row.chunks_exact(8),
    );
    let (b_tail, x_tail) = (b8.remainder(), x8.remainder());
    for ((g, c), x) in (&mut g8).zip(b8).zip(x8) {
        for i in 0..8 {
            let err = g[i] + c[i] - x[i];
            acc[i] += err as f64 * err as f64;
            g[i] = err * g_scale;
        }
    }
    let mut tail = 0f64;
    for ((g, c), x) in g8.into_remainder().iter_mut().zip(b_tail).zip(x_tail) {
        let err = *g + c - x;
        tail += err as f64 * err as f64;
        *g = err * g_scale;
    }
    acc.iter().sum::<f64>() + tail
}

/// ∂loss/∂pre from ∂loss/∂f (in `h_row`, overwritten): `+ l1_grad` where the code is
/// active, 0 elsewhere.
#[multiversion(targets = "simd")]
fn mask_code_gradient(h_row: &mut [f32], f_row: &[f32], l1_grad: f32) {
    for (h, f) in h_row.iter_mut().zip(f_row) {
        *h = if *f > 0.0 { *h + l1_grad } else { 0.0 };
    }
}

/// One sample's share of a block of column sums: ∂loss/∂pre into `db`, active codes into
/// `counts`.
#[multiversion(targets = "simd")]
fn add_column_block(db: &mut [f32], counts: &mut [u32], h_row: &[f32], f_row: &[f32]) {
    for (((a, count), h), f) in db.iter_mut().zip(counts).zip(h_row).zip(f_row) {
        *a += h;
        *count += (*f > 0.0) as u32;
    }
}

/// Latents per part of b_dec's gradient through the encoder. Both host paths sum one part
/// per chunk of this many latents, then the parts in chunk order: a size fixed here (not by
/// the number of threads) keeps the order of the sum, and so its bits, the same on any
/// machine. The sparse path makes each part while its latents' rows are in cache.
pub(crate) const LATENT_CHUNK: usize = 16;

/// Adds latent j's term of b_dec's gradient through the encoder, −∂loss/∂b_enc[j] ·
/// W_enc[j], to `part` (nothing for a latent no sample used).
pub(crate) fn add_encoder_part(part: &mut [f32], db_enc: f32, w_enc_row: &[f32]) {
    if db_enc != 0.0 {
        axpy(part, -db_enc, w_enc_row);
    }
}

/// ∂loss/∂b_dec = Σ_b g_b − Σ_j ∂loss/∂b_enc[j] · W_enc[j]  (b_dec is subtracted before
/// encoding, so it also acts through every active latent's pre-activation), into `out`;
/// `parts` are the second sum's parts per `LATENT_CHUNK` latents, in order.
fn decoder_bias_grad<'g>(
    g_rows: impl Iterator<Item = &'g [f32]>,
    parts: &[Vec<f32>],
    d: usize,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(d, 0.0);
    for g_row in g_rows {
        axpy(out, 1.0, g_row);
    }
    for part in parts {
        axpy(out, 1.0, part);
    }
}

/// The k largest positive entries of `row` as (index, value), in index order; of equal
/// values at the k-th place, those of the lowest indices.
pub fn top_k(row: &[f32], k: usize) -> Vec<Code> {
    let mut out = Vec::with_capacity(k);
    top_k_into(row, k, &mut out);
    out
}

/// `top_k`, appended to `out`. Selects the k-th largest value among a copy of the positive
/// values (comparing values in place, not indices through the row), then keeps what is
/// above it and, in index order, enough of what equals it in one scan of the row.
pub fn top_k_into(row: &[f32], k: usize, out: &mut Vec<Code>) {
    thread_local! {
        /// The positive values of the row being selected from (a buffer per thread: a fresh
        /// one per row, grown as it filled, was a sixth of a TopK step).
        static VALUES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    VALUES.with_borrow_mut(|values| top_k_with(row, k, out, values));
}

fn top_k_with(row: &[f32], k: usize, out: &mut Vec<Code>, values: &mut Vec<f32>) {
    if k == 0 {
        return;
    }
    // The positive values, compacted without a branch per entry.
    values.resize(row.len(), 0.0);
    let mut count = 0;
    for &v in row {
        values[count] = v;
        count += (v > 0.0) as usize;
    }
    let values = &mut values[..count];
    if values.len() <= k {
        let positive = |(j, &v): (usize, &f32)| (v > 0.0).then_some((j as u32, v));
        out.extend(row.iter().enumerate().filter_map(positive));
        return;
    }
    let (larger, &mut kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let mut ties = k - larger.iter().filter(|v| **v > kth).count();
    out.extend(row.iter().enumerate().filter_map(|(j, &v)| {
        let keep = v > kth || (v == kth && ties > 0);
        if v == kth && keep {
            ties -= 1;
        }
        keep.then_some((j as u32, v))
    }));
}

/// `dense_step_with` on `device` from host buffers: the parameters and the batch
/// (B × d_in, row-major) are copied there. `DenseStep::to_host` brings the results back.
pub fn dense_step_on(
    p: &SaeParams,
    x: &[f32],
    activation: Activation,
    mse_scale: f64,
    device: &Device,
) -> Result<DenseStep> {
    let xt = Tensor::from_slice(x, (x.len() / p.d_in, p.d_in), device)?;
    dense_step_with(&p.to_sae_on(device)?, &xt, activation, mse_scale)
}

impl DenseStep {
    /// As `step` does: the gradients into host `grads`, each latent's number of activations
    /// added to `fired`, and the batch statistics.
    pub fn to_host(&self, grads: &mut Grads, fired: &mut [u64]) -> Result<BatchStats> {
        let b = self.active.dim(0)?;
        let [w_enc, b_enc, w_dec, b_dec] = &self.grads;
        grads.w_enc = w_enc.flatten_all()?.to_vec1()?;
        grads.b_enc = b_enc.to_vec1()?;
        grads.w_dec = w_dec.flatten_all()?.to_vec1()?;
        grads.b_dec = b_dec.to_vec1()?;
        let counts: Vec<f32> = self.active.sum(0)?.to_vec1()?;
        fired
            .iter_mut()
            .zip(&counts)
            .for_each(|(f, c)| *f += *c as u64);
        Ok(BatchStats {
            mse: self.mse.to_scalar::<f32>()? as f64,
            l1_term: self.l1_term.to_scalar::<f32>()? as f64,
            l0: counts.iter().map(|&c| c as f64).sum::<f64>() / b as f64,
        })
    }
}

/// y += a·x, compiled for each vector ISA (zipped iterators, no indexing, so it vectorises;
/// the same bits on each ISA: no contraction into fused multiply-adds).
#[multiversion(targets = "simd")]
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// Dot product with 8 independent partial sums: a plain `sum()` is a strict sequential
/// float reduction that the compiler may not vectorise, and this is the sparse step's
/// innermost loop (one per active code).
#[multiversion(targets = "simd")]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The sparse path up to the gradients: `select` appends a row's active codes. Leaves in
/// `s` the scaled reconstruction error beside `xc` (`gx`) and the active pairs grouped by
/// latent; adds the firing counts to `fired`.
fn sparse_codes(
    loss: BatchLoss,
    pre: &[f32],
    select: impl Fn(&[f32], &mut Vec<Code>) + Sync,
    fired: &mut [u64],
    s: &mut Scratch,
) -> SparseCodes {
    let p = loss.p;
    let (d, n, b) = (p.d_in, p.d_sae, loss.batch());
    let (g_scale, l1_grad) = (loss.g_scale(), loss.l1_grad());

    // Per sample: its active latents and the sum of their codes (the L1 term), into
    // buffers per block of samples that live in the scratch space: a vector per sample,
    // allocated afresh each step, cost page faults every step.
    let blocks = b.div_ceil(CODE_BLOCK);
    s.row_codes.resize_with(blocks, RowCodes::default);
    pre.par_chunks(CODE_BLOCK * n)
        .zip(&mut s.row_codes[..blocks])
        .for_each(|(pre_rows, out)| {
            out.codes.clear();
            out.ends.clear();
            out.l1_sums.clear();
            for pre_row in pre_rows.chunks(n) {
                let first = out.codes.len();
                select(pre_row, &mut out.codes);
                let codes = &out.codes[first..];
                out.l1_sums
                    .push(codes.iter().map(|c| c.1 as f64).fold(0.0, |a, v| a + v));
                out.ends.push(out.codes.len());
            }
        });
    let row_codes = &s.row_codes[..blocks];
    let active: usize = row_codes.iter().map(|r| r.codes.len()).sum();

    // Regroup the active pairs by latent (counting sort; within a latent by sample), so
    // that each decoder atom is read once per block of samples, not once per pair, and each
    // latent's gradient rows are written by one thread.
    s.offsets.clear();
    s.offsets.resize(n + 1, 0);
    for &(j, _) in row_codes.iter().flat_map(|r| &r.codes) {
        s.offsets[j as usize + 1] += 1;
    }
    for (j, fired) in fired.iter_mut().enumerate() {
        s.offsets[j + 1] += s.offsets[j];
        *fired += (s.offsets[j + 1] - s.offsets[j]) as u64;
    }
    s.by_latent.resize(active, (0, 0.0));
    s.cursor.clone_from(&s.offsets);
    for (bi, codes) in row_codes.iter().flat_map(RowCodes::rows).enumerate() {
        for &(j, f) in codes {
            s.by_latent[s.cursor[j as usize]] = (bi as u32, f);
            s.cursor[j as usize] += 1;
        }
    }

    // ∂loss/∂x̂ = g = (x̂ − x)·g_scale, per block of samples: the block's rows of g stay in
    // cache while the atoms stream past in latent order. Each sample still adds its codes'
    // atoms in increasing latent order, so the sums are those of a per-sample loop.
    let block = b.div_ceil(rayon::current_num_threads()).clamp(1, 512);
    s.gx.resize(b * 2 * d, 0.0);
    let (by_latent, offsets) = (&s.by_latent, &s.offsets);
    let squared_errors: Vec<f64> =
        s.gx.par_chunks_mut(block * 2 * d)
            .zip(s.xc.par_chunks(block * d))
            .enumerate()
            .flat_map_iter(|(c, (gx_block, xc_block))| {
                let (first, end) = (c * block, c * block + xc_block.len() / d);
                for (gx_row, xc_row) in gx_block.chunks_mut(2 * d).zip(xc_block.chunks(d)) {
                    let (g_row, xc_copy) = gx_row.split_at_mut(d);
                    g_row.iter_mut().zip(xc_row).for_each(|(g, xc)| *g = -xc);
                    xc_copy.copy_from_slice(xc_row);
                }
                for j in 0..n {
                    let pairs = &by_latent[offsets[j]..offsets[j + 1]];
                    let lo = pairs.partition_point(|e| (e.0 as usize) < first);
                    let hi = lo + pairs[lo..].partition_point(|e| (e.0 as usize) < end);
                    if lo == hi {
                        continue;
                    }
                    let atom = &p.w_dec[j * d..(j + 1) * d];
                    for &(bi, f) in &pairs[lo..hi] {
                        let g_row = &mut gx_block[(bi as usize - first) * 2 * d..][..d];
                        axpy(g_row, f, atom);
                    }
                }
                gx_block
                    .chunks_mut(2 * d)
                    .map(|gx_row| {
                        let g_row = &mut gx_row[..d];
                        let sq: f64 = g_row.iter().map(|v| (*v as f64) * (*v as f64)).sum();
                        g_row.iter_mut().for_each(|v| *v *= g_scale);
                        sq
                    })
                    .collect::<Vec<f64>>()
            })
            .collect();

    let l1_sum: f64 = row_codes.iter().flat_map(|r| &r.l1_sums).sum();
    SparseCodes {
        stats: loss.stats(squared_errors.iter().sum(), l1_sum, active as u64),
        l1_grad,
    }
}

/// The sparse path's gradients, one latent at a time, from what `sparse_codes` left in the
/// scratch buffers. Each latent reads its active samples' rows of ∂loss/∂x̂ once: for
/// ∂loss/∂pre (a dot product with its atom) and, while the row is in cache, for its
/// decoder row's gradient.
pub(crate) struct SparseGrads<'s> {
    d: usize,
    l1_grad: f32,
    scratch: &'s Scratch,
}

impl<'s> SparseGrads<'s> {
    pub fn new(d: usize, codes: &SparseCodes, scratch: &'s Scratch) -> SparseGrads<'s> {
        SparseGrads {
            d,
            l1_grad: codes.l1_grad,
            scratch,
        }
    }

    /// Whether no sample in the batch used latent `j` (its gradients are zero).
    pub fn unused(&self, j: usize) -> bool {
        self.scratch.offsets[j] == self.scratch.offsets[j + 1]
    }

    /// Latent j's rows of ∂loss/∂W_dec and ∂loss/∂W_enc (each `d` wide, overwritten) and
    /// ∂loss/∂b_enc[j], given its decoder atom as the batch's codes were decoded with.
    /// ∂loss/∂pre = g·W_dec[j] + l1/B for each active sample, summed in sample order.
    pub fn latent(&self, j: usize, atom: &[f32], dw_dec: &mut [f32], dw_enc: &mut [f32]) -> f32 {
        let s = self.scratch;
        dw_dec.fill(0.0);
        dw_enc.fill(0.0);
        let mut db_enc = 0f32;
        let pairs = &s.by_latent[s.offsets[j]..s.offsets[j + 1]];
        for &(bi, f) in pairs {
            db_enc += self.add_pair(bi as usize, f, atom, dw_dec, dw_enc);
        }
        db_enc
    }

    /// One active (sample, latent) pair's terms, added to the latent's gradient rows;
    /// returns its ∂loss/∂pre (= g·atom + l1/B), the pair's term of ∂loss/∂b_enc. The one
    /// body of `latent` and `group`, so that both make the same bits.
    fn add_pair(
        &self,
        sample: usize,
        f: f32,
        atom: &[f32],
        dw_dec: &mut [f32],
        dw_enc: &mut [f32],
    ) -> f32 {
        let d = self.d;
        let (g_row, xc_row) = self.scratch.gx[sample * 2 * d..][..2 * d].split_at(d);
        let h = dot(g_row, atom) + self.l1_grad;
        axpy(dw_dec, f, g_row);
        axpy(dw_enc, h, xc_row);
        h
    }

    /// `latent` for the latents `j0 .. j0 + atoms.len() / d` at once: their rows of
    /// ∂loss/∂W_dec and ∂loss/∂W_enc side by side in `rows` (2·d per latent, overwritten)
    /// and ∂loss/∂b_enc in `db_enc`, given their decoder atoms as the batch's codes were
    /// decoded with. The samples are visited in order, each sample's rows of ∂loss/∂x̂ and
    /// x − b_dec read once for all its codes in the group: latent by latent, each sample's
    /// 4·d bytes were read again for every one of its codes, from the last-level cache (the
    /// batch's are 8·d·B bytes). Each latent still sums over its samples in sample order, so
    /// the values are those of `latent`, to the bit.
    pub fn group(&self, j0: usize, atoms: &[f32], rows: &mut [f32], db_enc: &mut [f32]) {
        let (d, s) = (self.d, self.scratch);
        let j1 = j0 + atoms.len() / d;
        rows.fill(0.0);
        db_enc.fill(0.0);
        for (sample, codes) in s.row_codes.iter().flat_map(RowCodes::rows).enumerate() {
            // A row's codes are in latent order (both ways of choosing them scan the row).
            let lo = codes.partition_point(|c| (c.0 as usize) < j0);
            let hi = lo + codes[lo..].partition_point(|c| (c.0 as usize) < j1);
            if lo == hi {
                continue;
            }
            for &(j, f) in &codes[lo..hi] {
                let i = j as usize - j0;
                let (dw_dec, dw_enc) = rows[i * 2 * d..][..2 * d].split_at_mut(d);
                db_enc[i] += self.add_pair(sample, f, &atoms[i * d..][..d], dw_dec, dw_enc);
            }
        }
    }

    /// ∂loss/∂b_dec into `out`, from the parts `add_encoder_part` made per `LATENT_CHUNK`
    /// latents (in chunk order).
    pub fn decoder_bias(&self, parts: &[Vec<f32>], out: &mut Vec<f32>) {
        let d = self.d;
        let g_rows = self.scratch.gx.chunks(2 * d).map(|row| &row[..d]);
        decoder_bias_grad(g_rows, parts, d, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::HOST;

    /// `top_k` against its definition: sort by value (larger first, then lower index) and
    /// keep the first k positive entries, in index order. Rows drawn from a few levels, so
    /// that ties at the k-th place are common, with zeros and negatives.
    #[test]
    fn top_k_keeps_the_largest_and_breaks_ties_by_index() {
        let levels = [-1.0f32, 0.0, 0.5, 1.0, 2.0, 3.5];
        let mut state = 7u64;
        for trial in 0..200 {
            let n = 1 + trial % 37;
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    levels[(state >> 33) as usize % levels.len()]
                })
                .collect();
            for k in [0, 1, 3, n / 2, n, n + 2] {
                let mut order: Vec<usize> = (0..n).filter(|&j| row[j] > 0.0).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                order.truncate(k);
                order.sort_unstable();
                let want: Vec<Code> = order.iter().map(|&j| (j as u32, row[j])).collect();
                assert_eq!(top_k(&row, k), want, "row {row:?}, k {k}");
            }
        }
    }

    /// The host mask (what a GPU uses for rows wider than its sort) selects the same codes
    /// as the sorted one, once both are restricted to positive pre-activations as the step
    /// does. Random normal values have no ties, so the sets must match exactly.
    #[test]
    fn host_top_k_mask_matches_the_sorted_one() -> Result<()> {
        let n = DEVICE_SORT_MAX_COLS + 808;
        let pre = Tensor::randn(0f32, 1.0, (3, n), &HOST)?;
        let positive = pre.gt(0f64)?.to_dtype(DType::F32)?;
        for k in [1, 32, n / 2 + 1, n] {
            let sorted = (top_k_mask(&pre, k)? * &positive)?.to_vec2::<f32>()?;
            let host = top_k_mask_host(&pre, k)?.to_vec2::<f32>()?;
            assert_eq!(sorted, host, "k = {k}");
            let chosen: f32 = host.iter().flatten().sum();
            let positives: f32 = positive.sum_all()?.to_scalar()?;
            assert!(chosen <= (3 * k) as f32 && chosen <= positives, "k = {k}");
            if k == 1 {
                assert_eq!(chosen, 3.0, "one code per row");
            }
        }
        Ok(())
    }
}
