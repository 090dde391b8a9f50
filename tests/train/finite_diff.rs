//! The CPU engine's hand-written gradients (`sae::cpu::gradients`) against central finite
//! differences of an independent f64 forward pass written here. Where a perturbation
//! changes the active set (a ReLU sign, a top-k choice, a JumpReLU gate) the loss is not
//! differentiable there and the coordinate is skipped; JumpReLU's threshold gradient is a
//! straight-through estimate, checked against its formula instead.

use libtest_mimic::{Failed, Trial};
use saeforge::sae::cpu::gradients;
use saeforge::sae::{Arch, DecoderNorm, SaeParams, TrainArgs, TrainConfig};

use crate::common::f64codes::{f64_codes, fd_state, topk_sel};
use crate::common::{cpu_test, randn};

const D: usize = 6;
const N: usize = 10;
const ROWS: usize = 5;
const K: usize = 3;
const K_AUX: usize = 2;
/// matryoshka's levels: groups of 2, 3 and 5 latents.
const WIDTHS: [usize; 3] = [2, 5, N];

fn config(arch: Arch, decoder_norm: Option<DecoderNorm>) -> TrainConfig {
    let args = TrainArgs {
        decoder_norm,
        out: Some("unused".into()),
        arch: Some(arch),
        d_sae: Some(N),
        k: Some(K),
        k_aux: Some(K_AUX),
        aux_coef: Some(0.5),
        l1: Some(0.3),
        l0: Some(0.2),
        threshold_init: Some(0.05),
        bandwidth: Some(0.5),
        batch: Some(ROWS),
        steps: Some(10),
        sparsity_warmup: Some(0),
        dead_tokens: Some(7),
        matryoshka_widths: (arch == Arch::Matryoshka).then(|| WIDTHS.to_vec()),
        ..Default::default()
    };
    TrainConfig::resolve(&args, D, 100).unwrap()
}

/// f64 loss of the step and a signature of the active set.
fn loss(
    cfg: &TrainConfig,
    p: &[Vec<f64>; 5],
    x: &[f64],
    dead: &[bool],
    e_fixed: Option<&[f64]>,
) -> (f64, Vec<u64>, Vec<f64>) {
    let [w_enc, w_dec, b_enc, b_dec, log_thr] = p;
    // --decoder-norm rescale: pre-activations times the row norms, unit rows decode.
    let rescale = cfg.decoder_norm == DecoderNorm::Rescale;
    let norms: Vec<f64> = (0..N)
        .map(|i| {
            let nn = (0..D).map(|j| w_dec[i * D + j].powi(2)).sum::<f64>().sqrt();
            if rescale { nn } else { 1.0 }
        })
        .collect();
    let w_dec: &Vec<f64> = &(0..N * D).map(|f| w_dec[f] / norms[f / D]).collect();
    let mut pre = vec![0.0f64; ROWS * N];
    for r in 0..ROWS {
        for i in 0..N {
            let mut s = b_enc[i];
            for j in 0..D {
                s += (x[r * D + j] - b_dec[j]) * w_enc[j * N + i];
            }
            pre[r * N + i] = s * norms[i];
        }
    }
    let mut sig = Vec::new();
    let z = f64_codes(cfg.arch, &pre, ROWS, N, K, log_thr, &mut sig);
    let mut x_hat = vec![0.0f64; ROWS * D];
    let mut mse = 0.0;
    for r in 0..ROWS {
        for j in 0..D {
            let mut s = b_dec[j];
            for i in 0..N {
                s += z[r * N + i] * w_dec[i * D + j];
            }
            x_hat[r * D + j] = s;
            mse += (x[r * D + j] - s).powi(2);
        }
    }
    let b = ROWS as f64;
    let mut total = mse / b;
    if cfg.arch == Arch::Matryoshka {
        // The inner levels: each prefix of the dictionary reconstructs x on its own.
        for &w in &WIDTHS[..WIDTHS.len() - 1] {
            for r in 0..ROWS {
                for j in 0..D {
                    let mut s = b_dec[j];
                    for i in 0..w {
                        s += z[r * N + i] * w_dec[i * D + j];
                    }
                    total += (x[r * D + j] - s).powi(2) / b;
                }
            }
        }
    }
    match cfg.arch {
        Arch::Relu => {
            for r in 0..ROWS {
                for i in 0..N {
                    let norm = (0..D).map(|j| w_dec[i * D + j].powi(2)).sum::<f64>().sqrt();
                    total += cfg.l1 as f64 * z[r * N + i] * norm / b;
                }
            }
        }
        Arch::Jumprelu => {
            let active = sig.iter().sum::<u64>() as f64;
            total += cfg.l0 as f64 * active / b;
        }
        Arch::Topk | Arch::Batchtopk | Arch::Matryoshka => {
            // AuxK on the residual e (detached: fixed at the unperturbed value).
            let e: Vec<f64> = match e_fixed {
                Some(e) => e.to_vec(),
                None => x.iter().zip(&x_hat).map(|(a, b)| a - b).collect(),
            };
            let mut aux = 0.0;
            for r in 0..ROWS {
                let sel = topk_sel(&pre[r * N..(r + 1) * N], K_AUX, &|i| dead[i]);
                let mut e_hat = [0.0f64; D];
                for &i in &sel {
                    let a = pre[r * N + i].max(0.0);
                    sig.push(1_000_000 + (r * N + i) as u64 * 2 + (pre[r * N + i] > 0.0) as u64);
                    for j in 0..D {
                        e_hat[j] += a * w_dec[i * D + j];
                    }
                }
                for j in 0..D {
                    aux += (e[r * D + j] - e_hat[j]).powi(2);
                }
            }
            total += cfg.aux_coef as f64 * aux / b;
            return (total, sig, e);
        }
    }
    (total, sig, Vec::new())
}

fn check(
    arch: Arch,
    decoder_norm: Option<DecoderNorm>,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<(), Failed> {
    let cfg = config(arch, decoder_norm);
    let x = randn(rng, ROWS * D, 1.0);
    let init = SaeParams::init(&cfg, &x);
    let (params, mut st, dead) = fd_state(rng, init, arch, cfg.dead_tokens, 0.2);
    let mut fired = vec![0u32; N];
    let coef = cfg.sparsity_coef_at(cfg.sparsity_warmup);
    // With --decoder-norm rescale, on the unit-row view and mapped back.
    let g = gradients(&cfg, &mut st, &x, ROWS, coef, &mut fired);
    let grads = [&g.w_enc, &g.w_dec, &g.b_enc, &g.b_dec, &g.log_threshold];

    let p64: [Vec<f64>; 5] = params
        .iter()
        .map(|(_, t)| t.iter().map(|&v| v as f64).collect());
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (_, sig0, e0) = loss(&cfg, &p64, &x64, &dead, None);
    let e_fixed = if e0.is_empty() {
        None
    } else {
        Some(e0.as_slice())
    };
    let h = 1e-4;
    let mut checked = 0;
    let names = saeforge::sae::params::PARAM_NAMES;
    for t in 0..4 {
        for i in 0..p64[t].len() {
            let mut plus = p64.clone();
            plus[t][i] += h;
            let mut minus = p64.clone();
            minus[t][i] -= h;
            let (lp, sp, _) = loss(&cfg, &plus, &x64, &dead, e_fixed);
            let (lm, sm, _) = loss(&cfg, &minus, &x64, &dead, e_fixed);
            if sp != sig0 || sm != sig0 {
                continue; // not differentiable here
            }
            let fd = (lp - lm) / (2.0 * h);
            let an = grads[t][i] as f64;
            // f32 gradients of O(1) sums: 1e-3 relative plus 1e-4 absolute covers the
            // rounding of a few dozen f32 products and the O(h^2) truncation.
            if (fd - an).abs() > 1e-4 + 1e-3 * fd.abs() {
                return Err(format!(
                    "{arch:?} d{}[{i}]: analytic {an} vs finite difference {fd}",
                    names[t]
                )
                .into());
            }
            checked += 1;
        }
    }
    if arch == Arch::Jumprelu {
        // Straight-through estimate: d/dlog_theta of sum z and of L0 with a rectangle kernel.
        let eps = cfg.bandwidth as f64;
        let mut dz = vec![0.0f64; ROWS * N]; // dL/dz from the MSE term
        let (_, _, _) = (0, 0, 0);
        let [w_enc, w_dec, b_enc, b_dec, log_thr] = &p64;
        let mut pre = vec![0.0f64; ROWS * N];
        for r in 0..ROWS {
            for i in 0..N {
                pre[r * N + i] = b_enc[i]
                    + (0..D)
                        .map(|j| (x64[r * D + j] - b_dec[j]) * w_enc[j * N + i])
                        .sum::<f64>();
            }
        }
        for r in 0..ROWS {
            let mut xh = b_dec.clone();
            for i in 0..N {
                let th = log_thr[i].exp();
                let z = if pre[r * N + i] > th {
                    pre[r * N + i]
                } else {
                    0.0
                };
                for j in 0..D {
                    xh[j] += z * w_dec[i * D + j];
                }
            }
            for i in 0..N {
                dz[r * N + i] = (0..D)
                    .map(|j| 2.0 * (xh[j] - x64[r * D + j]) / ROWS as f64 * w_dec[i * D + j])
                    .sum();
            }
        }
        for i in 0..N {
            let th = log_thr[i].exp();
            let mut s = 0.0;
            for r in 0..ROWS {
                let u = (pre[r * N + i] - th) / eps;
                let rect = if u.abs() <= 0.5 { 1.0 } else { 0.0 };
                s += dz[r * N + i] * (-th / eps) * rect
                    + cfg.l0 as f64 / ROWS as f64 * (-1.0 / eps) * rect;
            }
            let want = th * s;
            let got = g.log_threshold[i] as f64;
            if (want - got).abs() > 1e-4 + 1e-3 * want.abs() {
                return Err(format!(
                    "jumprelu dlog_threshold[{i}]: {got} vs straight-through {want}"
                )
                .into());
            }
        }
    }
    if checked < 20 {
        return Err(format!(
            "{arch:?}: only {checked} coordinates were differentiable; the check is too weak"
        )
        .into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let archs = [
        Arch::Relu,
        Arch::Topk,
        Arch::Batchtopk,
        Arch::Jumprelu,
        Arch::Matryoshka,
    ];
    let mut t: Vec<Trial> = archs
        .into_iter()
        .map(|arch| {
            cpu_test(
                format!("finite_diff::{arch:?}").to_lowercase(),
                move |rng| check(arch, None, rng),
            )
        })
        .collect();
    for arch in [Arch::Topk, Arch::Batchtopk, Arch::Matryoshka] {
        t.push(cpu_test(
            format!("finite_diff::{arch:?}_rescale").to_lowercase(),
            move |rng| check(arch, Some(DecoderNorm::Rescale), rng),
        ));
    }
    t
}
