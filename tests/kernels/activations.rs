//! relu / jumprelu forward and backward against shaders/activations.wgsl.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use saeforge::gpu::Gpu;
use saeforge::{kernels, reference};

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance, uniform};

/// (rows, n): odd sizes that are not multiples of the 256-wide workgroup, and one
/// production-size case.
const SHAPES: &[(usize, usize)] = &[(1, 1), (3, 257), (37, 1000), (512, 16384)];

fn relu_case(
    gpu: &Gpu,
    rng: &mut rand_chacha::ChaCha8Rng,
    rows: usize,
    n: usize,
) -> Result<(), Failed> {
    let pre_h = randn(rng, rows * n, 1.0);
    let dz_h = randn(rng, rows * n, 1.0);
    let pre = gpu.upload("pre", &[rows, n], &pre_h).map_err(fail)?;
    let dz = gpu.upload("dz", &[rows, n], &dz_h).map_err(fail)?;
    let z = gpu.zeros("z", &[rows, n]).map_err(fail)?;
    let dpre = gpu.zeros("dpre", &[rows, n]).map_err(fail)?;
    gpu.fill(&z, f32::NAN);
    gpu.fill(&dpre, f32::NAN);
    let mut enc = gpu.encoder();
    kernels::activations::relu_forward(gpu, &mut enc, &pre, &z).map_err(fail)?;
    kernels::activations::relu_backward(gpu, &mut enc, &pre, &dz, &dpre).map_err(fail)?;
    gpu.submit(enc);

    let mut z_ref = vec![0.0; rows * n];
    let mut dpre_ref = vec![0.0; rows * n];
    reference::activations::relu_forward(&pre_h, &mut z_ref);
    reference::activations::relu_backward(&pre_h, &dz_h, &mut dpre_ref);
    assert_close(
        "relu_forward z",
        &gpu.read_f32(&z).map_err(fail)?,
        &z_ref,
        tolerance::EXACT,
    )?;
    assert_close(
        "relu_backward dpre",
        &gpu.read_f32(&dpre).map_err(fail)?,
        &dpre_ref,
        tolerance::EXACT,
    )
}

/// Inputs stay at least GUARD (in eps units) away from u = 0 (the threshold) and |u| = 1/2
/// (the window's edges): see the tolerance table.
const GUARD: f32 = tolerance::JUMPRELU_GUARD_EPS_UNITS;

/// Pre-activations for jumprelu: 40% near the threshold (u = (pre - theta) / eps uniform
/// in [-1.5, 1.5], so inside and outside the window on both sides), the rest N(0, 1);
/// any value within GUARD of a decision boundary is drawn again.
fn jumprelu_pre(
    rng: &mut rand_chacha::ChaCha8Rng,
    rows: usize,
    n: usize,
    log_theta: &[f32],
    eps: f32,
) -> Vec<f32> {
    let theta: Vec<f32> = log_theta.iter().map(|l| l.exp()).collect();
    let mut pre = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        for &th in &theta {
            loop {
                let v = if rng.random_range(0..10) < 4 {
                    th + rng.random_range(-1.5..1.5f32) * eps
                } else {
                    randn(rng, 1, 1.0)[0]
                };
                let u = ((v - th) / eps).abs();
                if u > GUARD && (u - 0.5).abs() > GUARD {
                    pre.push(v);
                    break;
                }
            }
        }
    }
    pre
}

fn jumprelu_case(
    gpu: &Gpu,
    rng: &mut rand_chacha::ChaCha8Rng,
    rows: usize,
    n: usize,
    twice: bool,
) -> Result<(), Failed> {
    let eps = 0.05;
    let l0_scale = 4.0 / rows as f32;
    let log_theta_h: Vec<f32> = uniform(rng, n, 0.2, 1.0).iter().map(|t| t.ln()).collect();
    let pre_h = jumprelu_pre(rng, rows, n, &log_theta_h, eps);
    let dz_h = randn(rng, rows * n, 1.0);
    let pre = gpu.upload("pre", &[rows, n], &pre_h).map_err(fail)?;
    let dz = gpu.upload("dz", &[rows, n], &dz_h).map_err(fail)?;
    let log_theta = gpu.upload("log_theta", &[n], &log_theta_h).map_err(fail)?;
    let z = gpu.zeros("z", &[rows, n]).map_err(fail)?;
    let dpre = gpu.zeros("dpre", &[rows, n]).map_err(fail)?;
    let dlog_theta = gpu.zeros("dlog_theta", &[n]).map_err(fail)?;
    let go = || -> Result<[Vec<f32>; 3], Failed> {
        gpu.fill(&z, f32::NAN);
        gpu.fill(&dpre, f32::NAN);
        gpu.fill(&dlog_theta, f32::NAN);
        let mut enc = gpu.encoder();
        kernels::activations::jumprelu_forward(gpu, &mut enc, &pre, rows, n, &log_theta, &z)
            .map_err(fail)?;
        kernels::activations::jumprelu_backward(
            gpu,
            &mut enc,
            &pre,
            &dz,
            rows,
            n,
            &log_theta,
            eps,
            l0_scale,
            &dpre,
            &dlog_theta,
        )
        .map_err(fail)?;
        gpu.submit(enc);
        Ok([
            gpu.read_f32(&z).map_err(fail)?,
            gpu.read_f32(&dpre).map_err(fail)?,
            gpu.read_f32(&dlog_theta).map_err(fail)?,
        ])
    };
    let got = go()?;

    let mut z_ref = vec![0.0; rows * n];
    let mut dpre_ref = vec![0.0; rows * n];
    let mut dlt_ref = vec![0.0; n];
    reference::activations::jumprelu_forward(&pre_h, rows, n, &log_theta_h, &mut z_ref);
    reference::activations::jumprelu_backward(
        &pre_h,
        &dz_h,
        rows,
        n,
        &log_theta_h,
        eps,
        l0_scale,
        &mut dpre_ref,
        &mut dlt_ref,
    );
    assert_close("jumprelu_forward z", &got[0], &z_ref, tolerance::EXACT)?;
    assert_close(
        "jumprelu_backward dpre",
        &got[1],
        &dpre_ref,
        tolerance::EXACT,
    )?;
    assert_close(
        "jumprelu_backward dlog_theta",
        &got[2],
        &dlt_ref,
        tolerance::JUMPRELU_DLOG_THETA,
    )?;
    if twice {
        let again = go()?;
        for (what, (a, b)) in ["z", "dpre", "dlog_theta"]
            .iter()
            .zip(got.iter().zip(&again))
        {
            let a: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
            let b: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
            assert_same(&format!("jumprelu {what} (second run, bitwise)"), &b, &a)?;
        }
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut v: Vec<Trial> = SHAPES
        .iter()
        .map(|&(rows, n)| {
            gpu_test(format!("activations::relu/{rows}x{n}"), move |gpu, rng| {
                relu_case(gpu, rng, rows, n)
            })
        })
        .collect();
    for &(rows, n) in SHAPES {
        let prod = rows == 512;
        v.push(gpu_test(
            format!("activations::jumprelu/{rows}x{n}"),
            move |gpu, rng| jumprelu_case(gpu, rng, rows, n, prod),
        ));
    }
    v
}
