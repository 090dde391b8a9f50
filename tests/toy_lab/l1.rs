//! `toy --experiment l1`: an L1 penalty on the hidden activations pushes the model out of
//! superposition (fewer features per dimension, fewer features represented) at a cost in
//! loss; the top-k run trains and is measured.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::toy::Schedule;
use saeforge::toy::lab::l1::{L1Config, run, table};

use crate::common::{self, fail};

fn check(engine: &Engine) -> Result<(), Failed> {
    let cfg = L1Config {
        l1: vec![0.0, 1.0],
        topk: vec![1, 5],
        schedule: Schedule {
            steps: 3000,
            batch: 256,
            ..Schedule::notebook()
        },
        ..L1Config::default_size()
    };
    let r = run(engine, &cfg, 0, &mut |_| {}).map_err(fail)?;
    eprint!("{}", table(&r));
    let (free, pen) = (&r.instances[0].measured, &r.instances[1].measured);
    if free.features_per_dim <= 1.0 || free.features_represented <= cfg.features.m {
        return Err(format!(
            "l1 = 0: {:.3} features per dimension, {} represented; expected superposition",
            free.features_per_dim, free.features_represented
        )
        .into());
    }
    if !(pen.features_per_dim < 0.8 * free.features_per_dim
        && pen.features_represented < free.features_represented
        && pen.loss > free.loss)
    {
        return Err(format!(
            "l1 = {}: {:.3} features per dimension ({} represented, loss {:.5}) against \
             {:.3} ({}, {:.5}) without; expected less superposition at a higher loss",
            r.instances[1].l1,
            pen.features_per_dim,
            pen.features_represented,
            pen.loss,
            free.features_per_dim,
            free.features_represented,
            free.loss
        )
        .into());
    }
    if r.topk.len() != 2 || r.topk.iter().any(|t| !t.measured.loss.is_finite()) {
        return Err("the top-k run did not produce two finite results".into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("lab::l1/cpu", || check(&Engine::Cpu)),
        common::gpu_test("lab::l1/gpu", |_, _| {
            check(&Engine::Gpu(common::gpu().map_err(fail)?))
        }),
    ]
}
