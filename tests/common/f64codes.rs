//! What the finite-difference tests (`tests/train`, `tests/transcoder`) share: the state
//! they differentiate at, and the f64 codes of a batch (each architecture's selection on
//! f64 pre-activations, plainly, with a signature of which entries were selected and on
//! which side of their edge they sit: a perturbation that changes it crosses an edge, where
//! the loss is not differentiable).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::sae::engine::TrainState;
use saeforge::sae::{Arch, SaeParams};

/// `params` moved off the symmetric initialisation (random W_enc, W_dec, b_enc, b_dec at
/// b_dec_scale, jumprelu thresholds in [e^-3, e^-0.5)) so every parameter matters, and a
/// state with the even latents dead past `dead_tokens` (so AuxK has work): the parameters,
/// the state and the dead mask.
pub fn fd_state(
    rng: &mut ChaCha8Rng,
    mut params: SaeParams,
    arch: Arch,
    dead_tokens: u64,
    b_dec_scale: f32,
) -> (SaeParams, TrainState, Vec<bool>) {
    params.w_enc = super::randn(rng, params.w_enc.len(), 0.7);
    params.w_dec = super::randn(rng, params.w_dec.len(), 0.5);
    params.b_enc = super::randn(rng, params.b_enc.len(), 0.2);
    params.b_dec = super::randn(rng, params.b_dec.len(), b_dec_scale);
    if arch == Arch::Jumprelu {
        params.log_threshold = (0..params.n)
            .map(|_| rng.random_range(-3.0f32..-0.5))
            .collect();
    }
    let mut st = TrainState::new(params.clone());
    for (i, s) in st.since_fired.iter_mut().enumerate() {
        *s = if i % 2 == 0 { 100 } else { 0 };
    }
    let dead = st
        .since_fired
        .iter()
        .map(|&s| s as u64 >= dead_tokens)
        .collect();
    (params, st, dead)
}

/// The (at most) k largest entries of `row` among the eligible ones, ties to the lower
/// index.
pub fn topk_sel(row: &[f64], k: usize, eligible: &dyn Fn(usize) -> bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).filter(|&i| eligible(i)).collect();
    idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// z (rows, n) of `arch` from pre (rows, n) (topk: k per row; batchtopk / matryoshka: k x
/// rows over the batch; jumprelu: above exp(log_thr)), with the selection's signature
/// appended to `sig`.
pub fn f64_codes(
    arch: Arch,
    pre: &[f64],
    rows: usize,
    n: usize,
    k: usize,
    log_thr: &[f64],
    sig: &mut Vec<u64>,
) -> Vec<f64> {
    let mut z = vec![0.0f64; rows * n];
    match arch {
        Arch::Topk => {
            for r in 0..rows {
                for i in topk_sel(&pre[r * n..(r + 1) * n], k, &|_| true) {
                    z[r * n + i] = pre[r * n + i].max(0.0);
                    sig.push((r * n + i) as u64 * 2 + (pre[r * n + i] > 0.0) as u64);
                }
            }
        }
        Arch::Batchtopk | Arch::Matryoshka => {
            let mut all: Vec<usize> = (0..rows * n).collect();
            all.sort_by(|&a, &b| pre[b].partial_cmp(&pre[a]).unwrap().then(a.cmp(&b)));
            for &f in &all[..k * rows] {
                z[f] = pre[f].max(0.0);
                sig.push(f as u64 * 2 + (pre[f] > 0.0) as u64);
            }
        }
        Arch::Relu => {
            for f in 0..rows * n {
                z[f] = pre[f].max(0.0);
                sig.push((pre[f] > 0.0) as u64);
            }
        }
        Arch::Jumprelu => {
            for f in 0..rows * n {
                let th = log_thr[f % n].exp();
                z[f] = if pre[f] > th { pre[f] } else { 0.0 };
                sig.push((pre[f] > th) as u64);
            }
        }
    }
    z
}
