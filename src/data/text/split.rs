//! Train/eval split at document level, so no document contributes tokens to both sides.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Indices of the documents on each side, each list in increasing (document) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSplit {
    pub train: Vec<usize>,
    pub eval: Vec<usize>,
}

/// Number of eval documents for `n` documents: `eval_fraction · n` rounded, at least 1 when
/// there are at least 2 documents (an eval set is always wanted), and never all of them.
pub fn eval_count(n: usize, eval_fraction: f64) -> usize {
    if n < 2 {
        return 0;
    }
    let want = (eval_fraction * n as f64).round();
    // `as` saturates (NaN → 0); the clamp keeps at least one document on each side.
    (want as usize).clamp(1, n - 1)
}

/// A seeded shuffle of `0..n`; its first `eval_count(n, eval_fraction)` indices are eval.
/// Both sides are returned sorted so contexts come out in document order (readable, and
/// independent of how the shuffle happened to order them).
pub fn split_documents(n: usize, eval_fraction: f64, seed: u64) -> DocumentSplit {
    let mut order: Vec<usize> = (0..n).collect();
    // A stream of its own, so this split does not share random numbers with other users of
    // the experiment seed.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7e47_5b11_7d0c_0001);
    order.shuffle(&mut rng);
    let n_eval = eval_count(n, eval_fraction);
    let mut eval = order[..n_eval].to_vec();
    let mut train = order[n_eval..].to_vec();
    eval.sort_unstable();
    train.sort_unstable();
    DocumentSplit { train, eval }
}
