//! fista_step and fista_row_change against their CPU twins (src/reference/fista.rs).

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::Gpu;
use saeforge::{kernels, reference};

use crate::common::{assert_close, fail, gpu_test, randn, tolerance};

/// (rows, n): rows * n odd (scalar kernels), n odd with rows * n % 4 == 0 (vec4 step,
/// scalar row change), n % 4 == 0 (vec4 both), sizes off every workgroup multiple, and the
/// production shape.
const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 7),
    (4, 13),
    (5, 36),
    (37, 1000),
    (300, 257),
    (512, 16384),
];

/// Codes as FISTA sees them: about half exact zeros, the rest |N(0, 1)|.
fn codes(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    randn(rng, len, 1.0)
        .into_iter()
        .map(|v| if rng.random::<bool>() { v.abs() } else { 0.0 })
        .collect()
}

/// Two chained updates (z ping-pongs between two buffers, y is updated in place), then the
/// row change of the second; every output poisoned before the run.
fn case(gpu: &Gpu, rng: &mut ChaCha8Rng, rows: usize, n: usize) -> Result<(), Failed> {
    let len = rows * n;
    let y_h = codes(rng, len);
    let z0_h = codes(rng, len);
    let g1_h = randn(rng, len, 1.0);
    let g2_h = randn(rng, len, 1.0);
    let step = rng.random_range(0.1..1.0f32);
    let threshold = step * rng.random_range(0.01..0.5f32);
    let (m1, m2) = (rng.random_range(0.0..1.0f32), rng.random_range(0.0..1.0f32));

    let y = gpu.upload("y", &[rows, n], &y_h).map_err(fail)?;
    let za = gpu.upload("z_a", &[rows, n], &z0_h).map_err(fail)?;
    let zb = gpu.zeros("z_b", &[rows, n]).map_err(fail)?;
    let g1 = gpu.upload("g1", &[rows, n], &g1_h).map_err(fail)?;
    let g2 = gpu.upload("g2", &[rows, n], &g2_h).map_err(fail)?;
    let change = gpu.zeros("change", &[rows, 2]).map_err(fail)?;
    gpu.fill(&zb, f32::NAN);
    gpu.fill(&change, f32::NAN);
    let mut enc = gpu.encoder();
    let k = &kernels::fista::fista_step;
    k(
        gpu, &mut enc, &g1, &za, rows, n, step, threshold, m1, &y, &zb,
    )
    .map_err(fail)?;
    let y1 = gpu.zeros("y after one step", &[rows, n]).map_err(fail)?;
    enc.copy_buffer_to_buffer(&y.buf, 0, &y1.buf, 0, y.bytes());
    // z_a (the oldest z) is overwritten by the second step: poison it first in the
    // encoder's order by copying NaN over it.
    let nan = gpu
        .upload("nan", &[rows, n], &vec![f32::NAN; len])
        .map_err(fail)?;
    let za_before = gpu.zeros("z_a before", &[rows, n]).map_err(fail)?;
    enc.copy_buffer_to_buffer(&za.buf, 0, &za_before.buf, 0, za.bytes());
    enc.copy_buffer_to_buffer(&nan.buf, 0, &za.buf, 0, za.bytes());
    k(
        gpu, &mut enc, &g2, &zb, rows, n, step, threshold, m2, &y, &za,
    )
    .map_err(fail)?;
    kernels::fista::fista_row_change(gpu, &mut enc, &za, &zb, rows, n, &change).map_err(fail)?;
    gpu.submit(enc);

    let mut y_r = y_h.clone();
    let mut z1_r = vec![f32::NAN; len];
    let mut z2_r = vec![f32::NAN; len];
    let mut change_r = vec![f32::NAN; rows * 2];
    let r = &reference::fista::fista_step;
    r(
        &g1_h, &z0_h, rows, n, step, threshold, m1, &mut y_r, &mut z1_r,
    );
    let y1_r = y_r.clone();
    r(
        &g2_h, &z1_r, rows, n, step, threshold, m2, &mut y_r, &mut z2_r,
    );
    reference::fista::fista_row_change(&z2_r, &z1_r, rows, n, &mut change_r);

    let tol = tolerance::FISTA_STEP;
    let read = |t| gpu.read_f32(t).map_err(fail);
    assert_close(
        "z_a untouched by step 1",
        &read(&za_before)?,
        &z0_h,
        tolerance::EXACT,
    )?;
    assert_close("step 1 y", &read(&y1)?, &y1_r, tol)?;
    assert_close("step 1 z_new", &read(&zb)?, &z1_r, tol)?;
    assert_close("step 2 y", &read(&y)?, &y_r, tol)?;
    assert_close("step 2 z_new", &read(&za)?, &z2_r, tol)?;
    assert_close(
        "row change",
        &read(&change)?,
        &change_r,
        tolerance::fista_row_change(n),
    )
}

/// Shape checks: aliasing z buffers and wrong lengths are refused.
fn refuses_bad_shapes(gpu: &Gpu) -> Result<(), Failed> {
    let a = gpu.zeros("a", &[2, 3]).map_err(fail)?;
    let b = gpu.zeros("b", &[2, 3]).map_err(fail)?;
    let short = gpu.zeros("short", &[5]).map_err(fail)?;
    let mut enc = gpu.encoder();
    let k = &kernels::fista::fista_step;
    if k(gpu, &mut enc, &a, &b, 2, 3, 1.0, 0.1, 0.5, &a, &b).is_ok() {
        return Err("fista_step accepted z_old == z_new".into());
    }
    if k(gpu, &mut enc, &short, &a, 2, 3, 1.0, 0.1, 0.5, &b, &a).is_ok() {
        return Err("fista_step accepted a short g".into());
    }
    if kernels::fista::fista_row_change(gpu, &mut enc, &a, &b, 2, 3, &short).is_ok() {
        return Err("fista_row_change accepted a (5) output for (2, 2)".into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut v: Vec<Trial> = SHAPES
        .iter()
        .map(|&(rows, n)| {
            gpu_test(
                format!("fista::step_and_change/{rows}x{n}"),
                move |gpu, rng| case(gpu, rng, rows, n),
            )
        })
        .collect();
    v.push(gpu_test("fista::refuses_bad_shapes", |gpu, _| {
        refuses_bad_shapes(gpu)
    }));
    v
}
