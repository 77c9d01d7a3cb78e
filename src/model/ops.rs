//! Fused CPU kernels for the forward pass, forward-only (inference needs no gradient). Each
//! replaces several candle ops, and so several passes over memory, with one multi-threaded pass
//! (candle's own elementwise ops run on one thread):
//!
//! - `split_qkv_rope`: HF's fused per-head QKV matmul output (b, s, heads·3·d_head) plus its bias
//!   -> q, k, v stacked as (3, b, heads, s, d_head), with rotary embeddings applied to the first
//!   `rotary_ndims` dims of q and k (rotate-half / NeoX convention). With candle ops this is a
//!   bias add, a permute copy, and per q and k two narrow copies, the rope op and a concatenation.
//! - `causal_attention`: scores, causal softmax and values in one pass ([`super::attention`]).
//! - `nll_sum`: the next-token loss of a chunk of logits in one read ([`super::nll`]).
//! - `layer_norm`: vectorised, with torch's two-pass variance ([`super::layer_norm`]).
//! - `bias_act`: `act(x + b)` row-wise: a bias add, optionally fused with the GELU.
//! - `add3`: `(a + b) + c`, the parallel-residual update.
//!
//! Arithmetic is in f32 for every storage dtype (as transformers does for the softmax and for
//! cos/sin), so f16/bf16 models only round at the outputs.
//!
//! The kernels have only a CPU implementation. [`Kernels::Generic`] computes the same
//! functions from plain candle ops, which every candle backend has, also in f32 and rounding
//! once at the output, so the two differ only in the order of operations and in the exp/erf
//! approximations. [`Kernels`] is how a model calls either.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor, D};
use half::{bf16, f16};
use rayon::prelude::*;

use super::fused_linear::{FusedLinear, FusedMatmul};
use super::{attention, layer_norm, nll};

/// Storage element types the kernels handle, converted through f32.
pub(super) trait Elem: candle_core::WithDType {
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

pub(super) fn contiguous_slice<'a, T>(
    data: &'a [T],
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Run `$body` with `$x…` bound to contiguous slices of one float type (all inputs must share
/// it) and wrap the resulting `Vec` back into that storage variant.
macro_rules! dispatch {
    ($op:literal, [$(($x:ident, $s:expr, $l:expr)),+], $body:expr) => {{
        match ($($s,)+) {
            ($(CpuStorage::F32($x),)+) => {
                $(let $x = contiguous_slice($x, $l, $op)?;)+
                CpuStorage::F32($body)
            }
            ($(CpuStorage::F16($x),)+) => {
                $(let $x = contiguous_slice($x, $l, $op)?;)+
                CpuStorage::F16($body)
            }
            ($(CpuStorage::BF16($x),)+) => {
                $(let $x = contiguous_slice($x, $l, $op)?;)+
                CpuStorage::BF16($body)
            }
            _ => candle_core::bail!("{}: inputs must share one of f32/f16/bf16", $op),
        }
    }};
}
pub(super) use dispatch;

/// Rows per parallel work item: enough work (~64K elements) to amortise rayon's scheduling.
pub(super) fn rows_per_task(cols: usize) -> usize {
    (65536 / cols.max(1)).max(1)
}

/// See the module docs.
struct SplitQkvRope {
    n_heads: usize,
    d_head: usize,
    rotary_ndims: usize,
}

impl SplitQkvRope {
    /// Shapes both implementations require; `table_fits`: the cos/sin table has (s, rot/2)
    /// entries each.
    fn check(&self, width: usize, bias: usize, table_fits: bool) -> candle_core::Result<()> {
        let (nh, hd, rot) = (self.n_heads, self.d_head, self.rotary_ndims);
        if width != 3 * nh * hd || bias != width || rot > hd || rot % 2 != 0 {
            candle_core::bail!(
                "split_qkv_rope: width {width}, bias {bias}, heads {nh} x {hd}, rotary {rot}"
            );
        }
        if !table_fits {
            candle_core::bail!("split_qkv_rope: cos/sin table does not match the sequence");
        }
        Ok(())
    }

    /// `cos_sin`: the (s, rot/2) cos table followed by the sin table.
    fn run<T: Elem>(
        &self,
        qkv: &[T],
        (b, s, width): (usize, usize, usize),
        cos_sin: &[f32],
        bias: &[T],
    ) -> candle_core::Result<Vec<T>> {
        let (nh, hd, rot) = (self.n_heads, self.d_head, self.rotary_ndims);
        let half = rot / 2;
        self.check(width, bias.len(), cos_sin.len() == 2 * s * half)?;
        let (cos, sin) = cos_sin.split_at(s * half);
        let mut out = vec![T::zero(); 3 * b * nh * s * hd];
        // One output chunk = one (which ∈ {q,k,v}, batch, head): s rows of d_head.
        out.par_chunks_mut(s * hd).enumerate().for_each(|(c, dst)| {
            let which = c / (b * nh);
            let bi = (c / nh) % b;
            let h = c % nh;
            let col = h * 3 * hd + which * hd;
            let head = RopeHead {
                cos,
                sin,
                half,
                // v is not rotated.
                rotated: if which == 2 { 0 } else { half },
            };
            let rows = &qkv[bi * s * width + col..];
            rope_head(dst, rows, width, &bias[col..col + hd], head);
        });
        Ok(out)
    }
}

/// The rotary tables of a sequence and how much of a head they rotate.
#[derive(Clone, Copy)]
struct RopeHead<'a> {
    /// (s, half) each.
    cos: &'a [f32],
    sin: &'a [f32],
    half: usize,
    /// `half` for q and k, 0 for v.
    rotated: usize,
}

/// One head's s rows: `rows[t · width..][..d_head] + bias`, rotate-half rope applied to the
/// first `2 · rotated` dims, into `dst` (s × d_head). Compiled per vector ISA (the release
/// build's baseline is SSE2); same bits on each. The bias is added in f32 and rounded once,
/// as a fused linear would.
#[multiversion::multiversion(targets = "simd")]
fn rope_head<T: Elem>(dst: &mut [T], rows: &[T], width: usize, bias: &[T], r: RopeHead) {
    let hd = bias.len();
    let (b1, b_rest) = bias.split_at(r.rotated);
    let (b2, b_tail) = b_rest.split_at(r.rotated);
    for (t, d) in dst.chunks_exact_mut(hd).enumerate() {
        let src = &rows[t * width..t * width + hd];
        let (x1, x_rest) = src.split_at(r.rotated);
        let (x2, x_tail) = x_rest.split_at(r.rotated);
        let (d1, d_rest) = d.split_at_mut(r.rotated);
        let (d2, d_tail) = d_rest.split_at_mut(r.rotated);
        let cos = &r.cos[t * r.half..(t + 1) * r.half];
        let sin = &r.sin[t * r.half..(t + 1) * r.half];
        let pairs = d1.iter_mut().zip(d2.iter_mut()).zip(x1.iter().zip(x2));
        for (((o1, o2), (a, b)), ((ba, bb), (c, s))) in
            pairs.zip(b1.iter().zip(b2).zip(cos.iter().zip(sin)))
        {
            let (a, b) = (a.to_f32() + ba.to_f32(), b.to_f32() + bb.to_f32());
            *o1 = T::of_f32(a * c - b * s);
            *o2 = T::of_f32(b * c + a * s);
        }
        for ((o, x), bb) in d_tail.iter_mut().zip(x_tail).zip(b_tail) {
            *o = T::of_f32(x.to_f32() + bb.to_f32());
        }
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
        let dims = l1.shape().dims3()?;
        let cos_sin = match s2 {
            CpuStorage::F32(c) => contiguous_slice(c, l2, "cos/sin")?,
            other => candle_core::bail!("split_qkv_rope: cos/sin is {:?}, not f32", other.dtype()),
        };
        let st = dispatch!(
            "split_qkv_rope",
            [(x, s1, l1), (bias, s3, l3)],
            self.run(x, dims, cos_sin, bias)?
        );
        let (b, s, _) = dims;
        Ok((st, Shape::from((3, b, self.n_heads, s, self.d_head))))
    }
}

impl SplitQkvRope {
    fn fused(&self, qkv: &Tensor, cos_sin: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        qkv.contiguous()?.apply_op3_no_bwd(
            &cos_sin.to_dtype(DType::F32)?.contiguous()?,
            &bias.to_dtype(qkv.dtype())?.contiguous()?,
            self,
        )
    }

    fn generic(
        &self,
        qkv: &Tensor,
        cos_sin: &Tensor,
        bias: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (nh, hd, rot) = (self.n_heads, self.d_head, self.rotary_ndims);
        let (b, s, width) = qkv.dims3()?;
        self.check(width, bias.elem_count(), cos_sin.dims() == [2, s, rot / 2])?;
        let x = qkv
            .to_dtype(DType::F32)?
            .broadcast_add(&bias.to_dtype(DType::F32)?)?
            // Columns are grouped per head as [q; k; v].
            .reshape((b, s, nh, 3, hd))?
            .permute((3, 0, 2, 1, 4))?;
        let cos_sin = cos_sin.to_dtype(DType::F32)?;
        let (cos, sin) = (cos_sin.get(0)?.contiguous()?, cos_sin.get(1)?.contiguous()?);
        // candle's `rope` is the rotate-half (NeoX) convention the fused kernel implements.
        let rotate = |t: Tensor| -> candle_core::Result<Tensor> {
            if rot == 0 {
                return Ok(t);
            }
            let head = t.narrow(D::Minus1, 0, rot)?.contiguous()?;
            let head = candle_nn::rotary_emb::rope(&head, &cos, &sin)?;
            if rot == hd {
                return Ok(head);
            }
            Tensor::cat(&[&head, &t.narrow(D::Minus1, rot, hd - rot)?], D::Minus1)
        };
        let (q, k, v) = (rotate(x.get(0)?)?, rotate(x.get(1)?)?, x.get(2)?);
        Tensor::stack(&[q, k, v], 0)?.to_dtype(qkv.dtype())
    }
}

/// `exp(x)` for `x <= 0`, in straight-line f32 arithmetic the compiler can vectorise
/// (a libm call cannot be). Cody–Waite reduction to |r| <= ln2/2, then a degree-6 Taylor
/// polynomial: relative error about 2e-7, i.e. one or two f32 ulp.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Below -87 the result leaves f32's normal range; callers only need it to vanish.
    let x = x.max(-87.0);
    // Round-to-nearest of x·log2(e) by adding 1.5·2^23: the sum's low mantissa bits then
    // hold the integer, so no float-to-int conversion is needed. Rust's saturating `as i32`
    // kept the loops that call this about 3× slower (a timing loop of `row_max_sum_exp` over
    // 77M in-cache values on one core, 2026-11-30: 100 ms with it, 35 ms without).
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * LOG2E + SHIFT;
    let nf = shifted - SHIFT;
    let r = x - nf * LN2_HI - nf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n: n + 127 into the exponent field (n >= -126 here, so the field stays positive).
    let n = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (max abs error 1.5e-7), the formula PyTorch's
/// vectorised CPU `erf` uses.
#[inline(always)]
fn erf_fast(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_nonpositive(-a * a);
    y.copysign(x)
}

/// The activation applied after the bias in `bias_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasAct {
    /// Just `x + b`.
    Identity,
    /// Exact GELU, `x·Φ(x)` (HF `"gelu"`).
    GeluErf,
    /// tanh-approximated GELU (HF `"gelu_new"`).
    GeluTanh,
}

impl BiasAct {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            BiasAct::Identity => v,
            BiasAct::GeluErf => 0.5 * v * (1.0 + erf_fast(v * std::f32::consts::FRAC_1_SQRT_2)),
            BiasAct::GeluTanh => {
                let c = (2.0 / std::f32::consts::PI).sqrt();
                0.5 * v * (1.0 + (c * (v + 0.044_715 * v * v * v)).tanh())
            }
        }
    }

    /// `apply(src + b)` row by row (`b` is one row).
    #[inline(always)]
    fn rows<T: Elem>(self, dst: &mut [T], src: &[T], b: &[T]) {
        let m = b.len();
        for (d_row, s_row) in dst.chunks_exact_mut(m).zip(src.chunks_exact(m)) {
            for ((d, s), bb) in d_row.iter_mut().zip(s_row).zip(b) {
                *d = T::of_f32(self.apply(s.to_f32() + bb.to_f32()));
            }
        }
    }
}

/// `BiasAct::rows`, compiled for each vector ISA (the release build's baseline is SSE2; the
/// GELU polynomial is arithmetic-bound, so wider vectors pay). The match sits outside the
/// loops so each activation gets its own vectorised loop. The same bits on every ISA.
#[multiversion::multiversion(targets = "simd")]
fn bias_act_rows<T: Elem>(act: BiasAct, dst: &mut [T], src: &[T], b: &[T]) {
    match act {
        BiasAct::Identity => BiasAct::Identity.rows(dst, src, b),
        BiasAct::GeluErf => BiasAct::GeluErf.rows(dst, src, b),
        BiasAct::GeluTanh => BiasAct::GeluTanh.rows(dst, src, b),
    }
}

/// `act(v)` for every `v` of `x`, compiled per ISA like [`bias_act_rows`] (for outputs that
/// already hold their bias).
#[multiversion::multiversion(targets = "simd")]
pub(super) fn act_in_place(act: BiasAct, x: &mut [f32]) {
    match act {
        BiasAct::Identity => {}
        BiasAct::GeluErf => x.iter_mut().for_each(|v| *v = BiasAct::GeluErf.apply(*v)),
        BiasAct::GeluTanh => x.iter_mut().for_each(|v| *v = BiasAct::GeluTanh.apply(*v)),
    }
}

struct BiasActOp(BiasAct);

impl BiasActOp {
    fn run<T: Elem>(&self, x: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let m = b.len();
        if m == 0 || !x.len().is_multiple_of(m) {
            candle_core::bail!("bias_act: bias of {m} does not divide {} elements", x.len());
        }
        let mut out = vec![T::zero(); x.len()];
        let chunk = rows_per_task(m) * m;
        let act = self.0;
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(dst, src)| bias_act_rows(act, dst, src, b));
        Ok(out)
    }
}

impl CustomOp2 for BiasActOp {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let st = dispatch!("bias_act", [(x, s1, l1), (b, s2, l2)], self.run(x, b)?);
        Ok((st, l1.shape().clone()))
    }
}

impl BiasActOp {
    fn fused(&self, x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?
            .apply_op2_no_bwd(&b.to_dtype(x.dtype())?.contiguous()?, self)
    }

    fn generic(&self, x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let y = x
            .to_dtype(DType::F32)?
            .broadcast_add(&b.to_dtype(DType::F32)?)?;
        let y = match self.0 {
            BiasAct::Identity => y,
            BiasAct::GeluErf => y.gelu_erf()?,
            BiasAct::GeluTanh => y.gelu()?,
        };
        y.to_dtype(x.dtype())
    }
}

struct Add3;

impl Add3 {
    fn run<T: Elem>(a: &[T], b: &[T], c: &[T]) -> candle_core::Result<Vec<T>> {
        if a.len() != b.len() || a.len() != c.len() {
            candle_core::bail!("add3: lengths {} {} {}", a.len(), b.len(), c.len());
        }
        let mut out = vec![T::zero(); a.len()];
        const CHUNK: usize = 65536;
        out.par_chunks_mut(CHUNK)
            .zip(
                a.par_chunks(CHUNK)
                    .zip(b.par_chunks(CHUNK))
                    .zip(c.par_chunks(CHUNK)),
            )
            .for_each(|(d, ((a, b), c))| {
                for (((d, a), b), c) in d.iter_mut().zip(a).zip(b).zip(c) {
                    *d = T::of_f32((a.to_f32() + b.to_f32()) + c.to_f32());
                }
            });
        Ok(out)
    }
}

impl CustomOp3 for Add3 {
    fn name(&self) -> &'static str {
        "add3"
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
            "add3",
            [(a, s1, l1), (b, s2, l2), (c, s3, l3)],
            Self::run(a, b, c)?
        );
        Ok((st, l1.shape().clone()))
    }
}

impl Add3 {
    fn fused(a: &Tensor, b: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
        a.contiguous()?
            .apply_op3_no_bwd(&b.contiguous()?, &c.contiguous()?, &Add3)
    }

    fn generic(a: &Tensor, b: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        ((f(a)? + f(b)?)? + f(c)?)?.to_dtype(a.dtype())
    }
}

/// Which implementation of this module's functions a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The fused multi-threaded kernels: CPU only.
    Fused,
    /// The same functions composed from candle ops, for every device candle supports.
    Generic,
}

impl Kernels {
    /// Fused where they exist (the CPU), Generic elsewhere.
    pub fn for_device(device: &Device) -> Kernels {
        if device.is_cpu() {
            Kernels::Fused
        } else {
            Kernels::Generic
        }
    }

    /// (b, s, heads·3·d_head) QKV matmul output plus its bias (heads·3·d_head) ->
    /// (3, b, heads, s, d_head) with rope applied to q and k. `cos_sin` is
    /// (2, s, rotary_ndims/2), f32: the cos table, then the sin table.
    pub fn split_qkv_rope(
        self,
        qkv: &Tensor,
        cos_sin: &Tensor,
        bias: &Tensor,
        n_heads: usize,
        d_head: usize,
        rotary_ndims: usize,
    ) -> candle_core::Result<Tensor> {
        let op = SplitQkvRope {
            n_heads,
            d_head,
            rotary_ndims,
        };
        match self {
            Kernels::Fused => op.fused(qkv, cos_sin, bias),
            Kernels::Generic => op.generic(qkv, cos_sin, bias),
        }
    }

    /// Causal attention from rotated q, k, v (3, b, heads, s, d_head), q pre-scaled, to z
    /// (b, s, heads, d_head) ([`super::attention`]).
    pub fn causal_attention(self, qkv: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Kernels::Fused => attention::fused(qkv),
            Kernels::Generic => attention::generic(qkv),
        }
    }

    /// Σ over rows of `logits` (n, vocab) of logsumexp(row) − row[target] ([`super::nll`]).
    pub fn nll_sum(self, logits: &Tensor, targets: &[u32]) -> candle_core::Result<f64> {
        match self {
            Kernels::Fused => nll::fused(logits, targets),
            Kernels::Generic => nll::generic(logits, targets),
        }
    }

    /// Σ next-token NLL of `targets` (n) under the logits `x · w_t + b`, `x` (n, d), `w_t`
    /// (d, vocab). Fused (f32): the product and the loss in vocabulary tiles, the logits
    /// never formed ([`nll::fused_unembed`]); otherwise `linear`, then `nll_sum`.
    pub fn unembed_nll_sum(
        self,
        x: &Tensor,
        w_t: &Tensor,
        b: Option<&Tensor>,
        targets: &[u32],
    ) -> candle_core::Result<f64> {
        let all_f32 = x.dtype() == DType::F32
            && w_t.dtype() == DType::F32
            && b.is_none_or(|b| b.dtype() == DType::F32);
        if self == Kernels::Fused && all_f32 {
            return nll::fused_unembed(x, w_t, b, targets);
        }
        let logits = self.linear(x, w_t, b, BiasAct::Identity)?;
        self.nll_sum(&logits.to_dtype(DType::F32)?, targets)
    }

    /// LayerNorm over the last dim of `x` ([`super::layer_norm`]).
    pub fn layer_norm(
        self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        eps: f32,
    ) -> candle_core::Result<Tensor> {
        match self {
            Kernels::Fused => layer_norm::fused(x, w, b, eps),
            Kernels::Generic => layer_norm::generic(x, w, b, eps),
        }
    }

    /// `act(x + b)` with `b` broadcast over the last dim of `x`.
    pub fn bias_act(self, x: &Tensor, b: &Tensor, act: BiasAct) -> candle_core::Result<Tensor> {
        let m = x.dim(D::Minus1)?;
        if b.dims() != [m] {
            candle_core::bail!(
                "bias_act: bias shape {:?} for input {:?}",
                b.dims(),
                x.dims()
            );
        }
        match self {
            Kernels::Fused => BiasActOp(act).fused(x, b),
            Kernels::Generic => BiasActOp(act).generic(x, b),
        }
    }

    /// `act(x @ w_t + b)` over the last dim of `x`, for any leading shape; `w_t` is (in, out).
    /// Fused: one `gemm` onto the bias and the activation in place, for f32
    /// ([`super::fused_linear`]); other dtypes and devices take candle's matmul, then
    /// [`Kernels::bias_act`].
    pub fn linear(
        self,
        x: &Tensor,
        w_t: &Tensor,
        b: Option<&Tensor>,
        act: BiasAct,
    ) -> candle_core::Result<Tensor> {
        let all_f32 = x.dtype() == DType::F32
            && w_t.dtype() == DType::F32
            && b.is_none_or(|b| b.dtype() == DType::F32);
        if self == Kernels::Fused && all_f32 {
            let (x, w_t) = (x.contiguous()?, w_t.contiguous()?);
            return match (b, act) {
                (Some(b), act) => x.apply_op3_no_bwd(&w_t, &b.contiguous()?, &FusedLinear(act)),
                (None, BiasAct::Identity) => x.apply_op2_no_bwd(&w_t, &FusedMatmul),
                (None, act) => {
                    let zeros = Tensor::zeros(w_t.dim(1)?, DType::F32, x.device())?;
                    x.apply_op3_no_bwd(&w_t, &zeros, &FusedLinear(act))
                }
            };
        }
        let y = matmul_t(x, w_t)?;
        match (b, act) {
            (None, BiasAct::Identity) => Ok(y),
            (Some(b), act) => self.bias_act(&y, b, act),
            (None, act) => {
                let zeros = Tensor::zeros(w_t.dim(1)?, y.dtype(), y.device())?;
                self.bias_act(&y, &zeros, act)
            }
        }
    }

    /// `(a + b) + c` elementwise (same shapes), in that order.
    pub fn add3(self, a: &Tensor, b: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
        if a.dims() != b.dims() || a.dims() != c.dims() {
            candle_core::bail!("add3: shapes {:?} {:?} {:?}", a.dims(), b.dims(), c.dims());
        }
        match self {
            Kernels::Fused => Add3::fused(a, b, c),
            Kernels::Generic => Add3::generic(a, b, c),
        }
    }
}

/// `x @ w_t` over the last dim of `x`, for any leading shape, with candle's matmul.
fn matmul_t(x: &Tensor, w_t: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let k = dims.last().copied().unwrap_or(0);
    let rows = x.elem_count().checked_div(k).unwrap_or(0);
    // 2-D keeps candle's batched-matmul stride special cases out of the way.
    let y = x.reshape((rows, k))?.matmul(w_t)?;
    let mut out_dims = dims.to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = w_t.dim(1)?;
    }
    y.reshape(out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 from its Maclaurin series (|x| < 3) or the erfc continued fraction, as a
    /// reference independent of the approximation under test.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut sum, mut term, mut n) = (0.0, x, 0.0);
            while n < 200.0 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let a = x.abs();
            let mut f = a;
            for k in (1..80).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            (1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())).copysign(x)
        }
    }

    #[test]
    fn fast_exp_and_erf_are_accurate() {
        let (mut worst_exp, mut worst_erf) = (0f64, 0f64);
        for i in 0..=100_000 {
            let x = -87.0 + 87.0 * i as f32 / 100_000.0;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max((exp_nonpositive(x) as f64 - want).abs() / want);
            let y = -6.0 + 12.0 * i as f32 / 100_000.0;
            worst_erf = worst_erf.max((erf_fast(y) as f64 - erf_reference(y as f64)).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        // A&S's own 1.5e-7 plus f32 rounding of the polynomial; torch's vectorised CPU erf has
        // the same error, and GELU scales it by |x|/2.
        assert!(worst_erf < 6e-7, "erf absolute error {worst_erf}");
        assert_eq!(erf_fast(0.0), 0.0);
        assert_eq!(BiasAct::GeluErf.apply(-100.0), 0.0);
        assert_eq!(BiasAct::GeluErf.apply(100.0), 100.0);
    }

    #[test]
    fn fused_ops_match_candle() -> candle_core::Result<()> {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 5, 40), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 40, &dev)?;
        let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
            (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
        };
        let xb = x.broadcast_add(&b)?;
        assert!(diff(&Kernels::Fused.bias_act(&x, &b, BiasAct::Identity)?, &xb)? == 0.0);
        assert!(
            diff(
                &Kernels::Fused.bias_act(&x, &b, BiasAct::GeluErf)?,
                &xb.gelu_erf()?
            )? < 1e-6
        );
        assert!(
            diff(
                &Kernels::Fused.bias_act(&x, &b, BiasAct::GeluTanh)?,
                &xb.gelu()?
            )? < 1e-5
        );
        let c = Tensor::randn(0f32, 1.0, (3, 5, 40), &dev)?;
        assert!(diff(&Kernels::Fused.add3(&x, &xb, &c)?, &((&x + &xb)? + &c)?)? == 0.0);
        Ok(())
    }

    /// Each generic implementation against its fused kernel, for every storage dtype and for
    /// rope on none, part and all of a head. Tolerances are relative to the largest output.
    #[test]
    fn generic_kernels_match_fused() -> candle_core::Result<()> {
        let dev = candle_core::Device::Cpu;
        let (b, s, nh, hd) = (2, 6, 3, 8);
        let check = |what: &str, got: Tensor, want: Tensor, tol: f32| {
            assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
            assert_eq!(got.dims(), want.dims(), "{what}: shape");
            let (got, want) = (got.to_dtype(DType::F32)?, want.to_dtype(DType::F32)?);
            let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff <= tol * scale,
                "{what}: max |diff| {diff}, scale {scale}"
            );
            candle_core::Result::Ok(())
        };
        // One f32 rounding flip becomes one ulp of the storage type.
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::F16, 1e-3), (DType::BF16, 8e-3)] {
            let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev)?.to_dtype(dtype);
            let qkv = randn(&[b, s, 3 * nh * hd])?;
            let bias = randn(&[3 * nh * hd])?;
            for rot in [0, 4, hd] {
                let angles = Tensor::randn(0f32, 3.0, (s, rot / 2), &dev)?;
                let cos_sin = Tensor::stack(&[angles.cos()?, angles.sin()?], 0)?;
                let run = |k: Kernels| k.split_qkv_rope(&qkv, &cos_sin, &bias, nh, hd, rot);
                let what = format!("split_qkv_rope {dtype:?} rotary {rot}");
                check(&what, run(Kernels::Generic)?, run(Kernels::Fused)?, tol)?;
            }
            let x = (randn(&[b, s, 40])? * 2.0)?;
            let bias = randn(&[40])?;
            for act in [BiasAct::Identity, BiasAct::GeluErf, BiasAct::GeluTanh] {
                let run = |k: Kernels| k.bias_act(&x, &bias, act);
                let what = format!("bias_act {dtype:?} {act:?}");
                check(&what, run(Kernels::Generic)?, run(Kernels::Fused)?, tol)?;
            }
            // Inner dims on both sides of gemm's blocking, and a width not a multiple of 16.
            for (inner, out) in [(40, 24), (700, 37)] {
                let xi = randn(&[b, s, inner])?;
                let w = (randn(&[inner, out])? * 0.1)?;
                let bias = randn(&[out])?;
                for (with_bias, act) in [
                    (false, BiasAct::Identity),
                    (false, BiasAct::GeluErf),
                    (true, BiasAct::Identity),
                    (true, BiasAct::GeluErf),
                    (true, BiasAct::GeluTanh),
                ] {
                    let run = |k: Kernels| k.linear(&xi, &w, with_bias.then_some(&bias), act);
                    let what = format!("linear {dtype:?} {inner}->{out} bias {with_bias} {act:?}");
                    // Sums of `inner` products: rounding grows with the inner dimension.
                    let tol = tol * (inner as f32).sqrt();
                    check(&what, run(Kernels::Generic)?, run(Kernels::Fused)?, tol)?;
                }
            }
            let (y, z) = (randn(&[b, s, 40])?, randn(&[b, s, 40])?);
            let run = |k: Kernels| k.add3(&x, &y, &z);
            let what = format!("add3 {dtype:?}");
            check(&what, run(Kernels::Generic)?, run(Kernels::Fused)?, tol)?;
        }
        Ok(())
    }
}
