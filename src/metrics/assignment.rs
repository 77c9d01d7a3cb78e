//! One-to-one matching of the rows of a similarity matrix (linear sum assignment), as
//! `scipy.optimize.linear_sum_assignment(-sim)` does in the original MCS code. Uses the
//! Hungarian algorithm from the `pathfinding` crate, which needs integer weights: cosines
//! are scaled by 2^40 before rounding, far below any precision a cosine has in f32.

use pathfinding::matrix::Matrix;
use pathfinding::prelude::kuhn_munkres;

const SCALE: f64 = (1u64 << 40) as f64;

/// For a (rows × cols) row-major similarity matrix, the assignment maximising the total
/// similarity: `Some(col)` for each row (every row is matched when rows ≤ cols; when
/// rows > cols, only `cols` rows are).
pub fn max_assignment(sim: &[f32], rows: usize, cols: usize) -> Vec<Option<usize>> {
    assert_eq!(
        sim.len(),
        rows * cols,
        "similarity matrix has the wrong size"
    );
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    if rows <= cols {
        let weights = Matrix::from_fn(rows, cols, |(r, c)| scaled(sim[r * cols + c]));
        let (_, cols_of_rows) = kuhn_munkres(&weights);
        cols_of_rows.into_iter().map(Some).collect()
    } else {
        let weights = Matrix::from_fn(cols, rows, |(c, r)| scaled(sim[r * cols + c]));
        let (_, rows_of_cols) = kuhn_munkres(&weights);
        let mut out = vec![None; rows];
        for (c, r) in rows_of_cols.into_iter().enumerate() {
            out[r] = Some(c);
        }
        out
    }
}

fn scaled(v: f32) -> i64 {
    (v as f64 * SCALE).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn total(sim: &[f32], cols: usize, a: &[Option<usize>]) -> f64 {
        a.iter()
            .enumerate()
            .filter_map(|(r, c)| c.map(|c| sim[r * cols + c] as f64))
            .sum()
    }

    /// Best total over all injective maps from the smaller side, by brute force.
    fn brute_force(sim: &[f32], rows: usize, cols: usize) -> f64 {
        fn rec(sim: &[f32], rows: usize, cols: usize, r: usize, used: &mut Vec<bool>) -> f64 {
            if r == rows {
                return 0.0;
            }
            let mut best = f64::NEG_INFINITY;
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.max(sim[r * cols + c] as f64 + rec(sim, rows, cols, r + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        if rows <= cols {
            rec(sim, rows, cols, 0, &mut vec![false; cols])
        } else {
            let t: Vec<f32> = (0..cols * rows)
                .map(|i| sim[(i % rows) * cols + i / rows])
                .collect();
            rec(&t, cols, rows, 0, &mut vec![false; rows])
        }
    }

    #[test]
    fn matches_brute_force_on_small_random_matrices() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for trial in 0..300 {
            let rows = rng.random_range(1..=6);
            let cols = rng.random_range(1..=7);
            let sim: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let a = max_assignment(&sim, rows, cols);
            let used: Vec<usize> = a.iter().flatten().copied().collect();
            let mut dedup = used.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(used.len(), dedup.len(), "not one-to-one: {a:?}");
            assert_eq!(used.len(), rows.min(cols));
            let got = total(&sim, cols, &a);
            let want = brute_force(&sim, rows, cols);
            assert!((got - want).abs() < 1e-5, "trial {trial}: {got} vs {want}");
        }
    }

    #[test]
    fn greedy_is_not_enough() {
        // Greedy takes (0,0)=0.9 then (1,1)=0.1: total 1.0. Optimal: 0.8 + 0.8 = 1.6.
        let sim = [0.9, 0.8, 0.8, 0.1];
        assert_eq!(max_assignment(&sim, 2, 2), vec![Some(1), Some(0)]);
    }
}
