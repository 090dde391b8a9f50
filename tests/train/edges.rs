//! Batches drawn clear of the estimators' edges, for the GPU/CPU equivalence cases.
//!
//! Every architecture's step is discontinuous somewhere in its pre-activations: ReLU's at
//! pre = 0; JumpReLU's at pre = theta (the activation) and at |pre - theta| = eps / 2 (the
//! threshold's rectangle window); TopK's and BatchTopK's where the k-th largest entry of a
//! row (of the batch) meets the next one, and AuxK's the same among the dead latents. The
//! engines sum pre-activations in different orders (and WGSL's exp is not Rust's), so an
//! entry within rounding of an edge may fall on one side on one engine and on the other
//! side on the other: an O(1) change of that latent's gradient (for JumpReLU's activation
//! and a swapped selection also a jump in the row's reconstruction, which moves every
//! active latent's gradient), after which Adam's steps legitimately part by up to lr and
//! later steps meet more such entries. The equivalence cases therefore draw their rows
//! away from the edges (margin 1e-5 of the sum of the terms' magnitudes, which bounds the
//! rounding of a sum of d terms in any order, plus theta and eps for JumpReLU) and compare
//! everything else at rounding tolerance. A batch the step reads as f16 (`--batch-dtype
//! f16`) is checked as both engines see it: rounded to f16 first.

use libtest_mimic::Failed;
use saeforge::sae::config::BatchDtype;
use saeforge::sae::engine::{TrainState, dead_after};
use saeforge::sae::storage::round_f16;
use saeforge::sae::{Arch, DecoderNorm, TrainConfig};

use crate::common::randn;

/// Relative margin of an edge: 1e-5 of the terms' magnitudes.
const MARGIN: f32 = 1e-5;

/// Pre-activations as the step's selection sees them, (rows, n), with the magnitude sums of
/// their terms: on the unit-row view under `--decoder-norm rescale` (latent i scaled by
/// ||W_dec[i]||; the order of a row changes, the signs do not).
fn pre_activations(st: &TrainState, cfg: &TrainConfig, x: &[f32], rows: usize) -> Vec<(f32, f32)> {
    let p = &st.params;
    let (d, n) = (p.d, p.n);
    let scale: Vec<f32> = (0..n)
        .map(|i| match cfg.decoder_norm {
            DecoderNorm::Rescale => {
                let row = &p.w_dec[i * d..(i + 1) * d];
                row.iter().map(|v| v * v).sum::<f32>().sqrt()
            }
            _ => 1.0,
        })
        .collect();
    let mut out = Vec::with_capacity(rows * n);
    for r in 0..rows {
        for (i, s) in scale.iter().enumerate() {
            let (mut pre, mut mag) = (p.b_enc[i], p.b_enc[i].abs());
            for j in 0..d {
                // A transcoder's encoder takes x as it is (b_dec is in the output space).
                let b = if cfg.d_out.is_some() { 0.0 } else { p.b_dec[j] };
                let t = (x[r * d + j] - b) * p.w_enc[j * n + i];
                pre += t;
                mag += t.abs();
            }
            out.push((pre * s, mag * s));
        }
    }
    out
}

/// Whether a top-`k` selection of the positive entries among `entries` (value, magnitude)
/// is within rounding of an edge: the k-th and (k+1)-th largest closer than the margin, or,
/// when at most k are positive, an entry within the margin of 0.
fn selection_tight(entries: impl Iterator<Item = (f32, f32)>, k: usize) -> bool {
    let all: Vec<(f32, f32)> = entries.collect();
    let mut pos: Vec<(f32, f32)> = all.iter().copied().filter(|e| e.0 > 0.0).collect();
    if pos.len() <= k {
        return all.iter().any(|&(v, m)| v.abs() <= MARGIN * m);
    }
    pos.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (a, b) = (pos[k - 1], pos[k]);
    a.0 - b.0 <= MARGIN * a.1.max(b.1)
}

/// Which rows of `x` (stepped from `st`) have an entry at an edge; `None` when the edge is
/// the batch's own (BatchTopK's selection), which only a new batch clears.
fn edge_rows(st: &TrainState, cfg: &TrainConfig, x: &[f32], rows: usize) -> Option<Vec<usize>> {
    let n = st.params.n;
    let rounded;
    let x = match cfg.batch_dtype {
        BatchDtype::F32 => x,
        BatchDtype::F16 => {
            rounded = round_f16(x);
            &rounded[..]
        }
    };
    let pre = pre_activations(st, cfg, x, rows);
    let row = |r: usize| pre[r * n..(r + 1) * n].iter().copied();
    let k = cfg.k_at(st.step);
    let dead: Vec<bool> = st
        .since_fired
        .iter()
        .map(|&s| s >= dead_after(cfg))
        .collect();
    let aux_tight = |r: usize| {
        let entries = row(r).zip(&dead).filter(|(_, d)| **d).map(|(e, _)| e);
        selection_tight(entries, cfg.k_aux)
    };
    let at = |r: usize| match cfg.arch {
        Arch::Relu => row(r).any(|(v, m)| v.abs() <= MARGIN * m),
        Arch::Jumprelu => row(r).zip(&st.params.log_threshold).any(|((v, m), lt)| {
            let (theta, eps) = (lt.exp(), cfg.bandwidth);
            let margin = MARGIN * (m + theta + eps);
            let u = (v - theta).abs();
            u <= margin || (u - 0.5 * eps).abs() <= margin
        }),
        Arch::Topk => selection_tight(row(r), k) || aux_tight(r),
        Arch::Batchtopk | Arch::Matryoshka => aux_tight(r),
    };
    // BatchTopK's selection over the batch; when k x rows covers every entry (the start of
    // a k annealing, k = n) every positive entry is kept and the edge is ReLU's 0, which
    // `selection_tight` checks then too.
    if matches!(cfg.arch, Arch::Batchtopk | Arch::Matryoshka)
        && selection_tight(pre.iter().copied(), k * rows)
    {
        return None;
    }
    Some((0..rows).filter(|&r| at(r)).collect())
}

/// A fresh batch of `rows` rows of d from `rng`, redrawn (the rows at an edge, or the whole
/// batch for BatchTopK's selection) until it is clear of the step's edges under `st`; a
/// transcoder's followed by `rows` random target rows of d_out (the edges are the
/// encoder's).
pub fn batch_clear_of_edges(
    rng: &mut rand_chacha::ChaCha8Rng,
    st: &TrainState,
    cfg: &TrainConfig,
    rows: usize,
) -> Result<Vec<f32>, Failed> {
    let d = st.params.d;
    let mut x = randn(rng, rows * d, 1.0);
    for _ in 0..100 {
        match edge_rows(st, cfg, &x, rows) {
            Some(at) if at.is_empty() => {
                if let Some(d_out) = cfg.d_out {
                    x.extend(randn(rng, rows * d_out, 1.0));
                }
                return Ok(x);
            }
            Some(at) => {
                for r in at {
                    x[r * d..(r + 1) * d].copy_from_slice(&randn(rng, d, 1.0));
                }
            }
            None => x = randn(rng, rows * d, 1.0),
        }
    }
    Err(format!("{:?}: 100 batches in a row met an estimator edge", cfg.arch).into())
}
