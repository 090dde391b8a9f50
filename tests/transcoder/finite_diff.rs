//! A transcoder's CPU gradients (`sae::cpu::gradients` on a batch of input rows followed by
//! target rows, d_out != d_in) against central finite differences of an independent f64
//! forward written here: pre = x W_enc + b_enc (no input bias), y_hat = z W_dec + b_dec,
//! loss = |y - y_hat|^2 / B + the architecture's penalty (AuxK on the target's residual,
//! held fixed as the engine holds it). Coordinates whose perturbation changes the active
//! set are skipped (not differentiable there); JumpReLU's threshold gradient is a
//! straight-through estimate and is not checked here.

use libtest_mimic::{Failed, Trial};
use saeforge::sae::cpu::gradients;
use saeforge::sae::{Arch, SaeParams, TrainArgs, TrainConfig};

use crate::ARCHS;
use crate::common::f64codes::{f64_codes, fd_state, topk_sel};
use crate::common::{cpu_test, randn, tolerance};

const D: usize = 7;
const O: usize = 9;
const N: usize = 12;
const ROWS: usize = 5;
const K: usize = 3;
const K_AUX: usize = 2;

fn config(arch: Arch) -> TrainConfig {
    let args = TrainArgs {
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
        ..Default::default()
    };
    let mut cfg = TrainConfig::resolve(&args, D, 100).unwrap();
    cfg.d_out = Some(O);
    cfg
}

/// f64 loss, a signature of the active set, and the residual y - y_hat.
fn loss(
    cfg: &TrainConfig,
    p: &[Vec<f64>; 5],
    x: &[f64],
    y: &[f64],
    dead: &[bool],
    e_fixed: Option<&[f64]>,
) -> (f64, Vec<u64>, Vec<f64>) {
    let [w_enc, w_dec, b_enc, b_dec, log_thr] = p;
    let mut pre = vec![0.0f64; ROWS * N];
    for r in 0..ROWS {
        for i in 0..N {
            pre[r * N + i] =
                b_enc[i] + (0..D).map(|j| x[r * D + j] * w_enc[j * N + i]).sum::<f64>();
        }
    }
    let mut sig = Vec::new();
    let z = f64_codes(cfg.arch, &pre, ROWS, N, K, log_thr, &mut sig);
    let mut e = vec![0.0f64; ROWS * O];
    let mut mse = 0.0;
    for r in 0..ROWS {
        for o in 0..O {
            let s = b_dec[o] + (0..N).map(|i| z[r * N + i] * w_dec[i * O + o]).sum::<f64>();
            e[r * O + o] = y[r * O + o] - s;
            mse += e[r * O + o].powi(2);
        }
    }
    let b = ROWS as f64;
    let mut total = mse / b;
    match cfg.arch {
        Arch::Matryoshka => unreachable!("no matryoshka transcoder case"),
        Arch::Relu => {
            for i in 0..N {
                let norm = (0..O).map(|o| w_dec[i * O + o].powi(2)).sum::<f64>().sqrt();
                let zs: f64 = (0..ROWS).map(|r| z[r * N + i]).sum();
                total += cfg.l1 as f64 * zs * norm / b;
            }
        }
        Arch::Jumprelu => {
            let active = sig.iter().sum::<u64>() as f64;
            total += cfg.l0 as f64 * active / b;
        }
        Arch::Topk | Arch::Batchtopk => {
            // AuxK: the dead latents reconstruct the target's residual (held fixed).
            let res = e_fixed.map(|v| v.to_vec()).unwrap_or_else(|| e.clone());
            let mut aux = 0.0;
            for r in 0..ROWS {
                let sel = topk_sel(&pre[r * N..(r + 1) * N], K_AUX, &|i| dead[i]);
                let mut e_hat = [0.0f64; O];
                for &i in &sel {
                    let a = pre[r * N + i].max(0.0);
                    sig.push(1_000_000 + (r * N + i) as u64 * 2 + (pre[r * N + i] > 0.0) as u64);
                    for o in 0..O {
                        e_hat[o] += a * w_dec[i * O + o];
                    }
                }
                for o in 0..O {
                    aux += (res[r * O + o] - e_hat[o]).powi(2);
                }
            }
            total += cfg.aux_coef as f64 * aux / b;
        }
    }
    (total, sig, e)
}

fn check(arch: Arch, rng: &mut rand_chacha::ChaCha8Rng) -> Result<(), Failed> {
    let cfg = config(arch);
    let x = randn(rng, ROWS * D, 1.0);
    let y = randn(rng, ROWS * O, 1.0);
    let init = SaeParams::init(&cfg, &y);
    if init.w_dec.len() != N * O || init.b_dec.len() != O || init.w_enc.len() != D * N {
        return Err(
            "the transcoder's initial shapes are not W_enc (d_in, n), W_dec (n, d_out)".into(),
        );
    }
    let (params, mut st, dead) = fd_state(rng, init, arch, cfg.dead_tokens, 0.5);
    let mut fired = vec![0u32; N];
    let coef = cfg.sparsity_coef_at(cfg.sparsity_warmup);
    let batch: Vec<f32> = x.iter().chain(&y).copied().collect();
    let g = gradients(&cfg, &mut st, &batch, ROWS, coef, &mut fired);
    let grads = [&g.w_enc, &g.w_dec, &g.b_enc, &g.b_dec];

    let p64: [Vec<f64>; 5] = params
        .iter()
        .map(|(_, t)| t.iter().map(|&v| v as f64).collect());
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let (_, sig0, e0) = loss(&cfg, &p64, &x64, &y64, &dead, None);
    let h = 1e-4;
    let tol = tolerance::TRANSCODER_FD;
    let names = saeforge::sae::params::PARAM_NAMES;
    let mut checked = [0usize; 4];
    for t in 0..4 {
        for i in 0..p64[t].len() {
            let mut plus = p64.clone();
            plus[t][i] += h;
            let mut minus = p64.clone();
            minus[t][i] -= h;
            let (lp, sp, _) = loss(&cfg, &plus, &x64, &y64, &dead, Some(&e0));
            let (lm, sm, _) = loss(&cfg, &minus, &x64, &y64, &dead, Some(&e0));
            if sp != sig0 || sm != sig0 {
                continue;
            }
            let fd = (lp - lm) / (2.0 * h);
            let an = grads[t][i] as f64;
            if (fd - an).abs() > tol.atol as f64 + tol.rtol as f64 * fd.abs() {
                return Err(format!(
                    "{arch:?} transcoder d{}[{i}]: analytic {an} vs finite difference {fd} ({})",
                    names[t], tol.name
                )
                .into());
            }
            checked[t] += 1;
        }
    }
    if checked.contains(&0) {
        return Err(format!("{arch:?}: coordinates checked per tensor {checked:?}").into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    ARCHS
        .into_iter()
        .map(|arch| cpu_test(format!("finite_diff_{arch:?}"), move |rng| check(arch, rng)))
        .collect()
}
