//! `toy --experiment abs`: computation in superposition. Without superposition each |x_i|
//! takes a pair of neurons (ReLU(x_i) + ReLU(-x_i)), so m neurons compute at most m / 2
//! features; with sparse inputs the model computes more than m / 2 through polysemantic
//! neurons, while the most important feature keeps its monosemantic pair.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::toy::lab::abs::{AbsConfig, run, table};

use crate::common::{self, fail};

fn check(engine: &Engine) -> Result<(), Failed> {
    let cfg = AbsConfig {
        n: 16,
        m: 6,
        density: vec![1.0, 0.03],
        steps: 4000,
        batch: 256,
        lr: 3e-3,
        ..AbsConfig::default_size()
    };
    let r = run(engine, &cfg, 0, &mut |_| {}).map_err(fail)?;
    eprint!("{}", table(&r));
    let (dense, sparse) = (&r.instances[0], &r.instances[1]);
    let half = cfg.m / 2;
    if dense.features_computed > half || !dense.monosemantic_pairs.contains(&0) {
        return Err(format!(
            "1-S = 1: {} features computed (at most m / 2 = {half} expected), monosemantic \
             pairs {:?} (feature 0 expected)",
            dense.features_computed, dense.monosemantic_pairs
        )
        .into());
    }
    if sparse.features_computed <= half
        || sparse.polysemantic_neurons == 0
        || !sparse.monosemantic_pairs.contains(&0)
    {
        return Err(format!(
            "1-S = {}: {} features computed (more than m / 2 = {half} expected), {} \
             polysemantic neurons, monosemantic pairs {:?} (feature 0 expected)",
            sparse.density,
            sparse.features_computed,
            sparse.polysemantic_neurons,
            sparse.monosemantic_pairs
        )
        .into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("toy_lab::abs/cpu", || check(&Engine::Cpu)),
        common::gpu_test("toy_lab::abs/gpu", |_, _| {
            check(&Engine::Gpu(common::gpu().map_err(fail)?))
        }),
    ]
}
