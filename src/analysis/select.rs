//! Which latents to analyse, from their statistics.

use super::stats::LatentStats;
use crate::spec::analyses::FeatureSelect;
use crate::{Error, Result};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The selected latents, in the order they are shown (most frequent first for `top_n`).
/// Latents that never fired on the scanned contexts have no examples and are skipped,
/// except when named explicitly.
pub fn select_features(select: &FeatureSelect, stats: &[LatentStats]) -> Result<Vec<usize>> {
    let alive: Vec<usize> = (0..stats.len())
        .filter(|&j| stats[j].frequency > 0.0)
        .collect();
    Ok(match select {
        FeatureSelect::TopN(n) => {
            let mut by_freq = alive;
            // Stable sort: ties keep latent order, so the choice is deterministic.
            by_freq.sort_by(|&a, &b| stats[b].frequency.total_cmp(&stats[a].frequency));
            by_freq.truncate(*n);
            by_freq
        }
        FeatureSelect::Random { n, seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let mut chosen: Vec<usize> = alive.choose_multiple(&mut rng, *n).copied().collect();
            chosen.sort_unstable();
            chosen
        }
        FeatureSelect::Ids(ids) => {
            if let Some(bad) = ids.iter().find(|&&i| i >= stats.len()) {
                return Err(Error::input(format!(
                    "analyses.feature_ids: latent {bad} does not exist in a dictionary of {} latents",
                    stats.len()
                )));
            }
            ids.clone()
        }
        FeatureSelect::All => alive,
    })
}
