//! Matrix products of host f32 buffers through `gemm` (the kernels candle's CPU matmul
//! calls), without wrapping the buffers in tensors.
//!
//! Used where the buffers are long-lived and updated in place (the SAE trainer's parameters
//! and scratch) or where the output's first pass matters (the fused linear layers): a tensor
//! would copy the parameters every step, and candle's matmul zero-fills its output before
//! `gemm` overwrites it. `Mat` carries the strides, so a transposed operand is a view, not a
//! copy. This module holds the only `unsafe` call into `gemm`; every stride and size is
//! checked here against the slices.

/// A read-only (rows × cols) view of a host buffer with arbitrary strides.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// `data` as a row-major (rows × cols) matrix; panics unless it holds exactly that many.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        assert_eq!(
            data.len(),
            rows * cols,
            "a ({rows} × {cols}) matrix needs {} values",
            rows * cols
        );
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view of the same buffer.
    pub fn t(self) -> Mat<'a> {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Columns `start..start + len` of this view.
    pub fn columns(self, start: usize, len: usize) -> Mat<'a> {
        assert!(
            start + len <= self.cols,
            "columns {start}..{} of {}",
            start + len,
            self.cols
        );
        let offset = if len == 0 { 0 } else { start * self.col_stride };
        Mat {
            data: &self.data[offset.min(self.data.len())..],
            cols: len,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// What the product does with the destination's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dst {
    /// dst = lhs · rhs (the old values are never read).
    Overwrite,
    /// dst = dst + lhs · rhs.
    Accumulate,
}

/// `lhs · rhs` into `dst`, a row-major (lhs.rows × rhs.cols) buffer of exactly that size.
/// Runs on the current rayon pool's threads.
pub fn matmul(dst: &mut [f32], lhs: Mat, rhs: Mat, dst_mode: Dst) {
    matmul_with(dst, lhs, rhs, dst_mode, pool_parallelism());
}

/// `matmul` on the calling thread only, for callers that run many products in parallel.
pub fn matmul_on_this_thread(dst: &mut [f32], lhs: Mat, rhs: Mat, dst_mode: Dst) {
    matmul_with(dst, lhs, rhs, dst_mode, gemm::Parallelism::None);
}

fn matmul_with(dst: &mut [f32], lhs: Mat, rhs: Mat, dst_mode: Dst, par: gemm::Parallelism) {
    assert_eq!(
        dst.len(),
        lhs.rows * rhs.cols,
        "the product of ({} × {}) and ({} × {}) has {} values",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
        lhs.rows * rhs.cols
    );
    // SAFETY: `dst` has exactly (lhs.rows × rhs.cols) elements (asserted above), all
    // initialised, so reading it for `Accumulate` is sound; `gemm_raw` checks the operands.
    unsafe { gemm_raw(dst.as_mut_ptr(), lhs, rhs, dst_mode == Dst::Accumulate, par) }
}

/// `lhs · rhs` as a fresh row-major buffer. The output is not zero-filled first: `gemm`
/// writes every element.
pub fn product(lhs: Mat, rhs: Mat) -> Vec<f32> {
    let len = lhs.rows * rhs.cols;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: the allocation holds `len` f32; without `read_dst` gemm only writes, and it
    // writes every element of the (rows × cols) destination, so after the call all `len`
    // values are initialised.
    unsafe {
        gemm_raw(out.as_mut_ptr(), lhs, rhs, false, pool_parallelism());
        out.set_len(len);
    }
    out
}

/// All of the current rayon pool's threads.
fn pool_parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        threads => gemm::Parallelism::Rayon(threads),
    }
}

/// The one call into `gemm`.
///
/// # Safety
/// `dst` must point to (lhs.rows × rhs.cols) writable f32 in row-major order, initialised
/// if `read_dst`, and not aliasing the operands.
unsafe fn gemm_raw(dst: *mut f32, lhs: Mat, rhs: Mat, read_dst: bool, par: gemm::Parallelism) {
    assert_eq!(
        lhs.cols, rhs.rows,
        "inner dimensions differ: ({} × {}) · ({} × {})",
        lhs.rows, lhs.cols, rhs.rows, rhs.cols
    );
    for m in [&lhs, &rhs] {
        if m.rows > 0 && m.cols > 0 {
            let last = (m.rows - 1) * m.row_stride + (m.cols - 1) * m.col_stride;
            assert!(last < m.data.len(), "matrix view reaches past its buffer");
        }
    }
    // SAFETY: every element either view reads lies inside its slice (checked above); the
    // destination is the caller's promise.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst,
            1,
            rhs.cols as isize,
            read_dst,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ_k a[i, k]·b[k, j] in f64, read through the views' strides.
    fn reference(a: Mat, b: Mat) -> Vec<f64> {
        let at = |m: &Mat, i: usize, j: usize| m.data[i * m.row_stride + j * m.col_stride] as f64;
        let mut out = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|k| at(&a, i, k) * at(&b, k, j)).sum();
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "[{i}] {g} vs {w}"
            );
        }
    }

    /// All four combinations of transposed operands, odd sizes, overwrite and accumulate.
    #[test]
    fn products_match_an_f64_definition_for_every_layout() {
        let (m, k, n) = (37, 19, 23);
        let (a, at) = (values(m * k, 1), values(k * m, 2));
        let (b, bt) = (values(k * n, 3), values(n * k, 4));
        let lhs = [Mat::row_major(&a, m, k), Mat::row_major(&at, k, m).t()];
        let rhs = [Mat::row_major(&b, k, n), Mat::row_major(&bt, n, k).t()];
        for l in lhs {
            for r in rhs {
                let want = reference(l, r);
                assert_close(&product(l, r), &want);
                let mut dst = vec![f32::NAN; m * n];
                matmul(&mut dst, l, r, Dst::Overwrite);
                assert_close(&dst, &want);
                let start = values(m * n, 5);
                let mut acc = start.clone();
                matmul(&mut acc, l, r, Dst::Accumulate);
                let want: Vec<f64> = want
                    .iter()
                    .zip(&start)
                    .map(|(w, s)| w + *s as f64)
                    .collect();
                assert_close(&acc, &want);
            }
        }
    }

    /// A block of columns of a (transposed) operand, computed on the calling thread.
    #[test]
    fn column_views_select_those_columns() {
        let (m, k, n) = (5, 7, 40);
        let (a, b) = (values(m * k, 6), values(n * k, 7));
        let (lhs, rhs) = (Mat::row_major(&a, m, k), Mat::row_major(&b, n, k).t());
        let full = reference(lhs, rhs);
        for (start, len) in [(0, 16), (16, 16), (32, 8), (39, 1)] {
            let mut dst = vec![0f32; m * len];
            matmul_on_this_thread(&mut dst, lhs, rhs.columns(start, len), Dst::Overwrite);
            let want: Vec<f64> = (0..m)
                .flat_map(|i| full[i * n + start..i * n + start + len].to_vec())
                .collect();
            assert_close(&dst, &want);
        }
    }

    #[test]
    #[should_panic(expected = "inner dimensions differ")]
    fn mismatched_inner_dimensions_panic() {
        let a = values(6, 0);
        product(Mat::row_major(&a, 2, 3), Mat::row_major(&a, 2, 3));
    }
}
