//! `toy --experiment privileged`: with the ReLU hidden layer, neurons are monosemantic when
//! features are dense enough that the m most important get a neuron each (1 - S = 0.6 for
//! n = 10, m = 5, I = 0.75^i), and polysemantic once features are sparse enough to be
//! packed into superposition (more features represented than neurons). (At 1 - S = 1
//! itself the bias-free model spends positive weights of always-present features as a
//! bias, the paper's noted limitation, so the dense case is 0.6.)

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::toy::lab::privileged::{DensitySweep, paper, run, table};
use saeforge::toy::{Features, Schedule};

use crate::common::{self, fail};

fn check(engine: &Engine) -> Result<(), Failed> {
    let cfg = DensitySweep {
        features: Features {
            density: vec![0.6, 0.01],
            ..paper().features
        },
        schedule: Schedule {
            batch: 512,
            ..paper().schedule
        },
    };
    let r = run(engine, &cfg, 0, &mut |_| {}).map_err(fail)?;
    eprint!("{}", table(&r));
    let (dense, sparse) = (&r.instances[0], &r.instances[1]);
    if dense.counts.monosemantic_neurons < cfg.features.m - 1
        || dense.features_represented > cfg.features.m
    {
        return Err(format!(
            "1-S = {}: {} of {} neurons monosemantic, {} features represented; expected a \
             neuron per feature",
            dense.density,
            dense.counts.monosemantic_neurons,
            cfg.features.m,
            dense.features_represented
        )
        .into());
    }
    if sparse.counts.polysemantic_neurons < cfg.features.m / 2
        || sparse.features_represented <= cfg.features.m
    {
        return Err(format!(
            "1-S = {}: {} polysemantic neurons, {} features represented in {} neurons; \
             expected superposition",
            sparse.density,
            sparse.counts.polysemantic_neurons,
            sparse.features_represented,
            cfg.features.m
        )
        .into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("lab::privileged/cpu", || check(&Engine::Cpu)),
        common::gpu_test("lab::privileged/gpu", |_, _| {
            check(&Engine::Gpu(common::gpu().map_err(fail)?))
        }),
    ]
}
