//! Summed negative log-likelihood of target tokens under rows of logits:
//! Σ_rows (logsumexp(row) − row[target]), the cross-entropy's numerator, in f64.
//!
//! Fused (CPU): rows in parallel, each read twice (max, then Σ exp(x − max) with the
//! vectorisable `exp`), nothing written. A 256 × 50304 chunk of Pythia logits is 51 MB; the
//! composed path (candle's `log_softmax`, then `gather`) runs single-threaded element-wise ops
//! that read and write it several times and costs as much as the unembedding product itself.
//!
//! Generic (every candle device): `log_softmax`, `gather`, sum.
//!
//! `fused_unembed` goes one step further on the CPU: the unembedding product and the loss
//! in tiles of `VOCAB_TILE` vocabulary columns, so no row of logits exists whole. Each tile
//! (rows × 512 f32, 512 KiB for 256 rows) is made by one thread's `gemm` and reduced to a
//! (max, Σ exp(x − max)) per row while it is still in that core's cache; the tiles' pairs are
//! combined per row in tile order, so the result does not depend on the thread count. The
//! logits never travel to memory and back, and no 51 MB output buffer is allocated (and
//! zeroed by the kernel) per chunk of rows.

use candle_core::{DType, Tensor, D};
use half::bf16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::bf16_panels::{pack_rows, Bf16Panels};
use super::ops::exp_nonpositive;
use crate::device::HostF32;
use crate::host_matmul::{matmul_on_this_thread, Dst, Mat};

/// The precision of the unembedding product in the evaluation's losses (`eval.unembedding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnembeddingPrecision {
    /// f32 inputs and sums, as transformers computes the logits.
    #[default]
    F32,
    /// Inputs (the final layer norm's output and W_U) rounded to bf16, products and sums in
    /// f32: about twice as fast where the CPU has AVX512_BF16.
    Bf16,
}

impl UnembeddingPrecision {
    /// The default; stage parameters leave it out of their keys, so the keys of specs
    /// written before `eval.unembedding` existed did not change.
    pub fn is_f32(&self) -> bool {
        *self == UnembeddingPrecision::F32
    }
}

/// Vocabulary columns per tile of `fused_unembed` (a multiple of `bf16_panels::PANEL`).
const VOCAB_TILE: usize = 512;
const _: () = assert!(VOCAB_TILE.is_multiple_of(super::bf16_panels::PANEL));

/// Rows per parallel task (each row is a whole vocabulary).
const ROWS_PER_TASK: usize = 4;

/// `logsumexp(row) − row[target]` in f32 (`row_max_sum_exp`, compiled per vector ISA; same
/// bits on each).
fn row_nll(row: &[f32], target: usize) -> f32 {
    let (max, sum) = row_max_sum_exp(row);
    sum.ln() + max - row[target]
}

/// A row's (max, Σ exp(x − max)) in f32, 16 independent partial sums so they vectorise
/// (`row_nll` of a whole row, `fused_unembed` of one tile of it).
#[multiversion::multiversion(targets = "simd")]
fn row_max_sum_exp(row: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut m = [f32::NEG_INFINITY; LANES];
    for c in chunks.clone() {
        for l in 0..LANES {
            m[l] = m[l].max(c[l]);
        }
    }
    let max = tail
        .iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    let mut s = [0f32; LANES];
    for c in chunks {
        for l in 0..LANES {
            s[l] += exp_nonpositive(c[l] - max);
        }
    }
    let sum = s.iter().sum::<f32>() + tail.iter().map(|x| exp_nonpositive(x - max)).sum::<f32>();
    (max, sum)
}

/// One vocabulary tile's share of the loss: per row (max, Σ exp(x − max)) over the tile, and
/// the logit of each row whose target lies in the tile.
struct TileSums {
    max_sum: Vec<(f32, f32)>,
    target_logits: Vec<(usize, f32)>,
}

/// A contiguous f32 CPU tensor's values, passed to `f`.
fn with_host_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let Some(host) = HostF32::of(t) else {
        candle_core::bail!("nll: {what} must be contiguous f32 on the CPU");
    };
    f(host.as_slice())
}

/// Σ NLL of `targets` (n) under the logits `x · w_t + bias`, `x` (n, d), `w_t` (d, vocab),
/// `bias` (vocab), all f32 on the CPU, without forming the logits (see the module docs).
pub(super) fn fused_unembed(
    x: &Tensor,
    w_t: &Tensor,
    bias: Option<&Tensor>,
    targets: &[u32],
) -> candle_core::Result<f64> {
    let (_, d) = x.dims2()?;
    let (d_w, vocab) = w_t.dims2()?;
    if !check_fit(x, (d_w, vocab), bias, targets)? {
        return Ok(0.0);
    }
    let (x, w_t) = (x.contiguous()?, w_t.contiguous()?);
    let bias = bias.map(|b| b.contiguous()).transpose()?;
    with_host_f32(&x, "x", |x| {
        with_host_f32(&w_t, "the unembedding", |w| match &bias {
            Some(b) => with_host_f32(b, "the bias", |b| Ok(tiled_nll(x, w, Some(b), d, targets))),
            None => Ok(tiled_nll(x, w, None, d, targets)),
        })
    })
}

/// Errors unless `x` (n, d), an unembedding of shape `w` (d, vocab), `bias` (vocab) and
/// `targets` (n, each < vocab) fit; false when there is nothing to sum.
fn check_fit(
    x: &Tensor,
    w: (usize, usize),
    bias: Option<&Tensor>,
    targets: &[u32],
) -> candle_core::Result<bool> {
    let (n, d) = x.dims2()?;
    let (d_w, vocab) = w;
    if d_w != d || bias.is_some_and(|b| b.dims() != [vocab]) || targets.len() != n {
        candle_core::bail!(
            "nll: x {:?}, unembedding ({d_w}, {vocab}), bias {:?}, {} targets do not fit",
            x.dims(),
            bias.map(|b| b.dims()),
            targets.len()
        );
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("nll: target {t} outside the vocabulary of {vocab}");
    }
    Ok(n > 0 && vocab > 0)
}

/// `fused_unembed` on host slices.
fn tiled_nll(x: &[f32], w: &[f32], bias: Option<&[f32]>, d: usize, targets: &[u32]) -> f64 {
    let n = targets.len();
    let vocab = w.len() / d;
    let (x, w) = (Mat::row_major(x, n, d), Mat::row_major(w, d, vocab));
    tiled_nll_with(vocab, targets, |first, width, logits| {
        logits.clear();
        match bias {
            Some(b) => {
                for _ in 0..n {
                    logits.extend_from_slice(&b[first..first + width]);
                }
                matmul_on_this_thread(logits, x, w.columns(first, width), Dst::Accumulate);
            }
            None => {
                logits.resize(n * width, 0.0);
                matmul_on_this_thread(logits, x, w.columns(first, width), Dst::Overwrite);
            }
        }
    })
}

/// Σ NLL of `targets` (n) under logits of width `vocab` that `logits_tile(first, width, buf)`
/// writes into `buf`, a tile of columns `first..first + width` of every row (n × width,
/// row-major): the tiles in parallel, each reduced while in cache, combined in tile order.
fn tiled_nll_with(
    vocab: usize,
    targets: &[u32],
    logits_tile: impl Fn(usize, usize, &mut Vec<f32>) + Sync,
) -> f64 {
    let n = targets.len();
    let tiles: Vec<TileSums> = (0..vocab.div_ceil(VOCAB_TILE))
        .into_par_iter()
        .map_init(Vec::new, |logits: &mut Vec<f32>, t| {
            let first = t * VOCAB_TILE;
            let width = VOCAB_TILE.min(vocab - first);
            logits_tile(first, width, logits);
            let rows = logits.chunks(width);
            TileSums {
                max_sum: rows.clone().map(row_max_sum_exp).collect(),
                target_logits: rows
                    .zip(targets)
                    .enumerate()
                    .filter_map(|(r, (row, &target))| {
                        let column = (target as usize).checked_sub(first)?;
                        (column < width).then(|| (r, row[column]))
                    })
                    .collect(),
            }
        })
        .collect();
    let mut target_logit = vec![0f32; n];
    for tile in &tiles {
        for &(r, logit) in &tile.target_logits {
            target_logit[r] = logit;
        }
    }
    (0..n)
        .map(|r| {
            let max = tiles
                .iter()
                .fold(f32::NEG_INFINITY, |m, t| m.max(t.max_sum[r].0));
            let sum: f64 = tiles
                .iter()
                .map(|t| {
                    let (m, s) = t.max_sum[r];
                    s as f64 * ((m - max) as f64).exp()
                })
                .sum();
            sum.ln() + max as f64 - target_logit[r] as f64
        })
        .sum()
}

/// `fused_unembed` with the product's inputs rounded to bf16 and f32 sums
/// ([`super::bf16_panels`]): `x` (n, d) f32 on the CPU, the unembedding packed.
pub(super) fn fused_unembed_bf16(
    x: &Tensor,
    w: &Bf16Panels,
    bias: Option<&Tensor>,
    targets: &[u32],
) -> candle_core::Result<f64> {
    let (_, d) = x.dims2()?;
    let vocab = w.n();
    if !check_fit(x, (w.k(), vocab), bias, targets)? {
        return Ok(0.0);
    }
    let x = x.contiguous()?;
    let bias = bias.map(|b| b.contiguous()).transpose()?;
    with_host_f32(&x, "x", |x| {
        if let Some(w) = w.values() {
            // Without AVX512_BF16: the f32 tiles from the rounded inputs, x rounded once.
            let x: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            return match &bias {
                Some(b) => {
                    with_host_f32(b, "the bias", |b| Ok(tiled_nll(&x, w, Some(b), d, targets)))
                }
                None => Ok(tiled_nll(&x, w, None, d, targets)),
            };
        }
        let x = pack_rows(x, d);
        let run = |b: Option<&[f32]>| {
            tiled_nll_with(vocab, targets, |first, width, logits| {
                w.tile(&x, first, width, b, logits)
            })
        };
        match &bias {
            Some(b) => with_host_f32(b, "the bias", |b| Ok(run(Some(b)))),
            None => Ok(run(None)),
        }
    })
}

/// Σ NLL over `logits` (n, vocab) with `targets` (n) on the CPU, f32 logits.
pub(super) fn fused(logits: &Tensor, targets: &[u32]) -> candle_core::Result<f64> {
    let (n, vocab) = logits.dims2()?;
    if targets.len() != n {
        candle_core::bail!("nll: {} targets for {n} rows", targets.len());
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("nll: target {t} outside the vocabulary of {vocab}");
    }
    if vocab == 0 {
        return Ok(0.0);
    }
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    with_host_f32(&logits, "logits", |data| {
        Ok(data
            .par_chunks(vocab)
            .with_min_len(ROWS_PER_TASK)
            .zip(targets.par_iter())
            .map(|(row, &t)| row_nll(row, t as usize) as f64)
            .sum())
    })
}

/// The same from candle ops, on any device.
pub(super) fn generic(logits: &Tensor, targets: &[u32]) -> candle_core::Result<f64> {
    let n = logits.dim(0)?;
    let t = Tensor::from_slice(targets, (n, 1), logits.device())?;
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = log_probs.gather(&t, 1)?;
    Ok(-picked.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against log-sum-exp in f64, on rows with a vocabulary not a multiple of 16 and logits
    /// spread far enough that a naive Σ exp would overflow f32.
    #[test]
    fn fused_and_generic_match_f64() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, vocab, spread) in [(9, 1000, 3.0f32), (3, 37, 40.0), (1, 16, 1.0)] {
            let logits = (Tensor::randn(0f32, 1.0, (n, vocab), &dev)? * spread as f64)?;
            let targets: Vec<u32> = (0..n).map(|i| (i * 7 % vocab) as u32).collect();
            let rows = logits.to_vec2::<f32>()?;
            let want: f64 = rows
                .iter()
                .zip(&targets)
                .map(|(r, &t)| {
                    let max = r.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                    let lse = max + r.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                    lse - r[t as usize] as f64
                })
                .sum();
            for (name, got) in [
                ("fused", fused(&logits, &targets)?),
                ("generic", generic(&logits, &targets)?),
            ] {
                let tol = 2e-6 * (want.abs() + n as f64 * spread as f64);
                assert!(
                    (got - want).abs() <= tol,
                    "{name} {n}x{vocab}: {got} vs {want}"
                );
            }
        }
        Ok(())
    }

    /// The tiled unembedding + loss against logits formed in f64 and a log-sum-exp in f64:
    /// a vocabulary that is not a multiple of the tile, targets in the first and last
    /// tiles, with and without a bias, and the same bits at 1 and 2 threads.
    #[test]
    fn fused_unembed_matches_f64() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (n, d, vocab) = (19, 24, 2 * VOCAB_TILE + 77);
        let x = (Tensor::randn(0f32, 1.0, (n, d), &dev)? * 2.0)?;
        let w = Tensor::randn(0f32, 1.0, (d, vocab), &dev)?;
        let b = Tensor::randn(0f32, 3.0, vocab, &dev)?;
        // The first and last columns, the rest spread over every tile.
        let mut targets: Vec<u32> = (0..n).map(|i| ((i * 613) % vocab) as u32).collect();
        (targets[1], targets[2]) = (0, vocab as u32 - 1);
        let (xs, ws, bs) = (
            x.to_vec2::<f32>()?,
            w.to_vec2::<f32>()?,
            b.to_vec1::<f32>()?,
        );
        for bias in [None, Some(&b)] {
            let want: f64 = (0..n)
                .map(|r| {
                    let logits: Vec<f64> = (0..vocab)
                        .map(|v| {
                            let dot: f64 = (0..d).map(|k| xs[r][k] as f64 * ws[k][v] as f64).sum();
                            dot + bias.map_or(0.0, |_| bs[v] as f64)
                        })
                        .collect();
                    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                    let lse = max + logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    lse - logits[targets[r] as usize]
                })
                .sum();
            let got = fused_unembed(&x, &w, bias, &targets)?;
            assert!(
                (got - want).abs() <= 1e-5 * want.abs(),
                "bias {}: {got} vs {want}",
                bias.is_some()
            );
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let serial = one.install(|| fused_unembed(&x, &w, bias, &targets))?;
            assert_eq!(
                serial.to_bits(),
                got.to_bits(),
                "thread count changed the bits"
            );
        }
        assert!(fused_unembed(&x, &w, None, &targets[1..]).is_err());
        assert!(fused_unembed(&x, &w, None, &[vocab as u32; 19]).is_err());
        Ok(())
    }

    #[test]
    fn bad_targets_are_errors() {
        let logits = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(fused(&logits, &[0]).is_err());
        assert!(fused(&logits, &[0, 5]).is_err());
    }
}
