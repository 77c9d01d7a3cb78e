//! Summed negative log-likelihood of target tokens under rows of logits:
//! Σ_rows (logsumexp(row) − row[target]), the cross-entropy's numerator, in f64.
//!
//! Fused (CPU): rows in parallel, each read twice (max, then Σ exp(x − max) with the
//! vectorisable `exp`), nothing written. A 256 × 50304 chunk of Pythia logits is 51 MB; the
//! composed path (candle's `log_softmax`, then `gather`) runs single-threaded element-wise ops
//! that read and write it several times and costs as much as the unembedding product itself.
//!
//! Generic (every candle device): `log_softmax`, `gather`, sum.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use super::ops::exp_nonpositive;

/// Rows per parallel task (each row is a whole vocabulary).
const ROWS_PER_TASK: usize = 4;

/// `logsumexp(row) − row[target]` in f32, the sums in 16 independent partial sums so they
/// vectorise. Compiled per vector ISA; same bits on each.
#[multiversion::multiversion(targets = "simd")]
fn row_nll(row: &[f32], target: usize) -> f32 {
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
    sum.ln() + max - row[target]
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
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = logits.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("nll: the fused kernel runs on the CPU");
    };
    let data = cpu.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("nll: logits must be contiguous");
    };
    let data = &data[start..end];
    if vocab == 0 {
        return Ok(0.0);
    }
    Ok(data
        .par_chunks(vocab)
        .with_min_len(ROWS_PER_TASK)
        .zip(targets.par_iter())
        .map(|(row, &t)| row_nll(row, t as usize) as f64)
        .sum())
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

    #[test]
    fn bad_targets_are_errors() {
        let logits = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(fused(&logits, &[0]).is_err());
        assert!(fused(&logits, &[0, 5]).is_err());
    }
}
