//! Matrix products for the fused decoder layer, through the `gemm` crate candle itself uses.
//!
//! candle's CPU matmul fills its output with zeros on the calling thread before `gemm`
//! overwrites it, and a residual add then needs a second buffer and a pass of its own: on the
//! TRL side-by-side's model those fills were a seventh of the main thread's time in a GRPO
//! step, with the other core idle. Here a product is written into fresh memory that `gemm`
//! writes once, or accumulated onto an existing buffer (`y = x + a·bᵀ` in one pass).

use std::mem::MaybeUninit;

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// A read-only `rows × cols` matrix view: element `(i, j)` at `i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix of {rows}×{cols}");
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst := a·b` (`accumulate` false) or `dst := dst + a·b`, `dst` row-major.
///
/// # Safety
/// `dst` must be valid for writes of `a.rows × b.cols` values, and initialised when
/// accumulating.
unsafe fn gemm_raw(dst: *mut f32, a: Mat, b: Mat, accumulate: bool, threads: Parallelism) {
    assert_eq!(a.cols, b.rows, "inner dimensions {} and {}", a.cols, b.rows);
    let (m, k, n) = (a.rows, a.cols, b.cols);
    gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        accumulate,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        threads,
    );
}

/// `a·b`, row-major.
pub fn matmul(a: Mat, b: Mat) -> Vec<f32> {
    let len = a.rows * b.cols;
    if a.cols == 0 {
        return vec![0.0; len];
    }
    let mut out = Vec::<f32>::with_capacity(len);
    // SAFETY: the capacity holds `len` values, and with `k > 0` gemm writes every one of them
    // without reading any, so all are initialised before `set_len`.
    unsafe {
        gemm_raw(out.as_mut_ptr(), a, b, false, Parallelism::Rayon(0));
        out.set_len(len);
    }
    out
}

/// `dst := a·b` into a row-major slice (its old values are not read).
pub fn matmul_to(dst: &mut [f32], a: Mat, b: Mat) {
    product_into(dst, a, b, false, Parallelism::Rayon(0));
}

/// [`matmul_to`] on the calling thread only: for small products inside a parallel task.
pub fn matmul_to_serial(dst: &mut [f32], a: Mat, b: Mat) {
    product_into(dst, a, b, false, Parallelism::None);
}

/// `dst += a·b`, row-major.
pub fn matmul_acc(dst: &mut [f32], a: Mat, b: Mat) {
    product_into(dst, a, b, true, Parallelism::Rayon(0));
}

fn product_into(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, threads: Parallelism) {
    assert_eq!(
        dst.len(),
        a.rows * b.cols,
        "output of {}×{}",
        a.rows,
        b.cols
    );
    if a.cols == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: `dst` holds exactly the output's values, initialised when they are read.
    unsafe { gemm_raw(dst.as_mut_ptr(), a, b, accumulate, threads) }
}

/// The transpose of row-major `rows × cols`, row-major, written by all threads.
pub fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols, "matrix of {rows}×{cols}");
    let mut out = zeroed(src.len());
    if rows == 0 {
        return out;
    }
    out.par_chunks_mut(rows).enumerate().for_each(|(j, o)| {
        for (i, x) in o.iter_mut().enumerate() {
            *x = src[i * cols + j];
        }
    });
    out
}

/// `n` zeros, written by all threads: `vec![0.0; n]` of a block the allocator reuses is one
/// serial `memset` on the calling thread.
pub fn zeroed(n: usize) -> Vec<f32> {
    if n < 1 << 16 {
        return vec![0.0; n];
    }
    let mut v = Vec::<f32>::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(1 << 14)
        .for_each(|c| c.fill(MaybeUninit::new(0.0)));
    // SAFETY: all `n` values were written above.
    unsafe { v.set_len(n) };
    v
}

/// `n` values, all written by `fill` before anything reads them: a kernel that overwrites its
/// whole output need not pay [`zeroed`]'s pass over memory first.
///
/// # Safety
/// `fill` must write every one of the `n` values.
pub unsafe fn written(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's promise.
    unsafe { v.set_len(n) };
    v
}

/// A copy of `src`, written by all threads.
pub fn copied(src: &[f32]) -> Vec<f32> {
    let mut v = zeroed(src.len());
    v.par_chunks_mut(1 << 14)
        .zip(src.par_chunks(1 << 14))
        .for_each(|(d, s)| d.copy_from_slice(s));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat, b: Mat) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn products_of_views_match_the_definition() {
        let val = |i: usize| ((i * 29 % 97) as f32 - 48.0) / 40.0;
        let a: Vec<f32> = (0..70 * 33).map(val).collect();
        let b: Vec<f32> = (0..33 * 51).map(|i| val(i + 5)).collect();
        let bt: Vec<f32> = (0..51 * 33).map(|i| val(i + 9)).collect();
        let (am, bm, btm) = (
            Mat::new(&a, 70, 33),
            Mat::new(&b, 33, 51),
            Mat::new(&bt, 51, 33),
        );
        let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-4);
        assert!(close(&matmul(am, bm), &naive(am, bm)));
        // a·btᵀ, and aᵀ·c with a transposed view on the left (weight gradients).
        assert!(close(&matmul(am, btm.t()), &naive(am, btm.t())));
        let c: Vec<f32> = (0..70 * 20).map(|i| val(i + 3)).collect();
        let cm = Mat::new(&c, 70, 20);
        assert!(close(&matmul(am.t(), cm), &naive(am.t(), cm)));
        // Accumulating onto a residual, and writing into a slice over old values.
        let mut y: Vec<f32> = (0..70 * 51).map(|i| val(i + 1)).collect();
        let want: Vec<f32> = naive(am, bm).iter().zip(&y).map(|(p, r)| p + r).collect();
        matmul_acc(&mut y, am, bm);
        assert!(close(&y, &want));
        let mut z = vec![f32::NAN; 70 * 51];
        matmul_to(&mut z, am, bm);
        assert!(close(&z, &naive(am, bm)));
        let mut z = vec![f32::NAN; 70 * 51];
        matmul_to_serial(&mut z, am, bm);
        assert!(close(&z, &naive(am, bm)));
        assert!(zeroed(100_000).iter().all(|v| *v == 0.0));
        let at = transposed(&a, 70, 33);
        assert!((0..70).all(|i| (0..33).all(|j| at[j * 70 + i] == a[i * 33 + j])));
        assert_eq!(copied(&y), y);
    }
}
