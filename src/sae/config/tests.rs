//! Unit tests of the resolved configuration: schedules and defaults.

use super::*;

/// The resolved configuration of a 100-step run into an unused folder, on 1000 rows of
/// d = 8, with `extra` set on top (the start of the tests here and in `schedule`).
pub(crate) fn resolve_with(extra: impl FnOnce(&mut TrainArgs)) -> Result<TrainConfig> {
    let mut a = TrainArgs {
        out: Some("unused".into()),
        steps: Some(100),
        ..Default::default()
    };
    extra(&mut a);
    TrainConfig::resolve(&a, 8, 1000)
}

fn cfg(extra: impl FnOnce(&mut TrainArgs)) -> TrainConfig {
    resolve_with(|a| {
        (a.lr, a.lr_warmup) = (Some(1.0), Some(10));
        extra(a);
    })
    .unwrap()
}

#[test]
fn lr_schedule() {
    let c = cfg(|_| {});
    assert_eq!(c.lr_at(0), 0.1);
    assert_eq!(c.lr_at(9), 1.0);
    assert_eq!(c.lr_at(99), 1.0);
    // Linear over every step after warm-up (the default span), to 0.
    let c = cfg(|a| a.lr_decay = Some(LrDecay::Linear));
    assert_eq!(c.lr_at(10), 1.0);
    assert!((c.lr_at(55) - 0.5).abs() < 1e-6);
    // Linear over the last 20 steps, to 0.1 x lr.
    let c = cfg(|a| {
        a.lr_decay = Some(LrDecay::Linear);
        a.lr_decay_steps = Some(20);
        a.lr_end = Some(0.1);
    });
    assert_eq!(c.lr_at(79), 1.0);
    assert_eq!(c.lr_at(80), 1.0);
    assert!((c.lr_at(90) - 0.55).abs() < 1e-6);
    assert!((c.lr_at(99) - (0.1 + 0.9 * 0.05)).abs() < 1e-6);
    // A decay span longer than the run after warm-up is cut to it.
    let c = cfg(|a| {
        a.lr_decay = Some(LrDecay::Cosine);
        a.lr_decay_steps = Some(1000);
    });
    assert_eq!(c.lr_at(10), 1.0);
    let bad = TrainArgs {
        out: Some("unused".into()),
        lr_end: Some(1.5),
        ..Default::default()
    };
    assert!(TrainConfig::resolve(&bad, 8, 1000).is_err());
}

#[test]
fn exclusive_pairs() {
    // The command line's --tokens replaces the file's steps (it would lose to it otherwise).
    let file = TrainArgs {
        steps: Some(100),
        d_sae: Some(64),
        ..Default::default()
    };
    let cli = TrainArgs {
        tokens: Some(640),
        expansion: Some(4),
        ..Default::default()
    };
    let m = cli.merged_over(&file).unwrap();
    assert_eq!((m.steps, m.tokens), (None, Some(640)));
    assert_eq!((m.d_sae, m.expansion), (None, Some(4)));
    // Both of a pair from one source: refused, naming both.
    let both = TrainArgs {
        steps: Some(3),
        tokens: Some(640),
        ..Default::default()
    };
    let e = both
        .merged_over(&TrainArgs::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--steps 3 and --tokens 640"), "{e}");
    let e = TrainArgs::default()
        .merged_over(&both)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`steps` and `tokens` are both set"), "{e}");
}
