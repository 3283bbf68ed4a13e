//! curric's own fused CPU ops, each a candle `CustomOp` with a backward pass (candle-nn's fused
//! ops have none). Every op falls back to the same maths written from primitives on other
//! devices or dtypes, so CUDA builds run (more slowly) through autograd.
//!
//! Fusing matters on CPU: written from primitives, a softmax is five tensor ops forward and
//! about ten backward, each a full pass over memory plus a thread-pool barrier.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

use super::elementwise::exp_shifted;

/// Whether fused ops are enabled: on unless `CURRIC_FUSED_OPS=0` (to compare against the
/// primitive path when debugging numerics).
fn fused_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CURRIC_FUSED_OPS").map_or(true, |v| v != "0"))
}

thread_local! {
    static PRIMITIVES_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every fused op of this thread replaced by its primitive path: what tests
/// compare the fused ops and the fused decoder layer against, in one process.
pub fn with_primitives<R>(f: impl FnOnce() -> R) -> R {
    let before = PRIMITIVES_ONLY.with(|p| p.replace(true));
    let r = f();
    PRIMITIVES_ONLY.with(|p| p.set(before));
    r
}

pub(crate) fn fused(x: &Tensor) -> bool {
    fused_on(x.device(), x.dtype())
}

/// Whether tensors on `device` in `dtype` take the fused ops.
pub(crate) fn fused_on(device: &candle_core::Device, dtype: DType) -> bool {
    fused_enabled() && !PRIMITIVES_ONLY.with(|p| p.get()) && device.is_cpu() && dtype == DType::F32
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "curric-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let n = l.dims()[l.dims().len() - 1];
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            yr.copy_from_slice(xr);
            let inv = 1.0 / exp_shifted(yr, max);
            yr.iter_mut().for_each(|v| *v *= inv);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // dx = y ⊙ (g − Σ g⊙y)
        let gy = (g * y)?;
        let s = gy.sum_keepdim(D::Minus1)?;
        Ok(Some((gy - y.broadcast_mul(&s)?)?))
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

struct LogSoftmax;

impl CustomOp1 for LogSoftmax {
    fn name(&self) -> &'static str {
        "curric-log-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let n = l.dims()[l.dims().len() - 1];
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // y holds e^(x − max) until the log-sum-exp is known.
            yr.copy_from_slice(xr);
            let lse = max + exp_shifted(yr, max).ln();
            for (a, b) in xr.iter().zip(yr.iter_mut()) {
                *b = a - lse;
            }
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // dx = g − softmax ⊙ Σ g
        let s = g.sum_keepdim(D::Minus1)?;
        Ok(Some((g - y.exp()?.broadcast_mul(&s)?)?))
    }
}

/// Log-softmax over the last dimension.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(LogSoftmax)
    } else {
        candle_nn::ops::log_softmax(x, D::Minus1)
    }
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "curric-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let n = w.len();
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let ms = xr.iter().map(|a| a * a).sum::<f32>() / n as f32;
            let r = 1.0 / (ms + self.eps).sqrt();
            for ((a, b), wi) in xr.iter().zip(yr.iter_mut()).zip(w) {
                *b = a * r * wi;
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // r = (mean x² + eps)^-½, x̂ = x r, y = x̂ ⊙ w:
        // dw = Σ_rows g ⊙ x̂,  dx = r ⊙ (g⊙w − x̂ ⊙ mean(g⊙w⊙x̂)).
        let n = w.dim(0)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?
            .sqrt()?
            .recip()?;
        let xhat = x.broadcast_mul(&r)?;
        let gw = g.broadcast_mul(w)?;
        let dw = (g * &xhat)?.reshape(((), n))?.sum(0)?;
        let m = (&gw * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = (gw - xhat.broadcast_mul(&m)?)?.broadcast_mul(&r)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) && w.dtype() == DType::F32 {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
    } else {
        let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(w)
    }
}

/// Rotary embedding ("rotate half" layout) of `[B, H, T, hd]` with per-row tables `[B, T, hd/2]`.
/// Its backward is the inverse rotation (the same op with `sin` negated).
#[derive(Clone)]
struct Rope {
    cos: std::sync::Arc<Vec<f32>>,
    sin: std::sync::Arc<Vec<f32>>,
    inverse: bool,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "curric-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (b, h, t, hd) = l.shape().dims4()?;
        let half = hd / 2;
        if self.cos.len() != b * t * half {
            candle_core::bail!("curric-rope: tables do not match input {:?}", l.dims());
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        for bi in 0..b {
            for hi in 0..h {
                for ti in 0..t {
                    let row = ((bi * h + hi) * t + ti) * hd;
                    let tab = (bi * t + ti) * half;
                    let (c, sn) = (&self.cos[tab..tab + half], &self.sin[tab..tab + half]);
                    let xr = &x[row..row + hd];
                    let yr = &mut y[row..row + hd];
                    for i in 0..half {
                        let (x1, x2) = (xr[i], xr[i + half]);
                        let s = sign * sn[i];
                        yr[i] = x1 * c[i] - x2 * s;
                        yr[i + half] = x2 * c[i] + x1 * s;
                    }
                }
            }
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let inv = Rope {
            inverse: !self.inverse,
            ..self.clone()
        };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&inv)?))
    }
}

/// Host copies of cos and sin `[B, T, hd/2]`.
pub(crate) type HostTables = (std::sync::Arc<Vec<f32>>, std::sync::Arc<Vec<f32>>);

/// Rotary tables for one forward pass: tensors `[B, 1, T, hd/2]` for the primitive path and
/// host copies for the fused CPU op.
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    host: Option<HostTables>,
}

impl RopeTables {
    pub fn new(cos: Tensor, sin: Tensor) -> Result<Self> {
        let host = if cos.device().is_cpu() && cos.dtype() == DType::F32 {
            let c = cos.flatten_all()?.to_vec1::<f32>()?;
            let s = sin.flatten_all()?.to_vec1::<f32>()?;
            Some((std::sync::Arc::new(c), std::sync::Arc::new(s)))
        } else {
            None
        };
        Ok(Self { cos, sin, host })
    }

    /// Host copies of cos and sin `[B, T, hd/2]`, where the tables are CPU f32.
    pub(crate) fn host(&self) -> Option<&HostTables> {
        self.host.as_ref()
    }

    /// Rotates `x` `[B, H, T, hd]` (in f32, the result in `x`'s dtype).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != DType::F32 {
            return self.apply(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
        }
        match &self.host {
            Some((c, s)) if fused(x) => x.contiguous()?.apply_op1(Rope {
                cos: c.clone(),
                sin: s.clone(),
                inverse: false,
            }),
            _ => {
                let half = x.dim(D::Minus1)? / 2;
                let x1 = x.narrow(D::Minus1, 0, half)?;
                let x2 = x.narrow(D::Minus1, half, half)?;
                let r1 = (x1.broadcast_mul(&self.cos)? - x2.broadcast_mul(&self.sin)?)?;
                let r2 = (x2.broadcast_mul(&self.cos)? + x1.broadcast_mul(&self.sin)?)?;
                Tensor::cat(&[r1, r2], D::Minus1)
            }
        }
    }
}

/// Largest absolute elementwise difference: what the fused ops' tests compare.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Each fused op against the same maths from primitives: values and input gradients.
    fn check(
        fused_f: impl Fn(&Tensor) -> Result<Tensor>,
        slow_f: impl Fn(&Tensor) -> Result<Tensor>,
        shape: &[usize],
    ) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0)
            .collect();
        let x = Var::from_vec(data, shape, &Device::Cpu).unwrap();
        let wts: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32) - 3.0).collect();
        let wts = Tensor::from_vec(wts, shape, &Device::Cpu).unwrap();
        let a = fused_f(x.as_tensor()).unwrap();
        let b = slow_f(x.as_tensor()).unwrap();
        let diff = max_abs_diff;
        assert!(diff(&a, &b) < 1e-5, "forward differs by {}", diff(&a, &b));
        let ga = (a * &wts).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &wts).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
        );
        assert!(diff(ga, gb) < 1e-4, "gradient differs by {}", diff(ga, gb));
    }

    #[test]
    fn softmax_matches_primitives() {
        check(
            softmax_last_dim,
            |x| candle_nn::ops::softmax(x, D::Minus1),
            &[3, 4, 7],
        );
    }

    #[test]
    fn log_softmax_matches_primitives() {
        check(
            log_softmax_last_dim,
            |x| candle_nn::ops::log_softmax(x, D::Minus1),
            &[5, 9],
        );
    }

    #[test]
    fn rms_norm_matches_primitives_including_weight_gradient() {
        let w = Var::from_vec(vec![0.5f32, -1.0, 2.0, 1.5], 4, &Device::Cpu).unwrap();
        let slow = |x: &Tensor| {
            let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?
                .sqrt()?
                .recip()?;
            x.broadcast_mul(&inv)?.broadcast_mul(w.as_tensor())
        };
        check(|x| rms_norm(x, w.as_tensor(), 1e-6), slow, &[2, 3, 4]);
        let x = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let ga = rms_norm(&x, w.as_tensor(), 1e-6)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let gb = slow(&x).unwrap().sqr().unwrap().sum_all().unwrap();
        let (ga, gb) = (ga.backward().unwrap(), gb.backward().unwrap());
        let d = (ga.get(w.as_tensor()).unwrap() - gb.get(w.as_tensor()).unwrap()).unwrap();
        let d = d.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "weight gradient differs by {d}");
    }

    #[test]
    fn rope_matches_primitives() {
        let (b, t, half) = (2, 3, 2);
        let ang: Vec<f32> = (0..b * t * half).map(|i| i as f32 * 0.3).collect();
        let cos = Tensor::from_vec(
            ang.iter().map(|a| a.cos()).collect::<Vec<_>>(),
            (b, 1, t, half),
            &Device::Cpu,
        )
        .unwrap();
        let sin = Tensor::from_vec(
            ang.iter().map(|a| a.sin()).collect::<Vec<_>>(),
            (b, 1, t, half),
            &Device::Cpu,
        )
        .unwrap();
        let fast = RopeTables::new(cos.clone(), sin.clone()).unwrap();
        let slow = RopeTables {
            cos,
            sin,
            host: None,
        };
        check(|x| fast.apply(x), |x| slow.apply(x), &[b, 3, t, 2 * half]);
    }
}
