//! The SAE training loop: seeded init and batch order, Adam with linear warm-up and an
//! optional decay, decoder atoms renormalised after every step, a training curve every
//! `log_every` steps.

use super::adam::Adam;
use super::grads::{step, Activation, Grads, Scratch};
use super::model::Sae;
use super::params::SaeParams;
use super::resample::resample_dead;
use super::schedule::lr_at;
use crate::device::HOST;
use crate::spec::resolve::TrainSchedule;
use crate::Result;
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What one training run needs beyond the shared schedule.
#[derive(Debug, Clone)]
pub struct TrainJob<'a> {
    pub d_sae: usize,
    /// ReLU with its (final) l1 coefficient, or TopK.
    pub activation: Activation,
    pub seed: u64,
    pub schedule: &'a TrainSchedule,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub step: u64,
    pub lr: f64,
    pub loss: f64,
    pub mse: f64,
    pub l1_term: f64,
    /// Mean number of active latents per sample in this step's batch.
    pub l0: f64,
    /// Fraction of latents that did not fire during the last `log_every` steps.
    pub dead_fraction: f64,
    /// Latents resampled so far.
    #[serde(default)]
    pub resampled: u64,
    pub elapsed_s: f64,
}

/// Where training batches come from: samples in memory (`InMemory`) or an on-disk
/// activation store. Implementations decide the order; they must be deterministic for a
/// seed so that a stage's output depends only on its key.
pub trait BatchSource {
    /// Dimension of one sample.
    fn dim(&self) -> usize;
    /// Mean sample, used to initialise the decoder bias.
    fn mean(&self) -> Vec<f32>;
    /// Fill `out` (batch × dim, row-major) with the next batch.
    fn next_batch(&mut self, out: &mut [f32]) -> Result<()>;
}

/// Samples held in memory, visited in a fresh seeded permutation each epoch.
pub struct InMemory {
    samples: Vec<f32>,
    d: usize,
    order: Vec<u32>,
    cursor: usize,
    rng: ChaCha8Rng,
}

impl InMemory {
    pub fn new(data: &Tensor, seed: u64) -> Result<InMemory> {
        let (n, d) = data.dims2()?;
        Ok(InMemory {
            samples: data.flatten_all()?.to_vec1()?,
            d,
            order: (0..n as u32).collect(),
            cursor: n, // forces a shuffle before the first batch
            // Batch order seeded independently of the initialisation.
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5ae_b47c4),
        })
    }
}

impl BatchSource for InMemory {
    fn dim(&self) -> usize {
        self.d
    }

    fn mean(&self) -> Vec<f32> {
        let n = (self.samples.len() / self.d).max(1);
        let mut sum = vec![0f64; self.d];
        for row in self.samples.chunks(self.d) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += *v as f64);
        }
        sum.iter().map(|s| (s / n as f64) as f32).collect()
    }

    fn next_batch(&mut self, out: &mut [f32]) -> Result<()> {
        let d = self.d;
        for row in out.chunks_mut(d) {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            let i = self.order[self.cursor] as usize;
            self.cursor += 1;
            row.copy_from_slice(&self.samples[i * d..(i + 1) * d]);
        }
        Ok(())
    }
}

/// Train one SAE on batches from `source`. `on_step` is called after every step (for
/// progress bars) with the step number and, at logging steps, the new curve point.
pub fn train(
    source: &mut dyn BatchSource,
    job: &TrainJob,
    mut on_step: impl FnMut(u64, Option<&CurvePoint>),
) -> Result<(Sae, Vec<CurvePoint>)> {
    let d_in = source.dim();
    let s = job.schedule;
    let start = Instant::now();

    // Centre the decoder bias on the data so the encoder starts on centred inputs.
    let mean = Tensor::from_vec(source.mean(), d_in, &HOST)?;
    let init = Sae::init(d_in, job.d_sae, mean, job.seed)?;
    let mut p = SaeParams::from_sae(&init)?;
    let mut adam = Adam::new(
        &[p.w_enc.len(), p.b_enc.len(), p.w_dec.len(), p.b_dec.len()],
        s.adam_beta1,
        s.adam_beta2,
    );

    let mut x = vec![0f32; s.batch_size * d_in];

    let mut grads = Grads::default();
    let mut scratch = Scratch::default();
    let mut fired = vec![0u64; job.d_sae];
    // Latents seen active since the last resampling check.
    let mut alive = vec![false; job.d_sae];
    let mut resampled_total = 0usize;
    let mut curve = Vec::new();
    for step_index in 0..s.steps {
        source.next_batch(&mut x)?;
        let lr = lr_at(step_index, s.steps, s.warmup_steps, s.lr, s.schedule);
        let activation = match job.activation {
            Activation::ReluL1(l1) if s.l1_warmup_steps > 0 => {
                let ramp = ((step_index + 1) as f64 / s.l1_warmup_steps as f64).min(1.0);
                Activation::ReluL1(l1 * ramp)
            }
            other => other,
        };
        let before: Vec<u64> = if s.resample.is_some() {
            fired.clone()
        } else {
            Vec::new()
        };
        let mse_scale = s.mse.scale(d_in);
        let stats = step(
            &p,
            &x,
            activation,
            mse_scale,
            &mut grads,
            &mut fired,
            &mut scratch,
        )?;
        if s.resample.is_some() {
            for ((a, f), b) in alive.iter_mut().zip(&fired).zip(&before) {
                *a |= f > b;
            }
        }
        adam.step(
            &mut [&mut p.w_enc, &mut p.b_enc, &mut p.w_dec, &mut p.b_dec],
            &[&grads.w_enc, &grads.b_enc, &grads.w_dec, &grads.b_dec],
            lr,
        );
        p.normalise_decoder();

        let done = step_index + 1;
        if let Some(r) = s.resample {
            if done % r.every == 0 && done <= r.until && done < s.steps {
                let dead: Vec<usize> = (0..job.d_sae).filter(|&j| !alive[j]).collect();
                if !dead.is_empty() {
                    resample_dead(
                        &mut p,
                        &mut adam,
                        &dead,
                        source,
                        s.batch_size,
                        job.seed ^ done,
                    )?;
                    resampled_total += dead.len();
                }
                alive.fill(false);
            }
        }
        if done % s.log_every == 0 || done == s.steps {
            let dead = fired.iter().filter(|&&c| c == 0).count() as f64 / job.d_sae as f64;
            fired.iter_mut().for_each(|c| *c = 0);
            let point = CurvePoint {
                step: done,
                lr,
                loss: stats.mse
                    + match activation {
                        Activation::ReluL1(l1) => l1 * stats.l1_term,
                        Activation::TopK(_) => 0.0,
                    },
                mse: stats.mse,
                l1_term: stats.l1_term,
                l0: stats.l0,
                dead_fraction: dead,
                resampled: resampled_total as u64,
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            on_step(done, Some(&point));
            curve.push(point);
        } else {
            on_step(done, None);
        }
    }
    let mut sae = p.to_sae()?;
    if let Activation::TopK(k) = job.activation {
        sae.top_k = Some(k);
    }
    Ok((sae, curve))
}
