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

/// Columns per panel of [`Panels`]: two AVX registers of f32.
const PANEL: usize = 16;
/// Rows per tile of [`Panels::product`]: six rows × two registers of sums is twelve of the
/// sixteen AVX registers, with room for the panel's two values and a broadcast.
const TILE: usize = 6;

/// A `k × n` weight, row-major, rearranged for products with few rows: panel `p` holds
/// columns `16p .. 16p + 16` of every row, row after row. A generation multiplies the same
/// weights by a few rows at a time; `gemm` repacks a weight into this order inside every such
/// product (a sixth of a decode step's time), this keeps it packed for the generation.
#[derive(Debug)]
pub struct Panels {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl Panels {
    /// `None` where there is no AVX2 + FMA kernel to use them, or `n` is not a whole number
    /// of panels: products then go through `gemm`.
    pub fn new(w: &[f32], k: usize, n: usize) -> Option<Self> {
        assert_eq!(w.len(), k * n, "matrix of {k}×{n}");
        if !n.is_multiple_of(PANEL) || n == 0 || !has_kernel() {
            return None;
        }
        let fill = |data: &mut [MaybeUninit<f32>]| {
            data.par_chunks_mut(k * PANEL)
                .enumerate()
                .for_each(|(p, panel)| {
                    for (row, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
                        for (d, v) in dst.iter_mut().zip(&w[row * n + p * PANEL..]) {
                            d.write(*v);
                        }
                    }
                })
        };
        // SAFETY: panel p's k rows of 16 values are the p-th of n / 16 chunks of k·16 values.
        let data = unsafe { written(w.len(), fill) };
        Some(Panels { data, k, n })
    }

    /// `x·w` into fresh memory, `x` row-major `rows × k`.
    pub fn times(&self, x: &[f32]) -> Vec<f32> {
        let len = self.out_len(x);
        // SAFETY: `fill` with `accumulate` false writes every one of the product's values.
        unsafe { written(len, |dst| self.fill(dst, x, false)) }
    }

    /// `dst := x·w` (`accumulate` false) or `dst := dst + x·w`, `x` row-major `rows × k`,
    /// `dst` row-major `rows × n`.
    pub fn product(&self, dst: &mut [f32], x: &[f32], accumulate: bool) {
        assert_eq!(dst.len(), self.out_len(x), "output of {}-wide rows", self.n);
        self.fill(dst, x, accumulate);
    }

    fn out_len(&self, x: &[f32]) -> usize {
        assert_eq!(x.len() % self.k.max(1), 0, "rows of {} values", self.k);
        x.len().checked_div(self.k).map_or(0, |rows| rows * self.n)
    }

    /// The product into `dst` (`f32`, or `MaybeUninit<f32>` when not accumulating), rows
    /// split evenly between the pool's threads: each task streams every panel once.
    fn fill<T: Send>(&self, dst: &mut [T], x: &[f32], accumulate: bool) {
        const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<f32>()) };
        let (k, n) = (self.k, self.n);
        if k == 0 {
            // No inner dimension: the product is zero (`rows` is unknown, so `dst` is empty).
            return;
        }
        let rows = x.len() / k;
        let per = rows
            .div_ceil(TILE)
            .div_ceil(rayon::current_num_threads())
            .max(1)
            * TILE;
        dst.par_chunks_mut(per * n)
            .zip(x.par_chunks(per * k))
            .for_each(|(d, xs)| {
                let d = d.as_mut_ptr().cast::<f32>();
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Panels` exist only where the CPU has AVX2 and FMA (`new`); `d`
                // holds as many rows of `n` values (f32-sized, written before read unless
                // accumulating onto an initialised `dst`) as `xs` rows of `k`.
                unsafe {
                    avx::product(d, xs, &self.data, k, n, accumulate)
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (d, xs);
                    unreachable!("Panels exist only with AVX2 + FMA")
                }
            });
    }
}

fn has_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::elementwise::has_avx2_fma();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::{PANEL, TILE};

    /// Rows of `x` (`k` each) times the panels, into as many rows of `n` values at `dst`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `dst` must be valid for writes (and, when
    /// accumulating, reads) of `x.len() / k · n` values, and `panels` hold `k × n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn product(
        dst: *mut f32,
        x: &[f32],
        panels: &[f32],
        k: usize,
        n: usize,
        accumulate: bool,
    ) {
        let rows = x.len() / k;
        assert!(panels.len() >= k * n);
        for p in 0..n / PANEL {
            let w = &panels[p * k * PANEL..(p + 1) * k * PANEL];
            for r in (0..rows).step_by(TILE) {
                let (xs, d) = (&x[r * k..], dst.wrapping_add(r * n + p * PANEL));
                // SAFETY: the tile reads its rows of `x` from `xs` (bounds-checked) and
                // writes as many rows of 16 values at stride `n` from `d`, inside `dst`
                // since rows `r ..` exist and column `16p + 15 < n`.
                unsafe {
                    match rows - r {
                        1 => tile::<1>(xs, w, d, k, n, accumulate),
                        2 => tile::<2>(xs, w, d, k, n, accumulate),
                        3 => tile::<3>(xs, w, d, k, n, accumulate),
                        4 => tile::<4>(xs, w, d, k, n, accumulate),
                        5 => tile::<5>(xs, w, d, k, n, accumulate),
                        _ => tile::<TILE>(xs, w, d, k, n, accumulate),
                    }
                }
            }
        }
    }

    /// `R` rows by one panel: the sums stay in registers over the whole of `k`, one FMA
    /// each per step, and go to memory once.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    ///
    /// # Safety
    /// AVX2 and FMA; `d` valid for `R` rows of 16 values at stride `n` (read as well when
    /// accumulating).
    unsafe fn tile<const R: usize>(
        x: &[f32],
        w: &[f32],
        d: *mut f32,
        k: usize,
        n: usize,
        accumulate: bool,
    ) {
        assert!(x.len() >= R * k && w.len() >= k * PANEL);
        let (x, w) = (x.as_ptr(), w.as_ptr());
        // SAFETY: the assert bounds every read of `x` and `w`; the caller, `d`'s.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for i in 0..k {
                let w0 = _mm256_loadu_ps(w.add(i * PANEL));
                let w1 = _mm256_loadu_ps(w.add(i * PANEL + 8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*x.add(r * k + i));
                    a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let o = d.add(r * n);
                let (mut lo, mut hi) = (a[0], a[1]);
                if accumulate {
                    lo = _mm256_add_ps(_mm256_loadu_ps(o), lo);
                    hi = _mm256_add_ps(_mm256_loadu_ps(o.add(8)), hi);
                }
                _mm256_storeu_ps(o, lo);
                _mm256_storeu_ps(o.add(8), hi);
            }
        }
    }
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
        // Panels: every tile height (1 … 6 rows and more), overwriting and accumulating.
        let w: Vec<f32> = (0..33 * 48).map(|i| val(i + 7)).collect();
        let wm = Mat::new(&w, 33, 48);
        let panels = Panels::new(&w, 33, 48);
        assert_eq!(
            panels.is_some(),
            has_kernel(),
            "panels wherever the kernel runs"
        );
        if let Some(panels) = panels {
            for rows in [1, 2, 3, 4, 5, 6, 7, 13, 70] {
                let xm = Mat::new(&a[..rows * 33], rows, 33);
                let mut z = vec![f32::NAN; rows * 48];
                panels.product(&mut z, &a[..rows * 33], false);
                assert!(close(&z, &naive(xm, wm)), "{rows} rows");
                let mut z: Vec<f32> = (0..rows * 48).map(|i| val(i + 2)).collect();
                let want: Vec<f32> = naive(xm, wm).iter().zip(&z).map(|(p, r)| p + r).collect();
                panels.product(&mut z, &a[..rows * 33], true);
                assert!(close(&z, &want), "{rows} rows, accumulated");
                assert!(close(&panels.times(&a[..rows * 33]), &naive(xm, wm)));
            }
        }
        assert!(
            Panels::new(&w, 48, 33).is_none(),
            "33 columns are not whole panels"
        );
        let at = transposed(&a, 70, 33);
        assert!((0..70).all(|i| (0..33).all(|j| at[j * 70 + i] == a[i * 33 + j])));
        assert_eq!(copied(&y), y);
    }
}
