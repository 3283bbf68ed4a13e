//! Samplers: stratified mixing, schedules, orders, filters, epochs, adaptive orders, resume.

use std::collections::HashSet;

use curric::data::sampler::{Drawn, SamplerState};
use curric::data::{
    Capability, DifficultyKey, FilterSpec, Level, MixSpec, Sample, Sampler, SamplerSpec,
    ScheduleSpec, SourceSpec,
};
use curric::spec::Order;

/// The pool's own order: by level, when no sample has one (ties keep the pool's order).
const SEQUENTIAL: Order = Order::EasyToHard;

/// AdaRFT with a step size of 0.1, the value the hand-computed targets below use.
fn adarft() -> Order {
    Order::Adarft {
        eta: 0.1,
        alpha: 2.0,
        beta: 0.5,
        initial: 0.0,
    }
}

fn sample(id: &str, pass_rate: Option<f64>, level: Option<Level>) -> Sample {
    Sample {
        difficulty: level,
        pass_rate,
        ..Sample::new(
            id,
            format!("problem {id}"),
            "1",
            Capability::new("text_reasoning"),
        )
    }
}

fn pool(name: &str, n: usize) -> (String, Vec<Sample>) {
    let samples = (0..n)
        .map(|i| sample(&format!("{name}{i}"), None, None))
        .collect();
    (name.to_string(), samples)
}

/// Pass rates 0, 0.1, …, 1.0 in a scrambled pool order.
fn rated_pool() -> (String, Vec<Sample>) {
    let rates = [0.3, 1.0, 0.0, 0.7, 0.5, 0.9, 0.1, 0.6, 0.2, 0.8, 0.4];
    let samples = rates
        .iter()
        .map(|&p| sample(&format!("p{}", (p * 10.0) as u32), Some(p), None))
        .collect();
    ("r".to_string(), samples)
}

fn ids(s: &Sampler, drawn: &[Drawn]) -> Vec<String> {
    drawn.iter().map(|d| s.sample(d).id.clone()).collect()
}

fn constant(weights: &[(&str, f64)]) -> ScheduleSpec {
    ScheduleSpec::Constant {
        mix: MixSpec::new(weights.iter().map(|&(n, w)| (n, w))),
    }
}

fn spec(sources: Vec<SourceSpec>, schedule: ScheduleSpec, batch: usize, steps: u64) -> SamplerSpec {
    SamplerSpec {
        sources,
        schedule,
        batch_size: batch,
        steps,
        seed: 17,
    }
}

#[test]
fn stratified_mix_is_exact_in_every_step() {
    let sources = ["a", "b", "c"]
        .map(|n| SourceSpec::new(n, Order::Shuffled))
        .to_vec();
    let sp = spec(
        sources,
        constant(&[("a", 5.0), ("b", 3.0), ("c", 2.0)]),
        10,
        20,
    );
    let mut s = Sampler::new(sp, vec![pool("a", 7), pool("b", 7), pool("c", 7)]).unwrap();
    for _ in 0..20 {
        let mut counts = [0; 3];
        for d in s.next_step() {
            counts[d.source] += 1;
        }
        assert_eq!(counts, [5, 3, 2]);
    }
}

#[test]
fn stratified_mix_stays_within_one_of_the_share() {
    let sources = ["a", "b", "c"]
        .map(|n| SourceSpec::new(n, SEQUENTIAL))
        .to_vec();
    let w = [1.0, std::f64::consts::SQRT_2, std::f64::consts::PI];
    let total: f64 = w.iter().sum();
    let sp = spec(
        sources,
        constant(&[("a", w[0]), ("b", w[1]), ("c", w[2])]),
        1,
        1000,
    );
    let mut s = Sampler::new(sp, vec![pool("a", 5), pool("b", 5), pool("c", 5)]).unwrap();
    let mut counts = [0.0; 3];
    for n in 1..=1000 {
        counts[s.next_step()[0].source] += 1.0;
        for i in 0..3 {
            let expected = n as f64 * w[i] / total;
            assert!(
                (counts[i] - expected).abs() < 1.0 + 1e-9,
                "draw {n}: {counts:?}"
            );
        }
    }
}

#[test]
fn schedules_hit_their_endpoints() {
    let from = MixSpec::new([("a", 1.0), ("b", 0.0)]);
    let to = MixSpec::new([("a", 0.0), ("b", 1.0)]);
    let linear = ScheduleSpec::Linear {
        from: from.clone(),
        to: to.clone(),
    };
    let cosine = ScheduleSpec::Cosine { from, to };
    // 5 steps: t = 0, .25, .5, .75, 1.
    assert_eq!(linear.weight("b", 0, 5), 0.0);
    assert_eq!(linear.weight("b", 1, 5), 0.25);
    assert_eq!(linear.weight("b", 4, 5), 1.0);
    assert_eq!(linear.weight("b", 9, 5), 1.0, "past the end stays at `to`");
    // (1 − cos(π/4)) / 2 = 0.146446609…
    assert!((cosine.weight("b", 1, 5) - 0.146_446_609_4).abs() < 1e-9);
    assert!((cosine.weight("b", 2, 5) - 0.5).abs() < 1e-12);
    assert_eq!(cosine.weight("a", 4, 5), 0.0);

    let sources = ["a", "b"]
        .map(|n| SourceSpec::new(n, Order::Shuffled))
        .to_vec();
    let mut s = Sampler::new(
        spec(sources, linear, 8, 5),
        vec![pool("a", 4), pool("b", 4)],
    )
    .unwrap();
    assert_eq!(s.mix_at(0), [1.0, 0.0]);
    assert_eq!(s.mix_at(4), [0.0, 1.0]);
    let per_step: Vec<usize> = (0..5)
        .map(|_| s.next_step().iter().filter(|d| d.source == 1).count())
        .collect();
    // b's share 0, .25, .5, .75, 1 of 8 prompts.
    assert_eq!(per_step, [0, 2, 4, 6, 8]);
}

#[test]
fn shuffled_epochs_are_permutations_reshuffled_and_counted() {
    let sp = SamplerSpec::single(SourceSpec::new("a", Order::Shuffled), 5, 10, 3);
    let mut s = Sampler::new(sp, vec![pool("a", 10)]).unwrap();
    let first: Vec<String> = step_ids(&mut s, 2);
    assert_eq!(s.progress()[0].epochs, 1);
    let second: Vec<String> = step_ids(&mut s, 2);
    assert_eq!(s.progress()[0].epochs, 2);
    let all: HashSet<String> = pool("a", 10).1.into_iter().map(|x| x.id).collect();
    assert_eq!(first.iter().cloned().collect::<HashSet<_>>(), all);
    assert_eq!(second.iter().cloned().collect::<HashSet<_>>(), all);
    assert_ne!(first, second, "reshuffled each epoch");
    assert_ne!(
        first,
        pool("a", 10)
            .1
            .into_iter()
            .map(|x| x.id)
            .collect::<Vec<_>>()
    );
    let d = s.draw(1);
    assert_eq!(d[0].epoch, 2);
    assert_eq!(s.progress()[0].drawn, 21);
    assert!((s.progress()[0].epoch_fraction - 0.1).abs() < 1e-12);
}

fn step_ids(s: &mut Sampler, steps: usize) -> Vec<String> {
    (0..steps)
        .flat_map(|_| {
            let d = s.next_step();
            ids(s, &d)
        })
        .collect()
}

fn single(order: Order, filter: FilterSpec, batch: usize) -> Sampler {
    single_by(order, DifficultyKey::Level, filter, batch)
}

fn single_by(order: Order, by: DifficultyKey, filter: FilterSpec, batch: usize) -> Sampler {
    let mut src = SourceSpec::new("r", order).by(by);
    src.filter = filter;
    Sampler::new(SamplerSpec::single(src, batch, 100, 5), vec![rated_pool()]).unwrap()
}

#[test]
fn easy_to_hard_by_pass_rate_and_back() {
    let mut s = single_by(
        Order::EasyToHard,
        DifficultyKey::PassRate,
        FilterSpec::default(),
        11,
    );
    assert_eq!(
        step_ids(&mut s, 1),
        ["p10", "p9", "p8", "p7", "p6", "p5", "p4", "p3", "p2", "p1", "p0"]
    );
    let mut s = single_by(
        Order::HardToEasy,
        DifficultyKey::PassRate,
        FilterSpec::default(),
        11,
    );
    assert_eq!(
        step_ids(&mut s, 1),
        ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10"]
    );
}

#[test]
fn easy_to_hard_by_level_keeps_pool_order_within_a_level_and_unknown_last() {
    let levels = [
        Some(Level::Hard),
        None,
        Some(Level::Easy),
        Some(Level::Medium),
        Some(Level::Easy),
    ];
    let samples = levels
        .iter()
        .enumerate()
        .map(|(i, &l)| sample(&format!("s{i}"), None, l))
        .collect();
    let sp = SamplerSpec::single(SourceSpec::new("l", Order::EasyToHard), 5, 3, 0);
    let mut s = Sampler::new(sp, vec![("l".into(), samples)]).unwrap();
    assert_eq!(step_ids(&mut s, 1), ["s2", "s4", "s3", "s0", "s1"]);
}

#[test]
fn filters_band_and_drop_solved_unsolved() {
    let band = FilterSpec {
        band: Some((0.25, 0.65)),
        ..Default::default()
    };
    let mut s = single(SEQUENTIAL, band, 4);
    assert_eq!(step_ids(&mut s, 1), ["p3", "p5", "p6", "p4"]);
    assert_eq!(s.progress()[0].size, 4);

    let drop = FilterSpec {
        drop_solved: true,
        drop_unsolved: true,
        ..Default::default()
    };
    let s = single(SEQUENTIAL, drop, 9);
    assert_eq!(s.progress()[0].size, 9);
    let mut s = s;
    let got = step_ids(&mut s, 1);
    assert!(!got.contains(&"p10".to_string()) && !got.contains(&"p0".to_string()));

    let solved_only = FilterSpec {
        drop_solved: true,
        ..Default::default()
    };
    assert_eq!(
        single(Order::Shuffled, solved_only, 1).progress()[0].size,
        10
    );

    let levels = FilterSpec {
        levels: Some(vec![Level::Easy]),
        ..Default::default()
    };
    let mut src = SourceSpec::new("r", Order::Shuffled);
    src.filter = levels;
    let err = Sampler::new(SamplerSpec::single(src, 1, 1, 0), vec![rated_pool()]).unwrap_err();
    assert!(err.to_string().contains("no samples left"), "{err}");
}

#[test]
fn adarft_target_follows_reward_and_picks_nearest() {
    let mut s = single(adarft(), FilterSpec::default(), 1);
    // Target 0: the easiest sample (difficulty 1 − 1.0 = 0) comes first.
    assert_eq!(step_ids(&mut s, 1), ["p10"]);
    s.feedback(1.0);
    // d = 0 + 0.1·tanh(2·(1 − 0.5)) = 0.1·tanh(1) = 0.0761594…
    let d = s.target_difficulty("r").unwrap();
    assert!((d - 0.076_159_416).abs() < 1e-8, "{d}");
    // Nearest remaining to 0.076: p9 (difficulty 0.1).
    assert_eq!(step_ids(&mut s, 1), ["p9"]);
    for _ in 0..10 {
        s.feedback(1.0);
    }
    // 11 high rewards: 11·0.0761594 = 0.8378 → nearest remaining difficulty 0.8 (p2).
    assert_eq!(step_ids(&mut s, 1), ["p2"]);
    for _ in 0..40 {
        s.feedback(0.0);
    }
    assert_eq!(
        s.target_difficulty("r"),
        Some(0.0),
        "clipped at the minimum"
    );
    s.feedback(f64::NAN);
    assert_eq!(
        s.target_difficulty("r"),
        Some(0.0),
        "non-finite rewards are ignored"
    );
    assert_eq!(step_ids(&mut s, 1), ["p8"]);
}

fn all_orders() -> Vec<(Order, DifficultyKey)> {
    vec![
        (Order::Shuffled, DifficultyKey::Level),
        (SEQUENTIAL, DifficultyKey::Level),
        (Order::EasyToHard, DifficultyKey::PassRate),
        (Order::HardToEasy, DifficultyKey::Level),
        (adarft(), DifficultyKey::Level),
        (
            Order::Speed {
                low: 0.2,
                high: 0.8,
            },
            DifficultyKey::PassRate,
        ),
    ]
}

#[test]
fn resumed_sampler_draws_what_an_uninterrupted_one_would() {
    for order in all_orders() {
        let sources = vec![
            SourceSpec::new("r", order.0.clone()).by(order.1),
            SourceSpec::new("a", Order::Shuffled),
        ];
        let schedule = ScheduleSpec::Cosine {
            from: MixSpec::new([("r", 3.0), ("a", 1.0)]),
            to: MixSpec::new([("r", 1.0), ("a", 3.0)]),
        };
        let sp = spec(sources, schedule, 3, 12);
        let pools = || vec![rated_pool(), pool("a", 4)];
        let run = |s: &mut Sampler, steps: std::ops::Range<u64>| -> Vec<String> {
            steps
                .flat_map(|i| {
                    let mut d = s.next_step();
                    if i % 4 == 1 {
                        d.extend(s.draw(2));
                    }
                    s.feedback(if i % 3 == 0 { 0.9 } else { 0.2 });
                    ids(s, &d)
                })
                .collect()
        };
        let mut whole = Sampler::new(sp.clone(), pools()).unwrap();
        let expected = run(&mut whole, 0..12);

        let mut first = Sampler::new(sp.clone(), pools()).unwrap();
        let mut got = run(&mut first, 0..5);
        let json = serde_json::to_string(first.state()).unwrap();
        drop(first);
        let state: SamplerState = serde_json::from_str(&json).unwrap();
        let mut resumed = Sampler::resume(sp.clone(), pools(), state).unwrap();
        got.extend(run(&mut resumed, 5..12));
        assert_eq!(got, expected, "{order:?}");
        assert_eq!(resumed.state(), whole.state());

        // set_state on a fresh sampler over the same pools continues the same way.
        let mut first = Sampler::new(sp.clone(), pools()).unwrap();
        let head = run(&mut first, 0..5);
        let saved: SamplerState =
            serde_json::from_str(&serde_json::to_string(first.state()).unwrap()).unwrap();
        let mut fresh = Sampler::new(sp.clone(), pools()).unwrap();
        fresh.set_state(saved).unwrap();
        assert_eq!(
            [head, run(&mut fresh, 5..12)].concat(),
            expected,
            "{order:?}"
        );
    }
}

#[test]
fn resume_refuses_other_data() {
    let sp = SamplerSpec::single(SourceSpec::new("a", Order::Shuffled), 2, 4, 0);
    let mut s = Sampler::new(sp.clone(), vec![pool("a", 5)]).unwrap();
    s.next_step();
    let state = s.state().clone();
    let err = Sampler::resume(sp.clone(), vec![pool("a", 6)], state.clone()).unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");
    let mut tampered = state;
    tampered.sources[0].order[0] = 99;
    let err = Sampler::resume(sp, vec![pool("a", 5)], tampered).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn spec_errors_name_the_source() {
    let sp = spec(
        vec![SourceSpec::new("a", Order::Shuffled)],
        constant(&[("a", 1.0), ("ghost", 1.0)]),
        1,
        1,
    );
    let err = Sampler::new(sp, vec![pool("a", 2)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`ghost`"), "{err}");
    let sp = SamplerSpec::single(SourceSpec::new("a", Order::Shuffled), 1, 1, 0);
    let err = Sampler::new(sp, vec![pool("b", 2)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`a`"), "{err}");
}

#[test]
fn spec_round_trips_through_json() {
    let mut src = SourceSpec::new("perception", adarft());
    src.filter.drop_solved = true;
    let sp = spec(
        vec![
            src,
            SourceSpec::new("text", Order::EasyToHard).by(DifficultyKey::PassRate),
        ],
        ScheduleSpec::Linear {
            from: MixSpec::new([("perception", 1.0)]),
            to: MixSpec::new([("text", 1.0)]),
        },
        8,
        100,
    );
    let json = serde_json::to_value(&sp).unwrap();
    assert_eq!(json["schedule"]["kind"], "linear");
    // The plan's own order, in the plan's words.
    assert_eq!(json["sources"][0]["order"]["policy"], "adarft");
    let back: SamplerSpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, sp);
}

#[test]
fn speed_prefers_its_band_then_unmeasured_then_the_nearest() {
    // Pass rates 0 … 1 plus two unmeasured samples.
    let (_, mut samples) = rated_pool();
    samples.push(sample("u0", None, None));
    samples.push(sample("u1", None, None));
    let sampler = |low: f64, high: f64| {
        let src = SourceSpec::new("r", Order::Speed { low, high }).by(DifficultyKey::PassRate);
        let mut s = Sampler::new(
            SamplerSpec::single(src, 13, 10, 5),
            vec![("r".into(), samples.clone())],
        )
        .unwrap();
        step_ids(&mut s, 1)
    };
    let set = |v: &[String]| v.iter().cloned().collect::<HashSet<_>>();
    let ids = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<HashSet<_>>();
    let got = sampler(0.4, 0.6);
    assert_eq!(set(&got[..3]), ids(&["p4", "p5", "p6"]), "{got:?}");
    assert_eq!(set(&got[3..5]), ids(&["u0", "u1"]), "{got:?}");
    assert_eq!(set(&got[5..7]), ids(&["p3", "p7"]), "{got:?}");
    assert_eq!(set(&got[11..]), ids(&["p0", "p10"]), "{got:?}");
    // Another band, another order: the band is read, not a fixed 0.5.
    let got = sampler(0.8, 1.0);
    assert_eq!(set(&got[..3]), ids(&["p8", "p9", "p10"]), "{got:?}");
    assert_eq!(got[12], "p0", "{got:?}");
}
