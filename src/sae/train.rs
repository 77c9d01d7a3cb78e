//! The SAE training loop: seeded init and batch order, Adam with linear warm-up and an
//! optional decay, decoder atoms renormalised after every step, a training curve every
//! `log_every` steps.

use super::adam::Adam;
use super::grads::{dense_step_on, step, Activation, BatchStats, Grads, Scratch, StepPath};
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
    /// Where the gradients are computed; parameters and optimiser stay on the host.
    pub path: StepPath,
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
    let mut state = TrainState::new(source, job)?;
    for step_index in 0..job.schedule.steps {
        let done = step_index + 1;
        let outcome = state.step(source, step_index)?;
        state.maybe_resample(source, done)?;
        if done % job.schedule.log_every == 0 || done == job.schedule.steps {
            on_step(done, Some(state.log_point(done, &outcome)));
        } else {
            on_step(done, None);
        }
    }
    state.finish()
}

/// What one step reports to the training curve.
struct StepOutcome {
    lr: f64,
    /// The activation the step trained with (its l1 after the warm-up ramp).
    activation: Activation,
    stats: BatchStats,
}

/// Everything a training run carries from one step to the next.
struct TrainState<'j> {
    job: &'j TrainJob<'j>,
    d_in: usize,
    start: Instant,
    p: SaeParams,
    adam: Adam,
    /// The current batch, (batch_size, d_in) row-major.
    x: Vec<f32>,
    grads: Grads,
    scratch: Scratch,
    /// Activations per latent since the last curve point.
    fired: Vec<u64>,
    /// Latents seen active since the last resampling check.
    alive: Vec<bool>,
    resampled_total: usize,
    curve: Vec<CurvePoint>,
}

impl<'j> TrainState<'j> {
    fn new(source: &dyn BatchSource, job: &'j TrainJob<'j>) -> Result<Self> {
        let d_in = source.dim();
        let s = job.schedule;
        let start = Instant::now();
        // Centre the decoder bias on the data so the encoder starts on centred inputs.
        let mean = Tensor::from_vec(source.mean(), d_in, &HOST)?;
        let init = Sae::init(d_in, job.d_sae, mean, job.seed)?;
        let p = SaeParams::from_sae(&init)?;
        let adam = Adam::new(
            &[p.w_enc.len(), p.b_enc.len(), p.w_dec.len(), p.b_dec.len()],
            s.adam_beta1,
            s.adam_beta2,
        );
        Ok(TrainState {
            job,
            d_in,
            start,
            p,
            adam,
            x: vec![0f32; s.batch_size * d_in],
            grads: Grads::default(),
            scratch: Scratch::default(),
            fired: vec![0u64; job.d_sae],
            alive: vec![false; job.d_sae],
            resampled_total: 0,
            curve: Vec::new(),
        })
    }

    /// The activation at `step_index`: l1 ramps up linearly over the l1 warm-up.
    fn activation_at(&self, step_index: u64) -> Activation {
        let s = self.job.schedule;
        match self.job.activation {
            Activation::ReluL1(l1) if s.l1_warmup_steps > 0 => {
                let ramp = ((step_index + 1) as f64 / s.l1_warmup_steps as f64).min(1.0);
                Activation::ReluL1(l1 * ramp)
            }
            other => other,
        }
    }

    /// Gradients of the next batch, one Adam update, decoder atoms back to unit norm.
    fn step(&mut self, source: &mut dyn BatchSource, step_index: u64) -> Result<StepOutcome> {
        let s = self.job.schedule;
        source.next_batch(&mut self.x)?;
        let lr = lr_at(step_index, s.steps, s.warmup_steps, s.lr, s.schedule);
        let activation = self.activation_at(step_index);
        let before: Vec<u64> = if s.resample.is_some() {
            self.fired.clone()
        } else {
            Vec::new()
        };
        let mse_scale = s.mse.scale(self.d_in);
        let (p, x, grads, fired) = (&self.p, &self.x, &mut self.grads, &mut self.fired);
        let stats = match &self.job.path {
            StepPath::Fused => step(p, x, activation, mse_scale, grads, fired, &mut self.scratch)?,
            StepPath::Generic(device) => {
                dense_step_on(p, x, activation, mse_scale, device)?.to_host(grads, fired)?
            }
        };
        if s.resample.is_some() {
            for ((a, f), b) in self.alive.iter_mut().zip(&self.fired).zip(&before) {
                *a |= f > b;
            }
        }
        let (p, g) = (&mut self.p, &self.grads);
        self.adam.step(
            &mut [&mut p.w_enc, &mut p.b_enc, &mut p.w_dec, &mut p.b_dec],
            &[&g.w_enc, &g.b_enc, &g.w_dec, &g.b_dec],
            lr,
        );
        self.p.normalise_decoder();
        Ok(StepOutcome {
            lr,
            activation,
            stats,
        })
    }

    /// At a resampling check (`done` steps in), re-initialise the latents that did not fire
    /// since the previous one.
    fn maybe_resample(&mut self, source: &mut dyn BatchSource, done: u64) -> Result<()> {
        let s = self.job.schedule;
        let Some(r) = s.resample else {
            return Ok(());
        };
        if !(done.is_multiple_of(r.every) && done <= r.until && done < s.steps) {
            return Ok(());
        }
        let dead: Vec<usize> = (0..self.job.d_sae).filter(|&j| !self.alive[j]).collect();
        if !dead.is_empty() {
            resample_dead(
                &mut self.p,
                &mut self.adam,
                &dead,
                source,
                s.batch_size,
                self.job.seed ^ done,
            )?;
            self.resampled_total += dead.len();
        }
        self.alive.fill(false);
        Ok(())
    }

    /// Append the curve point for step `done` and start counting firings afresh.
    fn log_point(&mut self, done: u64, outcome: &StepOutcome) -> &CurvePoint {
        let d_sae = self.job.d_sae;
        let dead = self.fired.iter().filter(|&&c| c == 0).count() as f64 / d_sae as f64;
        self.fired.iter_mut().for_each(|c| *c = 0);
        let stats = &outcome.stats;
        self.curve.push(CurvePoint {
            step: done,
            lr: outcome.lr,
            loss: stats.mse
                + match outcome.activation {
                    Activation::ReluL1(l1) => l1 * stats.l1_term,
                    Activation::TopK(_) => 0.0,
                },
            mse: stats.mse,
            l1_term: stats.l1_term,
            l0: stats.l0,
            dead_fraction: dead,
            resampled: self.resampled_total as u64,
            elapsed_s: self.start.elapsed().as_secs_f64(),
        });
        &self.curve[self.curve.len() - 1]
    }

    fn finish(self) -> Result<(Sae, Vec<CurvePoint>)> {
        let mut sae = self.p.to_sae()?;
        if let Activation::TopK(k) = self.job.activation {
            sae.top_k = Some(k);
        }
        Ok((sae, self.curve))
    }
}
