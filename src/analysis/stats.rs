//! Per-latent statistics in one streaming pass: how often it fires, its max, its mean when
//! active, and a histogram of its non-zero activations. The histogram has a fixed number of
//! equal bins from 0 to a range that doubles (merging bins pairwise, exactly) whenever a
//! larger value arrives, so it needs no first pass for the max and bounded memory.

use serde::{Deserialize, Serialize};

pub const HIST_BINS: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentStats {
    /// Fraction of scanned tokens where the latent is non-zero.
    pub frequency: f64,
    pub max: f32,
    /// Mean over the tokens where it is non-zero (0 if it never fires).
    pub mean_active: f64,
    /// Non-zero activations per bin of width `hist_range / HIST_BINS`, from 0.
    pub hist: Vec<u64>,
    pub hist_range: f32,
}

pub struct StatsAccumulator {
    d_sae: usize,
    tokens: u64,
    count: Vec<u64>,
    sum: Vec<f64>,
    max: Vec<f32>,
    hist: Vec<u64>,
    range: Vec<f32>,
}

impl StatsAccumulator {
    pub fn new(d_sae: usize) -> Self {
        StatsAccumulator {
            d_sae,
            tokens: 0,
            count: vec![0; d_sae],
            sum: vec![0.0; d_sae],
            max: vec![0.0; d_sae],
            hist: vec![0; d_sae * HIST_BINS],
            range: vec![0.0; d_sae],
        }
    }

    /// Add codes for some tokens (row-major tokens × d_sae).
    pub fn add(&mut self, codes: &[f32]) {
        for row in codes.chunks(self.d_sae) {
            self.tokens += 1;
            for (j, &v) in row.iter().enumerate() {
                if v > 0.0 {
                    self.add_one(j, v);
                }
            }
        }
    }

    fn add_one(&mut self, j: usize, v: f32) {
        self.count[j] += 1;
        self.sum[j] += v as f64;
        self.max[j] = self.max[j].max(v);
        let hist = &mut self.hist[j * HIST_BINS..(j + 1) * HIST_BINS];
        if self.range[j] == 0.0 {
            // The first value sets a power-of-two range just above it.
            self.range[j] = 2f32.powi(v.log2().floor() as i32 + 1);
        }
        while v >= self.range[j] {
            for b in 0..HIST_BINS / 2 {
                hist[b] = hist[2 * b] + hist[2 * b + 1];
            }
            hist[HIST_BINS / 2..].fill(0);
            self.range[j] *= 2.0;
        }
        let bin = ((v / self.range[j]) * HIST_BINS as f32) as usize;
        hist[bin.min(HIST_BINS - 1)] += 1;
    }

    pub fn finish(self) -> Vec<LatentStats> {
        (0..self.d_sae)
            .map(|j| LatentStats {
                frequency: self.count[j] as f64 / self.tokens.max(1) as f64,
                max: self.max[j],
                mean_active: if self.count[j] == 0 {
                    0.0
                } else {
                    self.sum[j] / self.count[j] as f64
                },
                hist: self.hist[j * HIST_BINS..(j + 1) * HIST_BINS].to_vec(),
                hist_range: self.range[j],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_histogram_equals_a_direct_count() {
        let values: Vec<f32> = (0..500)
            .map(|i| ((i * 37) % 101) as f32 * 0.173 + 0.01)
            .collect();
        let mut acc = StatsAccumulator::new(1);
        acc.add(&values);
        let s = acc.finish().remove(0);
        let width = s.hist_range / HIST_BINS as f32;
        let mut direct = vec![0u64; HIST_BINS];
        for v in &values {
            direct[((v / width) as usize).min(HIST_BINS - 1)] += 1;
        }
        assert_eq!(s.hist, direct);
        assert!(s.hist_range > 17.0 && s.hist_range <= 2.0 * 17.5);
        assert_eq!(s.frequency, 1.0);
        assert_eq!(s.max, values.iter().cloned().fold(0.0, f32::max));
    }
}
