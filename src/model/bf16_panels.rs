//! Matrix products with bf16 inputs and f32 accumulation on the CPU: the bf16 model's
//! linear layers (`model.dtype = "bf16"`) and the evaluation's optional bf16 unembedding
//! (`eval.unembedding = "bf16"`).
//!
//! The f32 products already run at the core's f32 FMA peak. `vdpbf16ps` (AVX512_BF16)
//! multiplies pairs of bf16 values and adds both products to an f32 lane, twice the work of
//! an f32 FMA per instruction: measured 229 against 113 GFLOP/s on one core of an AMD EPYC
//! with `avx512_bf16` (a register-resident probe of each, `scripts/bf16_fma_probe.c`). The
//! price is the inputs' rounding to 8 significant bits; the products themselves are exact in
//! f32 and the sums are f32.
//!
//! A weight matrix (k, n) is packed once into the form its kernel reads ([`Bf16Kernel`]):
//! with AVX512_BF16, panels of `PANEL` output columns, each k-pair of a column one 32-bit
//! word (the instruction's operand layout), so a panel's step is four contiguous vectors.
//! Without it (AVX2-only machines, AVX-512 without BF16, other CPUs) the rounded values are
//! kept as f32 and multiplied by `gemm` at the f32 rate: the same products, summed in another
//! order. Unpacking per tile instead had run the bf16 model's layers slower than candle's own
//! bf16 `matmul`.

use std::borrow::Cow;

use half::bf16;

use crate::host_matmul::{matmul_on_this_thread, Dst, Mat};

/// Output columns per packed panel: four vectors of 16 f32 lanes.
pub(super) const PANEL: usize = 64;

/// Rows per register block of the AVX512_BF16 kernel: 6 rows × 4 vectors = 24 accumulators
/// of the 32 vector registers, leaving room for the four weight vectors.
const ROWS: usize = 6;

/// Two bf16 values in one word, `lo` in the low half: the pair (k, k + 1) of a dot product.
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(bf16::from_f32(lo).to_bits()) | (u32::from(bf16::from_f32(hi).to_bits()) << 16)
}

fn unpair(w: u32) -> (f32, f32) {
    (
        bf16::from_bits(w as u16).to_f32(),
        bf16::from_bits((w >> 16) as u16).to_f32(),
    )
}

/// Rows of f32 values as bf16 pairs, (rows × `pairs(d)`) words; an odd `d` is padded with 0.
pub(super) fn pack_rows(x: &[f32], d: usize) -> Vec<u32> {
    let kp = pairs(d);
    let mut out = Vec::with_capacity(x.len() / d.max(1) * kp);
    for row in x.chunks_exact(d) {
        out.extend((0..kp).map(|p| pair(row[2 * p], row.get(2 * p + 1).copied().unwrap_or(0.0))));
    }
    out
}

/// Rows of bf16 values as pairs, the layout of `pack_rows` without rounding (an odd `k` is
/// padded with 0). For an even `k` on a little-endian CPU that layout is the values' own, so
/// an aligned slice is borrowed as it is (a copy would cost ~3% of a bf16 forward pass).
pub(super) fn pack_bf16_rows(x: &[bf16], k: usize) -> Cow<'_, [u32]> {
    let word = |lo: bf16, hi: bf16| u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16);
    if k.is_multiple_of(2) {
        if cfg!(target_endian = "little") {
            if let Ok(words) = bytemuck::try_cast_slice::<bf16, u32>(x) {
                return Cow::Borrowed(words);
            }
        }
        return x.chunks_exact(2).map(|p| word(p[0], p[1])).collect();
    }
    let mut out = Vec::with_capacity(x.len() / k.max(1) * pairs(k));
    for row in x.chunks_exact(k) {
        out.extend(
            row.chunks(2)
                .map(|p| word(p[0], p.get(1).copied().unwrap_or(bf16::ZERO))),
        );
    }
    Cow::Owned(out)
}

fn pairs(d: usize) -> usize {
    d.div_ceil(2)
}

/// A (k, n) matrix of bf16 values in the form its kernel reads.
pub struct Bf16Panels {
    form: Form,
    k: usize,
    n: usize,
}

enum Form {
    /// For `Bf16Kernel::Avx512Bf16`: word `(panel · pairs(k) + p) · PANEL + c` holds rows 2p
    /// and 2p + 1 of column `panel · PANEL + c` (zero past `k` or `n`).
    Pairs(Vec<u32>),
    /// For `Bf16Kernel::Unpacked`: the rounded values as f32, row-major (k, n).
    Values(Vec<f32>),
}

impl Bf16Panels {
    /// Pack `w_t`, row-major (k, n) f32, rounding each value to bf16, for the fastest kernel
    /// this CPU runs.
    pub fn pack(w_t: &[f32], k: usize, n: usize) -> Bf16Panels {
        Self::pack_for(w_t, k, n, Bf16Kernel::detect())
    }

    /// `pack` for a given kernel (tests run every kernel the CPU has); panics for a kernel
    /// the CPU cannot run.
    pub fn pack_for(w_t: &[f32], k: usize, n: usize, kernel: Bf16Kernel) -> Bf16Panels {
        assert_eq!(w_t.len(), k * n, "matrix of {k} × {n}");
        assert!(
            kernel == Bf16Kernel::Unpacked || kernel == Bf16Kernel::detect(),
            "{kernel:?} is not available on this CPU"
        );
        let form = match kernel {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => Form::Pairs(Self::pairs_of(w_t, k, n)),
            Bf16Kernel::Unpacked => {
                Form::Values(w_t.iter().map(|&v| bf16::from_f32(v).to_f32()).collect())
            }
        };
        Bf16Panels { form, k, n }
    }

    fn pairs_of(w_t: &[f32], k: usize, n: usize) -> Vec<u32> {
        let kp = pairs(k);
        let panels = n.div_ceil(PANEL);
        let at = |row: usize, c: usize| {
            if row < k && c < n {
                w_t[row * n + c]
            } else {
                0.0
            }
        };
        let mut words = Vec::with_capacity(panels * kp * PANEL);
        for panel in 0..panels {
            for p in 0..kp {
                let c0 = panel * PANEL;
                words.extend((c0..c0 + PANEL).map(|c| pair(at(2 * p, c), at(2 * p + 1, c))));
            }
        }
        words
    }

    /// Rows (the product's inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (the product's outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The rounded values as f32, row-major (k, n), where packed for `Bf16Kernel::Unpacked`.
    pub(super) fn values(&self) -> Option<&[f32]> {
        match &self.form {
            Form::Values(w) => Some(w),
            #[cfg(target_arch = "x86_64")]
            Form::Pairs(_) => None,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn panel(words: &[u32], k: usize, panel: usize) -> &[u32] {
        let len = pairs(k) * PANEL;
        &words[panel * len..(panel + 1) * len]
    }

    /// Columns `first..first + width` (`first` a multiple of `PANEL`) of the product with the
    /// packed rows `x` (`pack_rows`, n rows), row-major (n × width) into `out`, replacing its
    /// contents. `bias`, if any, covers all columns, added after the product.
    pub fn tile(
        &self,
        x: &[u32],
        first: usize,
        width: usize,
        bias: Option<&[f32]>,
        out: &mut Vec<f32>,
    ) {
        assert!(first.is_multiple_of(PANEL) && first + width <= self.n);
        let kp = pairs(self.k);
        let n = x.len() / kp.max(1);
        // Both kernels write every element; zeroing first cost ~3% of a bf16 forward pass.
        if out.len() != n * width {
            out.clear();
            out.resize(n * width, 0.0);
        }
        match &self.form {
            #[cfg(target_arch = "x86_64")]
            Form::Pairs(words) => {
                for (c, panel) in (first / PANEL..(first + width).div_ceil(PANEL)).enumerate() {
                    let cols = (width - c * PANEL).min(PANEL);
                    let dst = Dst2 {
                        out: &mut out[c * PANEL..],
                        stride: width,
                        cols,
                    };
                    // SAFETY: `Form::Pairs` is made only for `Bf16Kernel::Avx512Bf16`, and
                    // `pack_for` asserts that `Bf16Kernel::detect` returned it, which it does
                    // only where the CPU has AVX-512F and AVX512_BF16.
                    unsafe { x86::panel_product(x, Self::panel(words, self.k, panel), kp, n, dst) };
                }
            }
            Form::Values(w) => {
                let k = self.k;
                // The rows' k values (an odd k's pad dropped), converted per tile: the model's
                // callers take `values()` and convert their rows once instead (per tile this
                // halved the bf16 unembedding's speed); here every form gives the same tiles.
                let xs: Vec<f32> = x
                    .chunks_exact(kp.max(1))
                    .flat_map(|row| {
                        row.iter()
                            .flat_map(|&w| <[f32; 2]>::from(unpair(w)))
                            .take(k)
                    })
                    .collect();
                matmul_on_this_thread(
                    out,
                    Mat::row_major(&xs, n, k),
                    Mat::row_major(w, k, self.n).columns(first, width),
                    Dst::Overwrite,
                );
            }
        }
        if let Some(b) = bias {
            for row in out.chunks_exact_mut(width) {
                for (v, b) in row.iter_mut().zip(&b[first..first + width]) {
                    *v += b;
                }
            }
        }
    }
}

/// Which code multiplies the bf16 tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// `vdpbf16ps` on 512-bit vectors.
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// The bf16 values kept as f32, multiplied by `gemm` (any CPU).
    Unpacked,
}

impl Bf16Kernel {
    /// The fastest this CPU runs.
    pub fn detect() -> Bf16Kernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            return Bf16Kernel::Avx512Bf16;
        }
        Bf16Kernel::Unpacked
    }
}

/// A panel's destination: `cols` ≤ `PANEL` columns of rows `stride` apart in `out`.
struct Dst2<'a> {
    out: &'a mut [f32],
    stride: usize,
    cols: usize,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Dst2, PANEL, ROWS};

    /// All `n` rows of `x` (n × kp words) times one packed panel (kp × `PANEL` words) into
    /// `dst`, `ROWS` rows at a time.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn panel_product(x: &[u32], w: &[u32], kp: usize, n: usize, dst: Dst2) {
        assert!(x.len() >= n * kp && w.len() == kp * PANEL);
        let Dst2 { out, stride, cols } = dst;
        assert!(n == 0 || out.len() >= (n - 1) * stride + cols);
        // Written by each block before it is read (zeroing it per block cost 0.4% of a bf16
        // forward pass).
        let mut block = [[0f32; PANEL]; ROWS];
        let mut r = 0;
        while r < n {
            let rows = ROWS.min(n - r);
            // SAFETY: rows r..r + rows of `x` exist (asserted); `w` is kp × PANEL words.
            unsafe {
                match rows {
                    6 => block_product::<6>(&x[r * kp..], w, kp, &mut block),
                    5 => block_product::<5>(&x[r * kp..], w, kp, &mut block),
                    4 => block_product::<4>(&x[r * kp..], w, kp, &mut block),
                    3 => block_product::<3>(&x[r * kp..], w, kp, &mut block),
                    2 => block_product::<2>(&x[r * kp..], w, kp, &mut block),
                    _ => block_product::<1>(&x[r * kp..], w, kp, &mut block),
                }
            }
            for (i, row) in block.iter().take(rows).enumerate() {
                let at = (r + i) * stride;
                out[at..at + cols].copy_from_slice(&row[..cols]);
            }
            r += rows;
        }
    }

    /// `R` rows × one panel, accumulated in 4R registers over all kp pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn block_product<const R: usize>(
        x: &[u32],
        w: &[u32],
        kp: usize,
        block: &mut [[f32; PANEL]; super::ROWS],
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        for p in 0..kp {
            // SAFETY: p < kp, so the panel's words p·PANEL..(p + 1)·PANEL and each row's
            // word p exist (the caller asserted the lengths).
            unsafe {
                let wv = [0, 16, 32, 48]
                    .map(|o| _mm512_loadu_si512(wp.add(p * PANEL + o).cast()).cast_to_bh());
                for (i, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_epi32(*xp.add(i * kp + p) as i32).cast_to_bh();
                    for (a, w) in acc.iter_mut().zip(&wv) {
                        *a = _mm512_dpbf16_ps(*a, xv, *w);
                    }
                }
            }
        }
        for (acc, row) in acc.iter().zip(block.iter_mut()) {
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: each row has PANEL = 4 × 16 lanes.
                unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * j), *a) };
            }
        }
    }

    trait CastToBh {
        fn cast_to_bh(self) -> __m512bh;
    }

    impl CastToBh for __m512i {
        #[inline(always)]
        fn cast_to_bh(self) -> __m512bh {
            // SAFETY: both are 512 bits of plain data.
            unsafe { std::mem::transmute::<__m512i, __m512bh>(self) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn bf16_round(v: f32) -> f64 {
        bf16::from_f32(v).to_f64()
    }

    /// Each kernel's tile equals an f64 product of the bf16-rounded inputs (plus bias) to f32
    /// summation error, for widths and row counts that leave partial panels and row blocks.
    #[test]
    fn tile_matches_bf16_rounded_f64_product() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (d, vocab, n) = (37, 203, 13);
        let w: Vec<f32> = (0..d * vocab)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-2.0..2.0)).collect();
        let b: Vec<f32> = (0..vocab).map(|_| rng.random_range(-1.0..1.0)).collect();
        let xp = pack_rows(&x, d);
        let mut kernels = vec![Bf16Kernel::Unpacked];
        if Bf16Kernel::detect() != Bf16Kernel::Unpacked {
            kernels.push(Bf16Kernel::detect());
        }
        for kernel in kernels {
            let packed = Bf16Panels::pack_for(&w, d, vocab, kernel);
            for (first, width) in [
                (0, PANEL),
                (PANEL, 2 * PANEL + 11),
                (3 * PANEL, vocab - 3 * PANEL),
            ] {
                let mut out = Vec::new();
                packed.tile(&xp, first, width, Some(&b), &mut out);
                assert_eq!(out.len(), n * width);
                for r in 0..n {
                    for c in 0..width {
                        let v = first + c;
                        let want: f64 = (0..d)
                            .map(|k| bf16_round(x[r * d + k]) * bf16_round(w[k * vocab + v]))
                            .sum::<f64>()
                            + b[v] as f64;
                        let got = out[r * width + c] as f64;
                        assert!(
                            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{kernel:?} row {r} column {v}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
