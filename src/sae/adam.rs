//! Adam (Kingma & Ba) without weight decay, on flat buffers. Written out rather than using
//! `candle_nn::AdamW` because the SAE step computes its gradients by hand (see `grads`),
//! and AdamW's default weight decay of 0.01 is not what the SAE literature trains with.

use multiversion::multiversion;
use rayon::prelude::*;

pub struct Adam {
    beta1: f32,
    beta2: f32,
    eps: f32,
    step: i32,
    /// First and second moments, one pair per parameter buffer.
    moments: Vec<(Vec<f32>, Vec<f32>)>,
}

const CHUNK: usize = 16 * 1024;
/// The exponent bits of an f32.
const EXPONENT: u32 = 0x7f80_0000;

impl Adam {
    pub fn new(sizes: &[usize], beta1: f64, beta2: f64) -> Adam {
        Adam {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: 1e-8,
            step: 0,
            moments: sizes
                .iter()
                .map(|&n| (vec![0.0; n], vec![0.0; n]))
                .collect(),
        }
    }

    /// Start step t+1 at learning rate `lr`: the constants every element's update uses.
    /// Apply them with `AdamStep::update` (or `update_zero_grad`) to each buffer's elements,
    /// all of them, each once; `step` does that for whole buffers.
    pub fn begin_step(&mut self, lr: f64) -> AdamStep {
        self.step += 1;
        let (b1, b2) = (self.beta1 as f64, self.beta2 as f64);
        let bc1 = 1.0 - b1.powi(self.step);
        let bc2 = 1.0 - b2.powi(self.step);
        // θ -= lr · m̂ / (√v̂ + ε), with m̂ = m / bc1 and v̂ = v / bc2.
        AdamStep {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            step_size: (lr / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        }
    }

    /// One update of every buffer in `params` (same order and sizes as in `new`). Returns
    /// the index of the first buffer whose gradient held a NaN or an infinity (checked in
    /// the same pass, so the check costs no extra read of the gradients); the update has
    /// then already spread it into that buffer and its moments.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]], lr: f64) -> Option<usize> {
        let update = self.begin_step(lr);
        let mut first_bad = None;
        for (index, ((p, g), (m, v))) in params
            .iter_mut()
            .zip(grads)
            .zip(self.moments.iter_mut())
            .enumerate()
        {
            let non_finite = p
                .par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .map(|((p, g), (m, v))| update.update(p, g, m, v))
                .reduce(|| false, |a, b| a | b);
            if non_finite && first_bad.is_none() {
                first_bad = Some(index);
            }
        }
        first_bad
    }

    /// The moments, one (first, second) pair per parameter buffer, to update parts of them
    /// with `begin_step`'s `AdamStep` (the fused training step does, one row at a time).
    pub fn moments_mut(&mut self) -> &mut [(Vec<f32>, Vec<f32>)] {
        &mut self.moments
    }
}

/// The constants of one Adam step (bias corrections folded in), applied element-wise.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
}

impl AdamStep {
    /// Update `p` and its moments `m`, `v` with gradient `g` (all the same length). Returns
    /// whether `g` held a NaN or an infinity.
    #[inline]
    pub fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> bool {
        update(self, p, g, m, v)
    }

    /// `update` with an all-zero gradient, without reading one: the same arithmetic (so the
    /// same bits), for the rows of latents no sample in the batch used.
    #[inline]
    pub fn update_zero_grad(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32]) {
        update_zero_grad(self, p, m, v)
    }
}

/// `AdamStep::update`, compiled for each vector ISA (the same bits on each: no contraction
/// into fused multiply-adds).
#[multiversion(targets = "simd")]
fn update(c: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> bool {
    let (b1, b2, eps) = (c.beta1, c.beta2, c.eps);
    let (step_size, inv_sqrt_bc2) = (c.step_size, c.inv_sqrt_bc2);
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    // An all-ones exponent is ±inf or NaN; an integer OR vectorises where a float test
    // with an early exit would not.
    let mut exponent_all_ones = 0u32;
    for i in 0..n {
        exponent_all_ones |= u32::from(g[i].to_bits() & EXPONENT == EXPONENT);
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        p[i] -= step_size * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + eps);
    }
    exponent_all_ones != 0
}

/// `AdamStep::update_zero_grad`, compiled for each vector ISA.
#[multiversion(targets = "simd")]
fn update_zero_grad(c: &AdamStep, p: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    let (b1, b2, eps) = (c.beta1, c.beta2, c.eps);
    let (step_size, inv_sqrt_bc2) = (c.step_size, c.inv_sqrt_bc2);
    let n = p.len();
    let (m, v) = (&mut m[..n], &mut v[..n]);
    let g = 0.0f32;
    for i in 0..n {
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        p[i] -= step_size * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + eps);
    }
}

impl Adam {
    /// Updates made so far (drives the bias correction).
    pub fn steps_taken(&self) -> i32 {
        self.step
    }

    /// First and second moments, one pair per parameter buffer (for checkpoints).
    pub fn moments(&self) -> &[(Vec<f32>, Vec<f32>)] {
        &self.moments
    }

    /// Put back a state saved from `steps_taken` and `moments`; the shapes must match `new`'s.
    pub fn restore(&mut self, steps_taken: i32, moments: Vec<(Vec<f32>, Vec<f32>)>) -> bool {
        let fits = moments.len() == self.moments.len()
            && moments
                .iter()
                .zip(&self.moments)
                .all(|(a, b)| a.0.len() == b.0.len() && a.1.len() == b.1.len());
        if fits {
            self.step = steps_taken;
            self.moments = moments;
        }
        fits
    }

    /// Forget the moments of some rows of parameter `param` (row width `width`): used when
    /// latents are re-initialised, so stale momentum does not undo the resampling.
    pub fn reset_rows(&mut self, param: usize, rows: &[usize], width: usize) {
        let (m, v) = &mut self.moments[param];
        for &r in rows {
            m[r * width..(r + 1) * width].fill(0.0);
            v[r * width..(r + 1) * width].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With bias correction, Adam's first step is lr · g / (|g| + ε): every coordinate
    /// moves by lr against the sign of its gradient.
    #[test]
    fn first_step_moves_by_lr() {
        let mut adam = Adam::new(&[2], 0.9, 0.999);
        let mut p = vec![1.0f32, -2.0];
        assert_eq!(adam.step(&mut [&mut p], &[&[0.5, 0.25]], 0.1), None);
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 2.1).abs() < 1e-6,
            "{p:?}"
        );
    }

    #[test]
    fn reports_the_first_buffer_with_a_non_finite_gradient() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut adam = Adam::new(&[3, 40_000], 0.9, 0.999);
            let (mut a, mut b) = (vec![0.0f32; 3], vec![0.0f32; 40_000]);
            let mut g = vec![1.0f32; 40_000];
            g[39_999] = bad;
            assert_eq!(
                adam.step(&mut [&mut a, &mut b], &[&[1.0, f32::MAX, -1.0], &g], 0.1),
                Some(1)
            );
        }
    }
}
