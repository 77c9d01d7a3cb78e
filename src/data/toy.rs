//! Toy superposition data (Sharkey, Braun & Millidge, "Taking features out of superposition
//! with sparse autoencoders", interim report 2022), generated as in loganriggs/sparse_coding
//! `replicate_toy_models.py`: unit-norm ground-truth features, feature i active with a
//! probability ∝ decay^i scaled to `mean_active` expected active features, coefficients
//! Uniform(0,1)·Uniform(0,1), sample = Σ coefficient × feature.
//!
//! Correlated variant: a latent Gaussian z = L·g with unit-variance rows (so the
//! correlation matrix L·Lᵀ is a random PSD matrix with unit diagonal); feature i is active
//! when Φ(z_i) < p_i, which keeps each feature's marginal probability at p_i while making
//! features co-occur.
//!
//! Generation is chunked with one RNG stream per chunk, so the output is identical whatever
//! the number of threads.

use crate::device::HOST;
use crate::Result;
use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToyParams {
    pub activation_dim: usize,
    pub n_features: usize,
    pub mean_active: f64,
    pub prob_decay: f64,
    pub correlated: bool,
    pub train_samples: usize,
    pub eval_samples: usize,
    pub seed: u64,
}

impl ToyParams {
    /// The interim report's setting: 256 dims, 512 features, ~5 active, decay 0.99.
    pub fn interim_report_default() -> Self {
        ToyParams {
            activation_dim: 256,
            n_features: 512,
            mean_active: 5.0,
            prob_decay: 0.99,
            correlated: false,
            train_samples: 262_144,
            eval_samples: 16_384,
            seed: 0,
        }
    }
}

/// Ground truth plus samples, as f32 row-major matrices.
pub struct ToyData {
    /// (n_features, activation_dim), unit-norm rows.
    pub features: Vec<f32>,
    /// (train_samples, activation_dim)
    pub train: Vec<f32>,
    /// (eval_samples, activation_dim)
    pub eval: Vec<f32>,
}

const CHUNK: usize = 4096;

/// Named RNG streams so that, e.g., changing `eval_samples` does not change training data.
#[derive(Clone, Copy)]
enum Stream {
    Features = 1,
    Correlation = 2,
    Train = 3,
    Eval = 4,
}

fn rng(seed: u64, stream: Stream, chunk: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(((stream as u64) << 48) | chunk);
    r
}

pub fn generate(p: &ToyParams) -> Result<ToyData> {
    let d = p.activation_dim;
    let n = p.n_features;

    let mut features = vec![0f32; n * d];
    let mut r = rng(p.seed, Stream::Features, 0);
    for row in features.chunks_mut(d) {
        for v in row.iter_mut() {
            *v = StandardNormal.sample(&mut r);
        }
        normalise(row);
    }

    let sampler = ActivitySampler::new(p);

    let sample_split = |count: usize, stream: Stream| -> Vec<f32> {
        let mut out = vec![0f32; count * d];
        out.par_chunks_mut(CHUNK * d)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let mut r = rng(p.seed, stream, ci as u64);
                let mut active = Vec::with_capacity(32);
                let mut scratch = Vec::new();
                for x in chunk.chunks_mut(d) {
                    sampler.sample(&mut r, &mut active, &mut scratch);
                    for &i in &active {
                        let c = (r.random::<f64>() * r.random::<f64>()) as f32;
                        let f = &features[i * d..(i + 1) * d];
                        for (xv, fv) in x.iter_mut().zip(f) {
                            *xv += c * fv;
                        }
                    }
                }
            });
        out
    };

    Ok(ToyData {
        train: sample_split(p.train_samples, Stream::Train),
        eval: sample_split(p.eval_samples, Stream::Eval),
        features,
    })
}

impl ToyData {
    pub fn tensors(&self, p: &ToyParams) -> Result<(Tensor, Tensor, Tensor)> {
        let d = p.activation_dim;
        let dev = HOST;
        Ok((
            Tensor::from_slice(&self.features, (p.n_features, d), &dev)?,
            Tensor::from_slice(&self.train, (p.train_samples, d), &dev)?,
            Tensor::from_slice(&self.eval, (p.eval_samples, d), &dev)?,
        ))
    }
}

/// Decides which features are active in one sample.
struct ActivitySampler {
    probs: Vec<f64>,
    /// Correlated variant: Φ(z) < p  ⇔  z < Φ⁻¹(p), so compare in z space.
    z_thresholds: Vec<f64>,
    mixing: Option<Vec<f64>>,
}

impl ActivitySampler {
    fn new(p: &ToyParams) -> Self {
        let probs = activation_probs(p);
        ActivitySampler {
            z_thresholds: probs.iter().map(|&q| normal_quantile(q)).collect(),
            mixing: p.correlated.then(|| correlation_factor(p)),
            probs,
        }
    }

    fn sample(&self, r: &mut ChaCha8Rng, active: &mut Vec<usize>, g: &mut Vec<f64>) {
        active.clear();
        let n = self.probs.len();
        match &self.mixing {
            None => {
                for (i, &q) in self.probs.iter().enumerate() {
                    if r.random::<f64>() < q {
                        active.push(i);
                    }
                }
            }
            Some(l) => {
                g.clear();
                g.extend((0..n).map(|_| -> f64 { StandardNormal.sample(&mut *r) }));
                for (i, thr) in self.z_thresholds.iter().enumerate() {
                    let z: f64 = l[i * n..(i + 1) * n]
                        .iter()
                        .zip(g.iter())
                        .map(|(a, b)| a * b)
                        .sum();
                    if z < *thr {
                        active.push(i);
                    }
                }
            }
        }
    }
}

/// P(feature i active) = decay^i scaled so the probabilities sum to `mean_active`
/// (clipped at 1, which only matters for extreme settings).
pub fn activation_probs(p: &ToyParams) -> Vec<f64> {
    let raw: Vec<f64> = (0..p.n_features)
        .map(|i| p.prob_decay.powi(i as i32))
        .collect();
    let total: f64 = raw.iter().sum();
    raw.iter()
        .map(|w| (w * p.mean_active / total).min(1.0))
        .collect()
}

/// Rows of a random Gaussian matrix, normalised: L·Lᵀ is a random correlation matrix.
fn correlation_factor(p: &ToyParams) -> Vec<f64> {
    let n = p.n_features;
    let mut r = rng(p.seed, Stream::Correlation, 0);
    let mut l = vec![0f64; n * n];
    for row in l.chunks_mut(n) {
        for v in row.iter_mut() {
            *v = StandardNormal.sample(&mut r);
        }
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    l
}

fn normalise(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    row.iter_mut().for_each(|v| *v /= norm);
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Φ⁻¹(q) by bisection: called once per feature, so simplicity beats speed.
fn normal_quantile(q: f64) -> f64 {
    if q >= 1.0 {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (-40.0, 40.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(correlated: bool) -> ToyParams {
        ToyParams {
            activation_dim: 16,
            n_features: 32,
            mean_active: 3.0,
            prob_decay: 0.99,
            correlated,
            train_samples: 20_000,
            eval_samples: 100,
            seed: 7,
        }
    }

    #[test]
    fn probabilities_sum_to_mean_active() {
        let p = ToyParams::interim_report_default();
        let probs = activation_probs(&p);
        assert!((probs.iter().sum::<f64>() - 5.0).abs() < 1e-9);
        assert!(probs.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn quantile_inverts_cdf() {
        for q in [0.001, 0.05, 0.5, 0.9] {
            assert!((normal_cdf(normal_quantile(q)) - q).abs() < 1e-9);
        }
        // scipy.stats.norm.ppf(0.975) = 1.959963984540054
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-9);
    }

    #[test]
    fn features_are_unit_norm_and_data_is_deterministic() {
        let p = small(false);
        let a = generate(&p).unwrap();
        let b = generate(&p).unwrap();
        assert_eq!(a.train, b.train);
        for row in a.features.chunks(16) {
            let n: f32 = row.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
    }

    /// The empirical number of active features per sample matches `mean_active` in both
    /// variants, and the correlated variant really correlates features.
    #[test]
    fn activity_matches_mean_and_correlates() {
        let mut co_occurrence = [0f64; 2];
        for correlated in [false, true] {
            let p = small(correlated);
            let sampler = ActivitySampler::new(&p);
            let mut r = rng(1, Stream::Train, 0);
            let (mut active, mut g) = (Vec::new(), Vec::new());
            let trials = 20_000;
            let (mut count, mut both, mut first, mut second) = (0usize, 0usize, 0usize, 0usize);
            for _ in 0..trials {
                sampler.sample(&mut r, &mut active, &mut g);
                count += active.len();
                let (a, b) = (active.contains(&0), active.contains(&1));
                first += a as usize;
                second += b as usize;
                both += (a && b) as usize;
            }
            let mean = count as f64 / trials as f64;
            assert!(
                (mean - 3.0).abs() < 0.1,
                "correlated={correlated}: mean active {mean}"
            );
            let t = trials as f64;
            // |cov| of the activity indicators of features 0 and 1, relative to independence.
            co_occurrence[correlated as usize] =
                (both as f64 / t - (first as f64 / t) * (second as f64 / t)).abs();
        }
        assert!(
            co_occurrence[1] > 3.0 * co_occurrence[0].max(1e-4),
            "{co_occurrence:?}"
        );
    }
}
