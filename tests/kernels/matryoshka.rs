//! Matryoshka's level-aware kernels (shaders/matryoshka.wgsl) against their CPU twins in
//! `reference::matryoshka`, on uneven CSR codes (latents ascending within a row, empty rows,
//! nnz < cap with poison past nnz), widths of 1 to 4 levels, and gather_dw_dec_levels both
//! writing and accumulating.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::matryoshka as km;
use saeforge::reference::matryoshka as rm;
use saeforge::reference::sparse as rs;

use crate::common::{assert_close, fail, gpu_test, randn, tolerance};

fn case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    (rows, n, d, widths): (usize, usize, usize, &'static [u32]),
) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let levels = widths.len();
    // A CSR code: 0..12 distinct latents per row, ascending; 5 poisoned slots past nnz.
    let mut row_ptr = vec![0u32];
    let mut idx = Vec::new();
    for _ in 0..rows {
        let k = rng.random_range(0..13usize).min(n);
        let mut row: Vec<u32> = (0..n as u32).collect();
        row.shuffle(rng);
        row.truncate(k);
        row.sort();
        idx.extend(row);
        row_ptr.push(idx.len() as u32);
    }
    let nnz = idx.len();
    let cap = nnz + 5;
    idx.extend([u32::MAX; 5]);
    let mut val: Vec<f32> = randn(rng, cap, 1.0).iter().map(|v| v.abs()).collect();
    val[nnz..].fill(f32::NAN);
    let w_dec = randn(rng, n * d, 1.0 / (d as f32).sqrt());
    let b_dec = randn(rng, d, 1.0);
    let y = randn(rng, rows * d, 1.0);
    let len = levels * rows * d;

    let up = |w: &str, v: &[f32]| gpu.upload(w, &[v.len()], v).map_err(m);
    let upu = |w: &str, v: &[u32]| gpu.upload_u32(w, &[v.len()], v).map_err(m);
    let (rp_d, idx_d, val_d) = (
        upu("row_ptr", &row_ptr)?,
        upu("idx", &idx)?,
        up("val", &val)?,
    );
    let w_d = gpu.upload("w_dec", &[n, d], &w_dec).map_err(m)?;
    let (b_d, wid_d) = (up("b_dec", &b_dec)?, upu("widths", widths)?);
    let y_d = gpu.upload("y", &[rows, d], &y).map_err(m)?;
    let poison = |w: &str, l: usize| up(w, &vec![f32::NAN; l]);
    let (xl_d, dy_d, g_d) = (poison("x_hat", len)?, poison("dy", len)?, poison("g", cap)?);

    // The twins.
    let mut xl = vec![0.0f32; len];
    rm::matryoshka_decode(
        &row_ptr, &idx, &val, &w_dec, &b_dec, widths, rows, n, d, &mut xl,
    );
    let mut dy = vec![0.0f32; len];
    let mut metrics = vec![0.0f32; saeforge::reference::reduce::METRIC_SLOTS];
    rm::matryoshka_residuals(&y, &xl, levels, rows, d, 0.25, &mut dy, &mut metrics);
    let mut g = vec![0.0f32; cap];
    rm::sparse_dot_levels(&row_ptr, &idx, &dy, &w_dec, widths, rows, n, d, &mut g);
    let (mut lp, mut lr, mut ls) = (vec![0u32; n + 1], vec![0u32; cap], vec![0u32; cap]);
    rs::build_transpose(&row_ptr, &idx, rows, n, &mut lp, &mut lr, &mut ls);
    let before = randn(rng, n * d, 1.0);
    let mut dw = before.clone();
    rm::gather_dw_dec_levels(&lp, &lr, &ls, &val, &dy, widths, rows, n, d, false, &mut dw);
    let mut dw_acc = before.clone();
    rm::gather_dw_dec_levels(
        &lp,
        &lr,
        &ls,
        &val,
        &dy,
        widths,
        rows,
        n,
        d,
        true,
        &mut dw_acc,
    );

    // The device, each stage on the twin's inputs.
    let (lp_d, lr_d, ls_d) = (
        upu("lat_ptr", &lp)?,
        upu("lat_row", &lr)?,
        upu("lat_slot", &ls)?,
    );
    let dy_in = gpu.upload("dy twin", &[len], &dy).map_err(m)?;
    let xl_in = gpu.upload("x_hat twin", &[len], &xl).map_err(m)?;
    let dw_d = poison("dw_dec", n * d)?;
    let dw_acc_d = gpu.upload("dw_dec acc", &[n, d], &before).map_err(m)?;
    let mut enc = gpu.encoder();
    #[rustfmt::skip]
    km::matryoshka_decode(gpu, &mut enc, &rp_d, &idx_d, &val_d, &w_d, &b_d, &wid_d, rows, n, d, &xl_d).map_err(m)?;
    km::matryoshka_residuals(gpu, &mut enc, &y_d, &xl_in, &wid_d, rows, d, 0.25, &dy_d)
        .map_err(m)?;
    #[rustfmt::skip]
    km::sparse_dot_levels(gpu, &mut enc, &rp_d, &idx_d, &dy_in, &w_d, &wid_d, rows, n, d, &g_d).map_err(m)?;
    for (out, acc) in [(&dw_d, false), (&dw_acc_d, true)] {
        let lat = (&lp_d, &lr_d, &ls_d);
        #[rustfmt::skip]
        km::gather_dw_dec_levels(gpu, &mut enc, lat, &val_d, &dy_in, &wid_d, (rows, n, d), acc, out).map_err(m)?;
    }
    gpu.submit(enc);
    let r = |t: &GpuTensor| gpu.read_f32(t).map_err(m);
    assert_close(
        "matryoshka_decode",
        &r(&xl_d)?,
        &xl,
        tolerance::SPARSE_DECODE,
    )?;
    assert_close(
        "matryoshka_residuals",
        &r(&dy_d)?,
        &dy,
        tolerance::ELEMENTWISE_MULADD,
    )?;
    assert_close("sparse_dot_levels", &r(&g_d)?, &g, tolerance::SPARSE_DOT)?;
    assert_close(
        "gather_dw_dec_levels",
        &r(&dw_d)?,
        &dw,
        tolerance::SPARSE_GATHER,
    )?;
    assert_close(
        "gather_dw_dec_levels accumulate",
        &r(&dw_acc_d)?,
        &dw_acc,
        tolerance::SPARSE_GATHER,
    )
}

pub fn trials() -> Vec<Trial> {
    #[rustfmt::skip]
    let cases: [(usize, usize, usize, &'static [u32]); 4] = [
        (17, 64, 24, &[5, 20, 64]),
        (33, 100, 40, &[100]),
        (9, 300, 16, &[1, 2, 150, 300]),
        (64, 512, 64, &[64, 256, 512]),
    ];
    cases
        .into_iter()
        .map(|c| {
            gpu_test(
                format!("matryoshka::levels/{}x{}x{}/{:?}", c.0, c.1, c.2, c.3),
                move |gpu, rng| case(gpu, rng, c),
            )
        })
        .collect()
}
