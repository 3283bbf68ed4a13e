//! A whole Qwen2 decoder layer as one autograd node, with a hand-derived backward (CPU, f32).
//!
//! Written from candle primitives, a layer is ~55 graph nodes, and candle's backward gives
//! every node's gradient a fresh zeroed buffer plus an add (`GradStore::or_insert`), reshapes
//! and transposes included: on the TRL side-by-side's model (4,736 tokens × 256 wide) that
//! made the backward 3.4× the forward where the matmuls alone are 2×. Here the forward runs
//! on detached values (products through `gemm` directly, see `matmul`; attention in
//! `attn_kernel`; curric's multi-threaded kernels for the element-wise parts), keeps what the
//! backward needs, and joins the graph once: a `CustomOp2` over the layer input and its
//! weights packed into one vector. `loss.backward()` works as before, and gradients reach
//! each weight through the pack's `cat`.
//!
//! A call can also continue a prefix computed by another call (`forward_with`): a group's
//! completions attend to their shared prompt's keys and values, which then take a third
//! input of the node and get their gradient back through it.
//!
//! Used where `ops::fused` holds (CPU, f32, fused ops on), Qwen2's q/k/v biases and Qwen3's
//! q/k norms included; with a KV cache as inference (`forward_cached`). Elsewhere (CUDA, bf16)
//! the layer runs from primitives. `tests` compare values and every gradient with that path.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::attn_kernel::{self, Heads};
use super::elementwise::{dot, dot3, multiversion, sigmoid, silu};
use super::matmul::{
    copied, matmul, matmul_acc, matmul_to, transposed, written, zeroed, Mat, Panels,
};

/// The weights of one layer, detached, as the forward and backward read them.
pub struct LayerWeights {
    pub ln1: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    /// q, k and v biases (Qwen2 has them, Qwen3 not).
    pub qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    /// Qwen3's RMSNorm weights `[hd]` over each query and key head (never with biases).
    pub qk_norm: Option<(Tensor, Tensor)>,
    pub o: Tensor,
    pub ln2: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
    pub eps: f32,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl LayerWeights {
    /// The tensors in pack order (also the order of [`LayerOp`]'s weight gradients).
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut t = vec![&self.ln1, &self.q, &self.k, &self.v];
        if let Some((bq, bk, bv)) = &self.qkv_bias {
            t.extend([bq, bk, bv]);
        }
        if let Some((nq, nk)) = &self.qk_norm {
            t.extend([nq, nk]);
        }
        t.extend([&self.o, &self.ln2, &self.gate, &self.up, &self.down]);
        t
    }
}

/// Reads a CPU f32 tensor's values in order: in place where they are contiguous.
fn read<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if !t.is_contiguous() {
        return read(&t.contiguous()?, f);
    }
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(cs) = &*st else {
        candle_core::bail!("fused layer: tensor not on the CPU")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("fused layer: tensor not contiguous")
    };
    Ok(f(&cs.as_slice::<f32>()?[a..b]))
}

/// Reads keys or values `[B, KV, S, hd]` in place where their blocks are evenly spaced rows
/// (a KV cache's view into its reserved capacity is); copies them otherwise.
fn read_heads<R>(t: &Tensor, f: impl FnOnce(Heads) -> R) -> Result<R> {
    let (b, kv, s, hd) = t.dims4()?;
    let view = {
        let (st, l) = t.storage_and_layout();
        let Storage::Cpu(cs) = &*st else {
            candle_core::bail!("fused layer: tensor not on the CPU")
        };
        let data = &cs.as_slice::<f32>()?[l.start_offset()..];
        let st_ = l.stride();
        let block = st_[1];
        let even = b * kv > 0
            && st_[3] == 1
            && st_[2] == hd
            && (b == 1 || st_[0] == kv * block)
            && block >= s * hd;
        if even && (b * kv - 1) * block + s * hd <= data.len() {
            return Ok(f(Heads { data, block }));
        }
        t.contiguous()?
    };
    read(&view, |data| {
        f(Heads {
            data,
            block: s * hd,
        })
    })
}

fn tensor(v: Vec<f32>, shape: impl Into<Shape>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, shape, like.device())
}

/// Rows per parallel task: enough work per task that rayon's overhead stays small.
fn rows_per_task(width: usize) -> usize {
    (16384 / width.max(1)).max(1)
}

/// RMSNorm of rows of `x` (`n` wide): the normed rows and each row's `1/rms`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let n = w.len();
    let rows = x.len() / n;
    let mut r = vec![0f32; rows];
    let k = rows_per_task(n);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(n * k)
            .zip(r.par_chunks_mut(k))
            .zip(x.par_chunks(n * k))
            .for_each(|((yb, rb), xb)| rms_norm_rows(yb, rb, xb, w, eps))
    };
    // SAFETY: every row of x (a whole number of rows) writes its row of y.
    let y = unsafe { written(x.len(), fill) };
    (y, r)
}

/// RMSNorm backward for `y = x r w`: returns `residual + dx` and `dw`.
/// `dx = r (g w − x̂ mean(g w x̂))` with `x̂ = x r`; `dw = Σ_rows g x̂`.
fn rms_norm_bwd(
    g: &[f32],
    x: &[f32],
    r: &[f32],
    w: &[f32],
    residual: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let n = w.len();
    let k = rows_per_task(n);
    let mut partial = Vec::new();
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        partial = dx
            .par_chunks_mut(n * k)
            .zip(g.par_chunks(n * k))
            .zip(x.par_chunks(n * k))
            .zip(r.par_chunks(k))
            .zip(residual.par_chunks(n * k))
            .map(|((((db, gb), xb), rb), resb)| {
                let mut dw = vec![0f32; n];
                rms_norm_bwd_rows(db, &mut dw, gb, xb, rb, w, resb);
                dw
            })
            .collect::<Vec<_>>()
    };
    // SAFETY: every row of x (a whole number of rows, as g and residual) writes its row.
    let dx = unsafe { written(x.len(), fill) };
    // Summed in chunk order, not as the threads finish: runs repeat bit for bit.
    let dw = partial.into_iter().fold(vec![0f32; n], |mut a, b| {
        a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
        a
    });
    (dx, dw)
}

multiversion! {
    /// Rows of [`rms_norm`] (`w.len()` wide): `y = x r w` with `r = 1/rms(x)` per row.
    fn rms_norm_rows(y: &mut [MaybeUninit<f32>], r: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
        let n = w.len();
        for ((yr, ri), xr) in y.chunks_exact_mut(n).zip(r.iter_mut()).zip(x.chunks_exact(n)) {
            *ri = 1.0 / (dot(xr, xr) / n as f32 + eps).sqrt();
            for ((o, a), wi) in yr.iter_mut().zip(xr).zip(w) {
                o.write(a * *ri * wi);
            }
        }
    }
}

multiversion! {
    /// Rows of [`rms_norm_bwd`]: writes `residual + dx` and adds the rows' `g x̂` into `dw`.
    fn rms_norm_bwd_rows(
        dx: &mut [MaybeUninit<f32>],
        dw: &mut [f32],
        g: &[f32],
        x: &[f32],
        r: &[f32],
        w: &[f32],
        residual: &[f32],
    ) {
        let n = w.len();
        for ((((dr, gr), xr), ri), res) in dx
            .chunks_exact_mut(n)
            .zip(g.chunks_exact(n))
            .zip(x.chunks_exact(n))
            .zip(r)
            .zip(residual.chunks_exact(n))
        {
            // mean(g w x̂) with x̂ = x r.
            let m = dot3(gr, w, xr) * ri / n as f32;
            let cols = dw.iter_mut().zip(dr.iter_mut()).zip(gr).zip(xr).zip(w).zip(res);
            for (((((dwj, d), gj), xj), wj), rj) in cols {
                *dwj += gj * (xj * ri);
                d.write(rj + ri * (gj * wj - xj * ri * m));
            }
        }
    }
}

/// `silu(g) ⊙ u` of rows `[g | u]` (`2f` wide).
fn swiglu(gu: &[f32], f: usize) -> Vec<f32> {
    let rows = gu.len() / (2 * f);
    let k = rows_per_task(2 * f);
    let fill = |m: &mut [MaybeUninit<f32>]| {
        m.par_chunks_mut(f * k)
            .zip(gu.par_chunks(2 * f * k))
            .for_each(|(mb, gb)| swiglu_rows(mb, gb, f))
    };
    // SAFETY: every row of gu writes its row of m.
    unsafe { written(rows * f, fill) }
}

multiversion! {
    fn swiglu_rows(m: &mut [MaybeUninit<f32>], gu: &[f32], f: usize) {
        for (mr, gr) in m.chunks_exact_mut(f).zip(gu.chunks_exact(2 * f)) {
            let (g, u) = gr.split_at(f);
            for ((o, g), u) in mr.iter_mut().zip(g).zip(u) {
                o.write(silu(*g) * u);
            }
        }
    }
}

/// Gradient `[dg | du]` of [`swiglu`] given `dm`: `dg = dm u σ(g)(1 + g(1 − σ(g)))`,
/// `du = dm silu(g)`.
fn swiglu_bwd(gu: &[f32], dm: &[f32], f: usize) -> Vec<f32> {
    let k = rows_per_task(2 * f);
    let fill = |d: &mut [MaybeUninit<f32>]| {
        d.par_chunks_mut(2 * f * k)
            .zip(gu.par_chunks(2 * f * k))
            .zip(dm.par_chunks(f * k))
            .for_each(|((db, gb), mb)| swiglu_bwd_rows(db, gb, mb, f))
    };
    // SAFETY: every row of gu (dm has as many) writes its row of d.
    unsafe { written(gu.len(), fill) }
}

multiversion! {
    fn swiglu_bwd_rows(d: &mut [MaybeUninit<f32>], gu: &[f32], dm: &[f32], f: usize) {
        for ((dr, gr), mr) in d
            .chunks_exact_mut(2 * f)
            .zip(gu.chunks_exact(2 * f))
            .zip(dm.chunks_exact(f))
        {
            let (g, u) = gr.split_at(f);
            let (dg, du) = dr.split_at_mut(f);
            for ((((dg, du), g), u), m) in dg.iter_mut().zip(du).zip(g).zip(u).zip(mr) {
                let s = sigmoid(*g);
                dg.write(m * u * s * (1.0 + g * (1.0 - s)));
                du.write(m * g * s);
            }
        }
    }
}

/// Qwen3's per-head RMSNorm of the query and key columns of rows `[q | k | v]`; values pass
/// unchanged.
fn head_norm(qkv: &[f32], wq: &[f32], wk: &[f32], dm: Dims, eps: f32) -> Vec<f32> {
    let (width, hd, qd) = (dm.qkv(), dm.hd, dm.qd());
    let mut out = copied(qkv);
    out.par_chunks_mut(width * rows_per_task(width))
        .for_each(|block| {
            for row in block.chunks_exact_mut(width) {
                let (q, kv) = row.split_at_mut(qd);
                let heads = q
                    .chunks_exact_mut(hd)
                    .map(|h| (h, wq))
                    .chain(kv[..dm.kvd()].chunks_exact_mut(hd).map(|h| (h, wk)));
                for (h, w) in heads {
                    let r = 1.0 / (h.iter().map(|a| a * a).sum::<f32>() / hd as f32 + eps).sqrt();
                    h.iter_mut().zip(w).for_each(|(a, wi)| *a *= r * wi);
                }
            }
        });
    out
}

/// [`head_norm`]'s backward, in place: `d` holds the gradient of the normed columns and
/// receives that of the raw ones (`raw`); returns the norm weights' gradients, summed in
/// chunk order.
fn head_norm_bwd(
    d: &mut [f32],
    raw: &[f32],
    wq: &[f32],
    wk: &[f32],
    dm: Dims,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (width, hd, qd, kvd) = (dm.qkv(), dm.hd, dm.qd(), dm.kvd());
    let k = rows_per_task(width);
    let partial = d
        .par_chunks_mut(width * k)
        .zip(raw.par_chunks(width * k))
        .map(|(db, rb)| {
            let (mut dwq, mut dwk) = (vec![0f32; hd], vec![0f32; hd]);
            for (drow, rrow) in db.chunks_exact_mut(width).zip(rb.chunks_exact(width)) {
                for c in (0..qd + kvd).step_by(hd) {
                    let (w, dw) = if c < qd {
                        (wq, &mut dwq)
                    } else {
                        (wk, &mut dwk)
                    };
                    let (g, x) = (&mut drow[c..c + hd], &rrow[c..c + hd]);
                    let r = 1.0 / (x.iter().map(|a| a * a).sum::<f32>() / hd as f32 + eps).sqrt();
                    let mut m = 0f32;
                    for j in 0..hd {
                        dw[j] += g[j] * x[j] * r;
                        m += g[j] * w[j] * x[j] * r;
                    }
                    m /= hd as f32;
                    for j in 0..hd {
                        g[j] = r * (g[j] * w[j] - x[j] * r * m);
                    }
                }
            }
            (dwq, dwk)
        })
        .collect::<Vec<_>>();
    let sum =
        |a: Vec<f32>, b: &Vec<f32>| -> Vec<f32> { a.iter().zip(b).map(|(x, y)| x + y).collect() };
    partial
        .iter()
        .fold((vec![0f32; hd], vec![0f32; hd]), |(aq, ak), (bq, bk)| {
            (sum(aq, bq), sum(ak, bk))
        })
}

/// Shapes of one layer call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    w: usize,
    d: usize,
    heads: usize,
    kv: usize,
    hd: usize,
}

impl Dims {
    fn qd(&self) -> usize {
        self.heads * self.hd
    }
    fn kvd(&self) -> usize {
        self.kv * self.hd
    }
    fn qkv(&self) -> usize {
        self.qd() + 2 * self.kvd()
    }
}

/// Rotates one head row in place ("rotate half"); `sign` −1 is the inverse rotation.
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], sign: f32) {
    let half = cos.len();
    for i in 0..half {
        let (x1, x2) = (x[i], x[i + half]);
        let s = sign * sin[i];
        x[i] = x1 * cos[i] - x2 * s;
        x[i + half] = x2 * cos[i] + x1 * s;
    }
}

/// Rows `[q | k | v]` (`N × qkv`, plus biases) → heads `[B, H, W, hd]`, `[B, KV, W, hd]` × 2,
/// q and k rotated by the tables `[B, W, hd/2]`.
fn split_heads(
    qkv: &[f32],
    bias: Option<&[f32]>,
    dm: Dims,
    cos: &[f32],
    sin: &[f32],
) -> [Vec<f32>; 3] {
    let Dims {
        b,
        w,
        heads,
        kv,
        hd,
        ..
    } = dm;
    let half = hd / 2;
    let width = dm.qkv();
    let split = |nh: usize, col0: usize, rope: bool| -> Vec<f32> {
        let mut out = zeroed(b * nh * w * hd);
        // One task per (batch row, head): W × hd values.
        out.par_chunks_mut(w * hd).enumerate().for_each(|(bh, o)| {
            let (bi, h) = (bh / nh, bh % nh);
            for t in 0..w {
                let src = (bi * w + t) * width + col0 + h * hd;
                let dst = &mut o[t * hd..(t + 1) * hd];
                dst.copy_from_slice(&qkv[src..src + hd]);
                if let Some(bias) = bias {
                    let bb = &bias[col0 + h * hd..col0 + (h + 1) * hd];
                    dst.iter_mut().zip(bb).for_each(|(x, y)| *x += y);
                }
                if rope {
                    let tab = (bi * w + t) * half;
                    rotate(dst, &cos[tab..tab + half], &sin[tab..tab + half], 1.0);
                }
            }
        });
        out
    };
    [
        split(heads, 0, true),
        split(kv, dm.qd(), true),
        split(kv, dm.qd() + dm.kvd(), false),
    ]
}

/// Heads `[B, nh, W, hd]` → rows `[N, nh·hd]`, written at column `col0` of rows `width`
/// wide, inverse-rotated when tables are given.
fn merge_heads(
    x: &[f32],
    nh: usize,
    dm: Dims,
    out: &mut [f32],
    width: usize,
    col0: usize,
    unrope: Option<(&[f32], &[f32])>,
) {
    let Dims { w, hd, .. } = dm;
    let half = hd / 2;
    // One task per (batch row, position): all heads of one output row.
    out.par_chunks_mut(width).enumerate().for_each(|(row, o)| {
        let (bi, t) = (row / w, row % w);
        for h in 0..nh {
            let src = ((bi * nh + h) * w + t) * hd;
            let dst = &mut o[col0 + h * hd..col0 + (h + 1) * hd];
            dst.copy_from_slice(&x[src..src + hd]);
            if let Some((cos, sin)) = unrope {
                let tab = row * half;
                rotate(dst, &cos[tab..tab + half], &sin[tab..tab + half], -1.0);
            }
        }
    });
}

/// Rows `[N, H·hd]` → query heads `[B, H, W, hd]`: [`merge_heads`] undone, no rotation.
fn rows_to_heads(src: &[f32], dm: Dims) -> Vec<f32> {
    let Dims { w, hd, heads, .. } = dm;
    let mut out = zeroed(src.len());
    out.par_chunks_mut(w * hd).enumerate().for_each(|(bh, o)| {
        let (bi, h) = (bh / heads, bh % heads);
        for t in 0..w {
            let s = (bi * w + t) * dm.qd() + h * hd;
            o[t * hd..(t + 1) * hd].copy_from_slice(&src[s..s + hd]);
        }
    });
    out
}

/// A layer's projection weights transposed, `[in, out]`, with q, k, v stacked `[d, qd + 2·kvd]`
/// and gate, up `[d, 2f]`: one product each. Stored as `[out, in]`, a weight is an operand
/// `gemm` must repack before any thread starts, so every product began with a serial pass over
/// its weight on the calling thread (most of a decode step besides the products). Transposed,
/// it is already in the layout `gemm` reads: `gemm` packs it only where the product is wide
/// enough to repay that (more than 96 rows of activations), and then inside its parallel
/// tasks. Building them copies the weights, so a KV cache keeps them for the decode steps of
/// the generation it belongs to, during which the weights cannot change.
///
/// For a generation the four weights are kept as [`Panels`] instead, where the CPU has the
/// kernel for them: a decode step's products have a few rows each, and `gemm` packed the
/// weight again inside every one of them (a sixth of the decode threads' time on the TRL
/// side-by-side's model). Only the training forward's weights reach the backward.
#[derive(Debug, Clone)]
pub struct Stacked {
    qkv: Weight,
    o: Weight,
    gu: Weight,
    down: Weight,
}

#[derive(Debug, Clone)]
enum Weight {
    /// `[in, out]` = `[k, n]`, row-major.
    Plain {
        w: Arc<Vec<f32>>,
        k: usize,
        n: usize,
    },
    Panels(Arc<Panels>),
}

impl Weight {
    /// `x·w` into fresh memory, `x` rows of `in` values.
    fn times(&self, x: &[f32]) -> Vec<f32> {
        match self {
            Weight::Plain { w, k, n } => matmul(rows(x, *k), Mat::new(w, *k, *n)),
            Weight::Panels(p) => p.times(x),
        }
    }

    /// `dst += x·w`.
    fn add_times(&self, dst: &mut [f32], x: &[f32]) {
        match self {
            Weight::Plain { w, k, n } => matmul_acc(dst, rows(x, *k), Mat::new(w, *k, *n)),
            Weight::Panels(p) => p.product(dst, x, true),
        }
    }

    /// The `[in, out]` values, which the backward reads.
    fn plain(&self) -> Result<&[f32]> {
        match self {
            Weight::Plain { w, .. } => Ok(w),
            Weight::Panels(_) => candle_core::bail!(
                "curric-decoder-layer: a generation's packed weights have no backward"
            ),
        }
    }
}

impl Stacked {
    fn new(lw: &LayerWeights) -> Result<Self> {
        Self::build(lw, false)
    }

    /// The weights for a generation's prefill and decode steps.
    pub fn for_generation(lw: &LayerWeights) -> Result<Self> {
        Self::build(lw, true)
    }

    fn build(lw: &LayerWeights, panels: bool) -> Result<Self> {
        let t = |ts: &[&Tensor]| -> Result<Weight> {
            let mut v = Vec::new();
            for t in ts {
                read(t, |s| v.extend_from_slice(s))?;
            }
            let cols = ts[0].dim(1)?;
            let (k, n) = (cols, v.len() / cols);
            let w = transposed(&v, n, k);
            Ok(match panels.then(|| Panels::new(&w, k, n)).flatten() {
                Some(p) => Weight::Panels(Arc::new(p)),
                None => Weight::Plain {
                    w: Arc::new(w),
                    k,
                    n,
                },
            })
        };
        Ok(Self {
            qkv: t(&[&lw.q, &lw.k, &lw.v])?,
            o: t(&[&lw.o])?,
            gu: t(&[&lw.gate, &lw.up])?,
            down: t(&[&lw.down])?,
        })
    }
}

/// The forward's activations: what the backward reads (rows `[N, ·]` unless said).
struct Acts {
    dm: Dims,
    attn: attn_kernel::Dims,
    f: usize,
    scale: f32,
    stacked: Stacked,
    ln1: Vec<f32>,
    ln2: Vec<f32>,
    x: Tensor,
    r1: Vec<f32>,
    n1: Vec<f32>,
    /// With q/k norms: their weights and the projections before them `[N, qkv]`.
    qk_norm: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    /// Rotated queries `[B, KV, rep·W, hd]`, and the keys and values `[B, KV, S, hd]` they
    /// attended to.
    qh: Vec<f32>,
    kh: Tensor,
    vh: Tensor,
    /// Attention probabilities `[B, KV, rep·W, S]`.
    p: Vec<f32>,
    a: Vec<f32>,
    x1: Vec<f32>,
    r2: Vec<f32>,
    n2: Vec<f32>,
    gu: Vec<f32>,
    m: Vec<f32>,
}

/// The layer's forward on `x` `[B, T, d]`: rotary tables `[B, T, hd/2]`, an additive mask
/// `[B, 1, T, S]`, and `kv`, which receives this call's keys and values `[B, KV, T, hd]` and
/// returns all `S` the queries attend to (a KV cache's append, or the same tensors).
/// `stacked` is `lw`'s stacked weights where the caller kept them.
fn run(
    x: &Tensor,
    lw: &LayerWeights,
    stacked: Option<Stacked>,
    cos: &[f32],
    sin: &[f32],
    mask: &Tensor,
    kv: impl FnOnce(Tensor, Tensor) -> Result<(Tensor, Tensor)>,
) -> Result<(Vec<f32>, Acts)> {
    let stacked = match stacked {
        Some(s) => s,
        None => Stacked::new(lw)?,
    };
    let (b, w, d) = x.dims3()?;
    let dm = Dims {
        b,
        w,
        d,
        heads: lw.heads,
        kv: lw.kv_heads,
        hd: lw.head_dim,
    };
    let n = b * w;
    let f = lw.gate.dim(0)?;
    let rep = dm.heads / dm.kv;
    let scale = 1.0 / (dm.hd as f32).sqrt();
    if cos.len() != n * dm.hd / 2 || sin.len() != cos.len() || !dm.heads.is_multiple_of(dm.kv) {
        candle_core::bail!(
            "curric-decoder-layer: rotary tables of {} values for {b}×{w} positions, {} heads over {} KV heads",
            cos.len(),
            dm.heads,
            dm.kv
        );
    }
    let qd = dm.qd();
    let xd = x.detach().contiguous()?;
    let ln1 = lw.ln1.flatten_all()?.to_vec1::<f32>()?;
    let ln2 = lw.ln2.flatten_all()?.to_vec1::<f32>()?;

    let (n1, r1) = read(&xd, |xs| rms_norm(xs, &ln1, lw.eps))?;
    let qkv = stacked.qkv.times(&n1);
    let bias = match &lw.qkv_bias {
        Some((bq, bk, bv)) => Some(Tensor::cat(&[bq, bk, bv], 0)?.to_vec1::<f32>()?),
        None => None,
    };
    let qk_norm = match &lw.qk_norm {
        Some((nq, nk)) => Some((nq.to_vec1::<f32>()?, nk.to_vec1::<f32>()?)),
        None => None,
    };
    let [qh, kh, vh] = match &qk_norm {
        Some((wq, wk)) => split_heads(&head_norm(&qkv, wq, wk, dm, lw.eps), None, dm, cos, sin),
        None => split_heads(&qkv, bias.as_deref(), dm, cos, sin),
    };
    let (kh, vh) = kv(
        tensor(kh, (b, dm.kv, w, dm.hd), x)?,
        tensor(vh, (b, dm.kv, w, dm.hd), x)?,
    )?;
    let keys = kh.dim(2)?;
    if mask.dims() != [b, 1, w, keys] {
        candle_core::bail!(
            "curric-decoder-layer: mask {:?} for {w} queries over {keys} keys",
            mask.dims()
        );
    }
    let ad = attn_kernel::Dims {
        b,
        kv: dm.kv,
        rep,
        w,
        s: keys,
        hd: dm.hd,
    };
    let mask = mask.contiguous()?;
    let (p, o) = read(&mask, |m| {
        read_heads(&kh, |k| {
            read_heads(&vh, |v| attn_kernel::forward(&qh, k, v, m, ad, scale))
        })
    })???;
    let mut a = zeroed(n * qd);
    merge_heads(&o, dm.heads, dm, &mut a, qd, 0, None);
    // Residual adds ride on the products: x1 = x + a Woᵀ, out = x1 + m Wdᵀ.
    let mut x1 = read(&xd, copied)?;
    stacked.o.add_times(&mut x1, &a);
    let (n2, r2) = rms_norm(&x1, &ln2, lw.eps);
    let gu = stacked.gu.times(&n2);
    let m = swiglu(&gu, f);
    let mut out = copied(&x1);
    stacked.down.add_times(&mut out, &m);
    let acts = Acts {
        dm,
        attn: ad,
        f,
        scale,
        stacked,
        ln1,
        ln2,
        x: xd,
        r1,
        n1,
        qk_norm: qk_norm.map(|(wq, wk)| (wq, wk, qkv)),
        qh,
        kh,
        vh,
        p,
        a,
        x1,
        r2,
        n2,
        gu,
        m,
    };
    Ok((out, acts))
}

/// What the backward needs besides the activations.
struct Saved {
    acts: Acts,
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    has_bias: bool,
    eps: f32,
    /// The output carries the call's own keys and values after each row (see [`forward_with`]).
    emit_kv: bool,
}

/// The autograd node: input `x` `[B, W, d]`, the packed weights and, as a third input, the
/// keys and values of a shared prefix; its forward hands over the output computed beforehand.
struct LayerOp {
    out: Mutex<Option<Vec<f32>>>,
    shape: Shape,
    saved: Arc<Saved>,
    weight_grads: bool,
}

impl LayerOp {
    fn output(&self) -> Result<(CpuStorage, Shape)> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| candle_core::Error::Msg("curric-decoder-layer: lock poisoned".into()))?;
        match out.take() {
            Some(v) => Ok((CpuStorage::F32(v), self.shape.clone())),
            None => candle_core::bail!("curric-decoder-layer: forward ran twice"),
        }
    }

    /// Gradients of `x`, of the pack and of the prefix (when the call had one).
    fn grads(
        &self,
        x: &Tensor,
        pack: &Tensor,
        prefix: Option<&Tensor>,
        grad: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let g = read(grad, |g| backward(&self.saved, g, self.weight_grads))??;
        let dx = Tensor::from_vec(g.dx, x.shape(), x.device())?;
        let dw = match g.dw {
            Some(v) => Some(Tensor::from_vec(v, pack.shape(), x.device())?),
            None => None,
        };
        let dp = match (g.dprefix, prefix) {
            (Some(v), Some(p)) => Some(Tensor::from_vec(v, p.shape(), x.device())?),
            _ => None,
        };
        Ok((dx, dw, dp))
    }
}

impl CustomOp2 for LayerOp {
    fn name(&self) -> &'static str {
        "curric-decoder-layer"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.output()
    }

    fn bwd(
        &self,
        x: &Tensor,
        pack: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, pack, None, grad)?;
        Ok((Some(dx), dw))
    }
}

impl CustomOp3 for LayerOp {
    fn name(&self) -> &'static str {
        "curric-decoder-layer"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.output()
    }

    fn bwd(
        &self,
        x: &Tensor,
        pack: &Tensor,
        prefix: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, dp) = self.grads(x, pack, Some(prefix), grad)?;
        Ok((Some(dx), dw, dp))
    }
}

/// Runs one layer on `x` `[B, W, d]` with rotary tables `[B, W, hd/2]` (host copies) and an
/// additive mask `[B, 1, W, W]`. `graph` is the weights' graph tensors in pack order (the
/// trainable ones carry gradients), or `None` when nothing needs a gradient.
pub fn forward(
    x: &Tensor,
    lw: &LayerWeights,
    cos: &Arc<Vec<f32>>,
    sin: &Arc<Vec<f32>>,
    mask: &Tensor,
    graph: Option<Vec<Tensor>>,
) -> Result<Tensor> {
    forward_with(x, lw, cos, sin, mask, None, false, graph)
}

/// [`forward`] for rows that continue a shared prefix, or that are one. A group's G
/// completions share their prompt: its positions are computed once, and each completion's
/// queries attend to the prompt's keys and values, then to their own.
///
/// `prefix` `[B, P, 2·kvd]` holds the keys (rotated) and values of the `P` positions before
/// `x`'s, which `x`'s queries attend to first (mask `[B, 1, W, P + W]`); its gradient flows
/// back to whatever produced it. With `emit_kv` each output row carries the call's own keys and
/// values after its `d` values (`[B, W, d + 2·kvd]`), for continuations to attend to; their
/// gradient joins the attention's in the backward.
#[allow(clippy::too_many_arguments)]
pub fn forward_with(
    x: &Tensor,
    lw: &LayerWeights,
    cos: &Arc<Vec<f32>>,
    sin: &Arc<Vec<f32>>,
    mask: &Tensor,
    prefix: Option<&Tensor>,
    emit_kv: bool,
    graph: Option<Vec<Tensor>>,
) -> Result<Tensor> {
    let (b, w, d) = x.dims3()?;
    let (kv, hd) = (lw.kv_heads, lw.head_dim);
    let kvd = kv * hd;
    let pre = match prefix {
        Some(t) => {
            let (pb, p, width) = t.dims3()?;
            if pb != b || width != 2 * kvd {
                candle_core::bail!(
                    "curric-decoder-layer: prefix {:?} for {b} rows of {kv} KV heads × {hd}",
                    t.dims()
                );
            }
            let (k, v) = read(t, |r| heads_from_rows(r, b, p, kv, hd))?;
            Some((tensor(k, (b, kv, p, hd), x)?, tensor(v, (b, kv, p, hd), x)?))
        }
        None => None,
    };
    let (out, acts) = run(x, lw, None, cos, sin, mask, |k, v| match pre {
        Some((pk, pv)) => Ok((Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?)),
        None => Ok((k, v)),
    })?;
    let (out, width) = if emit_kv {
        let s = acts.attn.s;
        let own = read_heads(&acts.kh, |k| {
            read_heads(&acts.vh, |v| rows_from_heads(k, v, b, kv, hd, s - w..s))
        })??;
        (beside(&out, d, &own, 2 * kvd), d + 2 * kvd)
    } else {
        (out, d)
    };
    let shape = Shape::from((b, w, width));
    let weight_grads = graph.is_some();
    let tracked = x.track_op() || prefix.is_some_and(Tensor::track_op);
    if !tracked && !weight_grads {
        return Tensor::from_vec(out, shape, x.device());
    }
    let pack = match graph {
        Some(g) => {
            let flat = g
                .iter()
                .map(|t| t.flatten_all())
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&flat, 0)?
        }
        // Nothing to pack: the weights are frozen, only `x` needs its gradient.
        None => Tensor::zeros(1, candle_core::DType::F32, x.device())?,
    };
    let op = LayerOp {
        out: Mutex::new(Some(out)),
        shape,
        saved: Arc::new(Saved {
            acts,
            cos: cos.clone(),
            sin: sin.clone(),
            has_bias: lw.qkv_bias.is_some(),
            eps: lw.eps,
            emit_kv,
        }),
        weight_grads,
    };
    match prefix {
        Some(p) => x.apply_op3(&pack, p, op),
        None => x.apply_op2(&pack, op),
    }
}

/// Rows `[N, a + c]`: each row of `left` (`a` wide) followed by the same row of `right`.
fn beside(left: &[f32], a: usize, right: &[f32], c: usize) -> Vec<f32> {
    let n = left.len() / a.max(1);
    let mut out = zeroed(n * (a + c));
    out.par_chunks_mut((a + c) * rows_per_task(a + c))
        .enumerate()
        .for_each(|(i, o)| {
            let r0 = i * rows_per_task(a + c);
            for (j, row) in o.chunks_exact_mut(a + c).enumerate() {
                row[..a].copy_from_slice(&left[(r0 + j) * a..(r0 + j + 1) * a]);
                row[a..].copy_from_slice(&right[(r0 + j) * c..(r0 + j + 1) * c]);
            }
        });
    out
}

/// Positions `at` of keys and values `[B, KV, S, hd]` as rows `[B, |at|, 2·kvd]`: each
/// position's key heads, then its value heads.
fn rows_from_heads(
    k: Heads,
    v: Heads,
    b: usize,
    kv: usize,
    hd: usize,
    at: std::ops::Range<usize>,
) -> Vec<f32> {
    let len = at.len();
    let kvd = kv * hd;
    let mut out = zeroed(b * len * 2 * kvd);
    out.par_chunks_mut(2 * kvd)
        .enumerate()
        .for_each(|(row, o)| {
            let (bi, t) = (row / len.max(1), at.start + row % len.max(1));
            for h in 0..kv {
                let src = (bi * kv + h) * k.block + t * hd;
                o[h * hd..(h + 1) * hd].copy_from_slice(&k.data[src..src + hd]);
                let src = (bi * kv + h) * v.block + t * hd;
                o[kvd + h * hd..kvd + (h + 1) * hd].copy_from_slice(&v.data[src..src + hd]);
            }
        });
    out
}

/// Rows `[B, P, 2·kvd]` (as [`rows_from_heads`] writes them) → keys and values `[B, KV, P, hd]`.
fn heads_from_rows(rows: &[f32], b: usize, p: usize, kv: usize, hd: usize) -> (Vec<f32>, Vec<f32>) {
    let kvd = kv * hd;
    let part = |col0: usize| {
        let mut out = zeroed(b * kv * p * hd);
        out.par_chunks_mut((p * hd).max(1))
            .enumerate()
            .for_each(|(bh, o)| {
                let (bi, h) = (bh / kv, bh % kv);
                for t in 0..p {
                    let src = (bi * p + t) * 2 * kvd + col0 + h * hd;
                    o[t * hd..(t + 1) * hd].copy_from_slice(&rows[src..src + hd]);
                }
            });
        out
    };
    (part(0), part(kvd))
}

/// Adds rows `[B, W, 2·kvd]` into positions `from..from + W` of key and value heads
/// `[B, KV, S, hd]`.
fn add_rows_to_heads(
    rows: &[f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dm: Dims,
    s: usize,
    from: usize,
) {
    let (w, hd, kvd) = (dm.w, dm.hd, dm.kvd());
    for (col0, dst) in [(0, dk), (kvd, dv)] {
        dst.par_chunks_mut(s * hd).enumerate().for_each(|(bh, o)| {
            let (bi, h) = (bh / dm.kv, bh % dm.kv);
            for t in 0..w {
                let src = (bi * w + t) * 2 * kvd + col0 + h * hd;
                let at = (from + t) * hd;
                o[at..at + hd]
                    .iter_mut()
                    .zip(&rows[src..src + hd])
                    .for_each(|(a, b)| *a += b);
            }
        });
    }
}

/// The last `w` of `s` positions of heads `[B·nh, S, hd]`.
fn last_positions(x: &[f32], s: usize, w: usize, hd: usize) -> Vec<f32> {
    let blocks = x.len() / (s * hd).max(1);
    let mut out = zeroed(blocks * w * hd);
    out.par_chunks_mut((w * hd).max(1))
        .enumerate()
        .for_each(|(i, o)| {
            o.copy_from_slice(&x[i * s * hd + (s - w) * hd..(i + 1) * s * hd]);
        });
    out
}

/// One layer with a KV cache (`append` adds this call's keys and values and returns all of
/// them): inference, so it records no graph. Returns the output and the stacked weights, for
/// the cache to pass back on the next step.
pub fn forward_cached(
    x: &Tensor,
    lw: &LayerWeights,
    stacked: Option<Stacked>,
    cos: &[f32],
    sin: &[f32],
    mask: &Tensor,
    append: impl FnOnce(Tensor, Tensor) -> Result<(Tensor, Tensor)>,
) -> Result<(Tensor, Stacked)> {
    let stacked = match stacked {
        Some(s) => s,
        None => Stacked::for_generation(lw)?,
    };
    let (out, acts) = run(x, lw, Some(stacked), cos, sin, mask, append)?;
    Ok((Tensor::from_vec(out, x.shape(), x.device())?, acts.stacked))
}

/// Column sums of rows `cols` wide, in a fixed order (reruns are bit-identical).
fn col_sums(x: &[f32], cols: usize) -> Vec<f32> {
    let k = rows_per_task(cols);
    x.par_chunks(cols * k)
        .map(|blk| {
            let mut s = vec![0f32; cols];
            for row in blk.chunks_exact(cols) {
                s.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            s
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0f32; cols], |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })
}

/// `n` rows of `cols` values.
fn rows(v: &[f32], cols: usize) -> Mat<'_> {
    Mat::new(v, v.len() / cols.max(1), cols)
}

/// Splits the next `len` values off the front of `rest`.
fn take<'a>(rest: &mut &'a mut [f32], len: usize) -> &'a mut [f32] {
    let (head, tail) = std::mem::take(rest).split_at_mut(len);
    *rest = tail;
    head
}

/// What the backward returns: the input's gradient, the weights' packed in
/// [`LayerWeights::tensors`]' order (when asked), and the prefix's (when there was one).
struct Grads {
    dx: Vec<f32>,
    dw: Option<Vec<f32>>,
    dprefix: Option<Vec<f32>>,
}

/// The layer's backward from the output gradient `g`: `[B, W, d]`, or `[B, W, d + 2·kvd]`
/// where the output carried the call's keys and values.
fn backward(saved: &Saved, g: &[f32], weight_grads: bool) -> Result<Grads> {
    let sv = &saved.acts;
    let dm = sv.dm;
    let (n, d, f) = (dm.b * dm.w, dm.d, sv.f);
    let (qd, kvd, width) = (dm.qd(), dm.kvd(), dm.qkv());
    let st = &sv.stacked;
    // The output's own rows, and the gradient of the keys and values it carried.
    let split;
    let (g, g_kv) = if saved.emit_kv {
        let (gy, gkv) = unbeside(g, d, 2 * kvd);
        split = gy;
        (split.as_slice(), Some(gkv))
    } else {
        (g, None)
    };

    // MLP: y = m Wdᵀ, m = swiglu(n2 Wguᵀ).
    let dm_ = matmul(Mat::new(g, n, d), Mat::new(st.down.plain()?, f, d).t());
    let dgu = swiglu_bwd(&sv.gu, &dm_, f);
    drop(dm_);
    let dn2 = matmul(
        Mat::new(&dgu, n, 2 * f),
        Mat::new(st.gu.plain()?, d, 2 * f).t(),
    );
    let (dx1, dln2) = rms_norm_bwd(&dn2, &sv.x1, &sv.r2, &sv.ln2, g);
    drop(dn2);

    // Attention: attn = a Woᵀ.
    let da = matmul(Mat::new(&dx1, n, d), Mat::new(st.o.plain()?, qd, d).t());
    let doh = rows_to_heads(&da, dm);
    drop(da);
    let [dqh, mut dkh, mut dvh] = read_heads(&sv.kh, |k| {
        read_heads(&sv.vh, |v| {
            attn_kernel::backward(&sv.qh, k, v, &sv.p, &doh, sv.attn, sv.scale)
        })
    })??;
    // Keys and values `[B, KV, S, hd]`: the prefix's `S − W`, then the call's own `W`.
    let (s, hd) = (sv.attn.s, dm.hd);
    let pre = s - dm.w;
    if let Some(gkv) = &g_kv {
        add_rows_to_heads(gkv, &mut dkh, &mut dvh, dm, s, pre);
    }
    let dprefix = (pre > 0).then(|| {
        let k = Heads {
            data: &dkh,
            block: s * hd,
        };
        let v = Heads {
            data: &dvh,
            block: s * hd,
        };
        rows_from_heads(k, v, dm.b, dm.kv, hd, 0..pre)
    });
    if pre > 0 {
        dkh = last_positions(&dkh, s, dm.w, hd);
        dvh = last_positions(&dvh, s, dm.w, hd);
    }
    let mut dqkv = zeroed(n * width);
    let tabs = Some((saved.cos.as_slice(), saved.sin.as_slice()));
    merge_heads(&dqh, dm.heads, dm, &mut dqkv, width, 0, tabs);
    merge_heads(&dkh, dm.kv, dm, &mut dqkv, width, qd, tabs);
    merge_heads(&dvh, dm.kv, dm, &mut dqkv, width, qd + kvd, None);
    let dnorm = sv
        .qk_norm
        .as_ref()
        .map(|(wq, wk, raw)| head_norm_bwd(&mut dqkv, raw, wq, wk, dm, saved.eps));
    let dn1 = matmul(
        Mat::new(&dqkv, n, width),
        Mat::new(st.qkv.plain()?, d, width).t(),
    );
    let (dx, dln1) = read(&sv.x, |x| rms_norm_bwd(&dn1, x, &sv.r1, &sv.ln1, &dx1))?;

    if !weight_grads {
        return Ok(Grads {
            dx,
            dw: None,
            dprefix,
        });
    }
    // Weight gradients straight into the pack: q, k, v are the stacked rows of `dWqkv`, gate
    // and up those of `dWgu`.
    let norms = if dnorm.is_some() { 2 * dm.hd } else { 0 };
    let biases = if saved.has_bias { width } else { 0 };
    let total = d + width * d + biases + norms + d * qd + d + 2 * f * d + d * f;
    let mut pack = zeroed(total);
    let mut rest = pack.as_mut_slice();
    take(&mut rest, d).copy_from_slice(&dln1);
    matmul_to(
        take(&mut rest, width * d),
        rows(&dqkv, width).t(),
        rows(&sv.n1, d),
    );
    if saved.has_bias {
        take(&mut rest, width).copy_from_slice(&col_sums(&dqkv, width));
    }
    if let Some((dwq, dwk)) = dnorm {
        take(&mut rest, dm.hd).copy_from_slice(&dwq);
        take(&mut rest, dm.hd).copy_from_slice(&dwk);
    }
    matmul_to(take(&mut rest, d * qd), rows(&dx1, d).t(), rows(&sv.a, qd));
    take(&mut rest, d).copy_from_slice(&dln2);
    matmul_to(
        take(&mut rest, 2 * f * d),
        rows(&dgu, 2 * f).t(),
        rows(&sv.n2, d),
    );
    matmul_to(take(&mut rest, d * f), rows(g, d).t(), rows(&sv.m, f));
    Ok(Grads {
        dx,
        dw: Some(pack),
        dprefix,
    })
}

/// [`beside`] undone: rows `[N, a + c]` → `[N, a]` and `[N, c]`.
fn unbeside(x: &[f32], a: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / (a + c).max(1);
    let mut left = zeroed(n * a);
    let mut right = zeroed(n * c);
    left.par_chunks_mut(a.max(1))
        .zip(right.par_chunks_mut(c.max(1)))
        .enumerate()
        .for_each(|(r, (l, rt))| {
            l.copy_from_slice(&x[r * (a + c)..r * (a + c) + a]);
            rt.copy_from_slice(&x[r * (a + c) + a..(r + 1) * (a + c)]);
        });
    (left, right)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use crate::model::config::DecoderConfig;
    use crate::model::nn::causal_mask;
    use crate::model::ops::{max_abs_diff as max_abs, with_primitives};
    use crate::model::qwen2::Decoder;

    /// The fused layer against the same decoder from primitives: hidden states, and the
    /// gradient of every weight and of the input embeddings, on a left-padded batch with
    /// grouped-query heads and q/k/v biases.
    fn parity(bias: bool, qk_norm: bool) {
        let dev = Device::Cpu;
        let cfg = DecoderConfig {
            vocab_size: 50,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 64,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            head_dim: None,
            attention_bias: bias,
            qk_norm,
            mrope: None,
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let dec = Decoder::new(&cfg, vb).unwrap();
        // Biases start at zero and norm weights at one: make them count.
        for (name, var) in vm.data().lock().unwrap().iter() {
            let t = var.as_tensor();
            let noise = (Tensor::randn(0f32, 0.3, t.shape(), &dev).unwrap() + 0.05).unwrap();
            if name.ends_with("bias") || name.contains("norm") {
                var.set(&(t + noise).unwrap()).unwrap();
            }
        }
        let (b, t) = (3, 7);
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, 32), &dev).unwrap())
            .unwrap();
        // Row 1 is left-padded by 2, row 2 by 4; positions count from each row's first token.
        let pads = [0usize, 2, 4];
        let valid: Vec<Vec<bool>> = pads
            .iter()
            .map(|&p| (0..t).map(|i| i >= p).collect())
            .collect();
        let pos: Vec<u32> = pads
            .iter()
            .flat_map(|&p| (0..t).map(move |i| i.saturating_sub(p) as u32))
            .collect();
        let positions = Tensor::from_vec(pos, (b, t), &dev).unwrap();
        let mask = causal_mask(&valid, t, &dev).unwrap();
        let weights = Tensor::randn(0f32, 1.0, (b, t, 32), &dev).unwrap();
        let run = || {
            let h = dec
                .forward_embeds(x.as_tensor(), &positions, Some(&mask), None)
                .unwrap();
            let loss = (&h * &weights).unwrap().sum_all().unwrap();
            (h, loss.backward().unwrap())
        };
        let (h_fused, g_fused) = run();
        let (h_prim, g_prim) = with_primitives(run);
        assert!(max_abs(&h_fused, &h_prim) < 1e-4, "hidden states differ");
        let mut vars: Vec<(String, candle_core::Var)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        vars.push(("input".into(), x.clone()));
        let layer_vars = vars.iter().filter(|(n, _)| n.contains("layers.")).count();
        assert_eq!(
            layer_vars,
            2 * (9 + 3 * bias as usize + 2 * qk_norm as usize)
        );
        // The embedding table is not used by a forward from embeddings.
        vars.retain(|(n, _)| !n.contains("embed_tokens"));
        for (name, var) in &vars {
            let a = g_fused
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let b = g_prim.get(var.as_tensor()).unwrap();
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap().max(1e-3);
            let d = max_abs(a, b) / scale;
            assert!(d < 1e-4, "{name}: gradient differs by {d} (relative)");
        }
    }

    #[test]
    fn fused_layer_matches_primitives_with_biases() {
        parity(true, false);
    }

    #[test]
    fn fused_layer_matches_primitives_without_biases() {
        parity(false, false);
    }

    #[test]
    fn fused_layer_matches_primitives_with_qk_norms() {
        parity(false, true);
    }
}
