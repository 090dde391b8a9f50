//! rescale_view and rescale_grads (shaders/rescale.wgsl, `--decoder-norm rescale`) against
//! their twins in reference::optim, on decoder rows of spread norms (and one zero row, the
//! 1e-8 floor), outputs poisoned.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::Gpu;
use saeforge::kernels::rescale as k;
use saeforge::reference::optim as r;

use crate::common::{assert_close, fail, gpu_test, poisoned, randn, read, tolerance, up};

/// (n, d): odd shapes, one past a workgroup, and a production-like one.
const SHAPES: &[(usize, usize)] = &[(1, 1), (7, 3), (300, 36), (513, 64), (4096, 512)];

fn case(gpu: &Gpu, rng: &mut ChaCha8Rng, n: usize, d: usize) -> Result<(), Failed> {
    let w_enc_h = randn(rng, d * n, 0.3);
    let b_enc_h = randn(rng, n, 0.1);
    // Rows of norm 0.05 .. 3; the last row zero when there are several.
    let mut w_dec_h = randn(rng, n * d, 1.0 / (d as f32).sqrt());
    for i in 0..n {
        let s = if n > 1 && i == n - 1 {
            0.0
        } else {
            rng.random_range(0.05f32..3.0)
        };
        w_dec_h[i * d..(i + 1) * d].iter_mut().for_each(|x| *x *= s);
    }
    let (w_enc, b_enc) = (
        up(gpu, "w_enc", &[d, n], &w_enc_h)?,
        up(gpu, "b_enc", &[n], &b_enc_h)?,
    );
    let w_dec = up(gpu, "w_dec", &[n, d], &w_dec_h)?;
    let w_enc_e = poisoned(gpu, "w_enc_e", &[d, n])?;
    let b_enc_e = poisoned(gpu, "b_enc_e", &[n])?;
    let u = poisoned(gpu, "u", &[n, d])?;
    let norms = poisoned(gpu, "norms", &[n])?;
    let mut enc = gpu.encoder();
    #[rustfmt::skip]
    k::rescale_view(gpu, &mut enc, &w_enc, &b_enc, &w_dec, n, d, &w_enc_e, &b_enc_e, &u, &norms).map_err(fail)?;
    gpu.submit(enc);
    let mut c = (
        vec![0.0f32; d * n],
        vec![0.0f32; n],
        vec![0.0f32; n * d],
        vec![0.0f32; n],
    );
    #[rustfmt::skip]
    r::rescale_view(&w_enc_h, &b_enc_h, &w_dec_h, n, d, &mut c.0, &mut c.1, &mut c.2, &mut c.3);
    let t = tolerance::RESCALE;
    assert_close("rescale_view norms", &read(gpu, &norms)?, &c.3, t)?;
    assert_close("rescale_view u", &read(gpu, &u)?, &c.2, t)?;
    assert_close("rescale_view b_enc_e", &read(gpu, &b_enc_e)?, &c.1, t)?;
    assert_close("rescale_view w_enc_e", &read(gpu, &w_enc_e)?, &c.0, t)?;

    // The gradients of the view, mapped back, from the CPU's view (the kernels' own inputs).
    let (u_h, norms_h) = (c.2, c.3);
    let mut g = (
        randn(rng, d * n, 1.0),
        randn(rng, n, 1.0),
        randn(rng, n * d, 1.0),
    );
    let u = up(gpu, "u", &[n, d], &u_h)?;
    let norms = up(gpu, "norms", &[n], &norms_h)?;
    let g_enc = up(gpu, "g_enc", &[d, n], &g.0)?;
    let g_benc = up(gpu, "g_benc", &[n], &g.1)?;
    let g_dec = up(gpu, "g_dec", &[n, d], &g.2)?;
    let mut enc = gpu.encoder();
    #[rustfmt::skip]
    k::rescale_grads(gpu, &mut enc, &w_enc, &b_enc, &u, &norms, n, d, &g_enc, &g_benc, &g_dec).map_err(fail)?;
    gpu.submit(enc);
    #[rustfmt::skip]
    r::rescale_grads(&w_enc_h, &b_enc_h, &u_h, &norms_h, n, d, &mut g.0, &mut g.1, &mut g.2);
    assert_close("rescale_grads g_enc", &read(gpu, &g_enc)?, &g.0, t)?;
    assert_close("rescale_grads g_benc", &read(gpu, &g_benc)?, &g.1, t)?;
    assert_close(
        "rescale_grads g_dec",
        &read(gpu, &g_dec)?,
        &g.2,
        tolerance::RESCALE_GRAD_DEC,
    )
}

pub fn trials() -> Vec<Trial> {
    SHAPES
        .iter()
        .map(|&(n, d)| {
            gpu_test(
                format!("rescale::view_and_grads/{n}x{d}"),
                move |gpu, rng| case(gpu, rng, n, d),
            )
        })
        .collect()
}
