//! The step loop every phase kind shares (sft, probe, grpo): resume from the last good
//! checkpoint, step, log, evaluate the stop condition, checkpoint every N steps and at the
//! end, and stop cleanly on Ctrl-C. What a step *does* is the [`PhaseTrainer`]'s business.
//!
//! Bit-identical resume rests on three rules: a trainer derives every random draw from
//! (seed, phase, step, index), so no RNG stream has to be replayed; everything else that
//! changes between steps (weights, optimiser moments, sampler cursor, stop state) is in the
//! checkpoint; and metrics logged after the last checkpoint are cut away on resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::Value;

use super::checkpoint::{self, CheckpointState};
use super::error::Result;
use super::metrics::MetricsWriter;
use super::progress::PhaseProgress;
use super::stop::{stop_reason, Observation, StopEval, StopState};
use crate::spec::Stop;

/// What one step reports back to the loop.
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    pub metrics: BTreeMap<String, f64>,
    /// Prompts consumed by this step.
    pub samples: u64,
    /// Epochs completed so far by the phase's sampler.
    pub epochs: f64,
}

/// The state a trainer keeps outside its tensor files.
#[derive(Debug, Clone, Default)]
pub struct TrainerState {
    pub sampler: Value,
    pub rng: Value,
    pub pass_rates: Value,
    pub extra: Value,
}

/// One phase's training, as the loop drives it.
pub trait PhaseTrainer {
    /// Runs step number `step` (1-based).
    fn step(&mut self, step: u64) -> Result<StepOutcome>;
    /// Held-out eval for stop conditions (`eval/overall`, `eval/<capability>` …).
    fn eval(&mut self, step: u64) -> Result<BTreeMap<String, f64>>;
    /// Writes model and optimiser files into a (temporary) checkpoint directory.
    fn save(&self, dir: &Path) -> Result<()>;
    fn state(&self) -> TrainerState;
    /// Restores from a verified checkpoint directory.
    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()>;
}

pub struct DriveOptions<'a> {
    pub phase: String,
    pub stage: Option<String>,
    pub stop: Stop,
    pub checkpoint_every: u64,
    pub keep: usize,
    pub global_step_start: u64,
    /// Continue from the phase's last good checkpoint (false: start over, old ones removed).
    pub resume: bool,
    /// Test hook: return as if killed once this many steps of the phase are done (counting
    /// only steps run by this call), without a checkpoint beyond the periodic ones.
    pub crash_after: Option<u64>,
    pub interrupt: &'a AtomicBool,
    pub progress: Option<&'a PhaseProgress>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PhaseEnd {
    Finished {
        step: u64,
        reason: String,
        checkpoint: PathBuf,
    },
    Interrupted {
        step: u64,
        checkpoint: PathBuf,
    },
    /// Only through `crash_after`.
    Crashed {
        step: u64,
    },
}

/// Key in the checkpoint's `extra` marking the final checkpoint, so a run killed between
/// that checkpoint and the manifest update does not train past its stop.
const STOPPED: &str = "stopped";

pub fn drive(
    phase_dir: &Path,
    opts: DriveOptions<'_>,
    trainer: &mut dyn PhaseTrainer,
) -> Result<PhaseEnd> {
    let loaded = if opts.resume {
        checkpoint::load_latest(phase_dir)?
    } else {
        for (_, dir) in checkpoint::list(phase_dir)? {
            std::fs::remove_dir_all(&dir).map_err(|e| super::ExecError::io("remove", &dir, e))?;
        }
        None
    };
    let (mut step, mut samples, mut stop_state) = match &loaded {
        Some(l) => {
            for w in &l.warnings {
                if let Some(p) = opts.progress {
                    p.println(format!("warning: {w}"));
                }
            }
            trainer.restore(&l.dir, &l.state)?;
            let mut st = l.state.stop.clone();
            st.elapsed_before_s = st.elapsed_s;
            tracing::info!(phase = %opts.phase, step = l.state.step, "resuming from {}", l.dir.display());
            (l.state.step, l.state.samples_seen, st)
        }
        None => (0, 0, StopState::default()),
    };
    if let Some(l) = &loaded {
        if let Some(reason) = l.state.extra.get(STOPPED).and_then(Value::as_str) {
            return Ok(PhaseEnd::Finished {
                step,
                reason: reason.to_string(),
                checkpoint: l.dir.clone(),
            });
        }
    }
    let mut metrics = MetricsWriter::open(
        phase_dir,
        &opts.phase,
        opts.stage.as_deref(),
        loaded.as_ref().map(|l| l.state.step),
    )?;
    let mut last_ckpt = loaded.as_ref().map(|l| (l.state.step, l.dir.clone()));
    let started = Instant::now();
    let first_step = step;
    let save = |trainer: &dyn PhaseTrainer,
                step: u64,
                samples: u64,
                stop: &StopState,
                stopped: Option<&str>|
     -> Result<PathBuf> {
        let ts = trainer.state();
        let mut extra = ts.extra;
        if let Some(r) = stopped {
            if !extra.is_object() {
                extra = Value::Object(Default::default());
            }
            extra[STOPPED] = Value::String(r.to_string());
        }
        let state = CheckpointState {
            step,
            global_step: opts.global_step_start + step,
            samples_seen: samples,
            sampler: ts.sampler,
            rng: ts.rng,
            stop: stop.clone(),
            pass_rates: ts.pass_rates,
            extra,
            files: BTreeMap::new(),
        };
        checkpoint::save(phase_dir, &state, opts.keep, |dir| trainer.save(dir))
    };

    loop {
        let out = trainer.step(step + 1)?;
        step += 1;
        samples += out.samples;
        let eval = if opts.stop.eval_due(step) {
            Some(trainer.eval(step)?)
        } else {
            None
        };
        let mut logged = out.metrics.clone();
        if let Some(e) = &eval {
            logged.extend(e.iter().map(|(k, v)| (k.clone(), *v)));
        }
        metrics.log(step, opts.global_step_start + step, &logged)?;
        let obs = Observation {
            step,
            epochs: out.epochs,
            samples,
            elapsed_s: started.elapsed().as_secs_f64(),
            metrics: out.metrics,
            eval,
        };
        let why = opts.stop.observe(&mut stop_state, &obs);
        if let Some(p) = opts.progress {
            p.update(step, &logged);
        }
        if let Some(why) = why {
            let reason = stop_reason(&opts.phase, step, &why);
            let dir = save(trainer, step, samples, &stop_state, Some(&reason))?;
            return Ok(PhaseEnd::Finished {
                step,
                reason,
                checkpoint: dir,
            });
        }
        if opts.interrupt.load(Ordering::SeqCst) {
            let dir = match &last_ckpt {
                Some((s, d)) if *s == step => d.clone(),
                _ => save(trainer, step, samples, &stop_state, None)?,
            };
            return Ok(PhaseEnd::Interrupted {
                step,
                checkpoint: dir,
            });
        }
        if opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0 {
            last_ckpt = Some((step, save(trainer, step, samples, &stop_state, None)?));
        }
        if opts.crash_after == Some(step) && first_step < step {
            return Ok(PhaseEnd::Crashed { step });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use rand::{Rng, SeedableRng};

    /// A least-squares fit y = w·x with momentum SGD: weights and momentum are tensors saved
    /// as safetensors, the batch of each step is drawn from an RNG seeded by the step.
    struct Toy {
        w: Tensor,
        m: Tensor,
        cursor: u64,
    }

    impl Toy {
        fn new() -> Self {
            let d = &Device::Cpu;
            Toy {
                w: Tensor::zeros(4, DType::F32, d).unwrap(),
                m: Tensor::zeros(4, DType::F32, d).unwrap(),
                cursor: 0,
            }
        }
    }

    fn io(e: candle_core::Error) -> super::super::ExecError {
        super::super::ExecError::Phase {
            phase: "toy".into(),
            message: e.to_string(),
        }
    }

    impl PhaseTrainer for Toy {
        fn step(&mut self, step: u64) -> Result<StepOutcome> {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(step);
            let truth = [0.5f32, -1.0, 2.0, 0.25];
            let x: Vec<f32> = (0..32).map(|_| rng.random_range(-1.0..1.0)).collect();
            let xt = Tensor::from_vec(x.clone(), (8, 4), &Device::Cpu).map_err(io)?;
            let y: Vec<f32> = x
                .chunks(4)
                .map(|r| r.iter().zip(truth).map(|(a, b)| a * b).sum())
                .collect();
            let yt = Tensor::from_vec(y, 8, &Device::Cpu).map_err(io)?;
            let f = || -> candle_core::Result<(Tensor, Tensor, f32)> {
                let pred = xt.matmul(&self.w.unsqueeze(1)?)?.squeeze(1)?;
                let err = (pred - &yt)?;
                let loss = err.sqr()?.mean_all()?.to_scalar::<f32>()?;
                let grad = (xt.t()?.matmul(&err.unsqueeze(1)?)?.squeeze(1)? * (2.0 / 8.0))?;
                let m = ((&self.m * 0.9)? + grad)?;
                let w = (&self.w - (&m * 0.1)?)?;
                Ok((w, m, loss))
            };
            let (w, m, loss) = f().map_err(io)?;
            self.w = w;
            self.m = m;
            self.cursor += 8;
            Ok(StepOutcome {
                metrics: [
                    ("loss".to_string(), loss as f64),
                    ("reward".to_string(), -loss as f64),
                ]
                .into(),
                samples: 8,
                epochs: self.cursor as f64 / 64.0,
            })
        }
        fn eval(&mut self, _step: u64) -> Result<BTreeMap<String, f64>> {
            let w = self.w.to_vec1::<f32>().map_err(io)?;
            Ok([(
                "eval/overall".to_string(),
                (1.0 - (w[2] - 2.0).abs()) as f64,
            )]
            .into())
        }
        fn save(&self, dir: &Path) -> Result<()> {
            let p = dir.join("model.safetensors");
            candle_core::safetensors::save(&[("w".to_string(), self.w.clone())].into(), &p)
                .map_err(io)?;
            let p = dir.join(checkpoint::OPTIMIZER_FILE);
            candle_core::safetensors::save(&[("m".to_string(), self.m.clone())].into(), &p)
                .map_err(io)
        }
        fn state(&self) -> TrainerState {
            TrainerState {
                sampler: serde_json::json!({ "cursor": self.cursor }),
                ..Default::default()
            }
        }
        fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()> {
            let w = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
                .map_err(io)?;
            let m =
                candle_core::safetensors::load(dir.join(checkpoint::OPTIMIZER_FILE), &Device::Cpu)
                    .map_err(io)?;
            self.w = w["w"].clone();
            self.m = m["m"].clone();
            self.cursor = state.sampler["cursor"].as_u64().unwrap_or(0);
            Ok(())
        }
    }

    fn opts<'a>(
        stop: Stop,
        resume: bool,
        crash: Option<u64>,
        flag: &'a AtomicBool,
    ) -> DriveOptions<'a> {
        DriveOptions {
            phase: "toy".into(),
            stage: Some("s".into()),
            stop,
            checkpoint_every: 4,
            keep: 2,
            global_step_start: 10,
            resume,
            crash_after: crash,
            interrupt: flag,
            progress: None,
        }
    }

    fn weights(end: &PhaseEnd) -> Vec<u8> {
        let PhaseEnd::Finished { checkpoint, .. } = end else {
            panic!("not finished: {end:?}")
        };
        std::fs::read(checkpoint.join("model.safetensors")).unwrap()
    }

    #[test]
    fn kill_and_resume_gives_the_same_weights_and_metrics() {
        let flag = AtomicBool::new(false);
        let stop = Stop::Steps { n: 13 };
        let a = tempfile::tempdir().unwrap();
        let straight = drive(
            a.path(),
            opts(stop.clone(), true, None, &flag),
            &mut Toy::new(),
        )
        .unwrap();
        assert!(
            matches!(&straight, PhaseEnd::Finished { step: 13, reason, .. } if reason == "toy stopped at step 13: steps(13)")
        );

        let b = tempfile::tempdir().unwrap();
        let crashed = drive(
            b.path(),
            opts(stop.clone(), true, Some(10), &flag),
            &mut Toy::new(),
        )
        .unwrap();
        assert_eq!(crashed, PhaseEnd::Crashed { step: 10 });
        // Checkpoints at 4 and 8; steps 9 and 10 were logged but are lost.
        let resumed = drive(
            b.path(),
            opts(stop.clone(), true, None, &flag),
            &mut Toy::new(),
        )
        .unwrap();
        assert_eq!(weights(&resumed), weights(&straight));

        let strip = |d: &Path| -> Vec<(u64, u64, String)> {
            crate::exec::metrics::read_metrics(&d.join("metrics.jsonl"))
                .unwrap()
                .into_iter()
                .map(|r| (r.step, r.global_step, format!("{:?}", r.values)))
                .collect()
        };
        assert_eq!(strip(a.path()), strip(b.path()));
        assert_eq!(strip(a.path()).last().unwrap().1, 23);

        // Resuming a finished phase does nothing more.
        let again = drive(b.path(), opts(stop, true, None, &flag), &mut Toy::new()).unwrap();
        assert_eq!(again, resumed);
    }

    #[test]
    fn a_corrupt_last_checkpoint_resumes_from_the_one_before_with_the_same_result() {
        let flag = AtomicBool::new(false);
        let stop = Stop::Steps { n: 12 };
        let a = tempfile::tempdir().unwrap();
        let straight = drive(
            a.path(),
            opts(stop.clone(), true, None, &flag),
            &mut Toy::new(),
        )
        .unwrap();
        let b = tempfile::tempdir().unwrap();
        drive(
            b.path(),
            opts(stop.clone(), true, Some(9), &flag),
            &mut Toy::new(),
        )
        .unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(b.path().join("ckpt-000008/model.safetensors"))
            .unwrap();
        f.set_len(20).unwrap();
        let resumed = drive(b.path(), opts(stop, true, None, &flag), &mut Toy::new()).unwrap();
        assert_eq!(weights(&resumed), weights(&straight));
    }

    #[test]
    fn interrupt_checkpoints_after_the_step_and_eval_stops_are_explained() {
        let flag = AtomicBool::new(true);
        let d = tempfile::tempdir().unwrap();
        let end = drive(
            d.path(),
            opts(Stop::Steps { n: 50 }, true, None, &flag),
            &mut Toy::new(),
        )
        .unwrap();
        let PhaseEnd::Interrupted {
            step: 1,
            checkpoint,
        } = end
        else {
            panic!("{end:?}")
        };
        assert!(checkpoint.ends_with("ckpt-000001"));

        let flag = AtomicBool::new(false);
        let stop = Stop::Any {
            any: vec![
                Stop::Steps { n: 200 },
                Stop::Eval {
                    threshold: 0.9,
                    every: 5,
                    n: 4,
                },
            ],
        };
        let d = tempfile::tempdir().unwrap();
        let end = drive(d.path(), opts(stop, false, None, &flag), &mut Toy::new()).unwrap();
        let PhaseEnd::Finished { step, reason, .. } = end else {
            panic!()
        };
        assert_eq!(step % 5, 0);
        assert!(step < 200);
        assert_eq!(
            reason,
            format!("toy stopped at step {step}: eval(0.9, every 5)")
        );
        let recs = crate::exec::metrics::read_metrics(&d.path().join("metrics.jsonl")).unwrap();
        assert!(
            recs[4].values.contains_key("eval/overall")
                && !recs[3].values.contains_key("eval/overall")
        );
    }
}
