//! The pass-rate table: per sample id, how often the policy got it right.
//!
//! Probe phases fill it (K rollouts per sample), grpo phases update it online, exec persists it
//! in the run directory (`to_json` / `from_json`; the atomic write is exec's) and carries it
//! across stage edges when a hand-off says so. It drives ordering, filtering and method A's
//! easy / medium / hard split.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::{DataError, Level, Sample};

/// One sample's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRecord {
    pub attempts: u64,
    pub successes: u64,
    /// The last global step at which the sample was attempted.
    pub last_step: u64,
}

impl PassRecord {
    pub fn pass_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.successes as f64 / self.attempts as f64)
    }
}

/// Pass rates keyed by sample id. A `BTreeMap` so the JSON is sorted and diffs cleanly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassRateTable {
    pub records: BTreeMap<String, PassRecord>,
}

impl PassRateTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `successes` out of `attempts` rollouts of `id` seen at `step`.
    pub fn record(
        &mut self,
        id: &str,
        successes: u64,
        attempts: u64,
        step: u64,
    ) -> Result<(), DataError> {
        if successes > attempts {
            return Err(DataError::PassRate(format!(
                "`{id}`: {successes} successes out of {attempts} attempts"
            )));
        }
        let r = self.records.entry(id.to_string()).or_default();
        r.attempts += attempts;
        r.successes += successes;
        r.last_step = r.last_step.max(step);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&PassRecord> {
        self.records.get(id)
    }

    pub fn pass_rate(&self, id: &str) -> Option<f64> {
        self.records.get(id).and_then(PassRecord::pass_rate)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Folds `other` in: counts add up, the last step is the later one. Merging tables from
    /// disjoint rollouts equals recording them all into one.
    pub fn merge(&mut self, other: &PassRateTable) {
        for (id, o) in &other.records {
            let r = self.records.entry(id.clone()).or_default();
            r.attempts += o.attempts;
            r.successes += o.successes;
            r.last_step = r.last_step.max(o.last_step);
        }
    }

    /// Folds in a table that may share history with this one: tables handed along a chain of
    /// phases only ever grow, so per id the record with more attempts already holds the other's
    /// rollouts. Unlike `merge`, a probe's rollouts reaching a phase both directly and through
    /// its parent are counted once.
    pub fn absorb(&mut self, other: &PassRateTable) {
        for (id, o) in &other.records {
            let r = self.records.entry(id.clone()).or_default();
            if o.attempts > r.attempts {
                *r = *o;
            }
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a map of plain records always serialises")
    }

    pub fn from_json(text: &str) -> Result<Self, DataError> {
        let table: PassRateTable = serde_json::from_str(text)
            .map_err(|e| DataError::PassRate(format!("cannot parse: {e}")))?;
        if let Some((id, r)) = table.records.iter().find(|(_, r)| r.successes > r.attempts) {
            return Err(DataError::PassRate(format!(
                "`{id}`: {} successes out of {} attempts",
                r.successes, r.attempts
            )));
        }
        Ok(table)
    }

    /// Writes the table's pass rates into `samples` (those it knows) and, with `bands`, their
    /// level. Returns how many samples the table knew.
    pub fn apply(&self, samples: &mut [Sample], bands: Option<&LevelBands>) -> usize {
        let mut known = 0;
        for s in samples.iter_mut() {
            if let Some(p) = self.pass_rate(&s.id) {
                s.pass_rate = Some(p);
                if let Some(b) = bands {
                    s.difficulty = b.level(p);
                }
                known += 1;
            }
        }
        known
    }

    /// Method A's split: the samples the table knows, by level. Unknown samples are left out.
    pub fn split<'a>(
        &self,
        samples: &'a [Sample],
        bands: &LevelBands,
    ) -> BTreeMap<Level, Vec<&'a Sample>> {
        let mut out: BTreeMap<Level, Vec<&'a Sample>> = BTreeMap::new();
        for s in samples {
            if let Some(l) = self.pass_rate(&s.id).and_then(|p| bands.level(p)) {
                out.entry(l).or_default().push(s);
            }
        }
        out
    }
}

/// Pass-rate bands for levels, inclusive, tried easy → medium → hard (the first that holds
/// wins, as `difficulty { }` documents); a rate in no band has no level. Without a medium
/// band, medium is everything strictly between hard and easy. The default is method A's
/// K-rollout split: K/K easy, 0/K hard, 1..K−1 medium.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelBands {
    pub easy: (f64, f64),
    pub medium: Option<(f64, f64)>,
    pub hard: (f64, f64),
}

impl Default for LevelBands {
    fn default() -> Self {
        LevelBands {
            easy: (1.0, 1.0),
            medium: None,
            hard: (0.0, 0.0),
        }
    }
}

impl LevelBands {
    /// Rates are ratios of small integers; the tolerance keeps 7/7 from falling below 1.0.
    const EPS: f64 = 1e-9;

    /// Easy from `easy_min` up, hard up to `hard_max`, medium between.
    pub fn new(easy_min: f64, hard_max: f64) -> Result<Self, DataError> {
        if !(0.0..=1.0).contains(&easy_min)
            || !(0.0..=1.0).contains(&hard_max)
            || hard_max >= easy_min
        {
            return Err(DataError::PassRate(format!(
                "bands need 0 ≤ hard_max < easy_min ≤ 1, got hard_max {hard_max}, easy_min {easy_min}"
            )));
        }
        Ok(LevelBands {
            easy: (easy_min, 1.0),
            medium: None,
            hard: (0.0, hard_max),
        })
    }

    /// Three declared bands, as `difficulty { easy = … medium = … hard = … }` writes them.
    pub fn declared(easy: (f64, f64), medium: (f64, f64), hard: (f64, f64)) -> Self {
        LevelBands {
            easy,
            medium: Some(medium),
            hard,
        }
    }

    pub fn level(&self, pass_rate: f64) -> Option<Level> {
        let within =
            |(lo, hi): (f64, f64)| pass_rate >= lo - Self::EPS && pass_rate <= hi + Self::EPS;
        if within(self.easy) {
            return Some(Level::Easy);
        }
        match self.medium {
            Some(m) if within(m) => return Some(Level::Medium),
            _ => {}
        }
        if within(self.hard) {
            return Some(Level::Hard);
        }
        match self.medium {
            None if pass_rate > self.hard.1 && pass_rate < self.easy.0 => Some(Level::Medium),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Capability;

    fn sample(id: &str) -> Sample {
        Sample::new(id, "p", "1", Capability::new("text_reasoning"))
    }

    #[test]
    fn absorb_counts_shared_history_once() {
        // probe: 2/8; a later phase carried it on and added 3/4 of its own → 5/12.
        let mut probe = PassRateTable::new();
        probe.record("a", 2, 8, 0).unwrap();
        let mut later = probe.clone();
        later.record("a", 3, 4, 5).unwrap();
        later.record("b", 1, 4, 5).unwrap();
        let mut t = later.clone();
        t.absorb(&probe);
        assert_eq!(t.pass_rate("a"), Some(5.0 / 12.0));
        let mut u = probe.clone();
        u.absorb(&later);
        assert_eq!(u.pass_rate("a"), Some(5.0 / 12.0));
        assert_eq!(u.pass_rate("b"), Some(0.25));
        // `merge` is for disjoint rollouts: it would count the probe twice (7/20).
        let mut m = later;
        m.merge(&probe);
        assert_eq!(m.pass_rate("a"), Some(7.0 / 20.0));
    }

    #[test]
    fn record_accumulates_and_rejects_impossible_counts() {
        let mut t = PassRateTable::new();
        t.record("a", 3, 8, 0).unwrap();
        t.record("a", 5, 8, 4).unwrap();
        t.record("a", 0, 0, 2).unwrap();
        // (3 + 5) / (8 + 8) = 0.5, last step max(0, 4, 2) = 4.
        assert_eq!(t.pass_rate("a"), Some(0.5));
        assert_eq!(t.get("a").unwrap().last_step, 4);
        assert_eq!(t.pass_rate("b"), None);
        assert!(t.record("a", 9, 8, 5).is_err());
        t.record("z", 0, 0, 1).unwrap();
        assert_eq!(t.pass_rate("z"), None, "no attempts, no rate");
    }

    #[test]
    fn merge_equals_recording_into_one_table() {
        let (mut a, mut b, mut both) = (
            PassRateTable::new(),
            PassRateTable::new(),
            PassRateTable::new(),
        );
        a.record("x", 1, 4, 1).unwrap();
        b.record("x", 2, 4, 3).unwrap();
        b.record("y", 4, 4, 2).unwrap();
        both.record("x", 1, 4, 1).unwrap();
        both.record("x", 2, 4, 3).unwrap();
        both.record("y", 4, 4, 2).unwrap();
        a.merge(&b);
        assert_eq!(a, both);
        assert_eq!(a.pass_rate("x"), Some(3.0 / 8.0));
    }

    #[test]
    fn json_round_trip_and_validation() {
        let mut t = PassRateTable::new();
        t.record("shapes/perception/easy/train/000001", 7, 8, 12)
            .unwrap();
        let back = PassRateTable::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
        let bad = r#"{"records":{"a":{"attempts":1,"successes":2,"last_step":0}}}"#;
        assert!(PassRateTable::from_json(bad)
            .unwrap_err()
            .to_string()
            .contains("`a`"));
        assert!(PassRateTable::from_json("[1,").is_err());
    }

    #[test]
    fn method_a_split_by_k_rollout_bands() {
        let mut t = PassRateTable::new();
        t.record("all", 8, 8, 0).unwrap();
        t.record("some", 3, 8, 0).unwrap();
        t.record("one", 1, 8, 0).unwrap();
        t.record("none", 0, 8, 0).unwrap();
        let samples: Vec<Sample> = ["all", "some", "one", "none", "unseen"].map(sample).into();
        let split = t.split(&samples, &LevelBands::default());
        let ids = |l| split[&l].iter().map(|s| s.id.as_str()).collect::<Vec<_>>();
        assert_eq!(ids(Level::Easy), ["all"]);
        assert_eq!(ids(Level::Medium), ["some", "one"]);
        assert_eq!(ids(Level::Hard), ["none"]);
        // 7/7 is easy despite floating point.
        assert_eq!(LevelBands::default().level(7.0 / 7.0), Some(Level::Easy));
        // Custom bands: ≥ 0.75 easy, ≤ 0.25 hard.
        let b = LevelBands::new(0.75, 0.25).unwrap();
        assert_eq!(
            [1.0, 0.75, 0.5, 0.25, 0.0].map(|p| b.level(p)),
            [
                Some(Level::Easy),
                Some(Level::Easy),
                Some(Level::Medium),
                Some(Level::Hard),
                Some(Level::Hard)
            ]
        );
        assert!(LevelBands::new(0.2, 0.5).is_err());
        // Declared bands: tried easy → medium → hard, first match wins; overlaps and gaps
        // mean what the file says.
        let d = LevelBands::declared((0.5, 1.0), (0.25, 0.75), (0.0, 0.5));
        assert_eq!(
            [1.0, 0.6, 0.5, 0.3, 0.25, 0.1].map(|p| d.level(p)),
            [
                Some(Level::Easy),
                Some(Level::Easy),
                Some(Level::Easy),
                Some(Level::Medium),
                Some(Level::Medium),
                Some(Level::Hard)
            ]
        );
        let gap = LevelBands::declared((0.75, 1.0), (0.125, 0.625), (0.0, 0.0));
        assert_eq!(gap.level(0.7), None, "between medium and easy: no level");
        assert_eq!(gap.level(0.0), Some(Level::Hard));

        let mut samples = samples;
        assert_eq!(t.apply(&mut samples, Some(&LevelBands::default())), 4);
        assert_eq!(samples[1].pass_rate, Some(3.0 / 8.0));
        assert_eq!(samples[1].difficulty, Some(Level::Medium));
        assert_eq!(samples[4].pass_rate, None);
    }
}
