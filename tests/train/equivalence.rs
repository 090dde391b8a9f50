//! N steps of the GPU engine against N steps of the CPU engine, for every architecture,
//! from the same initial state on the same batches.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Gpu;
use saeforge::sae::cpu::{TrainState, step};
use saeforge::sae::gpu::GpuEngine;
use saeforge::sae::train::StepEngine;
use saeforge::sae::{Arch, SaeParams, TrainArgs, TrainConfig};

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};

pub const STEPS: usize = 10;

pub fn config(arch: Arch, d: usize, n: usize, rows: usize) -> TrainConfig {
    let args = TrainArgs {
        out: Some("unused".into()),
        arch: Some(arch),
        d_sae: Some(n),
        k: Some(8),
        k_aux: Some(16),
        l1: Some(0.5),
        l0: Some(0.05),
        threshold_init: Some(0.05),
        bandwidth: Some(0.05),
        batch: Some(rows),
        steps: Some(STEPS as u64),
        lr: Some(1e-3),
        lr_warmup: Some(2),
        sparsity_warmup: Some(3),
        // Dead after two steps without firing, so AuxK has work within the run.
        dead_tokens: Some(2 * rows as u64),
        ..Default::default()
    };
    TrainConfig::resolve(&args, d, 100_000).unwrap()
}

fn case(gpu: &Gpu, rng: &mut rand_chacha::ChaCha8Rng, arch: Arch) -> Result<(), Failed> {
    let (d, n, rows) = (36, 300, 70);
    let cfg = config(arch, d, n, rows);
    let sample = randn(rng, 256 * d, 1.0);
    let mut cpu = TrainState::new(SaeParams::init(&cfg, &sample));
    let gpu_arc = crate::common::gpu().map_err(fail)?;
    let _ = gpu;
    let mut eng = GpuEngine::new(gpu_arc, &cfg, &cpu).map_err(fail)?;
    for _ in 0..STEPS {
        let x = randn(rng, rows * d, 1.0);
        step(&cfg, &mut cpu, &x, rows);
        eng.step(&cfg, &x, rows).map_err(fail)?;
    }
    let g = eng.state().map_err(fail)?;
    let names = ["W_enc", "W_dec", "b_enc", "b_dec", "log_threshold"];
    for i in 0..5 {
        assert_close(
            &format!("{arch:?} {} after {STEPS} steps", names[i]),
            g.params.tensors()[i],
            cpu.params.tensors()[i],
            tolerance::TRAIN_PARAMS,
        )?;
        assert_close(
            &format!("{arch:?} adam_v {}", names[i]),
            &g.moments.v[i],
            &cpu.moments.v[i],
            tolerance::TRAIN_MOMENTS,
        )?;
    }
    assert_same(
        &format!("{arch:?} since_fired"),
        &g.since_fired,
        &cpu.since_fired,
    )?;
    assert_same(
        &format!("{arch:?} fire_total"),
        &g.fire_total,
        &cpu.fire_total,
    )?;
    assert_close(
        &format!("{arch:?} metrics"),
        &g.metrics,
        &cpu.metrics,
        tolerance::TRAIN_METRICS,
    )?;
    assert_close(
        &format!("{arch:?} threshold"),
        &[g.threshold],
        &[cpu.threshold],
        tolerance::TRAIN_PARAMS,
    )?;
    if cpu
        .since_fired
        .iter()
        .all(|&s| (s as u64) < cfg.dead_tokens)
        && matches!(arch, Arch::Topk | Arch::Batchtopk)
    {
        return Err(format!("{arch:?}: no latent ever died, so AuxK was not exercised").into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    [Arch::Relu, Arch::Topk, Arch::Batchtopk, Arch::Jumprelu]
        .into_iter()
        .map(|arch| {
            gpu_test(
                format!("equivalence::{arch:?}_{STEPS}_steps").to_lowercase(),
                move |gpu, rng| case(gpu, rng, arch),
            )
        })
        .collect()
}
