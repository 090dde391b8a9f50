//! zero, threshold_ema and unpack_f16 against shaders/ops.wgsl (gate_plan:
//! tests/kernels/gate.rs).
//!
//! unpack_f16 decodes random half bit patterns (every exponent, so subnormals, infinities
//! and NaNs occur) and the named edge values, into a NaN-poisoned output, bit for bit
//! against the reference (any NaN for a NaN: the reference quiets NaN payloads).
//!
//! zero starts from random values, so a skipped element fails. threshold_ema's state is poisoned on the first step, where the kernel must not
//! read it, and chained over several submissions otherwise, as a training run uses it.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::Gpu;
use saeforge::kernels::ops as k;
use saeforge::reference::ops as r;

use crate::common::{assert_close, fail, gpu_test, randn, read, tolerance, uniform, up};

/// zero lengths: 1, odd, odd past one 256-wide workgroup, more workgroups than one grid
/// dimension holds (65535 x 256 + 3: the folded 1-D grid), and production (512 x 16384).
const LENS: &[usize] = &[1, 7, 257, 1001, 65535 * 256 + 3, 16384, 512 * 16384];

// ---------------------------------------------------------------- zero

/// A random tensor cleared by the zero kernel: every element (a skipped one keeps its
/// random value and fails).
fn zero_case(gpu: &Gpu, rng: &mut ChaCha8Rng, len: usize) -> Result<(), Failed> {
    let a_h = randn(rng, len, 1.0);
    let a = up(gpu, "a", &[len], &a_h)?;
    let mut enc = gpu.encoder();
    k::zero(gpu, &mut enc, &a).map_err(fail)?;
    gpu.submit(enc);
    assert_close("zero a", &read(gpu, &a)?, &vec![0.0; len], tolerance::EXACT)
}

/// The launcher refuses a u32 tensor (the kernel writes f32 zeros).
fn zero_dtype_case(gpu: &Gpu) -> Result<(), Failed> {
    let a = gpu.zeros_u32("a", &[8]).map_err(fail)?;
    let mut enc = gpu.encoder();
    match k::zero(gpu, &mut enc, &a) {
        Err(e) if e.to_string().contains("zero") => Ok(()),
        Err(e) => Err(format!("zero on u32: unexpected error {e}").into()),
        Ok(()) => Err("zero accepted a u32 tensor".into()),
    }
}

// ---------------------------------------------------------------- unpack_f16

fn unpack_f16_case(gpu: &Gpu, rng: &mut ChaCha8Rng, len: usize) -> Result<(), Failed> {
    // Edge halves first: +-0, the smallest and largest subnormals, the smallest normal,
    // 1, the largest finite, +-inf, a NaN; random bit patterns after them.
    let edges: [u16; 10] = [
        0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0x7bff, 0x7c00, 0xfc00, 0x7e01,
    ];
    let halves: Vec<u16> = (0..len)
        .map(|i| edges.get(i).copied().unwrap_or_else(|| rng.random()))
        .collect();
    let packed: Vec<u32> = halves
        .chunks(2)
        .map(|c| c[0] as u32 | (c.get(1).copied().unwrap_or(0) as u32) << 16)
        .collect();
    let src = gpu
        .upload_u32("src", &[packed.len()], &packed)
        .map_err(fail)?;
    let out = gpu.zeros("out", &[len]).map_err(fail)?;
    gpu.fill(&out, f32::NAN);
    let mut enc = gpu.encoder();
    k::unpack_f16(gpu, &mut enc, &src, &out).map_err(fail)?;
    gpu.submit(enc);
    let got = read(gpu, &out)?;
    let mut want = vec![0.0f32; len];
    r::unpack_f16(&packed, &mut want);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let same = if w.is_nan() {
            g.is_nan()
        } else {
            g.to_bits() == w.to_bits()
        };
        if !same {
            return Err(format!(
                "unpack_f16[{i}] of half {:#06x}: gpu {g:e} ({:#010x}), reference {w:e}",
                halves[i],
                g.to_bits()
            )
            .into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- threshold_ema

/// One step from a poisoned (first) or a given state; thr drawn around 0 so that both
/// sides of max(thr, 0) occur across runs, and forced negative when `negative`.
fn ema_case(gpu: &Gpu, rng: &mut ChaCha8Rng, first: bool, negative: bool) -> Result<(), Failed> {
    let mut thr_h = [rng.random_range(-0.5f32..2.0)];
    if negative {
        thr_h[0] = -thr_h[0].abs() - 0.01;
    }
    let decay = rng.random_range(0.5f32..0.999);
    let mut state_h = [if first {
        f32::NAN
    } else {
        rng.random_range(0.0f32..2.0)
    }];
    let thr = up(gpu, "thr", &[1], &thr_h)?;
    let state = up(gpu, "state", &[1], &state_h)?;
    let mut enc = gpu.encoder();
    k::threshold_ema(gpu, &mut enc, &thr, &state, decay, first).map_err(fail)?;
    gpu.submit(enc);

    r::threshold_ema(&thr_h, &mut state_h, decay, first);
    let what = format!(
        "threshold_ema (first {first}, thr {}, decay {decay})",
        thr_h[0]
    );
    assert_close(&what, &read(gpu, &state)?, &state_h, tolerance::OPS_EMA)?;
    assert_close(
        "threshold_ema thr (unchanged)",
        &read(gpu, &thr)?,
        &thr_h,
        tolerance::EXACT,
    )
}

/// decay 0 (state = max(thr, 0)) and decay 1 (state unchanged) exactly.
fn ema_edges_case(gpu: &Gpu, rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    for decay in [0.0f32, 1.0] {
        let thr_h = [rng.random_range(0.1f32..2.0)];
        let mut state_h = [rng.random_range(0.1f32..2.0)];
        let thr = up(gpu, "thr", &[1], &thr_h)?;
        let state = up(gpu, "state", &[1], &state_h)?;
        let mut enc = gpu.encoder();
        k::threshold_ema(gpu, &mut enc, &thr, &state, decay, false).map_err(fail)?;
        gpu.submit(enc);
        r::threshold_ema(&thr_h, &mut state_h, decay, false);
        let what = format!("threshold_ema decay {decay}");
        assert_close(&what, &read(gpu, &state)?, &state_h, tolerance::EXACT)?;
    }
    Ok(())
}

/// As in training: the batch threshold rewritten before each submission, the state kept
/// on the device over `steps` steps, the first one with first = true.
fn ema_chain_case(gpu: &Gpu, rng: &mut ChaCha8Rng, steps: usize) -> Result<(), Failed> {
    let decay = 0.99f32;
    let thr_h = uniform(rng, steps, -0.2, 2.0);
    let thr = gpu.zeros("thr", &[1]).map_err(fail)?;
    let state = gpu.zeros("state", &[1]).map_err(fail)?;
    gpu.fill(&state, f32::NAN);
    let mut state_h = [f32::NAN];
    for (s, &t) in thr_h.iter().enumerate() {
        gpu.write(&thr, &[t]).map_err(fail)?;
        let mut enc = gpu.encoder();
        k::threshold_ema(gpu, &mut enc, &thr, &state, decay, s == 0).map_err(fail)?;
        gpu.submit(enc);
        r::threshold_ema(&[t], &mut state_h, decay, s == 0);
    }
    assert_close(
        &format!("threshold_ema after {steps} steps"),
        &read(gpu, &state)?,
        &state_h,
        tolerance::OPS_EMA,
    )
}

pub fn trials() -> Vec<Trial> {
    let mut t: Vec<Trial> = LENS
        .iter()
        .map(|&len| {
            gpu_test(format!("ops::zero/{len}"), move |gpu, rng| {
                zero_case(gpu, rng, len)
            })
        })
        .collect();
    t.push(gpu_test("ops::zero/u32_refused", |gpu, _| {
        zero_dtype_case(gpu)
    }));
    for (name, first, negative) in [
        ("first", true, false),
        ("first_negative", true, true),
        ("step", false, false),
        ("step_negative", false, true),
    ] {
        t.push(gpu_test(
            format!("ops::threshold_ema/{name}"),
            move |gpu, rng| ema_case(gpu, rng, first, negative),
        ));
    }
    for len in [1usize, 10, 1001, 65535 * 256 + 3] {
        t.push(gpu_test(
            format!("ops::unpack_f16/{len}"),
            move |gpu, rng| unpack_f16_case(gpu, rng, len),
        ));
    }
    t.push(gpu_test("ops::threshold_ema/decay_0_and_1", ema_edges_case));
    t.push(gpu_test("ops::threshold_ema/chain_10", |gpu, rng| {
        ema_chain_case(gpu, rng, 10)
    }));
    t
}
