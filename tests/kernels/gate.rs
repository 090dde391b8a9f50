//! Gates (src/gpu/launch.rs `Gate`, shaders/ops.wgsl gate_plan): the plan against its CPU
//! twin, and dispatches recorded under a gate running exactly when the device-side flag
//! says so: a GEMM (on lavapipe the texture path, whose textures a gated fill_texture
//! dispatch fills) and the zero kernel (which the step gates), for both flag values; the path not taken must
//! leave its (poisoned) output untouched.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::Gpu;
use saeforge::kernels::gemm::{self, GemmSpec};
use saeforge::kernels::ops;
use saeforge::reference;

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};

fn plan_case(gpu: &Gpu, rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let slots = 37;
    let gate = gpu.gate(slots).map_err(m)?;
    let table: Vec<u32> = (0..slots * 4)
        .map(|i| {
            if i % 4 == 3 {
                rng.random_range(0..2)
            } else {
                rng.random_range(0..70000)
            }
        })
        .collect();
    gpu.write(&gate.table, &table).map_err(m)?;
    for (value, threshold) in [(5u32, 4u32), (4, 4), (0, 0), (u32::MAX, 7)] {
        let src = gpu.upload_u32("src", &[3], &[9, value, 1]).map_err(m)?;
        gpu.write(&gate.args, &vec![u32::MAX; slots * 3])
            .map_err(m)?;
        let mut enc = gpu.encoder();
        ops::gate_plan(gpu, &mut enc, &gate, &src, 1, threshold).map_err(m)?;
        gpu.submit(enc);
        let mut want = vec![0u32; slots * 3];
        reference::ops::gate_plan(&[9, value, 1], 1, threshold, &table, &mut want);
        let got = gpu.read_u32(&gate.args).map_err(m)?;
        assert_same(
            &format!("gate_plan args ({value} > {threshold})"),
            &got,
            &want,
        )?;
    }
    Ok(())
}

fn gated_case(gpu: &Gpu, rng: &mut ChaCha8Rng, flag: bool) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let (mm, nn, kk) = (128, 192, 128);
    let spec = GemmSpec::nn(mm, nn, kk);
    let a = randn(rng, mm * kk, 1.0);
    let b = randn(rng, kk * nn, 1.0);
    let x = randn(rng, 1000, 1.0);
    let ad = gpu.upload("a", &[mm, kk], &a).map_err(m)?;
    let bd = gpu.upload("b", &[kk, nn], &b).map_err(m)?;
    let c_on = gpu.zeros("c (flag set)", &[mm, nn]).map_err(m)?;
    let c_off = gpu.zeros("c (flag clear)", &[mm, nn]).map_err(m)?;
    let xd = gpu.upload("x", &[1000], &x).map_err(m)?;
    let x2 = gpu.upload("x (flag clear)", &[1000], &x).map_err(m)?;
    gpu.fill(&c_on, f32::NAN);
    gpu.fill(&c_off, f32::NAN);
    let gate = gpu.gate(16).map_err(m)?;
    let src = gpu
        .upload_u32("flag source", &[1], &[if flag { 10 } else { 3 }])
        .map_err(m)?;
    let mut enc = gpu.encoder();
    ops::gate_plan(gpu, &mut enc, &gate, &src, 0, 5).map_err(m)?;
    gpu.gated(&gate, true, || -> saeforge::Result<()> {
        gemm::gemm(gpu, &mut enc, &spec, &ad, &bd, None, &c_on)?;
        ops::zero(gpu, &mut enc, &xd)
    })
    .map_err(m)?;
    gpu.gated(&gate, false, || -> saeforge::Result<()> {
        gemm::gemm(gpu, &mut enc, &spec, &ad, &bd, None, &c_off)?;
        ops::zero(gpu, &mut enc, &x2)
    })
    .map_err(m)?;
    if gate.is_empty() {
        return Err("nothing was recorded under the gate".into());
    }
    gate.finish(gpu).map_err(m)?;
    gpu.submit(enc);
    let mut want = vec![0.0f32; mm * nn];
    reference::gemm::gemm(&spec, &a, &b, None, &mut want);
    let cleared = vec![0.0f32; x.len()];
    let (ran, idle) = if flag {
        (&c_on, &c_off)
    } else {
        (&c_off, &c_on)
    };
    let (ran_x, idle_x) = if flag { (&xd, &x2) } else { (&x2, &xd) };
    assert_close(
        "gated gemm (taken)",
        &gpu.read_f32(ran).map_err(m)?,
        &want,
        tolerance::gemm(kk),
    )?;
    if gpu.read_f32(idle).map_err(m)?.iter().any(|v| !v.is_nan()) {
        return Err("the gemm not taken wrote its output".into());
    }
    let t = tolerance::EXACT;
    assert_close(
        "gated zero (taken)",
        &gpu.read_f32(ran_x).map_err(m)?,
        &cleared,
        t,
    )?;
    assert_close(
        "gated zero (not taken)",
        &gpu.read_f32(idle_x).map_err(m)?,
        &x,
        t,
    )
}

pub fn trials() -> Vec<Trial> {
    vec![
        gpu_test("gate::plan", plan_case),
        gpu_test("gate::dispatch/flag_set", |gpu, rng| {
            gated_case(gpu, rng, true)
        }),
        gpu_test("gate::dispatch/flag_clear", |gpu, rng| {
            gated_case(gpu, rng, false)
        }),
    ]
}
