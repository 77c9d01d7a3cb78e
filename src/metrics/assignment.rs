//! One-to-one matching of the rows of a similarity matrix (linear sum assignment), as
//! `scipy.optimize.linear_sum_assignment(-sim)` does in the original MCS code.
//!
//! [`max_assignment`] is exact and fast on large, mostly-dissimilar matrices (two trained
//! dictionaries of thousands of atoms): it solves the assignment on a sparse set of
//! candidate pairs (each row's [`TOP_K`] most similar columns) with a shortest augmenting
//! path solver (Jonker–Volgenant / Crouse style, Dijkstra on a heap) that also yields dual
//! potentials, then certifies the result over the FULL dense matrix by LP duality:
//!
//! In cost form (`cost = -sim`, rows ≤ cols, every row matched) the dual of the assignment
//! LP is: maximise Σu_r + Σv_c subject to u_r + v_c ≤ cost[r][c] for all (r, c) and
//! v_c ≤ 0. The solver keeps v_c ≤ 0, v_c = 0 on unmatched columns and sets
//! u_r = cost[r][col(r)] − v[col(r)] (matched pairs tight), so the primal total equals the
//! dual objective; if moreover every pair of the dense matrix satisfies
//! cost[r][c] − v_c ≥ u_r − [`TOL`], then (u − TOL, v) is dual feasible and the matching is
//! optimal to within rows × TOL (TOL = 1e-9, so 4·10⁻⁶ on 4096 rows, far below f32
//! precision of a cosine). Every pair that fails the check is added to the candidate set
//! (at most [`TOP_K`] per row and round, the most violated first) and the sparse problem
//! solved again; the set only grows, so this terminates (at worst on the dense problem).
//! A row that cannot reach a free column through its candidates (Hall's condition fails on
//! the sparse graph) has its candidate count doubled and is searched again. Ties in the
//! candidate choice are broken by a hash of (row, column), so dead latents (all-zero rows)
//! do not all compete for the same few columns. rows > cols is solved on the transpose.
//!
//! [`max_assignment_hungarian`] is the previous implementation (the `pathfinding` crate's
//! O(n²m) Hungarian algorithm on integer weights), kept as the reference.

use pathfinding::matrix::Matrix;
use pathfinding::prelude::kuhn_munkres;
use rayon::prelude::*;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Candidate columns per row in the first sparse solve.
pub const TOP_K: usize = 24;
/// Slack allowed in the dual feasibility check (in cosine units).
pub const TOL: f64 = 1e-9;

const SCALE: f64 = (1u64 << 40) as f64;

/// For a (rows × cols) row-major similarity matrix, the assignment maximising the total
/// similarity: `Some(col)` for each row (every row is matched when rows ≤ cols; when
/// rows > cols, only `cols` rows are). NaN similarities count as 0.
pub fn max_assignment(sim: &[f32], rows: usize, cols: usize) -> Vec<Option<usize>> {
    max_assignment_k(sim, rows, cols, TOP_K)
}

/// [`max_assignment`] with `k` initial candidates per row (any k ≥ 1 gives the same
/// optimum; it only changes the speed).
pub fn max_assignment_k(sim: &[f32], rows: usize, cols: usize, k: usize) -> Vec<Option<usize>> {
    assert_eq!(
        sim.len(),
        rows * cols,
        "similarity matrix has the wrong size"
    );
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    let sim: Cow<[f32]> = if sim.iter().any(|v| v.is_nan()) {
        Cow::Owned(
            sim.iter()
                .map(|&v| if v.is_nan() { 0.0 } else { v })
                .collect(),
        )
    } else {
        Cow::Borrowed(sim)
    };
    if rows <= cols {
        solve(&sim, rows, cols, k).into_iter().map(Some).collect()
    } else {
        let mut t = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = sim[r * cols + c];
            }
        }
        let rows_of_cols = solve(&t, cols, rows, k);
        let mut out = vec![None; rows];
        for (c, r) in rows_of_cols.into_iter().enumerate() {
            out[r] = Some(c);
        }
        out
    }
}

/// The reference: the `pathfinding` crate's Hungarian algorithm on cosines scaled by 2^40
/// and rounded to integers. O(n²m); use on small matrices only.
pub fn max_assignment_hungarian(sim: &[f32], rows: usize, cols: usize) -> Vec<Option<usize>> {
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

/// Sparse candidate pairs: per row, (column, cost = −sim), plus a bitset for membership.
struct Candidates {
    adj: Vec<Vec<(u32, f64)>>,
    bits: Vec<u64>,
    m: usize,
    /// Per row: its top `width` columns are candidates (other pairs may be too).
    width: Vec<usize>,
}

/// The `k` most similar columns of row `r`, with their costs. Ties are broken by a hash of
/// (row, column), so rows with equal similarities (dead latents: all zero) get different
/// candidates instead of all competing for the same few columns. The order is total, so a
/// row's top 2k contain its top k.
fn top_of_row(row: &[f32], r: usize, k: usize, idx: &mut Vec<u32>) -> Vec<(u32, f64)> {
    let salt = (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mix = |c: u32| {
        let mut z = salt ^ c as u64;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    idx.clear();
    idx.extend(0..row.len() as u32);
    if k < row.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            row[b as usize]
                .total_cmp(&row[a as usize])
                .then_with(|| mix(a).cmp(&mix(b)))
        });
    }
    idx[..k]
        .iter()
        .map(|&c| (c, -(row[c as usize] as f64)))
        .collect()
}

impl Candidates {
    fn top_k(sim: &[f32], n: usize, m: usize, k: usize) -> Self {
        let k = k.clamp(1, m);
        let adj: Vec<Vec<(u32, f64)>> = (0..n)
            .into_par_iter()
            .map_init(
                || Vec::with_capacity(m),
                |idx: &mut Vec<u32>, r| top_of_row(&sim[r * m..(r + 1) * m], r, k, idx),
            )
            .collect();
        let mut bits = vec![0u64; (n * m).div_ceil(64)];
        for (r, row) in adj.iter().enumerate() {
            for &(c, _) in row {
                let i = r * m + c as usize;
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        let width = vec![k; n];
        Candidates {
            adj,
            bits,
            m,
            width,
        }
    }

    /// Doubles row r's width: adds its top 2·width columns. False if already full.
    fn widen(&mut self, sim: &[f32], r: usize, idx: &mut Vec<u32>) -> bool {
        if self.width[r] >= self.m {
            return false;
        }
        self.width[r] = (self.width[r] * 2).min(self.m);
        let m = self.m;
        for (c, w) in top_of_row(&sim[r * m..(r + 1) * m], r, self.width[r], idx) {
            self.insert(r, c as usize, w);
        }
        true
    }

    /// Adds (r, c); false if it was already there.
    fn insert(&mut self, r: usize, c: usize, cost: f64) -> bool {
        let i = r * self.m + c;
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        self.adj[r].push((c as u32, cost));
        true
    }

    fn len(&self) -> usize {
        self.adj.iter().map(Vec::len).sum()
    }
}

/// Result of a sparse solve: the matching and the column potentials (cost form).
struct Solution {
    col4row: Vec<usize>,
    v: Vec<f64>,
}

/// Min-cost assignment of all `n` rows (n ≤ m) on the candidate pairs, by successive
/// shortest augmenting paths with potentials. A row that cannot reach a free column through
/// the candidates (Hall's condition fails on the sparse graph) has its width doubled and is
/// searched again: it is the free start row, so its new pairs keep every invariant, and a
/// full row always reaches a free column.
fn sparse_solve(
    cand: &mut Candidates,
    sim: &[f32],
    n: usize,
    m: usize,
    widened: &mut usize,
) -> Solution {
    const NONE: usize = usize::MAX;
    let mut v = vec![0f64; m];
    let mut col4row = vec![NONE; n];
    let mut row4col = vec![NONE; m];
    // Cost of each row's matched pair.
    let mut mcost = vec![0f64; n];
    let mut dist = vec![f64::INFINITY; m];
    let mut path = vec![NONE; m];
    let mut path_cost = vec![0f64; m];
    let mut done = vec![false; m];
    let mut touched: Vec<usize> = Vec::new();
    let mut scanned: Vec<usize> = Vec::new();
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut idx = Vec::new();
    for s in 0..n {
        let sink = loop {
            // Row potential of the start row: its smallest reduced cost, so distances ≥ 0.
            let mut ui = cand.adj[s]
                .iter()
                .map(|&(c, w)| w - v[c as usize])
                .fold(f64::INFINITY, f64::min);
            let mut i = s;
            let mut di = 0f64;
            let found = loop {
                for &(c, w) in &cand.adj[i] {
                    let c = c as usize;
                    if done[c] {
                        continue;
                    }
                    let d = di + (w - v[c] - ui);
                    if d < dist[c] {
                        if dist[c] == f64::INFINITY {
                            touched.push(c);
                        }
                        dist[c] = d;
                        path[c] = i;
                        path_cost[c] = w;
                        heap.push(Entry(d, c));
                    }
                }
                let c = loop {
                    match heap.pop() {
                        None => break None,
                        Some(Entry(d, c)) => {
                            if !done[c] && d <= dist[c] {
                                break Some(c);
                            }
                        }
                    }
                };
                let Some(c) = c else { break None };
                done[c] = true;
                scanned.push(c);
                if row4col[c] == NONE {
                    break Some(c);
                }
                i = row4col[c];
                di = dist[c];
                ui = mcost[i] - v[c];
            };
            if found.is_none() {
                for &c in &touched {
                    dist[c] = f64::INFINITY;
                    done[c] = false;
                }
                touched.clear();
                scanned.clear();
                heap.clear();
                let grew = cand.widen(sim, s, &mut idx);
                assert!(grew, "assignment: a full row found no free column");
                *widened += 1;
            }
            if let Some(sink) = found {
                break sink;
            }
        };
        let delta = dist[sink];
        for &c in &scanned {
            v[c] -= delta - dist[c];
        }
        let mut j = sink;
        loop {
            let i = path[j];
            row4col[j] = i;
            let prev = col4row[i];
            col4row[i] = j;
            mcost[i] = path_cost[j];
            if i == s {
                break;
            }
            j = prev;
        }
        for &c in &touched {
            dist[c] = f64::INFINITY;
            done[c] = false;
        }
        touched.clear();
        scanned.clear();
        heap.clear();
    }
    Solution { col4row, v }
}

/// Heap entry ordered by smallest distance first.
struct Entry(f64, usize);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

/// Statistics of one exact solve, for tests and timing.
#[derive(Debug, Clone, Default)]
pub struct SolveStats {
    /// Sparse solves (1 when the first candidate set already held the optimum).
    pub rounds: usize,
    /// Candidate pairs in the final sparse problem.
    pub candidates: usize,
    /// Dense-check violations on pairs that were already candidates (0 unless the sparse
    /// solver is wrong or rounding exceeds TOL).
    pub violations_in_candidates: usize,
    /// Rows whose candidates had to be widened (doubled) to reach a free column.
    pub widened: usize,
}

fn solve(sim: &[f32], n: usize, m: usize, k: usize) -> Vec<usize> {
    solve_stats(sim, n, m, k).0
}

/// Cost-form solve of all `n` rows against `m ≥ n` columns, certified over the dense matrix.
fn solve_stats(sim: &[f32], n: usize, m: usize, k: usize) -> (Vec<usize>, SolveStats) {
    debug_assert!(n <= m);
    let k = k.clamp(1, m);
    let mut cand = Candidates::top_k(sim, n, m, k);
    let mut stats = SolveStats::default();
    loop {
        stats.rounds += 1;
        let sol = sparse_solve(&mut cand, sim, n, m, &mut stats.widened);
        debug_assert!(sol.v.iter().all(|&v| v <= 0.0));
        // Dense certificate: every pair's reduced cost ≥ −TOL.
        let v = &sol.v;
        let in_cand = |r: usize, c: usize| {
            let i = r * m + c;
            cand.bits[i / 64] & (1 << (i % 64)) != 0
        };
        let violators: Vec<(usize, Vec<u32>, usize)> = (0..n)
            .into_par_iter()
            .filter_map(|r| {
                let row = &sim[r * m..(r + 1) * m];
                let j = sol.col4row[r];
                let floor = -(row[j] as f64) - v[j] - TOL;
                let mut bad: Vec<(f64, u32)> = row
                    .iter()
                    .zip(v)
                    .enumerate()
                    .filter_map(|(c, (&s, &vc))| {
                        let red = -(s as f64) - vc;
                        (red < floor).then_some((red, c as u32))
                    })
                    .collect();
                let before = bad.len();
                bad.retain(|&(_, c)| !in_cand(r, c as usize));
                let known = before - bad.len();
                // Only the `k` most violated pairs of a row: enough to progress, and keeps
                // the sparse problem small when the first solve was far off.
                if bad.len() > k {
                    bad.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
                    bad.truncate(k);
                }
                let bad: Vec<u32> = bad.into_iter().map(|(_, c)| c).collect();
                (before > 0).then_some((r, bad, known))
            })
            .collect();
        let mut added = 0;
        for (r, bad, known) in violators {
            stats.violations_in_candidates += known;
            for c in bad {
                let c = c as usize;
                cand.insert(r, c, -(sim[r * m + c] as f64));
                added += 1;
            }
        }
        if added == 0 {
            stats.candidates = cand.len();
            if stats.violations_in_candidates > 0 {
                tracing::warn!(
                    "assignment: {} candidate pairs violate the dual check by more than {TOL}",
                    stats.violations_in_candidates
                );
            }
            return (sol.col4row, stats);
        }
    }
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

    fn assert_one_to_one(a: &[Option<usize>], rows: usize, cols: usize) {
        let used: Vec<usize> = a.iter().flatten().copied().collect();
        let mut dedup = used.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(used.len(), dedup.len(), "not one-to-one");
        assert_eq!(used.len(), rows.min(cols));
        assert!(used.iter().all(|&c| c < cols));
    }

    /// Random unit rows in `d` dimensions.
    fn unit_rows(rng: &mut impl Rng, n: usize, d: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                let v: Vec<f64> = (0..d)
                    .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal))
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    /// A dictionary of `n_small` unit atoms and a larger one holding noisy copies (cosine
    /// 0.7–0.99) of 60% of them plus random atoms, in shuffled order.
    fn noisy_copies(
        rng: &mut impl Rng,
        n_small: usize,
        n_large: usize,
        d: usize,
    ) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let small = unit_rows(rng, n_small, d);
        let mut large = unit_rows(rng, n_large, d);
        let copies = (n_small.min(n_large) * 3) / 5;
        for (i, atom) in small.iter().take(copies).enumerate() {
            let t: f64 = rng.random_range(0.7..0.99);
            let noise = &large[i];
            let dot: f64 = noise.iter().zip(atom).map(|(a, b)| a * b).sum();
            let mut perp: Vec<f64> = noise.iter().zip(atom).map(|(a, b)| a - dot * b).collect();
            let pn = perp.iter().map(|x| x * x).sum::<f64>().sqrt();
            perp.iter_mut().for_each(|x| *x /= pn);
            large[i] = atom
                .iter()
                .zip(&perp)
                .map(|(a, p)| t * a + (1.0 - t * t).sqrt() * p)
                .collect();
        }
        for i in (1..large.len()).rev() {
            let j = rng.random_range(0..=i);
            large.swap(i, j);
        }
        (small, large)
    }

    /// Cosines of the two dictionaries of `noisy_copies`.
    fn dictionary_like(rng: &mut impl Rng, n_small: usize, n_large: usize, d: usize) -> Vec<f32> {
        let (small, large) = noisy_copies(rng, n_small, n_large, d);
        let mut sim = Vec::with_capacity(n_small * n_large);
        for a in &small {
            for b in &large {
                sim.push(a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() as f32);
            }
        }
        sim
    }

    /// Same total as the dense Hungarian reference (and one-to-one), for several initial
    /// candidate counts, so the violation and infeasible-candidate paths are exercised.
    fn check_against_hungarian(sim: &[f32], rows: usize, cols: usize, what: &str) {
        let want = total(sim, cols, &max_assignment_hungarian(sim, rows, cols));
        for k in [1, 2, 5, TOP_K] {
            let a = max_assignment_k(sim, rows, cols, k);
            assert_one_to_one(&a, rows, cols);
            let got = total(sim, cols, &a);
            assert!(
                (got - want).abs() < 1e-6,
                "{what} {rows}x{cols} k={k}: {got} vs {want}"
            );
        }
        // No candidate pair may fail the dual check (the sparse solver keeps it exactly).
        let (n, m, t) = if rows <= cols {
            (rows, cols, sim.to_vec())
        } else {
            let mut t = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = sim[r * cols + c];
                }
            }
            (cols, rows, t)
        };
        let (_, stats) = solve_stats(&t, n, m, 3);
        assert_eq!(stats.violations_in_candidates, 0, "{what}: {stats:?}");
    }

    #[test]
    fn equals_hungarian_on_random_matrices() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for trial in 0..150 {
            let rows = rng.random_range(1..=200);
            let cols = rng.random_range(1..=400);
            let (rows, cols) = if trial % 3 == 0 {
                (cols, rows)
            } else {
                (rows, cols)
            };
            let sim: Vec<f32> = match trial % 4 {
                // Uniform, negative included.
                0 | 1 => (0..rows * cols)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect(),
                // Heavy ties: a few distinct values.
                2 => (0..rows * cols)
                    .map(|_| rng.random_range(-2..=3) as f32 / 4.0)
                    .collect(),
                // All negative, narrow range.
                _ => (0..rows * cols)
                    .map(|_| rng.random_range(-0.3..-0.1))
                    .collect(),
            };
            check_against_hungarian(&sim, rows, cols, &format!("trial {trial}"));
        }
    }

    #[test]
    fn equals_hungarian_on_dictionary_like_matrices() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for trial in 0..60 {
            let small = rng.random_range(1..=200);
            let large = rng.random_range(small..=400.max(small));
            let mut sim = dictionary_like(&mut rng, small, large, 64);
            if trial % 2 == 1 {
                // Dead latents: zero rows in the smaller, zero columns in the larger.
                for r in (0..small).step_by(3) {
                    sim[r * large..(r + 1) * large].fill(0.0);
                }
                for c in (0..large).step_by(5) {
                    (0..small).for_each(|r| sim[r * large + c] = 0.0);
                }
            }
            check_against_hungarian(&sim, small, large, &format!("dict {trial}"));
            // And the other way round (rows > cols).
            let mut t = vec![0f32; small * large];
            for r in 0..small {
                for c in 0..large {
                    t[c * small + r] = sim[r * large + c];
                }
            }
            check_against_hungarian(&t, large, small, &format!("dict^T {trial}"));
        }
    }

    #[test]
    fn degenerate_matrices() {
        // All equal: every row has the same candidates, so the sparse graph has no perfect
        // matching until rows are widened.
        for (rows, cols) in [(50, 50), (30, 80), (80, 30), (1, 1), (1, 9), (9, 1)] {
            let sim = vec![0.5f32; rows * cols];
            check_against_hungarian(&sim, rows, cols, "constant");
        }
        // One column dominates every row.
        let (rows, cols) = (40, 60);
        let sim: Vec<f32> = (0..rows * cols)
            .map(|i| {
                if i % cols == 7 {
                    1.0
                } else {
                    ((i * 37) % 101) as f32 / 1000.0
                }
            })
            .collect();
        check_against_hungarian(&sim, rows, cols, "dominant column");
        // NaN counts as 0.
        let sim = [f32::NAN, 0.5, 0.4, f32::NAN];
        assert_eq!(max_assignment(&sim, 2, 2), vec![Some(1), Some(0)]);
        assert!(max_assignment(&[], 0, 5).is_empty());
        assert_eq!(max_assignment(&[], 3, 0), vec![None; 3]);
    }

    /// Real scale: dictionaries of 4096 and 8192 atoms in d = 512, the larger holding noisy
    /// copies of 60% of the smaller's atoms.
    /// `cargo test --release --lib metrics::assignment -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing_4096_vs_8192() {
        use crate::metrics::mcs::cosine_matrix;
        use candle_core::{Device, Tensor};
        use std::time::Instant;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("?")
            .trim()
            .to_string();
        let avx512 = cpuinfo.split_whitespace().any(|w| w == "avx512f");
        println!(
            "cpu: {model}; avx512f: {avx512}; threads: {}",
            rayon::current_num_threads()
        );
        let (n_small, n_large, d) = (4096usize, 8192usize, 512usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let (small, large) = noisy_copies(&mut rng, n_small, n_large, d);
        let flat =
            |rows: &[Vec<f64>]| -> Vec<f32> { rows.iter().flatten().map(|&x| x as f32).collect() };
        let a = Tensor::from_vec(flat(&small), (n_small, d), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(flat(&large), (n_large, d), &Device::Cpu).unwrap();
        let t0 = Instant::now();
        let (sim, rows, cols) = cosine_matrix(&a, &b).unwrap();
        let t_cos = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let (col4row, stats) = solve_stats(&sim, rows, cols, TOP_K);
        let t_assign = t1.elapsed().as_secs_f64();
        let assignment: Vec<Option<usize>> = col4row.into_iter().map(Some).collect();
        assert_one_to_one(&assignment, rows, cols);
        let tot = total(&sim, cols, &assignment);
        let above = assignment
            .iter()
            .enumerate()
            .filter(|(r, c)| sim[r * cols + c.unwrap()] > 0.9)
            .count();
        println!(
            "{n_small} x {n_large} (d {d}): cosine matrix {t_cos:.2} s, assignment {t_assign:.2} s, \
             total {:.2} s; rounds {}, candidates {}, mean matched cos {:.4}, above 0.9: {above}",
            t_cos + t_assign,
            stats.rounds,
            stats.candidates,
            tot / rows as f64
        );
        assert_eq!(stats.violations_in_candidates, 0);
        assert!(t_cos + t_assign < 30.0, "too slow");
    }

    /// Harder than trained dictionaries for the sparse start: uniform random similarities
    /// (no structure, much competition) and anisotropic atoms (a decaying spectrum, so
    /// background cosines are large). Prints rounds and times.
    /// `cargo test --release --lib metrics::assignment::tests::timing_hard -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing_hard_cases() {
        use std::time::Instant;
        let (n, m) = (4096usize, 8192usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let uniform: Vec<f32> = (0..n * m).map(|_| rng.random_range(-1.0..1.0)).collect();
        let d = 512;
        let scale: Vec<f64> = (0..d).map(|i| 1.0 / (1.0 + i as f64).sqrt()).collect();
        let mut aniso = |k: usize| -> Vec<Vec<f64>> {
            unit_rows(&mut rng, k, d)
                .into_iter()
                .map(|v| {
                    let v: Vec<f64> = v.iter().zip(&scale).map(|(x, s)| x * s).collect();
                    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                    v.into_iter().map(|x| x / norm).collect()
                })
                .collect()
        };
        let (a, b) = (aniso(n), aniso(m));
        let b_flat: Vec<f32> = b.iter().flatten().map(|&x| x as f32).collect();
        let aniso_sim: Vec<f32> = a
            .par_iter()
            .flat_map_iter(|x| {
                let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                b_flat
                    .chunks(d)
                    .map(move |y| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
                    .collect::<Vec<_>>()
            })
            .collect();
        for (name, sim) in [("uniform", &uniform), ("anisotropic", &aniso_sim)] {
            let t = Instant::now();
            let (col4row, stats) = solve_stats(sim, n, m, TOP_K);
            let secs = t.elapsed().as_secs_f64();
            let a: Vec<Option<usize>> = col4row.into_iter().map(Some).collect();
            assert_one_to_one(&a, n, m);
            assert_eq!(stats.violations_in_candidates, 0);
            println!(
                "{name} {n} x {m}: assignment {secs:.2} s; rounds {}, candidates {}, mean {:.4}",
                stats.rounds,
                stats.candidates,
                total(sim, m, &a) / n as f64
            );
        }
        // Dead latents (zero decoder rows): a third of the smaller dictionary's rows and a
        // fifth of the larger's columns all 0, so massive ties.
        let mut dead = dictionary_like(&mut rng, n, m, 128);
        for r in (0..n).step_by(3) {
            dead[r * m..(r + 1) * m].fill(0.0);
        }
        for c in (0..m).step_by(5) {
            (0..n).for_each(|r| dead[r * m + c] = 0.0);
        }
        let t = Instant::now();
        let (col4row, stats) = solve_stats(&dead, n, m, TOP_K);
        let secs = t.elapsed().as_secs_f64();
        let a: Vec<Option<usize>> = col4row.into_iter().map(Some).collect();
        assert_one_to_one(&a, n, m);
        assert_eq!(stats.violations_in_candidates, 0);
        println!("dead latents {n} x {m}: assignment {secs:.2} s; {stats:?}");
        // Square: the last rows must reach the few free columns through long paths.
        let sq: Vec<f32> = aniso_sim
            .chunks(m)
            .flat_map(|row| row[..n].to_vec())
            .collect();
        let t = Instant::now();
        let (col4row, stats) = solve_stats(&sq, n, n, TOP_K);
        let secs = t.elapsed().as_secs_f64();
        let a: Vec<Option<usize>> = col4row.into_iter().map(Some).collect();
        assert_one_to_one(&a, n, n);
        println!("anisotropic square {n} x {n}: assignment {secs:.2} s; {stats:?}");
    }
}
