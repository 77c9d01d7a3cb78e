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
//! the gradient rows live in a per-thread buffer of 2·d_in floats (or are known to be zero
//! and are never materialised), Adam updates the rows and their moments, and the decoder
//! atom is renormalised while it is in cache. Per element the arithmetic is that of
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

    /// The fused update from the sparse codes `encode` left in the scratch buffers: chunks
    /// of `LATENT_CHUNK` latents in parallel, each latent's gradient rows made, applied and
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
        let chunk = LATENT_CHUNK * d;
        let mut db_enc = vec![0f32; n];
        let encoder = p
            .w_enc
            .par_chunks_mut(chunk)
            .zip(m_enc.par_chunks_mut(chunk));
        let encoder = encoder.zip(v_enc.par_chunks_mut(chunk));
        let decoder = p
            .w_dec
            .par_chunks_mut(chunk)
            .zip(m_dec.par_chunks_mut(chunk));
        let decoder = decoder.zip(v_dec.par_chunks_mut(chunk));
        let parts: Vec<(Vec<f32>, bool, bool)> = encoder
            .zip(decoder)
            .zip(db_enc.par_chunks_mut(LATENT_CHUNK))
            .enumerate()
            .map_init(
                || vec![0f32; 2 * d],
                |buf, (c, ((((w_enc, m_e), v_e), ((w_dec, m_d), v_d)), db_enc))| {
                    let mut part = (vec![0f32; d], false, false);
                    let latents = w_enc.chunks_mut(d).zip(m_e.chunks_mut(d));
                    let latents = latents.zip(v_e.chunks_mut(d)).zip(w_dec.chunks_mut(d));
                    let latents = latents.zip(m_d.chunks_mut(d)).zip(v_d.chunks_mut(d));
                    for (i, (((((w_enc, m_enc), v_enc), w_dec), m_dec), v_dec)) in
                        latents.enumerate()
                    {
                        let rows = LatentRows {
                            w_enc,
                            m_enc,
                            v_enc,
                            w_dec,
                            m_dec,
                            v_dec,
                        };
                        let latent = c * LATENT_CHUNK + i;
                        let (db, bad_enc, bad_dec) =
                            rows.update(&update, &grads, latent, buf, &mut part.0);
                        db_enc[i] = db;
                        part.1 |= bad_enc;
                        part.2 |= bad_dec;
                    }
                    part
                },
            )
            .collect();
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
    /// Adam on latent `j`'s rows, then its decoder atom back to unit norm; `buf` (2·d) holds
    /// the gradient rows, and the latent's term of b_dec's gradient is added to `part`
    /// (from the encoder row before its update). Returns ∂loss/∂b_enc[j] and whether the
    /// encoder's and the decoder's gradients held a NaN or an infinity.
    fn update(
        self,
        update: &AdamStep,
        grads: &SparseGrads,
        j: usize,
        buf: &mut [f32],
        part: &mut [f32],
    ) -> (f32, bool, bool) {
        let out = if grads.unused(j) {
            update.update_zero_grad(self.w_enc, self.m_enc, self.v_enc);
            update.update_zero_grad(self.w_dec, self.m_dec, self.v_dec);
            (0.0, false, false)
        } else {
            let (dw_dec, dw_enc) = buf.split_at_mut(grads.d());
            let db_enc = grads.latent(j, self.w_dec, dw_dec, dw_enc);
            add_encoder_part(part, db_enc, self.w_enc);
            (
                db_enc,
                update.update(self.w_enc, dw_enc, self.m_enc, self.v_enc),
                update.update(self.w_dec, dw_dec, self.m_dec, self.v_dec),
            )
        };
        normalise_atom(self.w_dec);
        out
    }
}
