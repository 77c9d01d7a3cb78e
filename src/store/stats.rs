//! Summary statistics of a store, accumulated while writing so that readers (the SAE's
//! decoder-bias initialisation, activation normalisation) never need a pass over the data.

use serde::{Deserialize, Serialize};

/// Statistics of the rows *as stored* (after any f16 rounding), so they describe exactly
/// what readers get back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreStats {
    /// Number of rows.
    pub count: u64,
    /// Per-dimension mean of the rows (zeros for an empty store).
    pub mean: Vec<f32>,
    /// Mean L2 norm of the rows.
    pub mean_norm: f64,
    /// Mean squared L2 norm of the rows.
    pub mean_sq_norm: f64,
}

/// Running sums in f64: f32 sums over millions of rows would lose the mean's low digits.
#[derive(Debug, Clone)]
pub(crate) struct StatsAccumulator {
    count: u64,
    sum: Vec<f64>,
    sum_norm: f64,
    sum_sq_norm: f64,
}

impl StatsAccumulator {
    pub(crate) fn new(dim: usize) -> Self {
        StatsAccumulator {
            count: 0,
            sum: vec![0.0; dim],
            sum_norm: 0.0,
            sum_sq_norm: 0.0,
        }
    }

    /// Add one row (`row.len() == dim`).
    pub(crate) fn add(&mut self, row: &[f32]) {
        let mut sq = 0f64;
        for (s, &v) in self.sum.iter_mut().zip(row) {
            let v = v as f64;
            *s += v;
            sq += v * v;
        }
        self.count += 1;
        self.sum_sq_norm += sq;
        self.sum_norm += sq.sqrt();
    }

    pub(crate) fn finish(&self) -> StoreStats {
        let n = self.count.max(1) as f64;
        StoreStats {
            count: self.count,
            mean: self.sum.iter().map(|s| (s / n) as f32).collect(),
            mean_norm: self.sum_norm / n,
            mean_sq_norm: self.sum_sq_norm / n,
        }
    }
}
