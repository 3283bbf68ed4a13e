//! Scaled dot-product attention over grouped-query heads as one multi-threaded kernel, with
//! its backward (CPU, f32), for the fused decoder layer.
//!
//! candle's batched matmul calls `gemm` once per (batch row, head), and each of those products
//! (37 × 64 × 37 on the TRL side-by-side's model, one query row while decoding) is too small
//! for `gemm` to split over threads: the attention of a 128-row batch ran on one core while
//! the others waited, a fifth of the main thread's time in a GRPO step. Here one task per
//! (batch row, KV head) computes scores, softmax and the weighted values of its query heads,
//! the products through `gemm` on the task's own thread (training, prefill) or as dot
//! products (decoding); every task sums in a fixed order, so results do not depend on
//! scheduling.

use rayon::prelude::*;

use super::elementwise::{dot, exp_shifted, multiversion};
use super::matmul::{matmul_to_serial, zeroed, Mat};

/// Keys or values `[B, KV, S, hd]`, possibly a view into a larger buffer (a KV cache's
/// reserved capacity): block `i` of the `B·KV` starts at `i · block`.
#[derive(Clone, Copy)]
pub struct Heads<'a> {
    pub data: &'a [f32],
    pub block: usize,
}

impl Heads<'_> {
    /// The `s × hd` rows of block `bk`.
    fn block(&self, bk: usize, s: usize, hd: usize) -> &[f32] {
        &self.data[bk * self.block..bk * self.block + s * hd]
    }
}

/// From this many query rows per task the products go through `gemm` (one thread per task);
/// below it (decoding: one position per query head) plain dot products are faster.
const GEMM_ROWS: usize = 16;

/// Shapes: `b` batch rows, `kv` KV heads with `rep` query heads each, `w` queries, `s` keys,
/// head width `hd`.
#[derive(Clone, Copy)]
pub struct Dims {
    pub b: usize,
    pub kv: usize,
    pub rep: usize,
    pub w: usize,
    pub s: usize,
    pub hd: usize,
}

impl Dims {
    /// Query rows per task: the `rep` query heads of one KV head, `w` positions each.
    fn qrows(&self) -> usize {
        self.rep * self.w
    }
}

#[inline]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// `softmax(scale · q kᵀ + mask) v` for queries `[B, KV, rep·W, hd]` (query head `kv·rep + r`
/// at rows `r·W ..`) and an additive mask `[B, W, S]` shared by the heads. Returns the
/// probabilities `[B, KV, rep·W, S]` (the backward reads them) and the output
/// `[B, KV, rep·W, hd]`.
pub fn forward(
    q: &[f32],
    k: Heads,
    v: Heads,
    mask: &[f32],
    dm: Dims,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let Dims { w, s, hd, kv, .. } = dm;
    let qr = dm.qrows();
    let tasks = dm.b * kv;
    let mut p = zeroed(tasks * qr * s);
    let mut o = zeroed(tasks * qr * hd);
    p.par_chunks_mut(qr * s)
        .zip(o.par_chunks_mut(qr * hd))
        .zip(q.par_chunks(qr * hd))
        .enumerate()
        .for_each(|(bk, ((pb, ob), qb))| {
            let bi = bk / kv;
            let (kb, vb) = (k.block(bk, s, hd), v.block(bk, s, hd));
            let mb = &mask[bi * w * s..(bi + 1) * w * s];
            forward_task(pb, ob, qb, kb, vb, mb, dm, scale);
        });
    (p, o)
}

multiversion! {
    /// One (batch row, KV head) of [`forward`]: its `qr` query rows against its `s` keys and
    /// values, with the batch row's mask `[W, S]`.
    #[allow(clippy::too_many_arguments)]
    fn forward_task(
        pb: &mut [f32],
        ob: &mut [f32],
        qb: &[f32],
        kb: &[f32],
        vb: &[f32],
        mask: &[f32],
        dm: Dims,
        scale: f32,
    ) {
        let Dims { w, s, hd, .. } = dm;
        let qr = dm.qrows();
        let big = qr >= GEMM_ROWS;
        if big {
            matmul_to_serial(pb, Mat::new(qb, qr, hd), Mat::new(kb, s, hd).t());
        }
        for (i, pr) in pb.chunks_exact_mut(s).enumerate() {
            let t = i % w;
            let mr = &mask[t * s..(t + 1) * s];
            let qi = &qb[i * hd..(i + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for (j, (pj, m)) in pr.iter_mut().zip(mr).enumerate() {
                let raw = if big {
                    *pj
                } else {
                    dot(qi, &kb[j * hd..(j + 1) * hd])
                };
                *pj = raw * scale + m;
                max = max.max(*pj);
            }
            let inv = 1.0 / exp_shifted(pr, max);
            pr.iter_mut().for_each(|pj| *pj *= inv);
            if !big {
                let oi = &mut ob[i * hd..(i + 1) * hd];
                for (j, pj) in pr.iter().enumerate() {
                    axpy(oi, *pj, &vb[j * hd..(j + 1) * hd]);
                }
            }
        }
        if big {
            matmul_to_serial(ob, Mat::new(pb, qr, s), Mat::new(vb, s, hd));
        }
    }
}

/// Gradients of [`forward`]'s queries, keys and values from the output's `d_o`
/// `[B, KV, rep·W, hd]`: `dq` in the queries' layout, `dk`, `dv` as `[B, KV, S, hd]` summed
/// over each KV head's query heads.
pub fn backward(
    q: &[f32],
    k: Heads,
    v: Heads,
    p: &[f32],
    d_o: &[f32],
    dm: Dims,
    scale: f32,
) -> [Vec<f32>; 3] {
    let Dims { s, hd, kv, .. } = dm;
    let qr = dm.qrows();
    let tasks = dm.b * kv;
    let mut dq = zeroed(tasks * qr * hd);
    let mut dk = zeroed(tasks * s * hd);
    let mut dv = zeroed(tasks * s * hd);
    dq.par_chunks_mut(qr * hd)
        .zip(dk.par_chunks_mut(s * hd))
        .zip(dv.par_chunks_mut(s * hd))
        .enumerate()
        .for_each(|(bk, ((dqb, dkb), dvb))| {
            let (kb, vb) = (k.block(bk, s, hd), v.block(bk, s, hd));
            let pb = &p[bk * qr * s..(bk + 1) * qr * s];
            let dob = &d_o[bk * qr * hd..(bk + 1) * qr * hd];
            let qb = &q[bk * qr * hd..(bk + 1) * qr * hd];
            let big = qr >= GEMM_ROWS;
            // dp = do vᵀ, dv = pᵀ do.
            let mut ds = vec![0f32; qr * s];
            if big {
                matmul_to_serial(&mut ds, Mat::new(dob, qr, hd), Mat::new(vb, s, hd).t());
                matmul_to_serial(dvb, Mat::new(pb, qr, s).t(), Mat::new(dob, qr, hd));
            } else {
                for (i, dsr) in ds.chunks_exact_mut(s).enumerate() {
                    let doi = &dob[i * hd..(i + 1) * hd];
                    for (j, dsj) in dsr.iter_mut().enumerate() {
                        *dsj = dot(doi, &vb[j * hd..(j + 1) * hd]);
                        axpy(&mut dvb[j * hd..(j + 1) * hd], pb[i * s + j], doi);
                    }
                }
            }
            // ds = scale · p (dp − Σ p dp), row by row.
            for (dsr, pr) in ds.chunks_exact_mut(s).zip(pb.chunks_exact(s)) {
                let pdp: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                dsr.iter_mut()
                    .zip(pr)
                    .for_each(|(d, pj)| *d = scale * pj * (*d - pdp));
            }
            // dq = ds k, dk = dsᵀ q.
            if big {
                matmul_to_serial(dqb, Mat::new(&ds, qr, s), Mat::new(kb, s, hd));
                matmul_to_serial(dkb, Mat::new(&ds, qr, s).t(), Mat::new(qb, qr, hd));
            } else {
                for (i, dsr) in ds.chunks_exact(s).enumerate() {
                    let qi = &qb[i * hd..(i + 1) * hd];
                    let dqi = &mut dqb[i * hd..(i + 1) * hd];
                    for (j, dsj) in dsr.iter().enumerate() {
                        axpy(dqi, *dsj, &kb[j * hd..(j + 1) * hd]);
                        axpy(&mut dkb[j * hd..(j + 1) * hd], *dsj, qi);
                    }
                }
            }
        });
    [dq, dk, dv]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel against a direct evaluation of the definition, on a GQA layout whose keys and
    /// values sit in a larger buffer (as in a KV cache), with a masked position: with few query
    /// rows per task (dot products) and with many (`gemm`).
    #[test]
    fn attention_matches_the_definition_and_its_gradient() {
        for (w, s) in [(3, 4), (9, 11)] {
            let dm = Dims {
                b: 2,
                kv: 2,
                rep: 2,
                w,
                s,
                hd: 5,
            };
            assert_eq!(dm.qrows() >= GEMM_ROWS, w == 9);
            check(dm, s + 2);
        }
    }

    fn check(dm: Dims, cap: usize) {
        let val = |i: usize| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.7;
        let tasks = dm.b * dm.kv;
        let q: Vec<f32> = (0..tasks * dm.qrows() * dm.hd).map(val).collect();
        let kbuf: Vec<f32> = (0..tasks * cap * dm.hd).map(|i| val(i + 7)).collect();
        let vbuf: Vec<f32> = (0..tasks * cap * dm.hd).map(|i| val(i + 13)).collect();
        let mut mask = vec![0f32; dm.b * dm.w * dm.s];
        mask[dm.w * dm.s + 1] = -1e9; // batch row 1, query 0 does not see key 1
        let scale = 0.4;
        let k = Heads {
            data: &kbuf,
            block: cap * dm.hd,
        };
        let v = Heads {
            data: &vbuf,
            block: cap * dm.hd,
        };
        let (p, o) = forward(&q, k, v, &mask, dm, scale);
        // The reference loss L = Σ o ⊙ c, differentiated by central differences.
        let c: Vec<f32> = (0..o.len()).map(|i| val(i + 3)).collect();
        let loss = |q: &[f32], kb: &[f32], vb: &[f32]| -> f64 {
            let mut l = 0f64;
            for bk in 0..tasks {
                for i in 0..dm.qrows() {
                    let t = i % dm.w;
                    let bi = bk / dm.kv;
                    let qi = &q[(bk * dm.qrows() + i) * dm.hd..][..dm.hd];
                    let sc: Vec<f64> = (0..dm.s)
                        .map(|j| {
                            let kj = &kb[bk * cap * dm.hd + j * dm.hd..][..dm.hd];
                            let d: f64 = qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum();
                            d * scale as f64 + mask[(bi * dm.w + t) * dm.s + j] as f64
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum();
                    for e in 0..dm.hd {
                        let oe: f64 = (0..dm.s)
                            .map(|j| {
                                (sc[j] - mx).exp() / z * vb[bk * cap * dm.hd + j * dm.hd + e] as f64
                            })
                            .sum();
                        l += oe * c[(bk * dm.qrows() + i) * dm.hd + e] as f64;
                    }
                }
            }
            l
        };
        let lo: f64 = o.iter().zip(&c).map(|(a, b)| (a * b) as f64).sum();
        assert!((lo - loss(&q, &kbuf, &vbuf)).abs() < 1e-4);
        // Masked probabilities vanish and rows sum to one.
        let row = (2 * dm.qrows()) * dm.s; // batch row 1, first KV head, query 0
        assert!(p[row + 1] < 1e-30);
        for r in p.chunks(dm.s) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let [dq, dk, dv] = backward(&q, k, v, &p, &c, dm, scale);
        let h = 1e-3f32;
        let numeric = |which: usize, idx: usize| -> f64 {
            let mut bufs = [q.clone(), kbuf.clone(), vbuf.clone()];
            bufs[which][idx] += h;
            let up = loss(&bufs[0], &bufs[1], &bufs[2]);
            bufs[which][idx] -= 2.0 * h;
            (up - loss(&bufs[0], &bufs[1], &bufs[2])) / (2.0 * h as f64)
        };
        for (i, g) in dq.iter().enumerate() {
            assert!((*g as f64 - numeric(0, i)).abs() < 1e-3, "dq[{i}]");
        }
        for bk in 0..tasks {
            for e in 0..dm.s * dm.hd {
                let at = bk * cap * dm.hd + e;
                let (gk, gv) = (dk[bk * dm.s * dm.hd + e], dv[bk * dm.s * dm.hd + e]);
                assert!((gk as f64 - numeric(1, at)).abs() < 1e-3, "dk[{bk}, {e}]");
                assert!((gv as f64 - numeric(2, at)).abs() < 1e-3, "dv[{bk}, {e}]");
            }
        }
    }
}
