//! What crosses an `after` edge: the start weights (a parent's final checkpoint or the
//! plan's model), the reference, the pass-rate table, the optimiser's moments and the data
//! cursor, each as the edge's hand-off says.

use super::*;

impl Ctx<'_> {
    pub(super) fn final_ckpt(&self, id: &str) -> Result<PathBuf> {
        let rec = self
            .manifest
            .get(id)
            .filter(|r| r.status == PhaseStatus::Done)
            .ok_or_else(|| perr(id, "has not finished; its children cannot start"))?;
        let rel = rec
            .checkpoint
            .as_ref()
            .ok_or_else(|| perr(id, "finished without a checkpoint"))?;
        Ok(self.rd.root().join(rel))
    }

    pub(super) fn ckpt_state(&self, id: &str) -> Result<CheckpointState> {
        checkpoint::verify(&self.final_ckpt(id)?)
    }

    /// The phase's start weights: its first parent's final checkpoint, or the plan's model.
    /// Held and computed in the plan's `dtype`.
    pub(super) fn start_policy(&self, p: &Phase) -> Result<(Policy, String)> {
        let (policy, start) = self.start_weights(p)?;
        let policy = policy.with_dtype(dtype(p)).map_err(|e| perr(&p.id, e))?;
        Ok((policy, start))
    }

    fn start_weights(&self, p: &Phase) -> Result<(Policy, String)> {
        if let Some(parent) = p.parents.first() {
            let dir = self.final_ckpt(parent)?;
            let policy = Policy::load(&dir, &self.device).map_err(|e| perr(&p.id, e))?;
            return Ok((policy, self.rel(&dir)));
        }
        let policy = match &p.model {
            ModelSpec::TinyVlm { preset } => {
                Policy::tiny_with_words(preset, &suite::vocabulary(), p.seed, &self.device)
            }
            ModelSpec::Local { path } => Policy::load(Path::new(path), &self.device),
            ModelSpec::Hub { repo } => Policy::load_pretrained(repo, &self.device),
        }
        .map_err(|e| perr(&p.id, e))?;
        Ok((policy, "initial".into()))
    }

    pub(super) fn rel(&self, path: &Path) -> String {
        path.strip_prefix(self.rd.root())
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// The reference for a phase: "initial" (the plan's model) or a checkpoint directory.
    pub(super) fn load_reference(&self, p: &Phase, at: &str) -> Result<Policy> {
        let policy = if at == "initial" {
            self.start_policy_initial(p)?
        } else {
            Policy::load(&self.rd.root().join(at), &self.device)
                .and_then(|q| q.with_dtype(dtype(p)))
                .map_err(|e| perr(&p.id, e))?
        };
        policy.frozen_copy().map_err(|e| perr(&p.id, e))
    }

    pub(super) fn start_policy_initial(&self, p: &Phase) -> Result<Policy> {
        let root = self.root_of(p);
        let q = Phase {
            parents: vec![],
            ..root.clone()
        };
        Ok(self.start_policy(&q)?.0)
    }

    pub(super) fn root_of<'p>(&'p self, p: &'p Phase) -> &'p Phase {
        let mut cur = p;
        while let Some(parent) = cur.parents.first().and_then(|id| self.plan.phase(id)) {
            cur = parent;
        }
        cur
    }

    pub(super) fn handoff(&self, p: &Phase) -> crate::spec::Handoff {
        p.parents
            .first()
            .and_then(|parent| {
                self.plan
                    .edges
                    .iter()
                    .find(|e| &e.from == parent && e.to == p.id)
            })
            .map(|e| e.handoff.clone())
            .unwrap_or_default()
    }

    /// The pass-rate table a phase starts with: its parents' (when handed over) and the
    /// probe phase its levels come from.
    pub(super) fn pass_rates(&self, p: &Phase) -> Result<PassRateTable> {
        if let (Some(t), true) = (&self.opts.pass_rates, p.parents.is_empty()) {
            return Ok(t.clone());
        }
        let mut table = PassRateTable::new();
        if self.handoff(p).pass_rates == Carry::Keep {
            for parent in &p.parents {
                let st = self.ckpt_state(parent)?;
                if !st.pass_rates.is_null() {
                    let t: PassRateTable =
                        serde_json::from_value(st.pass_rates).map_err(|e| perr(&p.id, e))?;
                    table.absorb(&t);
                }
            }
        }
        // Phases before the probe (the probe itself, a warm-up) have no table yet.
        let probed = |stage: &str| {
            stage != p.id
                && self
                    .manifest
                    .get(stage)
                    .is_some_and(|r| r.status == PhaseStatus::Done)
        };
        if let LevelSource::Probe { stage } = &p.difficulty.source {
            if !probed(stage) {
                return Ok(table);
            }
            let st = self.ckpt_state(stage)?;
            let t: PassRateTable =
                serde_json::from_value(st.pass_rates).map_err(|e| perr(&p.id, e))?;
            table.absorb(&t);
        }
        Ok(table)
    }

    /// Restores the parent's optimiser moments when the hand-off keeps them.
    pub(super) fn handed_optimizer(&self, p: &Phase, opt: &mut AdamW) -> Result<()> {
        let h = self.handoff(p);
        // The optimiser's step count drives both bias correction and the LR schedule, so
        // the schedule position travels with the moments.
        if h.lr_schedule != h.optimizer && !p.parents.is_empty() {
            tracing::warn!(
                phase = %p.id,
                "the LR schedule position is carried with the optimizer state: hand-off \
                 optimizer = {:?} decides both",
                h.optimizer
            );
        }
        if h.optimizer != Carry::Keep {
            return Ok(());
        }
        let Some(parent) = p.parents.first() else {
            return Ok(());
        };
        let path = self.final_ckpt(parent)?.join(checkpoint::OPTIMIZER_FILE);
        if !path.exists() {
            tracing::warn!(phase = %p.id, "parent {parent} has no optimizer state to keep; starting fresh");
            return Ok(());
        }
        let state =
            candle_core::safetensors::load(&path, &self.device).map_err(|e| perr(&p.id, e))?;
        if let Err(e) = opt.load_state(&state) {
            tracing::warn!(phase = %p.id, "cannot keep the parent's optimizer state ({e}); starting fresh");
        }
        Ok(())
    }

    /// Continues the parent's position in the sources both phases draw from (same samples
    /// after filtering), when the hand-off keeps the cursor.
    pub(super) fn handed_cursor(&self, p: &Phase, data: &mut Data) -> Result<()> {
        if self.handoff(p).cursor != Carry::Keep {
            return Ok(());
        }
        let Some(parent) = p.parents.first() else {
            return Ok(());
        };
        let st = self.ckpt_state(parent)?;
        let Ok(theirs) = serde_json::from_value::<crate::data::SamplerState>(st.sampler) else {
            return Ok(());
        };
        let mut mine = data.sampler.state().clone();
        let mut kept = 0;
        for cur in &mut mine.sources {
            if let Some(t) = theirs
                .sources
                .iter()
                .find(|t| t.name == cur.name && t.fingerprint == cur.fingerprint)
            {
                *cur = t.clone();
                kept += 1;
            }
        }
        if kept == 0 {
            tracing::warn!(phase = %p.id, "cursor hand-off: no source shared with {parent}");
            return Ok(());
        }
        data.sampler.set_state(mine).map_err(|e| perr(&p.id, e))
    }

    /// Where the phase's reference weights live: the parent's reference when kept,
    /// otherwise the phase's start.
    pub(super) fn reference_at(&self, p: &Phase, start: &str) -> Result<String> {
        if self.handoff(p).reference == Carry::Keep {
            if let Some(parent) = p.parents.first() {
                let st = self.ckpt_state(parent)?;
                if let Some(r) = st.extra.get("reference").and_then(Value::as_str) {
                    return Ok(r.to_string());
                }
            }
        }
        Ok(start.to_string())
    }
}

/// The candle dtype of a phase's `dtype`.
fn dtype(p: &Phase) -> candle_core::DType {
    match p.dtype {
        crate::spec::Dtype::F32 => candle_core::DType::F32,
        crate::spec::Dtype::Bf16 => candle_core::DType::BF16,
    }
}
