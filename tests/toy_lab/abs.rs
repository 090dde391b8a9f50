//! `toy --experiment abs`: computation in superposition. Without superposition each |x_i|
//! takes a pair of neurons (ReLU(x_i) + ReLU(-x_i)), so m neurons compute at most m signs
//! (m / 2 features), and dense inputs give exactly that, feature 0 with a monosemantic
//! pair; with sparse inputs the model computes more than m signs through polysemantic
//! neurons.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::toy::lab::abs::{default_size, run, table};
use saeforge::toy::lab::privileged::DensitySweep;
use saeforge::toy::{Features, Schedule};

use crate::common::{self, fail};

fn check(engine: &Engine) -> Result<(), Failed> {
    let cfg = DensitySweep {
        features: Features {
            n: 16,
            m: 6,
            density: vec![1.0, 0.03],
            ..default_size().features
        },
        schedule: Schedule {
            steps: 10_000,
            batch: 512,
            ..default_size().schedule
        },
    };
    let r = run(engine, &cfg, 0, &mut |_| {}).map_err(fail)?;
    eprint!("{}", table(&r));
    let (dense, sparse) = (&r.instances[0], &r.instances[1]);
    let m = cfg.features.m;
    if dense.signs_computed > m || !dense.monosemantic_pairs.contains(&0) {
        return Err(format!(
            "1-S = 1: {} signs of features computed (at most m = {m} expected), \
             monosemantic pairs {:?} (feature 0 expected)",
            dense.signs_computed, dense.monosemantic_pairs
        )
        .into());
    }
    if sparse.signs_computed <= m || sparse.counts.polysemantic_neurons == 0 {
        return Err(format!(
            "1-S = {}: {} signs of features computed (more than m = {m} expected), {} \
             polysemantic neurons",
            sparse.density, sparse.signs_computed, sparse.counts.polysemantic_neurons
        )
        .into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("lab::abs/cpu", || check(&Engine::Cpu)),
        common::gpu_test("lab::abs/gpu", |_, _| {
            check(&Engine::Gpu(common::gpu().map_err(fail)?))
        }),
    ]
}
