//! One optimisation step: gradients of a batch, the Adam update and the decoder
//! renormalisation, fused into one pass over the parameters when the codes are sparse.
//!
//! Once codes are sparse a step's weight gradients touch only the latents some sample used,
//! yet Adam still moves every parameter (its moments decay) and every decoder atom is
//! renormalised. As separate passes that is several sweeps over the 2·d_sae·d_in weights
//! and their moments (zero the gradient buffers, write the active rows, Adam reads
//! gradients, moments and weights, the renormalisation reads and writes the decoder); at
//! the original study's batch of 256 those sweeps, not the arithmetic, were most of a step.
//! Here each latent's encoder and decoder rows are updated where their gradients are made:
//! the gradient rows of a group of latents live in a per-thread buffer of 2·d_in floats per
//! latent (rows known to be zero are never read), Adam updates the rows and their moments,
//! and the decoder atom is renormalised while it is in cache. Per element the arithmetic is that of
//! `grads::step` + `Adam::step` + `SaeParams::normalise_decoder`, so the result is the same
//! to the bit (`tests/sae_gradients.rs`).

use super::adam::{Adam, AdamStep};
use super::grads::{
    add_encoder_part, dense_grads, dense_step_on, encode, Activation, BatchStats, Codes, Grads,
    Scratch, SparseCodes, SparseGrads, StepPath, LATENT_CHUNK,
};
use super::params::{normalise_atom, SaeParams};
use crate::Result;
use rayon::prelude::*;

/// The parameter buffers in the optimiser's order.
pub const PARAM_NAMES: [&str; 4] = ["w_enc", "b_enc", "w_dec", "b_dec"];

/// The optimiser and the reusable buffers of one training run.
pub struct Stepper {
    pub adam: Adam,
    path: StepPath,
    grads: Grads,
    scratch: Scratch,
}

/// One step's batch and settings.
pub struct Batch<'a> {
    /// (batch, d_in), row-major.
    pub x: &'a [f32],
    pub activation: Activation,
    /// The MSE's scale (1, or 1/d_in for the mean over elements).
    pub mse_scale: f64,
    pub lr: f64,
}

/// What a step reports.
pub struct Stepped {
    pub stats: BatchStats,
    /// The first parameter (in `PARAM_NAMES` order) whose gradient held a NaN or an
    /// infinity; the update has then already spread it.
    pub bad_gradient: Option<&'static str>,
}

impl Stepper {
    pub fn new(p: &SaeParams, beta1: f64, beta2: f64, path: StepPath) -> Stepper {
        let sizes = [p.w_enc.len(), p.b_enc.len(), p.w_dec.len(), p.b_dec.len()];
        Stepper {
            adam: Adam::new(&sizes, beta1, beta2),
            path,
            grads: Grads::default(),
            scratch: Scratch::default(),
        }
    }

    /// Train `p` on `batch`: gradients, Adam, unit-norm decoder atoms. Adds each latent's
    /// number of activations to `fired`.
    pub fn step(&mut self, p: &mut SaeParams, batch: &Batch, fired: &mut [u64]) -> Result<Stepped> {
        let (x, activation, mse_scale) = (batch.x, batch.activation, batch.mse_scale);
        let stats = match &self.path {
            StepPath::Fused => {
                match encode(p, x, activation, mse_scale, fired, &mut self.scratch)? {
                    Codes::Sparse(codes) => return Ok(self.sparse_update(p, codes, batch.lr)),
                    Codes::Dense(loss) => {
                        dense_grads(loss, &mut self.grads, fired, &mut self.scratch)
                    }
                }
            }
            StepPath::Generic(device) => dense_step_on(p, x, activation, mse_scale, device)?
                .to_host(&mut self.grads, fired)?,
        };
        let g = &self.grads;
        let bad = self.adam.step(
            &mut [&mut p.w_enc, &mut p.b_enc, &mut p.w_dec, &mut p.b_dec],
            &[&g.w_enc, &g.b_enc, &g.w_dec, &g.b_dec],
            batch.lr,
        );
        p.normalise_decoder();
        Ok(Stepped {
            stats,
            bad_gradient: bad.map(|i| PARAM_NAMES[i]),
        })
    }

    /// The fused update from the sparse codes `encode` left in the scratch buffers: groups
    /// of latents in parallel (`group_latents`), each group's gradient rows made in one pass
    /// over the samples (`SparseGrads::group`), then each latent's rows applied and
    /// renormalised in turn; then the biases, whose gradients the pass summed.
    fn sparse_update(&mut self, p: &mut SaeParams, codes: SparseCodes, lr: f64) -> Stepped {
        let (d, n) = (p.d_in, p.d_sae);
        let update = self.adam.begin_step(lr);
        let grads = SparseGrads::new(d, &codes, &self.scratch);
        let [(m_enc, v_enc), (m_benc, v_benc), (m_dec, v_dec), (m_bdec, v_bdec)] =
            self.adam.moments_mut()
        else {
            unreachable!("Adam::new was given the four SAE parameter buffers")
        };
        let latents = group_latents(d, n, rayon::current_num_threads());
        let group = latents * d;
        let mut db_enc = vec![0f32; n];
        let encoder = p
            .w_enc
            .par_chunks_mut(group)
            .zip(m_enc.par_chunks_mut(group));
        let encoder = encoder.zip(v_enc.par_chunks_mut(group));
        let decoder = p
            .w_dec
            .par_chunks_mut(group)
            .zip(m_dec.par_chunks_mut(group));
        let decoder = decoder.zip(v_dec.par_chunks_mut(group));
        // Per chunk of `LATENT_CHUNK` latents, in order: its part of b_dec's gradient and
        // whether its encoder / decoder gradients held a NaN or an infinity.
        let parts: Vec<Vec<(Vec<f32>, bool, bool)>> = encoder
            .zip(decoder)
            .zip(db_enc.par_chunks_mut(latents))
            .enumerate()
            .map_init(
                || vec![0f32; latents * 2 * d],
                |rows, (g, ((((w_enc, m_e), v_e), ((w_dec, m_d), v_d)), db_enc))| {
                    let rows = &mut rows[..w_dec.len() * 2];
                    grads.group(g * latents, w_dec, rows, db_enc);
                    let rows = &*rows;
                    let latent_rows = w_enc.chunks_mut(d).zip(m_e.chunks_mut(d));
                    let latent_rows = latent_rows.zip(v_e.chunks_mut(d)).zip(w_dec.chunks_mut(d));
                    let latent_rows = latent_rows.zip(m_d.chunks_mut(d)).zip(v_d.chunks_mut(d));
                    let latent_rows = latent_rows.zip(rows.chunks(2 * d)).zip(&*db_enc);
                    let mut parts = Vec::with_capacity(latents / LATENT_CHUNK);
                    for (i, (((((((w_enc, m_enc), v_enc), w_dec), m_dec), v_dec), grad), &db)) in
                        latent_rows.enumerate()
                    {
                        if i % LATENT_CHUNK == 0 {
                            parts.push((vec![0f32; d], false, false));
                        }
                        let part = parts
                            .last_mut()
                            .expect("pushed at the chunk's first latent");
                        let rows = LatentRows {
                            w_enc,
                            m_enc,
                            v_enc,
                            w_dec,
                            m_dec,
                            v_dec,
                        };
                        let used = !grads.unused(g * latents + i);
                        let (bad_enc, bad_dec) =
                            rows.update(&update, used.then_some((db, grad)), &mut part.0);
                        part.1 |= bad_enc;
                        part.2 |= bad_dec;
                    }
                    parts
                },
            )
            .collect();
        let parts: Vec<(Vec<f32>, bool, bool)> = parts.into_iter().flatten().collect();
        let bad_w_enc = parts.iter().any(|p| p.1);
        let bad_w_dec = parts.iter().any(|p| p.2);
        let parts: Vec<Vec<f32>> = parts.into_iter().map(|p| p.0).collect();
        let mut db_dec = Vec::new();
        grads.decoder_bias(&parts, &mut db_dec);
        let bad_b_enc = update.update(&mut p.b_enc, &db_enc, m_benc, v_benc);
        let bad_b_dec = update.update(&mut p.b_dec, &db_dec, m_bdec, v_bdec);
        let bad = [bad_w_enc, bad_b_enc, bad_w_dec, bad_b_dec];
        Stepped {
            stats: codes.stats,
            bad_gradient: bad.iter().position(|&b| b).map(|i| PARAM_NAMES[i]),
        }
    }
}

/// Latents per group of the fused sparse pass: a multiple of `LATENT_CHUNK` whose gradient
/// rows (2·d_in floats each) fit in `GROUP_ROW_BYTES`, so that they stay in the core's own
/// cache while the samples stream past, and no more than a thread's share of the latents.
/// The grouping changes which thread makes a latent's rows, never a value.
fn group_latents(d: usize, n: usize, threads: usize) -> usize {
    let by_cache = GROUP_ROW_BYTES / (2 * d * std::mem::size_of::<f32>());
    let by_threads = n.div_ceil(threads.max(1));
    let latents = by_cache.min(by_threads) / LATENT_CHUNK * LATENT_CHUNK;
    latents.max(LATENT_CHUNK)
}

/// The gradient rows of a group of the fused sparse pass: 512 KiB, within a per-core L2 of
/// 1–2 MiB beside the group's atoms. Measured on an Intel Xeon (1.25 MiB L2 per core) at
/// d_in 512, 2048 latents, L0 67: the gradient pass alone (a scratch copy, 1 thread) took
/// 70–85 ms in groups of 128 latents (this size) against 98–116 ms latent by latent, and
/// groups of 64 gained nothing; the whole step (`cargo bench --bench sae`, 1 thread) went
/// from 231–257 to 204–224 ms, at 2 threads it did not change beyond the host's noise
/// (README, "On an Intel Xeon").
const GROUP_ROW_BYTES: usize = 512 * 1024;

/// One latent's encoder and decoder rows with their moments.
struct LatentRows<'a> {
    w_enc: &'a mut [f32],
    m_enc: &'a mut [f32],
    v_enc: &'a mut [f32],
    w_dec: &'a mut [f32],
    m_dec: &'a mut [f32],
    v_dec: &'a mut [f32],
}

impl LatentRows<'_> {
    /// Adam on the latent's rows, then its decoder atom back to unit norm. `grad` is
    /// ∂loss/∂b_enc[j] and the gradient rows ([∂W_dec | ∂W_enc], 2·d) of a latent some
    /// sample used, `None` for one with zero gradients; the latent's term of b_dec's
    /// gradient is added to `part` (from the encoder row before its update). Returns
    /// whether the encoder's and the decoder's gradients held a NaN or an infinity.
    fn update(
        self,
        update: &AdamStep,
        grad: Option<(f32, &[f32])>,
        part: &mut [f32],
    ) -> (bool, bool) {
        let out = match grad {
            None => {
                update.update_zero_grad(self.w_enc, self.m_enc, self.v_enc);
                update.update_zero_grad(self.w_dec, self.m_dec, self.v_dec);
                (false, false)
            }
            Some((db_enc, rows)) => {
                let (dw_dec, dw_enc) = rows.split_at(self.w_dec.len());
                add_encoder_part(part, db_enc, self.w_enc);
                (
                    update.update(self.w_enc, dw_enc, self.m_enc, self.v_enc),
                    update.update(self.w_dec, dw_dec, self.m_dec, self.v_dec),
                )
            }
        };
        normalise_atom(self.w_dec);
        out
    }
}
