//! `act(x @ w_t + b)` for f32 on the CPU in one product and at most one more pass.
//!
//! candle's CPU matmul zero-fills its output before `gemm` overwrites it, and the bias and
//! activation then read and write the whole output again into a fresh buffer. Here the
//! output starts as the bias repeated per row and `gemm` accumulates the product onto it
//! (`dst = dst + x·w`), then the activation, if any, runs in place. Without a bias the output
//! is left uninitialised and `gemm` writes every element. Same kernels and arguments as
//! candle's matmul otherwise; the bias now enters the sum before the product's partial sums
//! (when `gemm` splits the inner dimension), so results differ from matmul-then-add by float
//! rounding only.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::ops::{act_in_place, BiasAct};
use crate::host_matmul::{matmul, product, Dst, Mat};

/// The product's shapes: `x` is (rows, k) (any leading dims flattened), `w_t` is (k, n).
pub(super) struct Dims {
    pub rows: usize,
    pub k: usize,
    pub n: usize,
}

fn dims(x: &Layout, w: &Layout) -> candle_core::Result<(Dims, Shape)> {
    let xd = x.shape().dims();
    let (k, n) = match w.shape().dims() {
        [k, n] => (*k, *n),
        other => candle_core::bail!("fused linear: weight must be (in, out), got {other:?}"),
    };
    if xd.last() != Some(&k) {
        candle_core::bail!("fused linear: input {xd:?} does not end in {k}");
    }
    let rows = x.shape().elem_count() / k.max(1);
    let mut out = xd.to_vec();
    if let Some(last) = out.last_mut() {
        *last = n;
    }
    Ok((Dims { rows, k, n }, Shape::from(out)))
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::F32(_), None) => candle_core::bail!("fused linear: {what} not contiguous"),
        _ => candle_core::bail!("fused linear: {what} must be f32"),
    }
}

/// `act(x·w + bias)` as a fresh (rows, n) buffer.
pub(super) fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: BiasAct,
    d: &Dims,
) -> Vec<f32> {
    let Dims { rows, k, n } = *d;
    assert!(x.len() == rows * k && w.len() == k * n && bias.is_none_or(|b| b.len() == n));
    let (x, w) = (Mat::row_major(x, rows, k), Mat::row_major(w, k, n));
    let mut out = match bias {
        // The bias repeated per row, with the product accumulated onto it.
        Some(b) => {
            let mut out = b.repeat(rows);
            matmul(&mut out, x, w, Dst::Accumulate);
            out
        }
        None => product(x, w),
    };
    if act != BiasAct::Identity && n > 0 {
        let chunk = (65536 / n).max(1) * n;
        out.par_chunks_mut(chunk)
            .for_each(|rows| act_in_place(act, rows));
    }
    out
}

/// `act(x @ w_t + b)`; see the module docs.
pub(super) struct FusedLinear(pub BiasAct);

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
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
        let (d, shape) = dims(l1, l2)?;
        let (x, w, b) = (
            f32_slice(s1, l1, "input")?,
            f32_slice(s2, l2, "weight")?,
            f32_slice(s3, l3, "bias")?,
        );
        if b.len() != d.n {
            candle_core::bail!("fused linear: bias of {} for {} outputs", b.len(), d.n);
        }
        Ok((CpuStorage::F32(linear(x, w, Some(b), self.0, &d)), shape))
    }
}

/// `x @ w_t` without a bias or activation.
pub(super) struct FusedMatmul;

impl CustomOp2 for FusedMatmul {
    fn name(&self) -> &'static str {
        "fused-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (d, shape) = dims(l1, l2)?;
        let (x, w) = (f32_slice(s1, l1, "input")?, f32_slice(s2, l2, "weight")?);
        let out = linear(x, w, None, BiasAct::Identity, &d);
        Ok((CpuStorage::F32(out), shape))
    }
}
