//! Reductions, metrics and elementwise losses against shaders/reduce.wgsl.
//!
//! Outputs are poisoned (NaN / u32::MAX) before each run; accumulating outputs (metrics,
//! fire counts, dz, dw_dec, col_sum with accumulate) start from random values so that the
//! accumulation itself is checked. The production-size case of every reduction also runs
//! twice from the same state and must give bit-identical results.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::reduce::{METRIC_SLOTS, slot};
use saeforge::{kernels, reference};

use crate::common::{
    assert_close, assert_same, fail, gpu_test, poisoned, randn, read, tolerance, uniform, up,
};

type Rng8 = ChaCha8Rng;
type R = Result<(), Failed>;

/// Production sizes: rows, d, n, k.
const ROWS: usize = 512;
const D: usize = 512;
const N: usize = 16384;
const K: usize = 32;

fn up_u32(gpu: &Gpu, name: &str, shape: &[usize], data: &[u32]) -> Result<GpuTensor, Failed> {
    gpu.upload_u32(name, shape, data).map_err(fail)
}

fn read_u32(gpu: &Gpu, t: &GpuTensor) -> Result<Vec<u32>, Failed> {
    gpu.read_u32(t).map_err(fail)
}

/// Run `record` in one encoder and submit it.
fn run(gpu: &Gpu, record: impl FnOnce(&mut wgpu::CommandEncoder) -> saeforge::Result<()>) -> R {
    let mut enc = gpu.encoder();
    record(&mut enc).map_err(fail)?;
    gpu.submit(enc);
    Ok(())
}

/// Random starting metrics (all slots, so that untouched slots are checked too).
fn random_metrics(rng: &mut Rng8) -> Vec<f32> {
    uniform(rng, METRIC_SLOTS, 0.0, 10.0)
}

/// Compare the metrics buffer slot by slot: count slots exactly, sums with METRIC_SUM,
/// untouched slots exactly.
fn check_metrics(what: &str, gpu: &[f32], cpu: &[f32], sums: &[u32]) -> R {
    for s in 0..METRIC_SLOTS {
        let tol = if sums.contains(&(s as u32)) {
            tolerance::METRIC_SUM
        } else {
            tolerance::EXACT
        };
        assert_close(
            &format!("{what} metrics[{s}]"),
            &gpu[s..s + 1],
            &cpu[s..s + 1],
            tol,
        )?;
    }
    Ok(())
}

/// Bitwise equality of two runs.
fn same_bits(what: &str, a: &[f32], b: &[f32]) -> R {
    let a: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
    let b: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
    assert_same(&format!("{what} (second run, bitwise)"), &b, &a)
}

fn random_counts(rng: &mut Rng8, n: usize, hi: u32) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..hi)).collect()
}

// ---------------------------------------------------------------- sub_row, sub

fn sub_row_case(gpu: &Gpu, rng: &mut Rng8, rows: usize, d: usize) -> R {
    let x_h = randn(rng, rows * d, 1.0);
    let b_h = randn(rng, d, 1.0);
    let x = up(gpu, "x", &[rows, d], &x_h)?;
    let b = up(gpu, "b", &[d], &b_h)?;
    let out = poisoned(gpu, "out", &[rows, d])?;
    run(gpu, |enc| {
        kernels::reduce::sub_row(gpu, enc, &x, &b, rows, d, &out)
    })?;
    let mut want = vec![0.0; rows * d];
    reference::reduce::sub_row(&x_h, &b_h, rows, d, &mut want);
    assert_close("sub_row out", &read(gpu, &out)?, &want, tolerance::EXACT)
}

fn sub_case(gpu: &Gpu, rng: &mut Rng8, len: usize) -> R {
    let a_h = randn(rng, len, 1.0);
    let b_h = randn(rng, len, 1.0);
    let a = up(gpu, "a", &[len], &a_h)?;
    let b = up(gpu, "b", &[len], &b_h)?;
    let out = poisoned(gpu, "out", &[len])?;
    run(gpu, |enc| kernels::reduce::sub(gpu, enc, &a, &b, &out))?;
    let mut want = vec![0.0; len];
    reference::reduce::sub(&a_h, &b_h, &mut want);
    assert_close("sub out", &read(gpu, &out)?, &want, tolerance::EXACT)
}

// ---------------------------------------------------------------- mse_backward

fn mse_case(gpu: &Gpu, rng: &mut Rng8, rows: usize, d: usize, sst: bool, twice: bool) -> R {
    // A non-zero column mean, so SST differs from the raw sum of squares.
    let mut t_h = randn(rng, rows * d, 1.0);
    let col_off = randn(rng, d, 2.0);
    for (i, t) in t_h.iter_mut().enumerate() {
        *t += col_off[i % d];
    }
    let p_h: Vec<f32> = t_h
        .iter()
        .zip(randn(rng, rows * d, 0.3))
        .map(|(t, e)| t + e)
        .collect();
    let m_h = random_metrics(rng);
    let scale = 2.0 / (rows * d) as f32;
    // Without SST, put the SSE into AUX as the AuxK loss does.
    let (sse_slot, sst_slot) = if sst {
        (slot::SSE, Some(slot::SST))
    } else {
        (slot::AUX, None)
    };
    let target = up(gpu, "target", &[rows, d], &t_h)?;
    let pred = up(gpu, "pred", &[rows, d], &p_h)?;
    let grad = poisoned(gpu, "grad", &[rows, d])?;
    let metrics = up(gpu, "metrics", &[METRIC_SLOTS], &m_h)?;
    let go = || -> Result<(Vec<f32>, Vec<f32>), Failed> {
        gpu.fill(&grad, f32::NAN);
        gpu.write(&metrics, &m_h).map_err(fail)?;
        run(gpu, |enc| {
            kernels::reduce::mse_backward(
                gpu, enc, &target, &pred, rows, d, scale, &grad, &metrics, sse_slot, sst_slot,
            )
        })?;
        Ok((read(gpu, &grad)?, read(gpu, &metrics)?))
    };
    let (g1, m1) = go()?;

    let mut g_ref = vec![0.0; rows * d];
    let mut m_ref = m_h.clone();
    reference::reduce::mse_backward(
        &t_h, &p_h, rows, d, scale, &mut g_ref, &mut m_ref, sse_slot, sst_slot,
    );
    assert_close("mse_backward grad", &g1, &g_ref, tolerance::EXACT)?;
    let mut sums = vec![sse_slot];
    sums.extend(sst_slot);
    check_metrics("mse_backward", &m1, &m_ref, &sums)?;
    if twice {
        let (g2, m2) = go()?;
        same_bits("mse_backward grad", &g1, &g2)?;
        same_bits("mse_backward metrics", &m1, &m2)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- sum_sq_centred

fn sum_sq_case(gpu: &Gpu, rng: &mut Rng8, rows: usize, d: usize, twice: bool) -> R {
    // A non-zero column mean, so the centred sum differs from the raw sum of squares.
    let mut t_h = randn(rng, rows * d, 1.0);
    let col_off = randn(rng, d, 2.0);
    for (i, t) in t_h.iter_mut().enumerate() {
        *t += col_off[i % d];
    }
    let m_h = random_metrics(rng);
    let target = up(gpu, "target", &[rows, d], &t_h)?;
    let metrics = up(gpu, "metrics", &[METRIC_SLOTS], &m_h)?;
    let go = || -> Result<Vec<f32>, Failed> {
        gpu.write(&metrics, &m_h).map_err(fail)?;
        run(gpu, |enc| {
            kernels::reduce::sum_sq_centred(gpu, enc, &target, rows, d, &metrics, slot::SST)
        })?;
        read(gpu, &metrics)
    };
    let m1 = go()?;
    let mut m_ref = m_h.clone();
    reference::reduce::sum_sq_centred(&t_h, rows, d, &mut m_ref, slot::SST);
    check_metrics("sum_sq_centred", &m1, &m_ref, &[slot::SST])?;
    if twice {
        same_bits("sum_sq_centred metrics", &m1, &go()?)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- row_norms

fn row_norms_case(gpu: &Gpu, rng: &mut Rng8, n: usize, d: usize, twice: bool) -> R {
    let w_h = randn(rng, n * d, 0.1);
    let w = up(gpu, "w", &[n, d], &w_h)?;
    let norms = poisoned(gpu, "norms", &[n])?;
    let go = || -> Result<Vec<f32>, Failed> {
        gpu.fill(&norms, f32::NAN);
        run(gpu, |enc| {
            kernels::reduce::row_norms(gpu, enc, &w, n, d, &norms)
        })?;
        read(gpu, &norms)
    };
    let n1 = go()?;
    let mut want = vec![0.0; n];
    reference::reduce::row_norms(&w_h, n, d, &mut want);
    assert_close("row_norms norms", &n1, &want, tolerance::ROW_NORM)?;
    if twice {
        same_bits("row_norms norms", &n1, &go()?)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- sparse_stats, dense_stats

/// CSR codes with up to k entries per row (distinct latents, some values <= 0), plus
/// garbage slots past nnz (valid indices, positive values) that must be ignored. With
/// `bad_idx`, a few slots inside nnz carry idx >= n (ignored by both engines).
fn csr(
    rng: &mut Rng8,
    rows: usize,
    n: usize,
    k: usize,
    bad_idx: bool,
) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let mut row_ptr = vec![0u32];
    let mut idx = Vec::new();
    let mut val = Vec::new();
    for _ in 0..rows {
        let len = rng.random_range(0..=k.min(n));
        let mut chosen: Vec<u32> = Vec::with_capacity(len);
        while chosen.len() < len {
            let i = rng.random_range(0..n as u32);
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        for i in chosen {
            let v: f32 = match rng.random_range(0..10) {
                0 => 0.0,
                1 => -rng.random_range(0.0..1.0f32),
                _ => rng.random_range(0.01..3.0f32),
            };
            let i = if bad_idx && rng.random_range(0..50) == 0 {
                n as u32 + rng.random_range(0..3)
            } else {
                i
            };
            idx.push(i);
            val.push(v);
        }
        row_ptr.push(idx.len() as u32);
    }
    for _ in 0..rows + 5 {
        idx.push(rng.random_range(0..n as u32));
        val.push(rng.random_range(0.5..2.0f32));
    }
    (row_ptr, idx, val)
}

fn sparse_stats_case(gpu: &Gpu, rng: &mut Rng8, rows: usize, n: usize, k: usize, prod: bool) -> R {
    let (rp_h, idx_h, val_h) = csr(rng, rows, n, k, !prod);
    let cap = idx_h.len();
    let norms_h = uniform(rng, n, 0.1, 2.0);
    let fired_h = random_counts(rng, n, 1000);
    let m_h = random_metrics(rng);
    let row_ptr = up_u32(gpu, "row_ptr", &[rows + 1], &rp_h)?;
    let idx = up_u32(gpu, "idx", &[cap], &idx_h)?;
    let val = up(gpu, "val", &[cap], &val_h)?;
    let norms = up(gpu, "norms", &[n], &norms_h)?;
    let fired = up_u32(gpu, "fired", &[n], &fired_h)?;
    let metrics = up(gpu, "metrics", &[METRIC_SLOTS], &m_h)?;
    let go = || -> Result<(Vec<u32>, Vec<f32>), Failed> {
        gpu.write(&fired, &fired_h).map_err(fail)?;
        gpu.write(&metrics, &m_h).map_err(fail)?;
        run(gpu, |enc| {
            kernels::reduce::sparse_stats(
                gpu, enc, &row_ptr, &idx, &val, rows, n, &norms, &fired, &metrics,
            )
        })?;
        Ok((read_u32(gpu, &fired)?, read(gpu, &metrics)?))
    };
    let (f1, m1) = go()?;
    let mut f_ref = fired_h.clone();
    let mut m_ref = m_h.clone();
    reference::reduce::sparse_stats(
        &rp_h, &idx_h, &val_h, rows, n, &norms_h, &mut f_ref, &mut m_ref,
    );
    assert_same("sparse_stats fired", &f1, &f_ref)?;
    check_metrics("sparse_stats", &m1, &m_ref, &[slot::L1])?;
    if prod {
        let (f2, m2) = go()?;
        assert_same("sparse_stats fired (second run)", &f2, &f1)?;
        same_bits("sparse_stats metrics", &m1, &m2)?;
    }
    Ok(())
}

fn dense_stats_case(gpu: &Gpu, rng: &mut Rng8, rows: usize, n: usize, prod: bool) -> R {
    // relu of a shifted normal: about 30% active, some exact zeros.
    let z_h: Vec<f32> = randn(rng, rows * n, 1.0)
        .into_iter()
        .map(|v| (v - 0.5).max(0.0))
        .collect();
    let norms_h = uniform(rng, n, 0.1, 2.0);
    let fired_h = random_counts(rng, n, 1000);
    let m_h = random_metrics(rng);
    let z = up(gpu, "z", &[rows, n], &z_h)?;
    let norms = up(gpu, "norms", &[n], &norms_h)?;
    let fired = up_u32(gpu, "fired", &[n], &fired_h)?;
    let metrics = up(gpu, "metrics", &[METRIC_SLOTS], &m_h)?;
    let go = || -> Result<(Vec<u32>, Vec<f32>), Failed> {
        gpu.write(&fired, &fired_h).map_err(fail)?;
        gpu.write(&metrics, &m_h).map_err(fail)?;
        run(gpu, |enc| {
            kernels::reduce::dense_stats(gpu, enc, &z, rows, n, &norms, &fired, &metrics)
        })?;
        Ok((read_u32(gpu, &fired)?, read(gpu, &metrics)?))
    };
    let (f1, m1) = go()?;
    let mut f_ref = fired_h.clone();
    let mut m_ref = m_h.clone();
    reference::reduce::dense_stats(&z_h, rows, n, &norms_h, &mut f_ref, &mut m_ref);
    assert_same("dense_stats fired", &f1, &f_ref)?;
    check_metrics("dense_stats", &m1, &m_ref, &[slot::L1])?;
    if prod {
        let (f2, m2) = go()?;
        assert_same("dense_stats fired (second run)", &f2, &f1)?;
        same_bits("dense_stats metrics", &m1, &m2)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- col_sum

fn col_sum_case(gpu: &Gpu, rng: &mut Rng8, rows: usize, cols: usize, twice: bool) -> R {
    let a_h = randn(rng, rows * cols, 1.0);
    let init = randn(rng, cols, 1.0);
    let a = up(gpu, "a", &[rows, cols], &a_h)?;
    let out = poisoned(gpu, "out", &[cols])?;
    for accumulate in [false, true] {
        let go = || -> Result<Vec<f32>, Failed> {
            if accumulate {
                gpu.write(&out, &init).map_err(fail)?;
            } else {
                gpu.fill(&out, f32::NAN);
            }
            run(gpu, |enc| {
                kernels::reduce::col_sum(gpu, enc, &a, rows, cols, &out, accumulate)
            })?;
            read(gpu, &out)
        };
        let o1 = go()?;
        let mut want = init.clone();
        reference::reduce::col_sum(&a_h, rows, cols, &mut want, accumulate);
        let what = format!("col_sum out (accumulate {accumulate})");
        assert_close(&what, &o1, &want, tolerance::EXACT)?;
        if twice {
            same_bits(&what, &o1, &go()?)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- update_dead, dead_mask

fn update_dead_case(gpu: &Gpu, rng: &mut Rng8, n: usize, rows: usize, twice: bool) -> R {
    let dead_after = 4 * rows as u32 + 7;
    let fired_h: Vec<u32> = (0..n)
        .map(|_| {
            if rng.random_range(0..2) == 0 {
                0
            } else {
                rng.random_range(1..100)
            }
        })
        .collect();
    // since: fresh, around the threshold, and near saturation.
    let since_h: Vec<u32> = (0..n)
        .map(|_| match rng.random_range(0..4) {
            0 => 0,
            1 => rng.random_range(dead_after - 2 * rows as u32..dead_after + 2),
            2 => u32::MAX - rng.random_range(0..2 * rows as u32),
            _ => rng.random_range(0..3 * dead_after),
        })
        .collect();
    let total_h: Vec<u32> = (0..n)
        .map(|_| {
            if rng.random_range(0..8) == 0 {
                u32::MAX - rng.random_range(0..50)
            } else {
                rng.random_range(0..1_000_000)
            }
        })
        .collect();
    let m_h = random_metrics(rng);
    let fired = up_u32(gpu, "fired", &[n], &fired_h)?;
    let since = up_u32(gpu, "since", &[n], &since_h)?;
    let total = up_u32(gpu, "total", &[n], &total_h)?;
    let metrics = up(gpu, "metrics", &[METRIC_SLOTS], &m_h)?;
    let go = || -> Result<[Vec<u32>; 4], Failed> {
        gpu.write(&fired, &fired_h).map_err(fail)?;
        gpu.write(&since, &since_h).map_err(fail)?;
        gpu.write(&total, &total_h).map_err(fail)?;
        gpu.write(&metrics, &m_h).map_err(fail)?;
        run(gpu, |enc| {
            kernels::reduce::update_dead(
                gpu, enc, &fired, &since, &total, rows, dead_after, &metrics,
            )
        })?;
        let m = read(gpu, &metrics)?.iter().map(|x| x.to_bits()).collect();
        Ok([
            read_u32(gpu, &fired)?,
            read_u32(gpu, &since)?,
            read_u32(gpu, &total)?,
            m,
        ])
    };
    let got = go()?;
    let (mut f_ref, mut s_ref, mut t_ref, mut m_ref) = (
        fired_h.clone(),
        since_h.clone(),
        total_h.clone(),
        m_h.clone(),
    );
    reference::reduce::update_dead(
        &mut f_ref, &mut s_ref, &mut t_ref, rows, dead_after, &mut m_ref,
    );
    assert_same("update_dead fired", &got[0], &f_ref)?;
    assert_same("update_dead since", &got[1], &s_ref)?;
    assert_same("update_dead total", &got[2], &t_ref)?;
    let m1: Vec<f32> = got[3].iter().map(|&b| f32::from_bits(b)).collect();
    check_metrics("update_dead", &m1, &m_ref, &[])?;
    if twice {
        let again = go()?;
        for (what, (a, b)) in ["fired", "since", "total", "metrics"]
            .iter()
            .zip(got.iter().zip(&again))
        {
            assert_same(&format!("update_dead {what} (second run)"), b, a)?;
        }
    }
    Ok(())
}

fn dead_mask_case(gpu: &Gpu, rng: &mut Rng8, n: usize) -> R {
    let dead_after = 5000u32;
    let since_h: Vec<u32> = (0..n)
        .map(|_| match rng.random_range(0..4) {
            0 => dead_after,
            1 => dead_after - 1,
            2 => u32::MAX,
            _ => rng.random_range(0..2 * dead_after),
        })
        .collect();
    let since = up_u32(gpu, "since", &[n], &since_h)?;
    let mask = up_u32(gpu, "mask", &[n], &vec![u32::MAX; n])?;
    run(gpu, |enc| {
        kernels::reduce::dead_mask(gpu, enc, &since, dead_after, &mask)
    })?;
    let mut want = vec![0u32; n];
    reference::reduce::dead_mask(&since_h, dead_after, &mut want);
    assert_same("dead_mask mask", &read_u32(gpu, &mask)?, &want)
}

// ---------------------------------------------------------------- l1_backward, l1_decoder_grad

fn l1_backward_case(gpu: &Gpu, rng: &mut Rng8, rows: usize, n: usize) -> R {
    let z_h: Vec<f32> = randn(rng, rows * n, 1.0)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let norms_h = uniform(rng, n, 0.1, 2.0);
    let dz_h = randn(rng, rows * n, 1.0);
    let scale = 0.37;
    let z = up(gpu, "z", &[rows, n], &z_h)?;
    let norms = up(gpu, "norms", &[n], &norms_h)?;
    let dz = up(gpu, "dz", &[rows, n], &dz_h)?;
    run(gpu, |enc| {
        kernels::reduce::l1_backward(gpu, enc, &z, rows, n, &norms, scale, &dz)
    })?;
    let mut want = dz_h.clone();
    reference::reduce::l1_backward(&z_h, rows, n, &norms_h, scale, &mut want);
    assert_close(
        "l1_backward dz",
        &read(gpu, &dz)?,
        &want,
        tolerance::ELEMENTWISE_MULADD,
    )
}

fn l1_decoder_grad_case(gpu: &Gpu, rng: &mut Rng8, n: usize, d: usize) -> R {
    let zsum_h = uniform(rng, n, 0.0, 2.0);
    let w_h = randn(rng, n * d, 1.0);
    // Some rows with a zero norm, which must be skipped.
    let norms_h: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random_range(0..10) == 0 {
                0.0
            } else {
                rng.random_range(0.5..2.0)
            }
        })
        .collect();
    let dw_h = randn(rng, n * d, 1.0);
    let scale = 0.37;
    let zsum = up(gpu, "zsum", &[n], &zsum_h)?;
    let w = up(gpu, "w_dec", &[n, d], &w_h)?;
    let norms = up(gpu, "norms", &[n], &norms_h)?;
    let dw = up(gpu, "dw_dec", &[n, d], &dw_h)?;
    run(gpu, |enc| {
        kernels::reduce::l1_decoder_grad(gpu, enc, &zsum, &w, &norms, n, d, scale, &dw)
    })?;
    let mut want = dw_h.clone();
    reference::reduce::l1_decoder_grad(&zsum_h, &w_h, &norms_h, n, d, scale, &mut want);
    assert_close(
        "l1_decoder_grad dw_dec",
        &read(gpu, &dw)?,
        &want,
        tolerance::ELEMENTWISE_MULADD,
    )
}

// ---------------------------------------------------------------- trials

/// (rows, d) shapes: odd, not multiples of the 256-wide workgroup or the 32-row block.
const ROWS_D: &[(usize, usize)] = &[(1, 1), (3, 45), (37, 130)];
/// (rows, n) shapes.
const ROWS_N: &[(usize, usize)] = &[(1, 1), (3, 257), (37, 1000)];

fn t(name: String, body: impl FnOnce(&Gpu, &mut Rng8) -> R + Send + 'static) -> Trial {
    gpu_test(name, body)
}

pub fn trials() -> Vec<Trial> {
    let mut v = Vec::new();
    for &(rows, d) in ROWS_D.iter().chain(&[(ROWS, D)]) {
        v.push(t(format!("reduce::sub_row/{rows}x{d}"), move |g, r| {
            sub_row_case(g, r, rows, d)
        }));
        // rows * d + 1: the scalar entry point (or vec4 by chance); rows * d * 4: vec4.
        for len in [rows * d + 1, rows * d * 4] {
            v.push(t(format!("reduce::sub/{len}"), move |g, r| {
                sub_case(g, r, len)
            }));
        }
        let prod = rows == ROWS;
        for sst in [false, true] {
            let tag = if sst { "sse+sst" } else { "sse" };
            v.push(t(
                format!("reduce::mse_backward/{rows}x{d}/{tag}"),
                move |g, r| mse_case(g, r, rows, d, sst, prod),
            ));
        }
        v.push(t(
            format!("reduce::sum_sq_centred/{rows}x{d}"),
            move |g, r| sum_sq_case(g, r, rows, d, prod),
        ));
        v.push(t(format!("reduce::col_sum/{rows}x{d}"), move |g, r| {
            col_sum_case(g, r, rows, d, prod)
        }));
    }
    // row_norms and l1_decoder_grad work on W_dec: (n, d); vec4 path when d % 4 == 0.
    for &(n, d) in &[(1, 1), (3, 45), (37, 132), (1000, 130), (N, D)] {
        let prod = n == N;
        v.push(t(format!("reduce::row_norms/{n}x{d}"), move |g, r| {
            row_norms_case(g, r, n, d, prod)
        }));
        v.push(t(
            format!("reduce::l1_decoder_grad/{n}x{d}"),
            move |g, r| l1_decoder_grad_case(g, r, n, d),
        ));
    }
    for &(rows, n) in ROWS_N.iter().chain(&[(ROWS, N)]) {
        let prod = n == N;
        let k = if prod { K } else { 45 };
        v.push(t(
            format!("reduce::sparse_stats/{rows}x{n}/k{k}"),
            move |g, r| sparse_stats_case(g, r, rows, n, k, prod),
        ));
        v.push(t(format!("reduce::dense_stats/{rows}x{n}"), move |g, r| {
            dense_stats_case(g, r, rows, n, prod)
        }));
        v.push(t(format!("reduce::l1_backward/{rows}x{n}"), move |g, r| {
            l1_backward_case(g, r, rows, n)
        }));
        if prod {
            v.push(t(format!("reduce::col_sum/{rows}x{n}"), move |g, r| {
                col_sum_case(g, r, rows, n, true)
            }));
        }
    }
    // col_sum's vec4 path (cols % 4 == 0) at odd row counts.
    for &(rows, cols) in &[(3, 4), (37, 1000)] {
        v.push(t(format!("reduce::col_sum/{rows}x{cols}"), move |g, r| {
            col_sum_case(g, r, rows, cols, false)
        }));
    }
    for &(n, rows) in &[(1, 1), (1000, 37), (N, ROWS)] {
        v.push(t(
            format!("reduce::update_dead/{n}/rows{rows}"),
            move |g, r| update_dead_case(g, r, n, rows, n == N),
        ));
        v.push(t(format!("reduce::dead_mask/{n}"), move |g, r| {
            dead_mask_case(g, r, n)
        }));
    }
    v
}
