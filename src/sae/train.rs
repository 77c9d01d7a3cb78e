//! The SAE training loop: seeded init and batch order, Adam with linear warm-up and an
//! optional decay, decoder atoms renormalised after every step, a training curve every
//! `log_every` steps, checkpoints to resume from after a kill, and a stop with the step and
//! the term at the first NaN or infinity.

use super::checkpoint::{Checkpoint, Checkpointing, Progress, RngPosition};
use super::grads::{Activation, BatchStats, StepPath};
use super::model::Sae;
use super::params::SaeParams;
use super::resample::resample_dead;
use super::schedule::lr_at;
use super::step::{Batch, Stepper};
use crate::device::HOST;
use crate::spec::resolve::TrainSchedule;
use crate::{Error, Result};
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
    /// Save the state now and then, and resume from a saved state (`None`: never).
    pub checkpoint: Option<Checkpointing>,
    /// Names the training in error messages (`d_sae=512 l1=0.05 seed=0`).
    pub label: String,
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
    /// Where the sequence of batches stands, enough for `restore` on a freshly built source
    /// (same data, same seed) to continue it exactly.
    fn position(&self) -> serde_json::Value;
    fn restore(&mut self, position: &serde_json::Value) -> Result<()>;
}

/// `InMemory`'s position: the epoch's permutation, the cursor in it and the generator.
#[derive(Serialize, Deserialize)]
struct InMemoryPosition {
    order: Vec<u32>,
    cursor: usize,
    rng: RngPosition,
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

    fn position(&self) -> serde_json::Value {
        serde_json::json!(InMemoryPosition {
            order: self.order.clone(),
            cursor: self.cursor,
            rng: RngPosition::of(&self.rng),
        })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<()> {
        let p: InMemoryPosition = serde_json::from_value(position.clone())
            .map_err(|e| Error::run(format!("checkpoint: bad batch position: {e}")))?;
        if p.order.len() != self.order.len() || p.cursor > p.order.len() {
            return Err(Error::run("checkpoint: batch position of other data"));
        }
        self.order = p.order;
        self.cursor = p.cursor;
        self.rng = p.rng.rng()?;
        Ok(())
    }
}

/// What the training loop reports as it goes (for progress bars).
pub enum TrainEvent<'a> {
    /// Continuing from a checkpoint taken after this many steps.
    Resumed(u64),
    /// A step finished; at logging steps, with its new curve point.
    Step(u64, Option<&'a CurvePoint>),
}

/// Train one SAE on batches from `source`, resuming from the job's checkpoint if there is
/// a usable one. `on_event` hears of the resume and of every step.
pub fn train(
    source: &mut dyn BatchSource,
    job: &TrainJob,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<(Sae, Vec<CurvePoint>)> {
    let mut state = TrainState::new(source, job)?;
    let first = state.resume(source)?;
    if first > 0 {
        on_event(TrainEvent::Resumed(first));
    }
    let mut last_saved = Instant::now();
    for step_index in first..job.schedule.steps {
        let done = step_index + 1;
        let outcome = state.step(source, step_index)?;
        state.maybe_resample(source, done)?;
        if done % job.schedule.log_every == 0 || done == job.schedule.steps {
            on_event(TrainEvent::Step(
                done,
                Some(state.log_point(done, &outcome)),
            ));
        } else {
            on_event(TrainEvent::Step(done, None));
        }
        if let Some(policy) = &job.checkpoint {
            // Saved between steps, never after the last: the finished SAE is the entry.
            if last_saved.elapsed() >= policy.every && done < job.schedule.steps {
                state.checkpoint(source, done).save(policy)?;
                last_saved = Instant::now();
            }
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
    /// Adam and the step's buffers.
    stepper: Stepper,
    /// The current batch, (batch_size, d_in) row-major.
    x: Vec<f32>,
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
        let stepper = Stepper::new(&p, s.adam_beta1, s.adam_beta2, job.path.clone());
        Ok(TrainState {
            job,
            d_in,
            start,
            p,
            stepper,
            x: vec![0f32; s.batch_size * d_in],
            fired: vec![0u64; job.d_sae],
            alive: vec![false; job.d_sae],
            resampled_total: 0,
            curve: Vec::new(),
        })
    }

    /// Restore the job's checkpoint, if usable, into this freshly initialised state and
    /// `source`; returns the steps already done (0 without one).
    fn resume(&mut self, source: &mut dyn BatchSource) -> Result<u64> {
        let Some(policy) = &self.job.checkpoint else {
            return Ok(0);
        };
        let Some(c) = Checkpoint::load(policy, self.d_in, self.job.d_sae) else {
            return Ok(0);
        };
        let progress = c.progress;
        if progress.done >= self.job.schedule.steps
            || !self.stepper.adam.restore(c.adam_steps, c.moments)
        {
            return Ok(0);
        }
        source.restore(&progress.source)?;
        self.p = c.params;
        self.fired = progress.fired;
        self.alive = progress.alive;
        self.resampled_total = progress.resampled_total as usize;
        self.curve = progress.curve;
        // Curve times continue from the checkpoint's clock.
        self.start = Instant::now()
            .checked_sub(std::time::Duration::from_secs_f64(progress.elapsed_s))
            .unwrap_or(self.start);
        Ok(progress.done)
    }

    /// Everything needed to continue after `done` steps.
    fn checkpoint(&self, source: &dyn BatchSource, done: u64) -> Checkpoint {
        Checkpoint {
            params: self.p.clone(),
            adam_steps: self.stepper.adam.steps_taken(),
            moments: self.stepper.adam.moments().to_vec(),
            progress: Progress {
                done,
                elapsed_s: self.start.elapsed().as_secs_f64(),
                fired: self.fired.clone(),
                alive: self.alive.clone(),
                resampled_total: self.resampled_total as u64,
                curve: self.curve.clone(),
                source: source.position(),
            },
        }
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
        let batch = Batch {
            x: &self.x,
            activation,
            mse_scale: s.mse.scale(self.d_in),
            lr,
        };
        let stepped = self.stepper.step(&mut self.p, &batch, &mut self.fired)?;
        let stats = stepped.stats;
        self.check_loss(&stats, activation, step_index + 1, lr)?;
        if s.resample.is_some() {
            for ((a, f), b) in self.alive.iter_mut().zip(&self.fired).zip(&before) {
                *a |= f > b;
            }
        }
        if let Some(name) = stepped.bad_gradient {
            return Err(self.numeric_failure(
                step_index + 1,
                &format!("the gradient of `{name}` holds NaN or infinity"),
                lr,
            ));
        }
        Ok(StepOutcome {
            lr,
            activation,
            stats,
        })
    }

    /// A loss term that is NaN or infinite stops training. The batch is examined only then,
    /// to tell bad data apart from a diverging optimisation.
    fn check_loss(
        &self,
        stats: &BatchStats,
        activation: Activation,
        step: u64,
        lr: f64,
    ) -> Result<()> {
        let l1 = match activation {
            Activation::ReluL1(l1) => l1 * stats.l1_term,
            Activation::TopK(_) => 0.0,
        };
        let bad_term = [("mse", stats.mse), ("l1", l1)]
            .into_iter()
            .find(|(_, v)| !v.is_finite());
        let Some((term, value)) = bad_term else {
            return Ok(());
        };
        if let Some(i) = self.x.iter().position(|v| !v.is_finite()) {
            return Err(Error::run(format!(
                "train_sae {}: the training batch of step {step} holds {} (sample {}, dimension                  {}): the training data itself is bad; check the data source or the                  harvested activations (`saerun cache verify`)",
                self.job.label,
                self.x[i],
                i / self.d_in,
                i % self.d_in
            )));
        }
        Err(self.numeric_failure(step, &format!("the loss term `{term}` is {value}"), lr))
    }

    /// Training diverged at `step`: say what went bad and what usually causes it.
    fn numeric_failure(&self, step: u64, what: &str, lr: f64) -> Error {
        let rms = (self.x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>()
            / self.x.len().max(1) as f64)
            .sqrt();
        Error::run(format!(
            "train_sae {}: {what} at step {step} (learning rate {lr:e}, batch RMS {rms:.3e}); \
             training diverged: lower `train.lr` (now {:e}) or check the scale of the data",
            self.job.label, self.job.schedule.lr
        ))
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
                &mut self.stepper.adam,
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
