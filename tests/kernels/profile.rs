//! The dispatch profiler (src/gpu/profile.rs): a profiled GEMM gives bitwise the unprofiled
//! result, every dispatch of the profiling thread is listed in order with its times, and,
//! where the adapter has timestamp queries, the GPU times are positive, inside the wall
//! interval and larger for a GEMM with 32768x the work; where it has none, they are None.

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{DispatchTime, Gpu};
use saeforge::kernels::gemm::{self, GemmSpec};

use crate::common::{fail, gpu_test, randn};

/// A GEMM of (m, n, k) = (s, s, s) on fresh inputs, recorded with profiling `on`: the
/// product and what the profiler listed.
fn run_gemm(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    s: usize,
    on: bool,
) -> Result<(Vec<f32>, Vec<DispatchTime>), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let a = gpu
        .upload("a", &[s, s], &randn(rng, s * s, 1.0))
        .map_err(m)?;
    let b = gpu
        .upload("b", &[s, s], &randn(rng, s * s, 1.0))
        .map_err(m)?;
    let c = gpu.zeros("c", &[s, s]).map_err(m)?;
    gpu.fill(&c, f32::NAN);
    gpu.wait().map_err(m)?;
    gpu.profile_dispatches(on);
    let mut enc = gpu.encoder();
    let run = gemm::gemm(gpu, &mut enc, &GemmSpec::nn(s, s, s), &a, &b, None, &c);
    let listed = gpu.take_dispatch_profile();
    gpu.profile_dispatches(false);
    run.map_err(m)?;
    gpu.submit(enc);
    Ok((gpu.read_f32(&c).map_err(m)?, listed))
}

fn profiled_gemm(gpu: &Gpu, rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let seed: u64 = rand::Rng::random(rng);
    let fresh = || <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let (plain, none) = run_gemm(gpu, &mut fresh(), 512, false)?;
    let (profiled, big) = run_gemm(gpu, &mut fresh(), 512, true)?;
    if !none.is_empty() {
        return Err(format!("profiling off, yet {} dispatches listed", none.len()).into());
    }
    if plain
        .iter()
        .map(|v| v.to_bits())
        .ne(profiled.iter().map(|v| v.to_bits()))
    {
        return Err("the profiled GEMM differs from the unprofiled one".into());
    }
    if big.is_empty() || !big.iter().any(|t| t.entry.starts_with("gemm")) {
        return Err(format!("profile lists no gemm dispatch: {big:?}").into());
    }
    let (_, small) = run_gemm(gpu, rng, 16, true)?;
    check_times(gpu, &big, &small)?;
    // GPU time grows with the work. On a software adapter the "GPU" is a host thread, which
    // a loaded machine may deschedule inside a tiny dispatch: the order is asked of one of
    // three fresh pairs (a profiler that ignored the work would fail all three).
    let gpu_time = |v: &[DispatchTime]| -> Option<f64> { v.iter().map(|t| t.gpu_s).sum() };
    let mut pair = (big, small);
    for attempt in 1..=3 {
        let (big, small) = &pair;
        match (gpu_time(big), gpu_time(small)) {
            (Some(b), Some(s)) if b <= s => {
                if attempt == 3 {
                    return Err(format!("GPU time of 512^3 GEMM {b} s <= that of 16^3 {s} s, three times (the last listed dispatches: {big:?} and {small:?})").into());
                }
            }
            _ => return Ok(()),
        }
        let (_, big) = run_gemm(gpu, rng, 512, true)?;
        let (_, small) = run_gemm(gpu, rng, 16, true)?;
        check_times(gpu, &big, &small)?;
        pair = (big, small);
    }
    Ok(())
}

/// Every listed dispatch has a positive wall time and, with timestamps, a positive GPU
/// time inside it (without them, none).
fn check_times(gpu: &Gpu, big: &[DispatchTime], small: &[DispatchTime]) -> Result<(), Failed> {
    for t in big.iter().chain(small) {
        if t.wall_s <= 0.0 || t.wall_s.is_nan() {
            return Err(format!("{}: wall time {} s", t.entry, t.wall_s).into());
        }
        match (gpu.has_timestamps(), t.gpu_s) {
            (true, Some(g)) if g > 0.0 && g <= t.wall_s * 1.05 + 1e-4 => {}
            (false, None) => {}
            (has, g) => {
                return Err(format!(
                    "{}: timestamps {has}, GPU time {g:?} s, wall {} s",
                    t.entry, t.wall_s
                )
                .into());
            }
        }
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![gpu_test("profile::gemm_timed_and_unchanged", profiled_gemm)]
}
