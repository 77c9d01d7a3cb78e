//! A linear layer `act(x·w + b)` of the bf16 model (`model.dtype = "bf16"`) on the CPU: the
//! weights packed once ([`Bf16Panels`]), the product from bf16 inputs with f32 sums, the bias
//! and activation in f32, then one rounding to bf16.
//!
//! candle multiplies bf16 matrices on the CPU at a fraction of the f32 speed (the bf16 model
//! ran the Pythia-70M harvest at 0.8× its f32 speed, half PyTorch's bf16 speed on an AMD EPYC
//! with AVX512_BF16); this runs the products at twice the f32 FMA rate with AVX512_BF16 and at
//! the f32 rate without it. Rounding happens where PyTorch rounds a bf16 linear layer's
//! output, except that the activation (GELU) is applied to the f32 sum rather than to its
//! bf16 rounding: one rounding fewer.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape};
use half::bf16;
use rayon::prelude::*;

use super::bf16_panels::{pack_bf16_rows, Bf16Panels, PANEL};
use super::fused_linear::{linear, Dims};
use super::ops::{act_in_place, BiasAct};

/// Output columns per tile: a tile of up to `MAX_CHUNK_ROWS` × 512 f32 (384 KiB) stays in a
/// core's L2 while the bias, activation and rounding read it.
const COLUMN_TILE: usize = 8 * PANEL;
const _: () = assert!(COLUMN_TILE.is_multiple_of(PANEL));

/// Rows per parallel task at most; each task streams the whole packed weight once.
const MAX_CHUNK_ROWS: usize = 192;

/// `act(x·w + b)` with `x` (…, k) bf16, `b` (n) bf16 or f32; the output (…, n) in `out`
/// (bf16 between layers, f32 for logits).
pub(super) struct Bf16Linear<'a> {
    pub w: &'a Bf16Panels,
    pub act: BiasAct,
    pub out: DType,
}

/// Rows per task: about eight tasks per thread (rayon balances them), a multiple of the
/// kernel's 6-row register block.
fn chunk_rows(rows: usize) -> usize {
    let per_task = rows.div_ceil(8 * rayon::current_num_threads()).div_ceil(6) * 6;
    per_task.clamp(6, MAX_CHUNK_ROWS)
}

/// Round to the nearest bf16 (ties to even, as `half`), NaN kept NaN, into uninitialised
/// output (`half`'s slice conversion needs an initialised one); written without branches so
/// that it vectorises.
#[multiversion::multiversion(targets = "simd")]
fn round_into_bf16(src: &[f32], dst: &mut [MaybeUninit<bf16>]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        let bits = v.to_bits();
        let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
        d.write(bf16::from_bits(if v.is_nan() { 0x7fc0 } else { rounded }));
    }
}

/// An output element type made from f32 sums.
///
/// # Safety
/// `write_row` must initialise every element of `dst` (`dst.len() == src.len()`): the
/// output is allocated uninitialised and declared initialised after the rows are written.
unsafe trait FromF32Row: Sized + Send {
    fn write_row(src: &[f32], dst: &mut [MaybeUninit<Self>]);

    /// A whole f32 buffer converted.
    fn from_f32_vec(src: Vec<f32>) -> Vec<Self> {
        let mut out = Vec::with_capacity(src.len());
        out.spare_capacity_mut()[..src.len()]
            .par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(dst, src)| Self::write_row(src, dst));
        // SAFETY: the chunks cover all `src.len()` elements and `write_row` writes every
        // element of the slice it is given (this trait's contract).
        unsafe { out.set_len(src.len()) };
        out
    }
}

// SAFETY: writes every element of `dst` (zip over equal lengths).
unsafe impl FromF32Row for f32 {
    fn write_row(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
        debug_assert_eq!(src.len(), dst.len());
        for (d, &v) in dst.iter_mut().zip(src) {
            d.write(v);
        }
    }

    fn from_f32_vec(src: Vec<f32>) -> Vec<f32> {
        src
    }
}

// SAFETY: `round_into_bf16` writes every element of `dst` (zip over equal lengths).
unsafe impl FromF32Row for bf16 {
    fn write_row(src: &[f32], dst: &mut [MaybeUninit<bf16>]) {
        debug_assert_eq!(src.len(), dst.len());
        round_into_bf16(src, dst);
    }
}

impl Bf16Linear<'_> {
    /// The (rows, n) output, each element written once from its f32 value.
    fn run<T: FromF32Row>(&self, x: &[bf16], bias: &[f32], rows: usize) -> Vec<T> {
        let (k, n) = (self.w.k(), self.w.n());
        if let Some(w) = self.w.values() {
            // Without AVX512_BF16: the f32 layer's one parallel `gemm` over all rows (per
            // row chunk and column tile, each product repacking its share of the weight, it
            // ran the layers at half that speed), then the rounding.
            let xs: Vec<f32> = x.par_iter().map(|v| v.to_f32()).collect();
            let dims = Dims { rows, k, n };
            return T::from_f32_vec(linear(&xs, w, Some(bias), self.act, &dims));
        }
        let words = pack_bf16_rows(x, k);
        let kp = words.len() / rows.max(1);
        let chunk = chunk_rows(rows);
        let mut out = Vec::with_capacity(rows * n);
        // Not zeroed first: every element is written below (zeroing cost ~1% of a bf16
        // forward pass).
        out.spare_capacity_mut()[..rows * n]
            .par_chunks_mut(chunk * n.max(1))
            .enumerate()
            .for_each(|(c, dst)| {
                let (r0, nr) = (c * chunk, dst.len() / n);
                let x = &words[r0 * kp..(r0 + nr) * kp];
                let mut tile = Vec::new();
                for first in (0..n).step_by(COLUMN_TILE) {
                    let width = COLUMN_TILE.min(n - first);
                    self.w.tile(x, first, width, Some(bias), &mut tile);
                    act_in_place(self.act, &mut tile);
                    for (r, row) in tile.chunks_exact(width).enumerate() {
                        T::write_row(row, &mut dst[r * n + first..][..width]);
                    }
                }
            });
        // SAFETY: the chunks cover all rows·n elements; in each, the tiles cover every column
        // of its rows (`tile` returns nr × width values), and `write_row` writes every
        // element of the slice it is given (`FromF32Row`'s contract).
        unsafe { out.set_len(rows * n) };
        out
    }
}

impl CustomOp2 for Bf16Linear<'_> {
    fn name(&self) -> &'static str {
        "bf16-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (k, n) = (self.w.k(), self.w.n());
        let x = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::BF16(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("bf16 linear: the input must be contiguous bf16"),
        };
        let bias: Vec<f32> = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::BF16(v), Some((a, b))) => v[a..b].iter().map(|b| b.to_f32()).collect(),
            (CpuStorage::F32(v), Some((a, b))) => v[a..b].to_vec(),
            _ => candle_core::bail!("bf16 linear: the bias must be contiguous bf16 or f32"),
        };
        let dims = l1.shape().dims();
        if dims.last() != Some(&k) || bias.len() != n {
            candle_core::bail!(
                "bf16 linear: input {dims:?} and bias of {} for a ({k}, {n}) weight",
                bias.len()
            );
        }
        if !matches!(self.out, DType::BF16 | DType::F32) {
            candle_core::bail!("bf16 linear: output dtype {:?}", self.out);
        }
        let rows = x.len() / k.max(1);
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        let out = if self.out == DType::F32 {
            CpuStorage::F32(self.run(x, &bias, rows))
        } else {
            CpuStorage::BF16(self.run(x, &bias, rows))
        };
        Ok((out, Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16_panels::Bf16Kernel;
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    /// The op equals an f64 product of the same bf16 values plus bias, GELU applied, rounded
    /// once to bf16, with each kernel the CPU has: for row counts that leave partial tasks
    /// and register blocks and a width that leaves a partial tile and panel.
    #[test]
    fn matches_f64_product_of_the_bf16_values() {
        let mut kernels = vec![Bf16Kernel::Unpacked];
        if Bf16Kernel::detect() != Bf16Kernel::Unpacked {
            kernels.push(Bf16Kernel::detect());
        }
        for kernel in kernels {
            matches_f64_product_with(kernel);
        }
    }

    fn matches_f64_product_with(kernel: Bf16Kernel) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 2 * COLUMN_TILE + 3 * PANEL + 5;
        // An even k borrows the rows as pairs; an odd one is copied with a zero pad.
        for k in [70, 37] {
            let w: Vec<f32> = (0..k * n).map(|_| rng.random_range(-0.3..0.3)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
            let packed = Bf16Panels::pack_for(&w, k, n, kernel);
            let w_bf: Vec<f64> = w.iter().map(|&v| bf16::from_f32(v).to_f64()).collect();
            let b_bf: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
            let bias = Tensor::from_vec(b_bf.clone(), n, &Device::Cpu).unwrap();
            for rows in [1, 7, 200] {
                let x: Vec<bf16> = (0..rows * k)
                    .map(|_| bf16::from_f32(rng.random_range(-2.0..2.0)))
                    .collect();
                let xt = Tensor::from_vec(x.clone(), (1, rows, k), &Device::Cpu).unwrap();
                for (act, out) in [
                    (BiasAct::GeluErf, DType::BF16),
                    (BiasAct::Identity, DType::F32),
                ] {
                    let op = Bf16Linear {
                        w: &packed,
                        act,
                        out,
                    };
                    let y = xt.apply_op2_no_bwd(&bias, &op).unwrap();
                    assert_eq!(y.dims(), &[1, rows, n]);
                    assert_eq!(y.dtype(), out);
                    let y: Vec<f32> = y
                        .to_dtype(DType::F32)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    for r in 0..rows {
                        for c in 0..n {
                            let sum: f64 = (0..k)
                                .map(|i| x[r * k + i].to_f64() * w_bf[i * n + c])
                                .sum::<f64>()
                                + b_bf[c].to_f64();
                            let mut want = [sum as f32];
                            act_in_place(act, &mut want);
                            let want = if out == DType::BF16 {
                                bf16::from_f32(want[0]).to_f32()
                            } else {
                                want[0]
                            };
                            let got = y[r * n + c];
                            // f32 summation error, then at most one bf16 step where it crosses a
                            // rounding boundary.
                            let tol = 1e-5
                                + if out == DType::BF16 {
                                    want.abs() / 128.0
                                } else {
                                    0.0
                                };
                            assert!(
                                (got - want).abs() <= tol,
                                "{kernel:?}, k {k}, {act:?}, {rows} rows, row {r} column {c}: \
                                 {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_to_bf16_matches_half() {
        let values = [
            0.0f32,
            -0.0,
            1.0,
            f32::from_bits(0x3f80_8000), // a tie: rounds down to the even 0x3f80
            f32::from_bits(0x3f81_8000), // a tie: rounds up to the even 0x3f82
            std::f32::consts::PI,
            -std::f32::consts::E,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut out = vec![MaybeUninit::uninit(); values.len()];
        round_into_bf16(&values, &mut out);
        for (v, o) in values.iter().zip(&out) {
            // SAFETY: written by `round_into_bf16`.
            let o = unsafe { o.assume_init() };
            assert_eq!(o.to_bits(), bf16::from_f32(*v).to_bits(), "{v}");
        }
        let mut nan = [MaybeUninit::uninit()];
        round_into_bf16(&[f32::NAN], &mut nan);
        // SAFETY: written by `round_into_bf16`.
        assert!(unsafe { nan[0].assume_init() }.is_nan());
    }
}
