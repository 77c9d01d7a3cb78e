//! LayerNorm over the last dim, `(x - mean) / sqrt(var + eps) · w + b`, as torch computes it:
//! the variance from the deviations (two passes over the row), in f32 for every storage dtype.
//!
//! Fused (CPU): rows in parallel, each row's sums kept in 16 independent partial sums so they
//! vectorise (compiled per vector ISA). candle's CPU kernel sums serially and takes the variance
//! as E[x²] − E[x]², which loses precision when a row's mean is large against its spread.
//!
//! Generic (every candle device): candle's own `layer_norm`.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{contiguous_slice, dispatch, rows_per_task, Elem};

/// Σ f(x) with independent partial sums (a single f32 accumulator is a serial chain).
#[inline(always)]
fn sum_of<T: Elem>(row: &[T], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|x| f(x.to_f32())).sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += f(c[l].to_f32());
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Normalise each row of `src` (rows of `w.len()`) into `dst`. Same bits on every ISA.
#[multiversion::multiversion(targets = "simd")]
fn normalize_rows<T: Elem>(dst: &mut [T], src: &[T], w: &[T], b: &[T], eps: f32) {
    let d = w.len();
    for (out, row) in dst.chunks_exact_mut(d).zip(src.chunks_exact(d)) {
        let mean = sum_of(row, |x| x) / d as f32;
        let var = sum_of(row, |x| (x - mean) * (x - mean)) / d as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((o, x), w), b) in out.iter_mut().zip(row).zip(w).zip(b) {
            *o = T::of_f32((x.to_f32() - mean) * rstd * w.to_f32() + b.to_f32());
        }
    }
}

struct LayerNorm {
    eps: f32,
}

impl LayerNorm {
    fn run<T: Elem>(&self, x: &[T], w: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let d = w.len();
        if d == 0 || b.len() != d || !x.len().is_multiple_of(d) {
            candle_core::bail!(
                "layer_norm: weight {d}, bias {} for {} elements",
                b.len(),
                x.len()
            );
        }
        let mut out = vec![T::zero(); x.len()];
        let chunk = rows_per_task(d) * d;
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(dst, src)| normalize_rows(dst, src, w, b, self.eps));
        Ok(out)
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let st = dispatch!(
            "layer_norm",
            [(x, s1, l1), (w, s2, l2), (b, s3, l3)],
            self.run(x, w, b)?
        );
        Ok((st, l1.shape().clone()))
    }
}

/// The fused kernel; `w` and `b` are converted to `x`'s dtype.
pub(super) fn fused(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    x.contiguous()?.apply_op3_no_bwd(
        &w.to_dtype(dt)?.contiguous()?,
        &b.to_dtype(dt)?.contiguous()?,
        &LayerNorm { eps },
    )
}

/// candle's layer norm (it needs a contiguous input).
pub(super) fn generic(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    candle_nn::ops::layer_norm(&x.contiguous()?, &w.to_dtype(dt)?, &b.to_dtype(dt)?, eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// LayerNorm in f64 from its definition.
    fn reference(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
        let d = w.len();
        x.chunks(d)
            .flat_map(|row| {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                let rstd = 1.0 / (var + eps).sqrt();
                row.iter()
                    .zip(w.iter().zip(b))
                    .map(move |(&v, (&w, &b))| (v as f64 - mean) * rstd * w as f64 + b as f64)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Against the f64 definition for each storage dtype, widths on both sides of the 16 lanes,
    /// and rows whose mean is 300 times their spread, where E[x²] − E[x]² in f32 breaks down.
    #[test]
    fn fused_matches_the_definition() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (rows, d, offset) in [(70, 512, 0f64), (3, 20, 1.0), (5, 48, 300.0)] {
            let x = (Tensor::randn(0f32, 1.0, (rows, d), &dev)? + offset)?;
            let w = Tensor::randn(1f32, 0.3, d, &dev)?;
            let b = Tensor::randn(0f32, 0.3, d, &dev)?;
            // Tolerance relative to the largest output: f32 accumulation over d, or one
            // rounding of the output in f16/bf16.
            for (dtype, tol) in [(DType::F32, 2e-6), (DType::F16, 1e-3), (DType::BF16, 8e-3)] {
                let (xd, wd, bd) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, b.to_dtype(dtype)?);
                let as_f32 = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
                let want = reference(&as_f32(&xd)?, &as_f32(&wd)?, &as_f32(&bd)?, 1e-5);
                let got = fused(&xd, &wd, &bd, 1e-5)?;
                assert_eq!((got.dims(), got.dtype()), (xd.dims(), dtype));
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                // x − mean in f32 cannot resolve less than x's own spacing.
                let x_max = as_f32(&xd)?.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
                let allowed = tol * scale + 8.0 * f32::EPSILON as f64 * x_max;
                let worst = as_f32(&got)?
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                assert!(
                    worst <= allowed,
                    "{dtype:?} {rows}x{d} offset {offset}: max |diff| {worst}, allowed {allowed}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_weights_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 8), DType::F32, &dev).unwrap();
        let w = Tensor::ones(6, DType::F32, &dev).unwrap();
        assert!(fused(&x, &w, &w, 1e-5).is_err());
    }
}
