//! gemm_coop (the encoder GEMM on cooperative matrices, experimental): against the
//! reference GEMM of the inputs rounded to f16 (products of halves are exact in f32, so only
//! the order of the sums differs: `tolerance::gemm(k)`), and against the f32 product within
//! `tolerance::coop_f16(k)`, the documented cost of the f16 inputs. Shapes off every tile
//! (edge tiles and a partial last k step) and the production encoder (1024 x 16384 x 512).
//! It needs an adapter with 16x16 f16 cooperative matrices, opened with
//! `cooperative_matrix` on; elsewhere (lavapipe) the trials are ignored with the reason.

use std::sync::{Arc, OnceLock};

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuOptions};
use saeforge::kernels::gemm::{GemmSpec, coop};
use saeforge::reference;

use crate::common::{assert_close, fail, gpu_test_needing, randn, tolerance};

/// The test adapter opened again with cooperative matrices asked for, or why it cannot run
/// gemm_coop.
fn coop_gpu() -> Result<Arc<Gpu>, String> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    GPU.get_or_init(|| {
        let options = GpuOptions {
            checked_shaders: true,
            cooperative_matrix: true,
        };
        let g = Gpu::with_options(std::env::var("SAEFORGE_ADAPTER").ok().as_deref(), options)
            .map_err(|e| e.to_string())?;
        match &g.coop_missing {
            Some(why) => Err(why.clone()),
            None => Ok(Arc::new(g)),
        }
    })
    .clone()
}

fn lacks(_: &Gpu) -> Option<String> {
    coop_gpu().err()
}

fn half(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

fn case(rng: &mut ChaCha8Rng, (m, n, k): (usize, usize, usize)) -> Result<(), Failed> {
    let gpu = coop_gpu().map_err(fail)?;
    let gpu = &*gpu;
    let spec = GemmSpec::nn(m, n, k);
    let (a_h, b_h, bias_h) = (
        randn(rng, m * k, 1.0),
        randn(rng, k * n, 1.0),
        randn(rng, n, 1.0),
    );
    let a = gpu.upload("a", &[m, k], &a_h).map_err(fail)?;
    let b = gpu.upload("b", &[k, n], &b_h).map_err(fail)?;
    let bias = gpu.upload("bias", &[n], &bias_h).map_err(fail)?;
    let c = gpu.zeros("c", &[m, n]).map_err(fail)?;
    gpu.fill(&c, f32::NAN);
    let mut enc = gpu.encoder();
    coop::gemm_coop(gpu, &mut enc, &spec, &a, &b, Some(&bias), &c).map_err(fail)?;
    gpu.submit(enc);
    let got = gpu.read_f32(&c).map_err(fail)?;
    let mut rounded = vec![0.0; m * n];
    reference::gemm::gemm(&spec, &half(&a_h), &half(&b_h), Some(&bias_h), &mut rounded);
    let what = format!("gemm_coop {m}x{n}x{k}");
    assert_close(
        &format!("{what} (f16 inputs)"),
        &got,
        &rounded,
        tolerance::gemm(k),
    )?;
    let mut exact = vec![0.0; m * n];
    reference::gemm::gemm(&spec, &a_h, &b_h, Some(&bias_h), &mut exact);
    assert_close(
        &format!("{what} (f32 inputs)"),
        &got,
        &exact,
        tolerance::coop_f16(k),
    )
}

pub fn trials() -> Vec<Trial> {
    [(1, 1, 1), (37, 45, 23), (64, 96, 48), (1024, 16384, 512)]
        .into_iter()
        .map(|shape| {
            gpu_test_needing(
                format!("gemm_coop::{}x{}x{}", shape.0, shape.1, shape.2),
                lacks,
                move |_, rng| case(rng, shape),
            )
        })
        .collect()
}
