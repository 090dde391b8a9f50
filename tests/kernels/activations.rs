//! relu / jumprelu forward and backward against shaders/activations.wgsl.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Gpu;
use saeforge::{kernels, reference};

use crate::common::{assert_close, fail, gpu_test, randn, tolerance};

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

pub fn trials() -> Vec<Trial> {
    SHAPES
        .iter()
        .map(|&(rows, n)| {
            gpu_test(format!("activations::relu/{rows}x{n}"), move |gpu, rng| {
                relu_case(gpu, rng, rows, n)
            })
        })
        .collect()
}
