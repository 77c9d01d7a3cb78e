//! The attention core of one block, causal: rotated `q`, `k`, `v` stacked as
//! (3, b, heads, s, d_head), `q` already scaled by 1/sqrt(d_head) -> `z`, (b, s, heads, d_head),
//! TransformerLens' `hook_z` and the input of `W_O`.
//!
//! Fused (CPU): per (sequence, head), the keys transposed once, then per query position its
//! scores against the keys it may see (vectorised across keys), their softmax and the weighted
//! sum of values (vectorised across d_head), written straight into `z`'s layout. Composed from candle ops the same thing is two batched matmuls of b·heads tiny
//! (s × d_head) matrices (one `gemm` call each, whose packing and dispatch dwarf 25 × 25 × 64
//! products), a masked softmax, and a transpose copy. Arithmetic is in f32 for every storage
//! dtype, rounding once at the output (the composed path rounds scores and probabilities to the
//! storage dtype as well; the two agree to that rounding).
//!
//! Generic (every candle device): the composed ops.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{contiguous_slice, dispatch, exp_nonpositive, Elem};

/// The (3, b, heads, s, d_head) dims of the stacked q, k, v.
fn dims(d: &[usize]) -> candle_core::Result<(usize, usize, usize, usize)> {
    match *d {
        [3, b, nh, s, hd] => Ok((b, nh, s, hd)),
        _ => candle_core::bail!(
            "causal_attention: expected q, k, v as (3, b, heads, s, d_head), got {d:?}"
        ),
    }
}

/// Vector width the scratch layouts are padded to (a multiple of every ISA's f32 lanes).
const LANES: usize = 16;

/// One head's keys transposed (d_head × s, padded to `LANES` columns) and values (s × d_head),
/// in f32, so that scores are computed across keys and outputs across d_head, both in whole
/// vectors.
struct HeadScratch {
    keys_t: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
    out: Vec<f32>,
}

impl HeadScratch {
    fn new(s: usize, hd: usize) -> Self {
        let padded = s.next_multiple_of(LANES);
        HeadScratch {
            keys_t: vec![0f32; hd * padded],
            values: vec![0f32; s * hd],
            scores: vec![0f32; padded],
            out: vec![0f32; hd],
        }
    }
}

/// One (batch, head): `z_t = softmax(q_t · kᵀ over positions ≤ t) · v` for every position t,
/// written to `dst` (s rows of `stride`, this head's d_head at the front of each). Compiled
/// per vector ISA (the release build's baseline is SSE2); same bits on each.
#[multiversion::multiversion(targets = "simd")]
fn attend_head<T: Elem>(
    q: &[T],
    k: &[T],
    v: &[T],
    sc: &mut HeadScratch,
    dst: &mut [T],
    stride: usize,
) {
    let hd = sc.out.len();
    let s = q.len() / hd;
    let padded = sc.scores.len();
    for (j, row) in k.chunks_exact(hd).enumerate() {
        for (d, x) in row.iter().enumerate() {
            sc.keys_t[d * padded + j] = x.to_f32();
        }
    }
    for (dst, x) in sc.values.iter_mut().zip(v) {
        *dst = x.to_f32();
    }
    for (t, q_t) in q.chunks_exact(hd).enumerate() {
        // Scores against the key blocks holding positions 0..=t, a block of LANES keys at a
        // time summed over d_head in a local accumulator, which stays in registers (later
        // positions in the last block are computed and ignored).
        let n = (t + 1).next_multiple_of(LANES);
        for (block, p) in sc.scores[..n].chunks_exact_mut(LANES).enumerate() {
            let mut acc = [0f32; LANES];
            for (d, qd) in q_t.iter().enumerate() {
                let qd = qd.to_f32();
                let k = &sc.keys_t[d * padded + block * LANES..][..LANES];
                for l in 0..LANES {
                    acc[l] += qd * k[l];
                }
            }
            p.copy_from_slice(&acc);
        }
        let p = &mut sc.scores[..=t];
        let max = p.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
        let mut sum = 0f32;
        for pj in p.iter_mut() {
            *pj = exp_nonpositive(*pj - max);
            sum += *pj;
        }
        let inv = 1.0 / sum;
        sc.out.fill(0.0);
        for (pj, vj) in p.iter().zip(sc.values.chunks_exact(hd)) {
            let w = pj * inv;
            for (o, x) in sc.out.iter_mut().zip(vj) {
                *o += w * x;
            }
        }
        for (z, o) in dst[t * stride..t * stride + hd].iter_mut().zip(&sc.out) {
            *z = T::of_f32(*o);
        }
    }
    debug_assert_eq!(s * hd, q.len());
}

struct CausalAttention;

impl CausalAttention {
    fn run<T: Elem>(qkv: &[T], d: &[usize]) -> candle_core::Result<Vec<T>> {
        let (b, nh, s, hd) = dims(d)?;
        let plane = b * nh * s * hd;
        let mut z = vec![T::zero(); plane];
        if plane == 0 {
            return Ok(z);
        }
        let (q_all, rest) = qkv.split_at(plane);
        let (k_all, v_all) = rest.split_at(plane);
        // One task per sequence: z's (s, heads, d_head) block of it.
        z.par_chunks_mut(s * nh * hd).enumerate().for_each_init(
            || HeadScratch::new(s, hd),
            |scratch, (bi, dst)| {
                for h in 0..nh {
                    let head = (bi * nh + h) * s * hd..(bi * nh + h + 1) * s * hd;
                    let (q, k, v) = (&q_all[head.clone()], &k_all[head.clone()], &v_all[head]);
                    attend_head(q, k, v, scratch, &mut dst[h * hd..], nh * hd);
                }
            },
        );
        Ok(z)
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = l.shape().dims();
        let (b, nh, s, hd) = dims(d)?;
        let out = dispatch!("causal_attention", [(x, st, l)], Self::run(x, d)?);
        Ok((out, Shape::from((b, s, nh, hd))))
    }
}

/// The fused kernel.
pub(super) fn fused(qkv: &Tensor) -> candle_core::Result<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(&CausalAttention)
}

/// The same function from candle ops: batched matmuls, the masked softmax, a transpose.
pub(super) fn generic(qkv: &Tensor) -> candle_core::Result<Tensor> {
    dims(qkv.dims())?;
    let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
    let scores = q.matmul(&k.t()?)?; // (b, heads, s, s)
    let probs = causal_softmax(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.contiguous()
}

/// Softmax over the last dim of (…, s, s) scores where row i sees columns 0..=i, in f32.
fn causal_softmax(scores: &Tensor) -> candle_core::Result<Tensor> {
    let s = match scores.dims() {
        [.., r, c] if r == c => *c,
        d => candle_core::bail!("causal_softmax: expected (..., s, s), got {d:?}"),
    };
    let dev = scores.device();
    let i = Tensor::arange(0u32, s as u32, dev)?;
    // Column j > row i is the future.
    let future = i.unsqueeze(0)?.broadcast_gt(&i.unsqueeze(1)?)?;
    let mask = future.where_cond(
        &Tensor::full(f32::NEG_INFINITY, (s, s), dev)?,
        &Tensor::zeros((s, s), DType::F32, dev)?,
    )?;
    let masked = scores.to_dtype(DType::F32)?.broadcast_add(&mask)?;
    candle_nn::ops::softmax_last_dim(&masked)?.to_dtype(scores.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Attention in f64 straight from the definition, independent of both implementations.
    fn reference(qkv: &[f32], (b, nh, s, hd): (usize, usize, usize, usize)) -> Vec<f64> {
        let plane = b * nh * s * hd;
        let at = |which: usize, bi: usize, h: usize, t: usize, i: usize| {
            qkv[which * plane + ((bi * nh + h) * s + t) * hd + i] as f64
        };
        let mut z = vec![0f64; plane];
        for bi in 0..b {
            for h in 0..nh {
                for t in 0..s {
                    let scores: Vec<f64> = (0..=t)
                        .map(|j| {
                            (0..hd)
                                .map(|i| at(0, bi, h, t, i) * at(1, bi, h, j, i))
                                .sum()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for i in 0..hd {
                        let zi: f64 = (0..=t).map(|j| e[j] / sum * at(2, bi, h, j, i)).sum();
                        z[((bi * s + t) * nh + h) * hd + i] = zi;
                    }
                }
            }
        }
        z
    }

    /// Both implementations against the f64 definition, with head sizes and sequence lengths
    /// that are and are not multiples of the 16 padded lanes.
    #[test]
    fn fused_and_generic_match_the_definition() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for dims @ (b, nh, s, hd) in [(2, 3, 7, 16), (3, 2, 21, 20), (1, 1, 1, 5), (2, 2, 32, 8)] {
            let qkv = (Tensor::randn(0f32, 1.0, (3, b, nh, s, hd), &dev)? * 1.5)?;
            // Relative to the largest output. Fused rounds once, at the output; generic also
            // rounds scores and probabilities to the storage dtype.
            for (dtype, fused_tol, generic_tol) in [
                (DType::F32, 2e-6, 2e-6),
                (DType::F16, 1e-3, 8e-3),
                (DType::BF16, 8e-3, 5e-2),
            ] {
                let x = qkv.to_dtype(dtype)?;
                // The reference sees the rounded inputs too.
                let want = reference(&x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?, dims);
                let scale = want.iter().fold(0f64, |m, w| m.max(w.abs()));
                for (name, got, tol) in [
                    ("fused", fused(&x)?, fused_tol),
                    ("generic", generic(&x)?, generic_tol),
                ] {
                    assert_eq!(got.dims(), [b, s, nh, hd], "{name} {dtype:?} shape");
                    assert_eq!(got.dtype(), dtype, "{name} dtype");
                    let got = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (*g as f64 - w).abs())
                        .fold(0f64, f64::max);
                    assert!(
                        worst <= tol * scale,
                        "{name} {dtype:?} {dims:?}: max |diff| {worst}, largest output {scale}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros((2, 1, 1, 3, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(fused(&x).is_err());
        assert!(generic(&x).is_err());
    }
}
