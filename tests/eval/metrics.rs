//! `eval::run::evaluate` with the SAE's encoder on both engines against every metric
//! computed independently here, in f64, from the definitions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::eval::metrics::ReconMetrics;
use saeforge::eval::run::evaluate;
use saeforge::eval::source::HeldOut;
use saeforge::gpu::Engine;
use saeforge::io::{OutTensor, write_safetensors};
use saeforge::sae::export::{SaeKind, SaeModel};
use saeforge::sae::infer::Encoder;

use crate::common::{Tol, assert_close, assert_same, cpu_test, fail, gpu_test, randn, tolerance};

pub fn tmp(name: &str) -> PathBuf {
    crate::common::tmp_dir("eval", name)
}

const D: usize = 24;
const N: usize = 40;
const K: usize = 4;
/// Latent 0 never fires (b_enc -100); latent 1 fires on most rows (b_enc +3).
const DEAD: usize = 0;
const DENSE: usize = 1;
/// Decisions (ReLU at 0, JumpReLU at theta, TopK between the k-th and (k+1)-th value) are
/// kept at least this far from their boundary, so f32 and f64 take the same ones.
const MARGIN: f64 = 1e-3;

fn model(rng: &mut ChaCha8Rng, kind: SaeKind) -> SaeModel {
    let mut b_enc = randn(rng, N, 0.1);
    b_enc[DEAD] = -100.0;
    b_enc[DENSE] = 3.0;
    SaeModel {
        kind,
        d: D,
        n: N,
        w_enc: randn(rng, D * N, 1.0 / (D as f32).sqrt()),
        b_enc,
        w_dec: randn(rng, N * D, 0.5 / (K as f32).sqrt()),
        b_dec: randn(rng, D, 0.2),
        threshold: if kind == SaeKind::Jumprelu {
            (0..N).map(|_| rng.random_range(0.05..0.5f32)).collect()
        } else {
            Vec::new()
        },
        skip: None,
        d_out: None,
    }
}

/// Pre-activations of one row in f64.
#[allow(clippy::needless_range_loop)] // the formula as written
fn pre(m: &SaeModel, x: &[f32]) -> Vec<f64> {
    (0..m.n)
        .map(|j| {
            let mut s = m.b_enc[j] as f64;
            for i in 0..m.d {
                s += (x[i] as f64 - m.b_dec[i] as f64) * m.w_enc[i * m.n + j] as f64;
            }
            s
        })
        .collect()
}

/// The code of one row in f64 (None when a decision is within MARGIN of its boundary).
fn code(m: &SaeModel, x: &[f32]) -> Option<Vec<f64>> {
    let p = pre(m, x);
    let near = |a: f64, b: f64| (a - b).abs() < MARGIN;
    match m.kind {
        SaeKind::Standard => {
            if p.iter().any(|&v| near(v, 0.0)) {
                return None;
            }
            Some(p.iter().map(|&v| v.max(0.0)).collect())
        }
        SaeKind::Jumprelu => {
            if p.iter()
                .zip(&m.threshold)
                .any(|(&v, &t)| near(v, t as f64) || near(v, 0.0))
            {
                return None;
            }
            Some(
                p.iter()
                    .zip(&m.threshold)
                    .map(|(&v, &t)| if v > t as f64 { v } else { 0.0 })
                    .collect(),
            )
        }
        SaeKind::Topk { k } => {
            let mut order: Vec<usize> = (0..m.n).collect();
            order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap());
            if near(p[order[k - 1]], p[order[k]]) || p.iter().any(|&v| near(v, 0.0)) {
                return None;
            }
            let mut z = vec![0.0; m.n];
            for &j in &order[..k] {
                z[j] = p[j].max(0.0);
            }
            Some(z)
        }
    }
}

/// Rows ~ N(0.3, 1) per coordinate (a non-zero mean, so that NMSE and 1 - EV differ),
/// drawing again any row with a decision near its boundary.
fn data(rng: &mut ChaCha8Rng, m: &SaeModel, rows: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * D);
    while x.len() < rows * D {
        let r: Vec<f32> = randn(rng, D, 1.0).iter().map(|v| v + 0.3).collect();
        if code(m, &r).is_some() {
            x.extend(r);
        }
    }
    x
}

/// Every metric from its definition, in f64; and the condition number of the relative bias
/// sum(|x_i x_hat_i|) / |sum(x_i x_hat_i)| over every row and coordinate: the denominator
/// sum(<x, x_hat>) cancels when x_hat is nearly orthogonal to x (an untrained SAE), so its
/// f32 rounding errors grow by that factor relative to the result.
#[allow(clippy::needless_range_loop)] // the formulas as written
fn expected(m: &SaeModel, x: &[f32]) -> (ReconMetrics, f64) {
    let rows = x.len() / D;
    let (mut sse, mut sxx, mut shh, mut sxh, mut cos, mut shrink) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let mut sxh_abs = 0.0;
    let (mut l0, mut l1) = (0.0, 0.0);
    let mut mean = [0.0f64; D];
    let mut fired = vec![0u64; N];
    for r in x.chunks_exact(D) {
        for (mu, &v) in mean.iter_mut().zip(r) {
            *mu += v as f64 / rows as f64;
        }
    }
    let mut sst = 0.0;
    for r in x.chunks_exact(D) {
        let z = code(m, r).expect("data() keeps rows away from boundaries");
        let mut h: Vec<f64> = m.b_dec.iter().map(|&b| b as f64).collect();
        for (j, &zj) in z.iter().enumerate() {
            if zj > 0.0 {
                l0 += 1.0;
                l1 += zj;
                fired[j] += 1;
                for i in 0..D {
                    h[i] += zj * m.w_dec[j * D + i] as f64;
                }
            }
        }
        let (mut xx, mut hh, mut xh) = (0.0, 0.0, 0.0);
        for i in 0..D {
            let a = r[i] as f64;
            sse += (a - h[i]).powi(2);
            sst += (a - mean[i]).powi(2);
            xx += a * a;
            hh += h[i] * h[i];
            xh += a * h[i];
            sxh_abs += (a * h[i]).abs();
        }
        sxx += xx;
        shh += hh;
        sxh += xh;
        cos += xh / (xx * hh).sqrt();
        shrink += (hh / xx).sqrt();
    }
    let n = rows as f64;
    let dead = fired.iter().filter(|&&c| c == 0).count();
    let dense = fired.iter().filter(|&&c| c as f64 > 0.1 * n).count();
    let metrics = ReconMetrics {
        rows: rows as u64,
        mse: sse / n,
        nmse: sse / sxx,
        explained_variance: 1.0 - sse / sst,
        cosine: cos / n,
        l0: l0 / n,
        l1: l1 / n,
        relative_reconstruction_bias: shh / sxh,
        shrinkage: shrink / n,
        dead_fraction: dead as f64 / N as f64,
        dense_fraction: dense as f64 / N as f64,
        dead,
        dense,
        n_latents: N,
        iterations: None,
        fire_counts: fired,
    };
    (metrics, sxh_abs / sxh.abs())
}

/// The rows as two f32 shards of uneven length in `dir`.
fn write_shards(dir: &Path, x: &[f32]) -> Result<(), Failed> {
    let rows = x.len() / D;
    let cut = rows / 2;
    for (i, part) in [&x[..cut * D], &x[cut * D..]].iter().enumerate() {
        write_safetensors(
            &dir.join(format!("shard-{i}.safetensors")),
            &[OutTensor::f32("activations", &[part.len() / D, D], part)],
            None,
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// The relative bias's place in [`scalars`].
const BIAS: usize = 6;

fn scalars(m: &ReconMetrics) -> Vec<f32> {
    [
        m.mse,
        m.nmse,
        m.explained_variance,
        m.cosine,
        m.l0,
        m.l1,
        m.relative_reconstruction_bias,
        m.shrinkage,
        m.dead_fraction,
        m.dense_fraction,
    ]
    .iter()
    .map(|&v| v as f32)
    .collect()
}

fn case(engine: Engine, rng: &mut ChaCha8Rng, kind: SaeKind, tag: &str) -> Result<(), Failed> {
    let m = model(rng, kind);
    let rows = 307;
    let x = data(rng, &m, rows);
    let dir = tmp(&format!("metrics-{tag}"));
    write_shards(&dir, &x)?;
    let (want, bias_condition) = expected(&m, &x);
    if want.fire_counts[DEAD] != 0 || (want.fire_counts[DENSE] as f64) < 0.1 * rows as f64 {
        return Err(format!(
            "test setup: latent {DEAD} fired {} times, latent {DENSE} {} times in {rows} rows",
            want.fire_counts[DEAD], want.fire_counts[DENSE]
        )
        .into());
    }
    let mut fwd = Encoder::new(&m, &engine, 64).map_err(fail)?;
    // 64-row batches: several batches, a short last one, one across the shard boundary;
    // a second pass over the same rows checks that fire counts restart.
    let mut src = HeldOut::open(std::slice::from_ref(&dir), None, usize::MAX).map_err(fail)?;
    for _ in 0..2 {
        let got = evaluate(&mut [&mut fwd], &mut src, 64)
            .map_err(fail)?
            .remove(0);
        if got.rows != rows as u64 || got.n_latents != N {
            return Err(format!("rows {} latents {}", got.rows, got.n_latents).into());
        }
        let (g, w) = (scalars(&got), scalars(&want));
        let worst = g
            .iter()
            .zip(&w)
            .map(|(a, b)| ((a - b).abs() / b.abs().max(1e-6)) as f64)
            .fold(0.0, f64::max);
        eprintln!(
            "{tag}: worst relative metric difference to f64 {worst:.2e} (relative bias condition {bias_condition:.1})"
        );
        // The relative bias by itself: its tolerance grows with its condition number.
        let (mut g, mut w) = (scalars(&got), scalars(&want));
        let (g_bias, w_bias) = (g.remove(BIAS), w.remove(BIAS));
        assert_close(
            &format!("{tag} metrics [mse nmse ev cos l0 l1 shrink dead dense]"),
            &g,
            &w,
            tolerance::EVAL_METRICS,
        )?;
        let t = tolerance::EVAL_METRICS;
        let bias_tol = Tol {
            rtol: t.rtol * bias_condition.max(1.0) as f32,
            ..t
        };
        assert_close(
            &format!("{tag} relative bias (condition {bias_condition:.1})"),
            &[g_bias],
            &[w_bias],
            bias_tol,
        )?;
        let fc = |v: &[u64]| v.iter().map(|&c| c as u32).collect::<Vec<u32>>();
        assert_same(
            &format!("{tag} fire counts"),
            &fc(&got.fire_counts),
            &fc(&want.fire_counts),
        )?;
        if (got.dead, got.dense) != (want.dead, want.dense) {
            return Err(format!(
                "{tag}: dead {} dense {}, expected {} and {}",
                got.dead, got.dense, want.dead, want.dense
            )
            .into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn kinds() -> [(SaeKind, &'static str); 3] {
    [
        (SaeKind::Standard, "standard"),
        (SaeKind::Topk { k: K }, "topk"),
        (SaeKind::Jumprelu, "jumprelu"),
    ]
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for (kind, name) in kinds() {
        t.push(cpu_test(
            format!("metrics::independent_cpu_{name}"),
            move |rng| case(Engine::Cpu, rng, kind, &format!("cpu-{name}")),
        ));
        t.push(gpu_test(
            format!("metrics::independent_gpu_{name}"),
            move |_, rng| {
                let gpu = crate::common::gpu().map_err(fail)?;
                case(
                    Engine::Gpu(Arc::clone(&gpu)),
                    rng,
                    kind,
                    &format!("gpu-{name}"),
                )
            },
        ));
    }
    t
}
