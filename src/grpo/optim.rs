//! curric's AdamW: candle-nn's update rule, with its moment state exposed (so that resume is
//! bit-identical), a learning-rate schedule, global grad-norm clipping and a finiteness check
//! that runs before any parameter is touched.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, DType, Device, Storage, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::GrpoError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Cosine,
}

/// Linear warm-up from lr/warmup to lr over `warmup_steps`, then constant or cosine decay to
/// `min_lr_ratio · lr` at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub kind: ScheduleKind,
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    pub fn constant(lr: f64) -> Self {
        LrSchedule {
            lr,
            warmup_steps: 0,
            total_steps: 0,
            kind: ScheduleKind::Constant,
            min_lr_ratio: 0.0,
        }
    }

    /// The learning rate of optimiser step `t` (0-based).
    pub fn lr_at(&self, t: u64) -> f64 {
        if t < self.warmup_steps {
            return self.lr * (t + 1) as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let p = ((t - self.warmup_steps) as f64 / span as f64).min(1.0);
                let m = self.min_lr_ratio;
                self.lr * (m + (1.0 - m) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub schedule: LrSchedule,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global L2 norm the gradients are scaled down to; `None` disables clipping.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            schedule: LrSchedule::constant(1e-3),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
        }
    }
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimStats {
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub clipped: bool,
}

pub struct AdamW {
    names: Vec<String>,
    vars: Vec<Var>,
    /// f32 copies of the variables stored in a lower precision (bf16): the update is applied
    /// to them and rounded into the variable, so steps smaller than the variable's precision
    /// are not lost.
    master: Vec<Option<Var>>,
    /// The moments, in f32 whatever the variables' dtype.
    m: Vec<Var>,
    v: Vec<Var>,
    t: u64,
    cfg: AdamWConfig,
}

impl AdamW {
    /// Optimises `vars`, naming them by position (`#0`, `#1`, …): a resumed run must pass the
    /// same variables in the same order. Prefer [`AdamW::new_named`].
    pub fn new(vars: Vec<Var>, cfg: AdamWConfig) -> Result<Self, GrpoError> {
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("#{i}"), v))
            .collect();
        Self::new_named(named, cfg)
    }

    /// Optimises named variables (e.g. a policy's trainable tensors by checkpoint name). The
    /// state is keyed by these names, so it survives a change in which variables are trained
    /// (a stage that freezes the vision tower keeps the decoder's moments).
    pub fn new_named(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self, GrpoError> {
        let mut seen = std::collections::HashSet::new();
        if let Some((n, _)) = vars.iter().find(|(n, _)| !seen.insert(n.clone())) {
            return Err(GrpoError::OptimState(format!("variable `{n}` given twice")));
        }
        let (names, vars): (Vec<String>, Vec<Var>) = vars.into_iter().unzip();
        let zeros = |v: &Var| Var::zeros(v.shape(), DType::F32, v.device());
        let m = vars.iter().map(zeros).collect::<candle_core::Result<_>>()?;
        let v = vars.iter().map(zeros).collect::<candle_core::Result<_>>()?;
        let master = vars
            .iter()
            .map(|v| {
                (v.dtype() != DType::F32)
                    .then(|| Var::from_tensor(&v.as_tensor().to_dtype(DType::F32)?))
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(AdamW {
            names,
            vars,
            master,
            m,
            v,
            t: 0,
            cfg,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// The learning rate the next step will use.
    pub fn current_lr(&self) -> f64 {
        self.cfg.schedule.lr_at(self.t)
    }

    /// Backward through `loss`, then [`AdamW::apply`]. `step` only names the training step in
    /// errors.
    pub fn backward_step(&mut self, loss: &Tensor, step: u64) -> Result<OptimStats, GrpoError> {
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !l.is_finite() {
            return Err(GrpoError::NonFinite {
                step,
                what: format!("loss ({l})"),
            });
        }
        let grads = loss.backward()?;
        self.apply(&grads, step)
    }

    /// One AdamW update from `grads`. Every gradient is checked first; on NaN/inf nothing is
    /// updated and the step count does not advance.
    pub fn apply(&mut self, grads: &GradStore, step: u64) -> Result<OptimStats, GrpoError> {
        let grads = self.grads_of(grads)?;
        self.apply_grads(&grads, step)
    }

    /// The gradients of the optimised variables only (one per variable, in order), so that a
    /// backward pass's activation gradients can be dropped before the next micro-batch.
    pub fn grads_of(&self, grads: &GradStore) -> Result<Vec<Option<Tensor>>, GrpoError> {
        // Accumulated in f32 whatever the variables' dtype.
        self.vars
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .map(|g| g.to_dtype(DType::F32))
                    .transpose()
                    .map_err(GrpoError::from)
            })
            .collect()
    }

    /// Adds `more` into `sum` (both from [`AdamW::grads_of`]): gradient accumulation.
    pub fn accumulate(
        sum: &mut [Option<Tensor>],
        more: Vec<Option<Tensor>>,
    ) -> Result<(), GrpoError> {
        for (s, m) in sum.iter_mut().zip(more) {
            *s = match (s.take(), m) {
                (Some(a), Some(b)) => Some((a + b)?),
                (a, b) => a.or(b),
            };
        }
        Ok(())
    }

    /// One AdamW update from per-variable gradients ([`AdamW::grads_of`]); as
    /// [`AdamW::apply`].
    pub fn apply_grads(
        &mut self,
        grads: &[Option<Tensor>],
        step: u64,
    ) -> Result<OptimStats, GrpoError> {
        let mut sq = 0f64;
        for (i, var) in self.vars.iter().enumerate() {
            if let Some(g) = grads.get(i).and_then(Option::as_ref) {
                let s = sum_sq(g)?;
                if !s.is_finite() {
                    return Err(GrpoError::NonFinite {
                        step,
                        what: format!("gradient of `{}` {:?}", self.names[i], var.shape()),
                    });
                }
                sq += s;
            }
        }
        let grad_norm = sq.sqrt();
        let coef = match self.cfg.max_grad_norm {
            Some(max) if grad_norm > max => Some(max / (grad_norm + 1e-6)),
            _ => None,
        };

        let lr = self.cfg.schedule.lr_at(self.t);
        self.t += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let scale_m = 1f64 / (1f64 - b1.powi(self.t as i32));
        let scale_v = 1f64 / (1f64 - b2.powi(self.t as i32));
        let lr_lambda = lr * self.cfg.weight_decay;
        for ((((var, master), m), v), g) in self
            .vars
            .iter()
            .zip(&self.master)
            .zip(&self.m)
            .zip(&self.v)
            .zip(grads)
        {
            let Some(g) = g else {
                continue;
            };
            let theta = master.as_ref().unwrap_or(var);
            let k = Coefs {
                b1: b1 as f32,
                one_b1: (1.0 - b1) as f32,
                b2: b2 as f32,
                one_b2: (1.0 - b2) as f32,
                scale_m: scale_m as f32,
                scale_v: scale_v as f32,
                decay: (1f64 - lr_lambda) as f32,
                eps: self.cfg.eps as f32,
                lr: lr as f32,
                clip: coef.map(|c| c as f32),
            };
            let fused = cpu_f32(g, |g| {
                cpu_f32(theta.as_tensor(), |th| {
                    cpu_f32(m.as_tensor(), |mm| {
                        cpu_f32(v.as_tensor(), |vv| adamw_cpu(th, mm, vv, g, &k))
                    })
                })
            });
            if let Some(Some(Some(Some([nt, nm, nv])))) = fused {
                let shape = theta.shape();
                let dev = theta.device();
                m.set(&Tensor::from_vec(nm, shape, dev)?)?;
                v.set(&Tensor::from_vec(nv, shape, dev)?)?;
                let next_theta = Tensor::from_vec(nt, shape, dev)?;
                theta.set(&next_theta)?;
                if master.is_some() {
                    var.set(&next_theta.to_dtype(var.dtype())?)?;
                }
                continue;
            }
            let g = g.to_dtype(DType::F32)?;
            let g = match coef {
                Some(c) => (g * c)?,
                None => g,
            };
            // Same operation order as candle-nn's AdamW, so the two agree to the bit.
            let next_m = ((m.as_tensor() * b1)? + (&g * (1.0 - b1))?)?;
            let next_v = ((v.as_tensor() * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
            let adjusted = (m_hat / (v_hat.sqrt()? + self.cfg.eps)?)?;
            let next_theta = (next_theta - (adjusted * lr)?)?;
            m.set(&next_m)?;
            v.set(&next_v)?;
            theta.set(&next_theta)?;
            if master.is_some() {
                var.set(&next_theta.to_dtype(var.dtype())?)?;
            }
        }
        Ok(OptimStats {
            lr,
            grad_norm,
            clipped: coef.is_some(),
        })
    }

    /// Resets the f32 master weights from the variables (after they were overwritten).
    pub fn refresh_master(&mut self) -> Result<(), GrpoError> {
        for (w, var) in self.master.iter().zip(&self.vars) {
            if let Some(w) = w {
                w.set(&var.as_tensor().to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }

    /// The moments, f32 master weights and step count as named tensors (`m.<name>`,
    /// `v.<name>`, `master.<name>`, `step`), for a safetensors file next to the weights.
    pub fn state(&self) -> Result<HashMap<String, Tensor>, GrpoError> {
        let mut out = HashMap::new();
        for (((name, m), v), master) in self
            .names
            .iter()
            .zip(&self.m)
            .zip(&self.v)
            .zip(&self.master)
        {
            out.insert(format!("m.{name}"), m.as_tensor().copy()?);
            out.insert(format!("v.{name}"), v.as_tensor().copy()?);
            if let Some(w) = master {
                out.insert(format!("master.{name}"), w.as_tensor().copy()?);
            }
        }
        out.insert("step".into(), Tensor::new(&[self.t as i64], &Device::Cpu)?);
        Ok(out)
    }

    /// Restores what [`AdamW::state`] returned. Every variable of this optimiser must find its
    /// two moments with its shape; entries for variables this optimiser does not train (frozen
    /// in this stage) are ignored. Nothing changes unless everything checks out.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), GrpoError> {
        let get = |k: &str| {
            state
                .get(k)
                .ok_or_else(|| GrpoError::OptimState(format!("missing `{k}`")))
        };
        let step = get("step")?
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        let step = *step
            .first()
            .filter(|s| **s >= 0)
            .ok_or_else(|| GrpoError::OptimState("bad `step`".into()))?;
        let mut staged = Vec::with_capacity(2 * self.vars.len());
        for (i, theta) in self.vars.iter().enumerate() {
            for (kind, slot) in [("m", &self.m[i]), ("v", &self.v[i])] {
                let key = format!("{kind}.{}", self.names[i]);
                let t = get(&key)?;
                if t.shape() != theta.shape() {
                    return Err(GrpoError::OptimState(format!(
                        "`{key}` has shape {:?}, the variable {:?}",
                        t.shape(),
                        theta.shape()
                    )));
                }
                staged.push((slot, t.to_dtype(DType::F32)?.to_device(theta.device())?));
            }
            // A state saved without master weights (f32 variables then) starts them from the
            // variable.
            if let (Some(w), Some(t)) = (
                &self.master[i],
                state.get(&format!("master.{}", self.names[i])),
            ) {
                if t.shape() == theta.shape() {
                    staged.push((w, t.to_dtype(DType::F32)?.to_device(theta.device())?));
                }
            }
        }
        for (slot, t) in staged {
            slot.set(&t)?;
        }
        self.t = step as u64;
        Ok(())
    }
}

/// The update's scalars in f32, as candle's tensor-scalar ops round them.
struct Coefs {
    b1: f32,
    one_b1: f32,
    b2: f32,
    one_b2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    eps: f32,
    lr: f32,
    clip: Option<f32>,
}

/// Reads a contiguous CPU f32 tensor in place; `None` for any other.
fn cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(cs) = &*st else { return None };
    let (a, b) = l.contiguous_offsets()?;
    Some(f(&cs.as_slice::<f32>().ok()?[a..b]))
}

/// `Σ g²` in f64. On the CPU by all threads, summed in a fixed order.
fn sum_sq(g: &Tensor) -> Result<f64, GrpoError> {
    let fast = cpu_f32(g, |x| {
        x.par_chunks(1 << 14)
            .map(|c| c.iter().map(|v| *v as f64 * *v as f64).sum::<f64>())
            .collect::<Vec<_>>()
            .iter()
            .sum::<f64>()
    });
    match fast {
        Some(s) => Ok(s),
        None => Ok(g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?),
    }
}

/// One AdamW update of a CPU f32 parameter in a single pass by all threads: the new
/// parameter, first and second moments. Each value takes the same f32 operations in the same
/// order as the tensor-op path in [`AdamW::apply_grads`] (a scalar product is candle's
/// `affine`, `x · c + 0`), so both give the same bits; the tensor ops allocate and traverse
/// the parameter a dozen times, most of them on one thread.
fn adamw_cpu(theta: &[f32], m: &[f32], v: &[f32], g: &[f32], k: &Coefs) -> [Vec<f32>; 3] {
    let n = theta.len();
    let (mut nt, mut nm, mut nv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    const CHUNK: usize = 1 << 14;
    nt.par_chunks_mut(CHUNK)
        .zip(nm.par_chunks_mut(CHUNK))
        .zip(nv.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((ot, om), ov))| {
            let at = c * CHUNK;
            for i in 0..ot.len() {
                let j = at + i;
                let g = match k.clip {
                    Some(c) => g[j] * c + 0.0,
                    None => g[j],
                };
                let next_m = (m[j] * k.b1 + 0.0) + (g * k.one_b1 + 0.0);
                let next_v = (v[j] * k.b2 + 0.0) + (g * g * k.one_b2 + 0.0);
                let m_hat = next_m * k.scale_m + 0.0;
                let v_hat = next_v * k.scale_v + 0.0;
                let decayed = theta[j] * k.decay + 0.0;
                let adjusted = m_hat / (v_hat.sqrt() * 1.0 + k.eps);
                ot[i] = decayed - (adjusted * k.lr + 0.0);
                om[i] = next_m;
                ov[i] = next_v;
            }
        });
    [nt, nm, nv]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Optimizer;

    fn quad_loss(w: &Var) -> Tensor {
        // sum((w - [1, -2, 3])^2 * [1, 2, 3])
        let target = Tensor::new(&[1f32, -2., 3.], &Device::Cpu).unwrap();
        let wts = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        ((w.as_tensor() - target).unwrap().sqr().unwrap() * wts)
            .unwrap()
            .sum_all()
            .unwrap()
    }

    /// A bf16 variable trains through its f32 master copy: steps far below bf16's precision
    /// add up, the variable is the master rounded, and the master survives a state round trip.
    #[test]
    fn bf16_variables_train_through_f32_master_weights() {
        let init = Tensor::new(&[1f32, -1., 0.5], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let w = Var::from_tensor(&init).unwrap();
        let cfg = AdamWConfig {
            schedule: LrSchedule::constant(1e-4),
            weight_decay: 0.0,
            max_grad_norm: None,
            ..Default::default()
        };
        let mut opt = AdamW::new_named(vec![("w".into(), w.clone())], cfg).unwrap();
        let g = Tensor::new(&[1f32, 1., 1.], &Device::Cpu).unwrap();
        for step in 0..50 {
            opt.apply_grads(&[Some(g.clone())], step).unwrap();
        }
        let master = opt.state().unwrap()["master.w"].to_vec1::<f32>().unwrap();
        // Adam's step is ~lr per step whatever the gradient's scale: 50 × 1e-4 = 5e-3, which
        // a bf16 1.0 (spacing 2^-7 ≈ 7.8e-3) cannot take one 1e-4 at a time.
        assert!((master[0] - (1.0 - 5e-3)).abs() < 1e-4, "{master:?}");
        let rounded = Tensor::new(master.as_slice(), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let var = w
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(var, rounded);
        let state = opt.state().unwrap();
        let w2 = Var::from_tensor(&w.as_tensor().copy().unwrap()).unwrap();
        let mut opt2 = AdamW::new_named(vec![("w".into(), w2)], cfg).unwrap();
        opt2.load_state(&state).unwrap();
        assert_eq!(
            opt2.state().unwrap()["master.w"].to_vec1::<f32>().unwrap(),
            master
        );
    }

    /// Trains `init` on `loss` for `steps` steps with curric's AdamW and with candle-nn's
    /// (no clipping, learning rate `lr`, weight decay `wd`) and asserts the same bits.
    fn assert_matches_candle_nn(
        init: &Tensor,
        loss: impl Fn(&Var) -> Tensor,
        lr: f64,
        wd: f64,
        steps: u64,
    ) {
        let (a, b) = (
            Var::from_tensor(init).unwrap(),
            Var::from_tensor(init).unwrap(),
        );
        let cfg = AdamWConfig {
            schedule: LrSchedule::constant(lr),
            max_grad_norm: None,
            weight_decay: wd,
            ..Default::default()
        };
        let mut ours = AdamW::new(vec![a.clone()], cfg).unwrap();
        let params = candle_nn::ParamsAdamW {
            lr,
            weight_decay: wd,
            ..Default::default()
        };
        let mut theirs = candle_nn::AdamW::new(vec![b.clone()], params).unwrap();
        for s in 0..steps {
            ours.backward_step(&loss(&a), s).unwrap();
            theirs.backward_step(&loss(&b)).unwrap();
        }
        let x: Vec<f32> = a.as_tensor().to_vec1().unwrap();
        assert_ne!(x, init.to_vec1::<f32>().unwrap(), "nothing trained");
        assert_eq!(x, b.as_tensor().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn matches_candle_nn_adamw_bit_for_bit() {
        let init = Tensor::new(&[0.5f32, 0.1, -0.3], &Device::Cpu).unwrap();
        assert_matches_candle_nn(&init, quad_loss, 0.05, 0.01, 5);
    }

    /// The same on a parameter of several of the fused update's chunks, with a gradient that
    /// varies by element (the fused CPU path against candle-nn's tensor ops).
    #[test]
    fn matches_candle_nn_adamw_bit_for_bit_on_a_large_parameter() {
        let n = 40_000;
        let init: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 1000) as f32 - 500.0) / 300.0)
            .collect();
        let init = Tensor::from_vec(init, n, &Device::Cpu).unwrap();
        let target = (init.sin().unwrap() * 2.0).unwrap();
        let loss = |w: &Var| {
            (w.as_tensor() - &target)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        assert_matches_candle_nn(&init, loss, 0.02, 0.1, 3);
    }

    #[test]
    fn first_step_hand_computed_with_clipping() {
        // w = [0, 0], loss = 3 w0 + 4 w1 → g = [3, 4], |g| = 5, clip to 1 → g' = [0.6, 0.8]
        // (coef 1/(5+1e-6)). Adam step 1: m_hat = g', v_hat = g'^2 → update = lr·sign = 0.1
        // each (eps negligible); wd 0 → w = [-0.1, -0.1].
        let w = Var::from_tensor(&Tensor::new(&[0f32, 0.], &Device::Cpu).unwrap()).unwrap();
        let cfg = AdamWConfig {
            schedule: LrSchedule::constant(0.1),
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![w.clone()], cfg).unwrap();
        let k = Tensor::new(&[3f32, 4.], &Device::Cpu).unwrap();
        let loss = (w.as_tensor() * &k).unwrap().sum_all().unwrap();
        let st = opt.backward_step(&loss, 0).unwrap();
        assert!((st.grad_norm - 5.0).abs() < 1e-9);
        assert!(st.clipped);
        let got: Vec<f32> = w.as_tensor().to_vec1().unwrap();
        for x in got {
            assert!((x + 0.1).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn schedules() {
        let s = LrSchedule {
            lr: 1.0,
            warmup_steps: 4,
            total_steps: 14,
            kind: ScheduleKind::Cosine,
            min_lr_ratio: 0.1,
        };
        // warm-up: 0.25, 0.5, 0.75, 1.0
        assert_eq!(s.lr_at(0), 0.25);
        assert_eq!(s.lr_at(3), 1.0);
        assert!((s.lr_at(4) - 1.0).abs() < 1e-12);
        // half-way (t = 9): 0.1 + 0.9·0.5 = 0.55
        assert!((s.lr_at(9) - 0.55).abs() < 1e-12);
        // end and beyond: 0.1
        assert!((s.lr_at(14) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(100) - 0.1).abs() < 1e-12);
        let c = LrSchedule {
            kind: ScheduleKind::Constant,
            ..s
        };
        assert_eq!(c.lr_at(50), 1.0);
    }

    #[test]
    fn non_finite_gradient_updates_nothing() {
        let w = Var::from_tensor(&Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap()).unwrap();
        let u = Var::from_tensor(&Tensor::new(&[0f32], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![u.clone(), w.clone()], AdamWConfig::default()).unwrap();
        // u has a fine gradient, w's is NaN (sqrt of negative via w - 5): the step must fail
        // before u moves.
        let loss = (u.as_tensor().sum_all().unwrap()
            + (w.as_tensor() - 5.0)
                .unwrap()
                .sqrt()
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        let lossv = loss.to_scalar::<f32>().unwrap();
        assert!(lossv.is_nan());
        let err = opt.backward_step(&loss, 7).unwrap_err();
        assert!(err.to_string().contains("step 7"), "{err}");
        // finite loss but infinite gradient: d/dw sqrt(w) at 0 = inf
        let z = Var::from_tensor(&Tensor::new(&[0f32], &Device::Cpu).unwrap()).unwrap();
        let mut opt2 = AdamW::new(vec![u.clone(), z.clone()], AdamWConfig::default()).unwrap();
        let loss = (u.as_tensor().sum_all().unwrap()
            + z.as_tensor().sqrt().unwrap().sum_all().unwrap())
        .unwrap();
        let err = opt2.backward_step(&loss, 9).unwrap_err();
        assert!(matches!(err, GrpoError::NonFinite { step: 9, .. }), "{err}");
        assert_eq!(u.as_tensor().to_vec1::<f32>().unwrap(), vec![0.0]);
        assert_eq!(opt2.steps(), 0);
    }

    #[test]
    fn state_round_trip_resumes_bit_identically() {
        let init = Tensor::new(&[0.5f32, 0.1, -0.3], &Device::Cpu).unwrap();
        let cfg = AdamWConfig {
            schedule: LrSchedule::constant(0.05),
            ..Default::default()
        };
        let a = Var::from_tensor(&init).unwrap();
        let mut full = AdamW::new(vec![a.clone()], cfg).unwrap();
        for s in 0..6 {
            full.backward_step(&quad_loss(&a), s).unwrap();
        }
        let b = Var::from_tensor(&init).unwrap();
        let mut first = AdamW::new(vec![b.clone()], cfg).unwrap();
        for s in 0..3 {
            first.backward_step(&quad_loss(&b), s).unwrap();
        }
        let state = first.state().unwrap();
        let c = Var::from_tensor(b.as_tensor()).unwrap();
        let mut resumed = AdamW::new(vec![c.clone()], cfg).unwrap();
        resumed.load_state(&state).unwrap();
        assert_eq!(resumed.steps(), 3);
        for s in 3..6 {
            resumed.backward_step(&quad_loss(&c), s).unwrap();
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f32>().unwrap(),
            c.as_tensor().to_vec1::<f32>().unwrap()
        );
        let mut bad = state.clone();
        bad.remove("v.#0");
        assert!(resumed.load_state(&bad).is_err());
        let mut wrong = state.clone();
        wrong.insert(
            "m.#0".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(resumed.load_state(&wrong).is_err());
    }

    #[test]
    fn named_state_survives_a_change_of_trained_set() {
        // Stage 1 trains `dec` and `vis`; stage 2 freezes `vis` and must pick up `dec`'s
        // moments and the step count, ignoring `vis`.
        let dec =
            Var::from_tensor(&Tensor::new(&[0.5f32, 0.1, -0.3], &Device::Cpu).unwrap()).unwrap();
        let vis = Var::from_tensor(&Tensor::new(&[1f32], &Device::Cpu).unwrap()).unwrap();
        let cfg = AdamWConfig::default();
        let mut s1 = AdamW::new_named(
            vec![("vis".into(), vis.clone()), ("dec".into(), dec.clone())],
            cfg,
        )
        .unwrap();
        let loss = (quad_loss(&dec) + vis.as_tensor().sum_all().unwrap()).unwrap();
        s1.backward_step(&loss, 0).unwrap();
        let st = s1.state().unwrap();
        assert!(st.contains_key("m.dec") && st.contains_key("v.vis"));
        let mut s2 = AdamW::new_named(vec![("dec".into(), dec.clone())], cfg).unwrap();
        s2.load_state(&st).unwrap();
        assert_eq!(s2.steps(), 1);
        let m2 = s2.state().unwrap();
        assert_eq!(
            m2["m.dec"].to_vec1::<f32>().unwrap(),
            st["m.dec"].to_vec1::<f32>().unwrap()
        );
        assert!(AdamW::new_named(vec![("a".into(), dec.clone()), ("a".into(), vis)], cfg).is_err());
    }
}
