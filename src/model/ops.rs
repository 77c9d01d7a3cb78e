//! Two fused CPU kernels for the attention block, forward-only (inference needs no gradient):
//!
//! - `split_qkv_rope`: HF's fused per-head QKV output (b, s, heads·3·d_head) -> q, k, v stacked as
//!   (3, b, heads, s, d_head), with rotary embeddings applied to the first `rotary_ndims` dims of
//!   q and k (rotate-half / NeoX convention). Done with candle ops this is a permute copy, two
//!   narrow copies, the rope op and a concatenation per q and k.
//! - `causal_softmax`: softmax over the last dim of (…, s, s) scores, where row i only sees
//!   columns 0..=i (others are written as 0). Saves building and adding a mask.
//!
//! Arithmetic is in f32 for every storage dtype (as transformers does for the softmax and for
//! cos/sin), so f16/bf16 models only round at the outputs.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

/// Storage element types the kernels handle, with lossless-enough conversion through f32.
trait Elem: candle_core::WithDType {
    fn to_f32(self) -> f32;
    fn of_f32(v: f32) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        v
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

fn contiguous_slice<'a, T>(
    data: &'a [T],
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// See the module docs. `cos`/`sin` are (s, rotary_ndims / 2), f32.
struct SplitQkvRope {
    n_heads: usize,
    d_head: usize,
    rotary_ndims: usize,
}

impl SplitQkvRope {
    fn run<T: Elem>(
        &self,
        qkv: &[T],
        qkv_l: &Layout,
        cos: &[f32],
        sin: &[f32],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, s, width) = qkv_l.shape().dims3()?;
        let (nh, hd, rot) = (self.n_heads, self.d_head, self.rotary_ndims);
        if width != 3 * nh * hd {
            candle_core::bail!("split_qkv_rope: last dim {width} != 3 * {nh} * {hd}");
        }
        if cos.len() < s * rot / 2 || sin.len() < s * rot / 2 {
            candle_core::bail!("split_qkv_rope: cos/sin shorter than the sequence");
        }
        let half = rot / 2;
        let mut out = vec![T::zero(); 3 * b * nh * s * hd];
        // One output chunk = one (which ∈ {q,k,v}, batch, head): s rows of d_head.
        out.par_chunks_mut(s * hd).enumerate().for_each(|(c, dst)| {
            let which = c / (b * nh);
            let bi = (c / nh) % b;
            let h = c % nh;
            for t in 0..s {
                let src_off = (bi * s + t) * width + h * 3 * hd + which * hd;
                let src = &qkv[src_off..src_off + hd];
                let d = &mut dst[t * hd..(t + 1) * hd];
                if which == 2 {
                    d.copy_from_slice(src);
                    continue;
                }
                let (c_row, s_row) = (
                    &cos[t * half..(t + 1) * half],
                    &sin[t * half..(t + 1) * half],
                );
                for i in 0..half {
                    let x1 = src[i].to_f32();
                    let x2 = src[i + half].to_f32();
                    d[i] = T::of_f32(x1 * c_row[i] - x2 * s_row[i]);
                    d[i + half] = T::of_f32(x2 * c_row[i] + x1 * s_row[i]);
                }
                d[rot..].copy_from_slice(&src[rot..]);
            }
        });
        Ok((out, Shape::from((3, b, nh, s, hd))))
    }
}

impl CustomOp3 for SplitQkvRope {
    fn name(&self) -> &'static str {
        "split-qkv-rope"
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
        let (cos, sin) = match (s2, s3) {
            (CpuStorage::F32(c), CpuStorage::F32(s)) => (
                contiguous_slice(c, l2, "cos")?,
                contiguous_slice(s, l3, "sin")?,
            ),
            _ => candle_core::bail!("split_qkv_rope: cos/sin must be f32"),
        };
        match s1 {
            CpuStorage::F32(x) => {
                let (v, sh) = self.run(contiguous_slice(x, l1, "qkv")?, l1, cos, sin)?;
                Ok((CpuStorage::F32(v), sh))
            }
            CpuStorage::F16(x) => {
                let (v, sh) = self.run(contiguous_slice(x, l1, "qkv")?, l1, cos, sin)?;
                Ok((CpuStorage::F16(v), sh))
            }
            CpuStorage::BF16(x) => {
                let (v, sh) = self.run(contiguous_slice(x, l1, "qkv")?, l1, cos, sin)?;
                Ok((CpuStorage::BF16(v), sh))
            }
            other => candle_core::bail!("split_qkv_rope: unsupported dtype {:?}", other.dtype()),
        }
    }
}

/// (b, s, heads·3·d_head) contiguous -> (3, b, heads, s, d_head), rope applied to q and k.
pub fn split_qkv_rope(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    n_heads: usize,
    d_head: usize,
    rotary_ndims: usize,
) -> candle_core::Result<Tensor> {
    let qkv = qkv.contiguous()?;
    qkv.apply_op3_no_bwd(
        &cos.to_dtype(DType::F32)?.contiguous()?,
        &sin.to_dtype(DType::F32)?.contiguous()?,
        &SplitQkvRope {
            n_heads,
            d_head,
            rotary_ndims,
        },
    )
}

struct CausalSoftmax;

impl CausalSoftmax {
    fn run<T: Elem>(x: &[T], layout: &Layout) -> candle_core::Result<Vec<T>> {
        let dims = layout.shape().dims();
        if dims.len() < 2 || dims[dims.len() - 1] != dims[dims.len() - 2] {
            candle_core::bail!("causal_softmax: expected (..., s, s), got {dims:?}");
        }
        let s = dims[dims.len() - 1];
        let mut out = vec![T::zero(); x.len()];
        if s == 0 {
            return Ok(out);
        }
        out.par_chunks_mut(s * s)
            .zip(x.par_chunks(s * s))
            .for_each(|(dst, src)| {
                // Scratch for the exponentials, so each is computed once, in f32.
                let mut tmp = vec![0f32; s];
                for i in 0..s {
                    let row = &src[i * s..i * s + i + 1];
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(v.to_f32()));
                    let mut sum = 0f32;
                    for (t, v) in tmp.iter_mut().zip(row) {
                        *t = (v.to_f32() - max).exp();
                        sum += *t;
                    }
                    let inv = 1.0 / sum;
                    for (d, t) in dst[i * s..i * s + i + 1].iter_mut().zip(&tmp) {
                        *d = T::of_f32(t * inv);
                    }
                    // Masked columns stay at the zeros `out` was created with.
                }
            });
        Ok(out)
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = l.shape().clone();
        let st = match s {
            CpuStorage::F32(x) => CpuStorage::F32(Self::run(contiguous_slice(x, l, "scores")?, l)?),
            CpuStorage::F16(x) => CpuStorage::F16(Self::run(contiguous_slice(x, l, "scores")?, l)?),
            CpuStorage::BF16(x) => {
                CpuStorage::BF16(Self::run(contiguous_slice(x, l, "scores")?, l)?)
            }
            other => candle_core::bail!("causal_softmax: unsupported dtype {:?}", other.dtype()),
        };
        Ok((st, shape))
    }
}

/// Causal softmax over the last dim of (..., s, s) attention scores.
pub fn causal_softmax(scores: &Tensor) -> candle_core::Result<Tensor> {
    scores.contiguous()?.apply_op1_no_bwd(&CausalSoftmax)
}
