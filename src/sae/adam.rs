//! Adam (Kingma & Ba) without weight decay, on flat buffers. Written out rather than using
//! `candle_nn::AdamW` because the SAE step computes its gradients by hand (see `grads`),
//! and AdamW's default weight decay of 0.01 is not what the SAE literature trains with.

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

    /// One update of every buffer in `params` (same order and sizes as in `new`).
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]], lr: f64) {
        self.step += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bc1 = 1.0 - (b1 as f64).powi(self.step);
        let bc2 = 1.0 - (b2 as f64).powi(self.step);
        // θ -= lr · m̂ / (√v̂ + ε), with m̂ = m / bc1 and v̂ = v / bc2.
        let step_size = (lr / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        for ((p, g), (m, v)) in params.iter_mut().zip(grads).zip(self.moments.iter_mut()) {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((p, g), (m, v))| {
                    for i in 0..p.len() {
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        p[i] -= step_size * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + eps);
                    }
                });
        }
    }
}

impl Adam {
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
        adam.step(&mut [&mut p], &[&[0.5, 0.25]], 0.1);
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 2.1).abs() < 1e-6,
            "{p:?}"
        );
    }
}
