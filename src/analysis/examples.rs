//! Top and uniform examples of a feature in one pass over the codes: the `top_k` largest
//! activations (context, position), and for each non-empty activation bin one token drawn
//! uniformly at random (reservoir sampling with a seeded generator per feature, so the draw
//! depends only on the seed and the scanned data).

use crate::spec::analyses::Bins;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExampleKind {
    /// The rank-th largest activation (0 = max).
    Top { rank: usize },
    /// The draw from activation bin [lo, hi).
    Bin { bin: usize, lo: f32, hi: f32 },
}

/// A token where the feature fires, with its whole context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    #[serde(flatten)]
    pub kind: ExampleKind,
    /// Index of the eval context.
    pub context: usize,
    pub position: usize,
    pub activation: f32,
    pub tokens: Vec<u32>,
    /// Each token decoded on its own.
    pub strings: Vec<String>,
    /// The feature's activation at every position of the context.
    pub acts: Vec<f32>,
}

/// A token position where a feature fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub context: usize,
    pub position: usize,
    pub activation: f32,
}

pub struct ExampleFinder {
    top_k: usize,
    width: f32,
    n_bins: usize,
    top: Vec<Hit>,
    /// Per bin: tokens seen so far and the current draw.
    bins: Vec<(u64, Option<Hit>)>,
    rng: ChaCha8Rng,
}

impl ExampleFinder {
    /// `max`: the feature's max activation over the scanned contexts.
    pub fn new(top_k: usize, bins: Bins, max: f32, seed: u64, feature: usize) -> Self {
        let (width, n_bins) = match bins {
            Bins::Width(w) => (w as f32, ((max / w as f32).floor() as usize + 1).max(1)),
            Bins::Count(n) => ((max / n as f32).max(f32::MIN_POSITIVE), n),
        };
        ExampleFinder {
            top_k,
            width,
            n_bins,
            top: Vec::with_capacity(top_k + 1),
            bins: vec![(0, None); n_bins],
            rng: ChaCha8Rng::seed_from_u64(
                seed ^ (feature as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
        }
    }

    pub fn bin_of(&self, activation: f32) -> usize {
        ((activation / self.width) as usize).min(self.n_bins - 1)
    }

    pub fn bin_bounds(&self, bin: usize) -> (f32, f32) {
        (bin as f32 * self.width, (bin + 1) as f32 * self.width)
    }

    /// Offer a non-zero activation, in scan order.
    pub fn offer(&mut self, hit: Hit) {
        // Top k, largest first; ties keep the earlier token.
        if self.top.len() < self.top_k || hit.activation > self.top[self.top.len() - 1].activation {
            let at = self.top.partition_point(|h| h.activation >= hit.activation);
            self.top.insert(at, hit);
            self.top.truncate(self.top_k);
        }
        let bin = self.bin_of(hit.activation);
        let slot = &mut self.bins[bin];
        slot.0 += 1;
        if self.rng.random_range(0..slot.0) == 0 {
            slot.1 = Some(hit);
        }
    }

    /// (kind, hit) for every top example, then one per non-empty bin.
    pub fn finish(self) -> Vec<(ExampleKind, Hit)> {
        let mut out: Vec<(ExampleKind, Hit)> = self
            .top
            .iter()
            .enumerate()
            .map(|(rank, &h)| (ExampleKind::Top { rank }, h))
            .collect();
        for (bin, (_, hit)) in self.bins.iter().enumerate() {
            if let Some(h) = hit {
                let (lo, hi) = self.bin_bounds(bin);
                out.push((ExampleKind::Bin { bin, lo, hi }, *h));
            }
        }
        out
    }

    /// Tokens offered per bin (for tests).
    pub fn bin_counts(&self) -> Vec<u64> {
        self.bins.iter().map(|b| b.0).collect()
    }
}
