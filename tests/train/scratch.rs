//! The CPU engine keeps its working buffers from one step to the next (`cpu::Scratch`).
//! Every architecture and path, N steps of `CpuEngine` (buffers reused) against N steps of
//! `cpu::step` (fresh buffers each step), on the same batches: the states must be equal bit
//! for bit, so no value of one step leaks into the next (a stale gradient row of a latent
//! without entries, a stale reconstruction, AuxK's buffers once no latent is dead), and
//! the buffers must really be reused.

use libtest_mimic::{Failed, Trial};
use saeforge::sae::config::BatchDtype;
use saeforge::sae::cpu::{CpuEngine, step};
use saeforge::sae::engine::{StepEngine, TrainState};
use saeforge::sae::{Arch, SaeParams};

use crate::common::{cpu_test, fail, randn};
use crate::equivalence::{STEPS, config, shift_to_l0};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[allow(clippy::too_many_arguments)]
fn case(
    rng: &mut rand_chacha::ChaCha8Rng,
    arch: Arch,
    sparse: bool,
    (d, n, rows): (usize, usize, usize),
    (anneal, rescale): (bool, bool),
    d_out: Option<usize>,
    dtype: BatchDtype,
) -> Result<(), Failed> {
    let mut cfg = config(arch, d, n, rows, anneal, rescale);
    cfg.d_out = d_out;
    cfg.batch_dtype = dtype;
    let sample = randn(rng, 256 * d_out.unwrap_or(d), 1.0);
    let mut params = SaeParams::init(&cfg, &sample);
    if sparse {
        shift_to_l0(&mut params, arch, &sample, 10.0);
    }
    let mut fresh = TrainState::new(params);
    let mut eng = CpuEngine::new(fresh.clone());
    let width = d + d_out.unwrap_or(0);
    for _ in 0..STEPS {
        let x = randn(rng, rows * width, 1.0);
        step(&cfg, &mut fresh, &x, rows);
        eng.step(&cfg, &x, rows).map_err(fail)?;
    }
    // Every step after the first takes its buffers from the scratch: at least the
    // pre-activations and each gradient tensor but the empty ones.
    let reused = eng.scratch.reused();
    if reused < (STEPS as u64 - 1) * 4 {
        return Err(format!("{arch:?}: {reused} buffers reused over {STEPS} steps").into());
    }
    let kept = eng.state().map_err(fail)?;
    let pairs = kept
        .params
        .zip(&fresh.params)
        .into_iter()
        .chain(kept.moments.m.zip(&fresh.moments.m))
        .chain(kept.moments.v.zip(&fresh.moments.v));
    for (name, a, b) in pairs {
        if bits(a) != bits(b) {
            return Err(format!("{arch:?} {name}: reused buffers changed the step").into());
        }
    }
    let same = bits(&kept.metrics) == bits(&fresh.metrics)
        && kept.since_fired == fresh.since_fired
        && kept.threshold.to_bits() == fresh.threshold.to_bits();
    if !same {
        return Err(format!("{arch:?}: metrics, counters or threshold differ").into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let (odd, wide) = ((36, 300, 70), (16, 512, 40));
    let plain = (false, false);
    [
        (Arch::Topk, false, odd, plain, None),
        (Arch::Topk, false, wide, (true, false), None),
        (Arch::Batchtopk, false, odd, plain, None),
        (Arch::Matryoshka, false, odd, plain, None),
        (Arch::Relu, false, odd, plain, None),
        (Arch::Relu, true, odd, plain, None),
        (Arch::Jumprelu, false, odd, plain, None),
        (Arch::Jumprelu, true, odd, plain, None),
        (Arch::Topk, false, odd, (false, true), None),
        (Arch::Relu, true, odd, (false, true), None),
        (Arch::Topk, false, odd, plain, Some(20)),
        (Arch::Relu, false, odd, plain, Some(20)),
    ]
    .into_iter()
    .flat_map(|c| [(c, BatchDtype::F32), (c, BatchDtype::F16)])
    .filter(|((arch, ..), dtype)| *dtype == BatchDtype::F32 || *arch == Arch::Topk)
    .map(|((arch, sparse, shape, how, d_out), dtype)| {
        let path = if sparse { "_sparse" } else { "" };
        let k = if how.0 { "_anneal" } else { "" };
        let norm = if how.1 { "_rescale" } else { "" };
        let tc = d_out.map_or(String::new(), |o| format!("_transcoder_to_{o}"));
        let half = if dtype == BatchDtype::F16 { "_f16" } else { "" };
        let name = format!(
            "scratch::{arch:?}{path}{k}{norm}{tc}{half}_{}x{}x{}_reused_buffers_are_bitwise_fresh",
            shape.0, shape.1, shape.2
        );
        cpu_test(name.to_lowercase(), move |rng| {
            case(rng, arch, sparse, shape, how, d_out, dtype)
        })
    })
    .collect()
}
