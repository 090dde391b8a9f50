//! FISTA on a planted dictionary recovers the planted codes (both engines), and the GPU
//! engine's iterations follow the CPU engine's.

use std::sync::Arc;

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::eval::fista::{
    Dictionary, FistaConfig, FistaSolver, largest_eigenvalue, momentum_schedule,
};
use saeforge::gpu::Engine;
use saeforge::synth::random_directions;

use crate::common::{assert_close, cpu_test, fail, gpu_test, randn, tolerance};

/// n unit features in d dims; rows with k distinct active features, magnitudes U[lo, 1).
fn planted(
    rng: &mut ChaCha8Rng,
    n: usize,
    d: usize,
    rows: usize,
    k: usize,
    lo: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let f = random_directions(rng, n, d);
    let mut z = vec![0.0f32; rows * n];
    let mut x = vec![0.0f32; rows * d];
    for r in 0..rows {
        for i in rand::seq::index::sample(rng, n, k) {
            let c = rng.random_range(lo..1.0f32);
            z[r * n + i] = c;
            for j in 0..d {
                x[r * d + j] += c * f[i * d + j];
            }
        }
    }
    (f, x, z)
}

/// Well-conditioned planted data (96 random unit features in 64 dims, 3 active per row,
/// magnitudes U[0.1, 1)), small lambda: the support is recovered (code > 0.02) with
/// precision and recall >= 99%, and every planted value within 0.05.
fn recovers(engine: Engine, rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let (n, d, rows, k) = (96, 64, 256, 3);
    let (f, x, z_true) = planted(rng, n, d, rows, k, 0.1);
    let cfg = FistaConfig {
        lambda: 0.005,
        max_iters: 1000,
        tol: 1e-5,
        check_every: 10,
    };
    let mut s = FistaSolver::new(&engine, Dictionary::of_features(&f, n, d), cfg).map_err(fail)?;
    let (z, out) = s.solve(&x, rows).map_err(fail)?;
    let (mut tp, mut fp, mut fneg, mut worst) = (0usize, 0usize, 0usize, 0.0f32);
    for (&a, &b) in z.iter().zip(&z_true) {
        match (a > 0.02, b > 0.0) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            _ => {}
        }
        if b > 0.0 {
            worst = worst.max((a - b).abs());
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fneg).max(1) as f64;
    let mse: f64 = x
        .iter()
        .zip(&out.x_hat)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / rows as f64;
    eprintln!(
        "FISTA on the planted dictionary: precision {precision:.4}, recall {recall:.4}, worst planted value error {worst:.4}, mse {mse:.2e}, {} iterations, L {:.3}",
        out.iterations.unwrap_or(0),
        s.lipschitz()
    );
    if precision < 0.99 || recall < 0.99 || worst > 0.05 {
        return Err(format!(
            "support precision {precision:.4}, recall {recall:.4} (want >= 0.99), worst value error {worst:.4} (want <= 0.05)"
        )
        .into());
    }
    Ok(())
}

/// The same fixed number of iterations (tol 0) on both engines: codes and reconstructions
/// agree within FISTA_ENGINES, on a dictionary with non-unit atoms and an offset.
fn engines_agree(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let gpu = crate::common::gpu().map_err(fail)?;
    let (n, d, rows) = (72, 36, 100);
    let w: Vec<f32> = randn(rng, n * d, 0.3);
    let b = randn(rng, d, 0.5);
    let x = randn(rng, rows * d, 1.0);
    let cfg = FistaConfig {
        lambda: 0.05,
        max_iters: 60,
        tol: 0.0,
        check_every: 7,
    };
    let dict = Dictionary::new(&w, &b, n, d);
    let mut cpu = FistaSolver::new(&Engine::Cpu, dict.clone(), cfg).map_err(fail)?;
    let mut gpu = FistaSolver::new(&Engine::Gpu(Arc::clone(&gpu)), dict, cfg).map_err(fail)?;
    let (zc, oc) = cpu.solve(&x, rows).map_err(fail)?;
    let (zg, og) = gpu.solve(&x, rows).map_err(fail)?;
    if oc.iterations != Some(60) || og.iterations != Some(60) {
        return Err(format!(
            "iterations {:?} / {:?}, expected 60",
            oc.iterations, og.iterations
        )
        .into());
    }
    let worst = zg
        .iter()
        .zip(&zc)
        .chain(og.x_hat.iter().zip(&oc.x_hat))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("FISTA GPU vs CPU after 60 iterations: worst absolute difference {worst:.2e}");
    assert_close("FISTA codes", &zg, &zc, tolerance::FISTA_ENGINES)?;
    assert_close(
        "FISTA x_hat",
        &og.x_hat,
        &oc.x_hat,
        tolerance::FISTA_ENGINES,
    )?;
    assert_close(
        "FISTA L1 sum",
        &[og.l1_sum as f32],
        &[oc.l1_sum as f32],
        tolerance::FISTA_ENGINES,
    )?;
    // L0 counts the nonzero codes: a code within the tolerance of 0 may be exactly 0 on one
    // engine (soft threshold) and not on the other, so the counts may differ by at most the
    // number of codes that are zero on one engine only.
    let straddle = zg
        .iter()
        .zip(&zc)
        .filter(|(a, b)| (**a == 0.0) != (**b == 0.0))
        .count();
    let l0_gap = (og.l0_sum - oc.l0_sum).abs();
    if l0_gap > straddle as f64 {
        return Err(format!(
            "FISTA L0 sums: gpu {} cpu {}, more apart than the {straddle} codes zero on one engine only",
            og.l0_sum, oc.l0_sum
        )
        .into());
    }
    // x_hat is z W + b over the atoms as given.
    let mut xh = vec![0.0f32; rows * d];
    for r in 0..rows {
        for j in 0..d {
            let mut s = b[j] as f64;
            for i in 0..n {
                s += zc[r * n + i] as f64 * w[i * d + j] as f64;
            }
            xh[r * d + j] = s as f32;
        }
    }
    assert_close("x_hat = z W + b", &oc.x_hat, &xh, tolerance::FISTA_ENGINES)
}

/// Power iteration against the largest eigenvalue of a matrix with known spectrum, and the
/// momentum schedule against t_1 = 1, t_2 = (1 + sqrt 5) / 2.
fn pieces(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    // Rows: 3 * e_0, 2 * e_1, 1 * e_2, and copies of e_3 scaled 0.5: W W^T eigenvalues
    // 9, 4, 1, ...; W^T W = diag(9, 4, 1, 0.25 m).
    let d = 5;
    let mut w = vec![0.0f32; 6 * d];
    w[0] = 3.0;
    w[d + 1] = 2.0;
    w[2 * d + 2] = 1.0;
    for r in 3..6 {
        w[r * d + 3] = 0.5;
    }
    let lam = largest_eigenvalue(&w, 6, d);
    if (lam - 9.0).abs() > 1e-6 {
        return Err(format!("largest eigenvalue {lam}, expected 9").into());
    }
    // A random one against a dense symmetric power of W^T W computed here.
    let (n, d) = (50, 20);
    let w = randn(rng, n * d, 1.0);
    let mut g = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            g[i * d + j] = (0..n)
                .map(|r| w[r * d + i] as f64 * w[r * d + j] as f64)
                .sum();
        }
    }
    let mut v = vec![1.0f64; d];
    let mut est = 0.0;
    for _ in 0..5000 {
        let nv: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| g[i * d + j] * v[j]).sum())
            .collect();
        est = nv.iter().map(|a| a * a).sum::<f64>().sqrt();
        v = nv.iter().map(|a| a / est).collect();
    }
    let lam = largest_eigenvalue(&w, n, d);
    if (lam - est).abs() > 1e-6 * est {
        return Err(format!("largest eigenvalue {lam}, dense power iteration {est}").into());
    }
    let m = momentum_schedule(3);
    let t2 = (1.0 + 5f64.sqrt()) / 2.0;
    let t3 = (1.0 + (1.0 + 4.0 * t2 * t2).sqrt()) / 2.0;
    let want = [0.0, ((t2 - 1.0) / t3) as f32];
    if m[0] != want[0] || (m[1] - want[1]).abs() > 1e-7 {
        return Err(format!("momentum {m:?}, expected {want:?}...").into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("fista::recovers_planted_codes_cpu", |rng| {
            recovers(Engine::Cpu, rng)
        }),
        gpu_test("fista::recovers_planted_codes_gpu", |_, rng| {
            let gpu = crate::common::gpu().map_err(fail)?;
            recovers(Engine::Gpu(gpu), rng)
        }),
        gpu_test("fista::gpu_iterations_follow_cpu", |_, rng| {
            engines_agree(rng)
        }),
        cpu_test("fista::lipschitz_and_momentum", pieces),
    ]
}
