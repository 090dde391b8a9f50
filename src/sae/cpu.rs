//! The CPU engine: one training step as a sequence of the reference kernels in
//! `crate::reference`, in exactly the order the GPU engine (`gpu.rs`) records its launches.
//! Plain f32 loops, rayon over rows at most; it is both the judge of the GPU engine and the
//! engine that runs when there is no hardware GPU.
//!
//! The step, for input rows x (B, d) already scaled:
//!   xc = x - b_dec;  pre = xc W_enc + b_enc
//!   topk / batchtopk: sparse codes (row_ptr, idx, val; topk: the k largest positive
//!                     entries, latents ascending, no zeros) -> x_hat by sparse decode;
//!                     AuxK: the k_aux largest positive pre among the dead latents (listed
//!                     by dead_list) reconstruct e = x - x_hat; their gradients are added
//!                     into the main ones by the accumulating gathers
//!   relu / jumprelu:  dense z -> x_hat = z W_dec + b_dec
//!   loss = mean_b ||x - x_hat||^2 (+ aux / l1 / l0 terms); gradients by hand (see below);
//!   unit-norm decoders drop the gradient parallel to each row; global norm clip; Adam;
//!   decoder rows renormalised (the last three fused for W_dec: decoder_grad_prep,
//!   adam_unit_rows); dead-latent counters updated.

use crate::reference::activations::{
    jumprelu_backward, jumprelu_forward, relu_backward, relu_forward,
};
use crate::reference::codes::{activation_codes, dead_list, topk_codes};
use crate::reference::gemm::{GemmSpec, gemm};
use crate::reference::ops::threshold_ema;
use crate::reference::optim::{
    AdamHyper, adam, adam_unit_rows, clip_scale, decoder_grad_prep, rescale_grads, rescale_view,
    sum_slot, sumsq,
};
use crate::reference::reduce::{
    METRIC_SLOTS, col_sum, dense_stats, l1_backward, l1_decoder_grad, mse_backward, row_norms,
    slot, sparse_stats, sub, sub_row, update_dead,
};
use crate::reference::sparse::{
    build_transpose, gather_db_enc, gather_dw_dec, gather_dw_enc, gather_jumprelu_threshold,
    sparse_decode, sparse_dot, sparse_jumprelu_backward, sparse_l1_backward,
};
use crate::reference::topk::batchtopk;

use super::{Arch, DecoderNorm, SaeParams, TrainConfig};

/// Adam moments for every parameter tensor (same order as `SaeParams::tensors`).
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub m: [Vec<f32>; 5],
    pub v: [Vec<f32>; 5],
}

impl Moments {
    pub fn zeros(p: &SaeParams) -> Moments {
        let z = |t: &Vec<f32>| vec![0.0f32; t.len()];
        let t = p.tensors();
        Moments {
            m: [z(t[0]), z(t[1]), z(t[2]), z(t[3]), z(t[4])],
            v: [z(t[0]), z(t[1]), z(t[2]), z(t[3]), z(t[4])],
        }
    }
}

/// Everything a step changes, besides the parameters: what a checkpoint must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub params: SaeParams,
    pub moments: Moments,
    /// Steps taken.
    pub step: u64,
    /// Per latent: tokens since it last fired.
    pub since_fired: Vec<u32>,
    /// Per latent: times fired over the run.
    pub fire_total: Vec<u32>,
    /// BatchTopK inference threshold (EMA of the smallest kept activation).
    pub threshold: f32,
    /// Metric sums since the last read (slots of `reference::reduce::slot`).
    pub metrics: Vec<f32>,
    /// Gradient norm before clipping, of the last step.
    pub grad_norm: f32,
}

impl TrainState {
    pub fn new(params: SaeParams) -> TrainState {
        let n = params.n;
        TrainState {
            moments: Moments::zeros(&params),
            params,
            step: 0,
            since_fired: vec![0; n],
            fire_total: vec![0; n],
            threshold: 0.0,
            metrics: vec![0.0; METRIC_SLOTS],
            grad_norm: 0.0,
        }
    }
}

/// Per-step scalars the host computes: learning rate and sparsity-coefficient scale.
#[derive(Clone, Copy, Debug)]
pub struct StepScalars {
    pub lr: f32,
    pub sparsity_scale: f32,
}

impl StepScalars {
    pub fn at(cfg: &TrainConfig, step: u64) -> StepScalars {
        StepScalars {
            lr: cfg.lr_at(step),
            sparsity_scale: cfg.sparsity_scale_at(step),
        }
    }

    pub fn adam(&self, cfg: &TrainConfig, step: u64) -> AdamHyper {
        let t = (step + 1) as i32;
        AdamHyper {
            lr: self.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.adam_eps,
            bias1: 1.0 - cfg.beta1.powi(t),
            bias2: 1.0 - cfg.beta2.powi(t),
            weight_decay: cfg.weight_decay,
            _pad: 0.0,
        }
    }
}

/// Slots of a ReLU / JumpReLU step's codes, the same on both engines: rows * max(64, n / 16)
/// (at most rows * n). A step whose activation keeps more entries than this (L0 above
/// n / 16, e.g. a fresh ReLU SAE, which fires on half its latents) takes the dense path:
/// past that the gathers cost more than the dense products they replace (on lavapipe the
/// break-even measured near L0 = 600 of 16384).
pub fn code_capacity(rows: usize, n: usize) -> usize {
    rows * (n / 16).max(64).min(n)
}

/// Gradients of one step, same order as the parameters.
#[derive(Clone, Debug)]
pub struct Grads {
    pub w_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub b_dec: Vec<f32>,
    pub log_threshold: Vec<f32>,
}

/// Sparse codes of a batch (CSR over rows) and the per-latent transpose.
struct Codes {
    row_ptr: Vec<u32>,
    idx: Vec<u32>,
    /// Selected pre-activations (before ReLU).
    pre_val: Vec<f32>,
    /// After ReLU.
    val: Vec<f32>,
}

impl Codes {
    fn transpose(&self, rows: usize, n: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let cap = self.idx.len();
        let mut lat_ptr = vec![0u32; n + 1];
        let mut lat_row = vec![0u32; cap];
        let mut lat_slot = vec![0u32; cap];
        build_transpose(
            &self.row_ptr,
            &self.idx,
            rows,
            n,
            &mut lat_ptr,
            &mut lat_row,
            &mut lat_slot,
        );
        (lat_ptr, lat_row, lat_slot)
    }
}

fn relu_codes(row_ptr: Vec<u32>, idx: Vec<u32>, pre_val: Vec<f32>) -> Codes {
    let mut val = vec![0.0f32; pre_val.len()];
    relu_forward(&pre_val, &mut val);
    Codes {
        row_ptr,
        idx,
        pre_val,
        val,
    }
}

/// TopK codes: the k largest positive entries of each row of `pre` among the eligible
/// latents (all, or the dead list), latents ascending (ReLU applied: no zero entries).
fn topk_relu_codes(
    pre: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    cols: Option<(&[u32], &[u32])>,
) -> Codes {
    let mut row_ptr = vec![0u32; rows + 1];
    let mut idx = vec![0u32; rows * k];
    let mut val = vec![0.0f32; rows * k];
    topk_codes(pre, rows, n, k, cols, &mut row_ptr, &mut idx, &mut val);
    Codes {
        row_ptr,
        idx,
        pre_val: val.clone(),
        val,
    }
}

/// After the codes, on both sparse paths: x_hat = codes W_dec + b_dec, the MSE gradient
/// dy = 2 inv_b (x_hat - x) with the SSE / SST sums into `metrics`, and the firing and L0 / L1
/// statistics. codes: CSR over (rows, n); x, x_hat, dy: (rows, d); norms: (n) decoder row norms.
#[allow(clippy::too_many_arguments)]
fn decode_loss_stats(
    codes: &Codes,
    p: &SaeParams,
    x: &[f32],
    norms: &[f32],
    rows: usize,
    inv_b: f32,
    x_hat: &mut [f32],
    dy: &mut [f32],
    fired: &mut [u32],
    metrics: &mut [f32],
) {
    let (n, d) = (p.n, p.d);
    sparse_decode(
        &codes.row_ptr,
        &codes.idx,
        &codes.val,
        &p.w_dec,
        Some(&p.b_dec),
        rows,
        n,
        d,
        x_hat,
    );
    mse_backward(
        x,
        x_hat,
        rows,
        d,
        2.0 * inv_b,
        dy,
        metrics,
        slot::SSE,
        Some(slot::SST),
    );
    sparse_stats(
        &codes.row_ptr,
        &codes.idx,
        &codes.val,
        rows,
        n,
        norms,
        fired,
        metrics,
    );
}

/// Gradients of a sparse code path: given dL/dx_hat-like `dy` (rows, d) for a decode of
/// `codes`, the gathers of dW_dec, dW_enc and db_enc into `g` (added to what is there, for
/// the latents with entries, when `accumulate`).
fn sparse_backward(
    codes: &Codes,
    dy: &[f32],
    xc: &[f32],
    p: &SaeParams,
    rows: usize,
    g: &mut Grads,
    accumulate: bool,
) {
    let (n, d) = (p.n, p.d);
    let cap = codes.idx.len();
    let mut gslot = vec![0.0f32; cap];
    sparse_dot(
        &codes.row_ptr,
        &codes.idx,
        dy,
        &p.w_dec,
        rows,
        n,
        d,
        &mut gslot,
    );
    let mut dval = vec![0.0f32; cap];
    relu_backward(&codes.pre_val, &gslot, &mut dval);
    let (lat_ptr, lat_row, lat_slot) = codes.transpose(rows, n);
    if !accumulate {
        g.w_dec = vec![0.0f32; n * d];
        g.w_enc = vec![0.0f32; d * n];
        g.b_enc = vec![0.0f32; n];
    }
    #[rustfmt::skip]
    gather_dw_dec(&lat_ptr, &lat_row, &lat_slot, &codes.val, dy, n, d, accumulate, &mut g.w_dec);
    #[rustfmt::skip]
    gather_dw_enc(&lat_ptr, &lat_row, &lat_slot, &dval, xc, n, d, accumulate, &mut g.w_enc);
    gather_db_enc(&lat_ptr, &lat_slot, &dval, n, accumulate, &mut g.b_enc);
}

/// One training step of the CPU engine on `x` (rows x d, scaled).
pub fn step(cfg: &TrainConfig, st: &mut TrainState, x: &[f32], rows: usize) {
    let (n, d) = (st.params.n, st.params.d);
    let sc = StepScalars::at(cfg, st.step);
    let mut fired = vec![0u32; n];
    let g = if cfg.decoder_norm == DecoderNorm::Rescale {
        rescaled_gradients(cfg, st, x, rows, sc.sparsity_scale, &mut fired)
    } else {
        gradients(cfg, st, x, rows, sc.sparsity_scale, &mut fired)
    };

    // Global gradient-norm clipping, of the gradients after the unit-norm decoder's
    // projection (the component of each decoder row's gradient along the row removed):
    // decoder_grad_prep gives the projection coefficients and the projected rows' sums of
    // squares without writing the projection, which adam_unit_rows applies.
    let unit = cfg.decoder_norm == DecoderNorm::Unit;
    let grads: [&Vec<f32>; 5] = [&g.w_enc, &g.w_dec, &g.b_enc, &g.b_dec, &g.log_threshold];
    let mut acc = vec![0.0f32; 5];
    let mut coef = vec![0.0f32; n];
    for (i, gr) in grads.iter().enumerate() {
        if i == 1 && unit {
            let mut part = vec![0.0f32; n];
            decoder_grad_prep(&st.params.w_dec, gr, n, d, &mut coef, &mut part);
            sum_slot(&part, &mut acc, 1);
        } else {
            sumsq(gr, &mut acc, i as u32);
        }
    }
    let mut clip = [0.0f32; 2];
    clip_scale(&acc, 5, cfg.grad_clip, &mut clip);
    st.grad_norm = clip[1];

    // Adam on every parameter (and, for W_dec with unit norm, projection + Adam +
    // renormalisation of each row).
    let hyper = sc.adam(cfg, st.step);
    let ps = st.params.tensors_mut();
    for (i, param) in ps.into_iter().enumerate() {
        if param.is_empty() {
            continue;
        }
        let (m, v) = (&mut st.moments.m[i], &mut st.moments.v[i]);
        if i == 1 && unit {
            adam_unit_rows(param, grads[i], &coef, m, v, &hyper, &clip, n, d);
        } else {
            adam(param, grads[i], m, v, &hyper, &clip);
        }
    }

    update_dead(
        &mut fired,
        &mut st.since_fired,
        &mut st.fire_total,
        rows,
        cfg.dead_tokens.min(u32::MAX as u64) as u32,
        &mut st.metrics,
    );
    st.step += 1;
}

/// `gradients` of a decoder whose norms are folded into the codes (`DecoderNorm::Rescale`):
/// the step runs on the unit-row view of the parameters and its gradients are mapped back
/// (`rescale_view`, `rescale_grads`).
pub fn rescaled_gradients(
    cfg: &TrainConfig,
    st: &mut TrainState,
    x: &[f32],
    rows: usize,
    sparsity_scale: f32,
    fired: &mut [u32],
) -> Grads {
    let (n, d) = (st.params.n, st.params.d);
    let mut view = st.params.clone();
    let mut norms = vec![0.0f32; n];
    let p = &st.params;
    #[rustfmt::skip]
    rescale_view(&p.w_enc, &p.b_enc, &p.w_dec, n, d, &mut view.w_enc, &mut view.b_enc, &mut view.w_dec, &mut norms);
    let own = std::mem::replace(&mut st.params, view);
    let mut g = gradients(cfg, st, x, rows, sparsity_scale, fired);
    let view = std::mem::replace(&mut st.params, own);
    let p = &st.params;
    #[rustfmt::skip]
    rescale_grads(&p.w_enc, &p.b_enc, &view.w_dec, &norms, n, d, &mut g.w_enc, &mut g.b_enc, &mut g.w_dec);
    g
}

/// Forward and backward of one step: the loss gradients (before the decoder-norm
/// projection and clipping), metric sums added into `st.metrics`, per-latent fire counts
/// into `fired`, and the BatchTopK threshold EMA updated. `sparsity_scale` multiplies the
/// L1 / L0 coefficient (warm-up).
pub fn gradients(
    cfg: &TrainConfig,
    st: &mut TrainState,
    x: &[f32],
    rows: usize,
    sparsity_scale: f32,
    fired: &mut [u32],
) -> Grads {
    let p = &st.params;
    let (d, n) = (p.d, p.n);
    let inv_b = 1.0 / rows as f32;
    // Forward: encoder.
    let mut xc = vec![0.0f32; rows * d];
    sub_row(x, &p.b_dec, rows, d, &mut xc);
    let mut pre = vec![0.0f32; rows * n];
    let enc = GemmSpec {
        m: rows,
        n,
        k: d,
        trans_a: false,
        trans_b: false,
        alpha: 1.0,
        beta: 0.0,
    };
    gemm(&enc, &xc, &p.w_enc, Some(&p.b_enc), &mut pre);
    if pre.iter().any(|v| !v.is_finite()) {
        // The run has diverged (the data are checked, so the parameters overflowed). Top-k
        // has no order on NaN: poison the gradients and the loss instead, so the trainer
        // stops at its next check exactly as it does when the GPU engine meets a NaN.
        st.metrics[crate::reference::reduce::slot::SSE as usize] = f32::NAN;
        let nan = |len: usize| vec![f32::NAN; len];
        return Grads {
            w_enc: nan(d * n),
            w_dec: nan(n * d),
            b_enc: nan(n),
            b_dec: nan(d),
            log_threshold: nan(p.log_threshold.len()),
        };
    }

    let mut norms = vec![0.0f32; n];
    row_norms(&p.w_dec, n, d, &mut norms);
    let mut x_hat = vec![0.0f32; rows * d];
    let mut dy = vec![0.0f32; rows * d];
    let mut g = Grads {
        w_enc: Vec::new(),
        w_dec: Vec::new(),
        b_enc: Vec::new(),
        b_dec: vec![0.0; d],
        log_threshold: vec![0.0; p.log_threshold.len()],
    };

    match cfg.arch {
        Arch::Topk | Arch::Batchtopk => {
            // Activation: sparse codes.
            let codes = if cfg.arch == Arch::Topk {
                topk_relu_codes(&pre, rows, n, cfg.k, None)
            } else {
                let kt = cfg.k * rows;
                let mut row_ptr = vec![0u32; rows + 1];
                let mut idx = vec![0u32; kt];
                let mut val = vec![0.0f32; kt];
                let mut thr = [0.0f32];
                batchtopk(
                    &pre,
                    rows,
                    n,
                    kt,
                    &mut row_ptr,
                    &mut idx,
                    &mut val,
                    &mut thr,
                );
                let mut state = [st.threshold];
                threshold_ema(&thr, &mut state, cfg.threshold_ema, st.step == 0);
                st.threshold = state[0];
                relu_codes(row_ptr, idx, val)
            };
            decode_loss_stats(
                &codes,
                p,
                x,
                &norms,
                rows,
                inv_b,
                &mut x_hat,
                &mut dy,
                fired,
                &mut st.metrics,
            );
            sparse_backward(&codes, &dy, &xc, p, rows, &mut g, false);

            // AuxK: the top k_aux dead latents reconstruct the residual e = x - x_hat.
            let mut dead = vec![0u32; n];
            let mut ndead = [0u32];
            dead_list(
                &st.since_fired,
                cfg.dead_tokens.min(u32::MAX as u64) as u32,
                &mut dead,
                &mut ndead,
            );
            let aux = topk_relu_codes(&pre, rows, n, cfg.k_aux, Some((&dead, &ndead)));
            let mut e = vec![0.0f32; rows * d];
            sub(x, &x_hat, &mut e);
            let mut e_hat = vec![0.0f32; rows * d];
            sparse_decode(
                &aux.row_ptr,
                &aux.idx,
                &aux.val,
                &p.w_dec,
                None,
                rows,
                n,
                d,
                &mut e_hat,
            );
            let mut de = vec![0.0f32; rows * d];
            mse_backward(
                &e,
                &e_hat,
                rows,
                d,
                cfg.aux_coef * 2.0 * inv_b,
                &mut de,
                &mut st.metrics,
                slot::AUX,
                None,
            );
            sparse_backward(&aux, &de, &xc, p, rows, &mut g, true);
        }
        Arch::Relu | Arch::Jumprelu => {
            // Codes of the kept entries; the sparse path when they fit the capacity both
            // engines use (code_capacity), else the dense one.
            let jump =
                (cfg.arch == Arch::Jumprelu).then_some((&p.log_threshold[..], cfg.bandwidth));
            let (row_ptr, idx, val, pre_val) = activation_codes(&pre, rows, n, jump);
            let coef = if cfg.arch == Arch::Relu {
                cfg.l1
            } else {
                cfg.l0
            } * sparsity_scale;
            if (row_ptr[rows] as usize) <= code_capacity(rows, n) {
                let codes = Codes {
                    row_ptr,
                    idx,
                    pre_val,
                    val,
                };
                decode_loss_stats(
                    &codes,
                    p,
                    x,
                    &norms,
                    rows,
                    inv_b,
                    &mut x_hat,
                    &mut dy,
                    fired,
                    &mut st.metrics,
                );
                // dz at the kept entries, then the penalty's and the activation's backward.
                let nnz = codes.idx.len();
                let mut gslot = vec![0.0f32; nnz];
                #[rustfmt::skip]
                sparse_dot(&codes.row_ptr, &codes.idx, &dy, &p.w_dec, rows, n, d, &mut gslot);
                let mut dval = vec![0.0f32; nnz];
                if cfg.arch == Arch::Relu {
                    #[rustfmt::skip]
                    sparse_l1_backward(&codes.row_ptr, &codes.idx, &codes.val, rows, n, &norms, coef * inv_b, &mut gslot);
                    relu_backward(&codes.pre_val, &gslot, &mut dval);
                } else {
                    #[rustfmt::skip]
                    sparse_jumprelu_backward(&codes.row_ptr, &codes.idx, &codes.pre_val, &gslot, rows, n, &p.log_threshold, &mut dval);
                }
                let (lat_ptr, lat_row, lat_slot) = codes.transpose(rows, n);
                g.w_dec = vec![0.0f32; n * d];
                g.w_enc = vec![0.0f32; d * n];
                g.b_enc = vec![0.0f32; n];
                #[rustfmt::skip]
                gather_dw_dec(&lat_ptr, &lat_row, &lat_slot, &codes.val, &dy, n, d, false, &mut g.w_dec);
                if cfg.arch == Arch::Relu {
                    // L1 = coef * mean_b sum_i z_i ||W_dec[i]||: its W_dec gradient.
                    let mut zsum = vec![0.0f32; n];
                    gather_db_enc(&lat_ptr, &lat_slot, &codes.val, n, false, &mut zsum);
                    #[rustfmt::skip]
                    l1_decoder_grad(&zsum, &p.w_dec, &norms, n, d, coef * inv_b, &mut g.w_dec);
                } else {
                    #[rustfmt::skip]
                    gather_jumprelu_threshold(&lat_ptr, &lat_slot, &codes.pre_val, &gslot, n, &p.log_threshold, cfg.bandwidth, coef * inv_b, &mut g.log_threshold);
                }
                #[rustfmt::skip]
                gather_dw_enc(&lat_ptr, &lat_row, &lat_slot, &dval, &xc, n, d, false, &mut g.w_enc);
                gather_db_enc(&lat_ptr, &lat_slot, &dval, n, false, &mut g.b_enc);
            } else {
                let mut z = vec![0.0f32; rows * n];
                if cfg.arch == Arch::Relu {
                    relu_forward(&pre, &mut z);
                } else {
                    jumprelu_forward(&pre, rows, n, &p.log_threshold, &mut z);
                }
                let dec = GemmSpec {
                    m: rows,
                    n: d,
                    k: n,
                    trans_a: false,
                    trans_b: false,
                    alpha: 1.0,
                    beta: 0.0,
                };
                gemm(&dec, &z, &p.w_dec, Some(&p.b_dec), &mut x_hat);
                mse_backward(
                    x,
                    &x_hat,
                    rows,
                    d,
                    2.0 * inv_b,
                    &mut dy,
                    &mut st.metrics,
                    slot::SSE,
                    Some(slot::SST),
                );
                dense_stats(&z, rows, n, &norms, fired, &mut st.metrics);
                // dz = dy W_dec^T
                let mut dz = vec![0.0f32; rows * n];
                let nt = GemmSpec {
                    m: rows,
                    n,
                    k: d,
                    trans_a: false,
                    trans_b: true,
                    alpha: 1.0,
                    beta: 0.0,
                };
                gemm(&nt, &dy, &p.w_dec, None, &mut dz);
                // dW_dec = z^T dy
                let mut dw_dec = vec![0.0f32; n * d];
                let tn = GemmSpec {
                    m: n,
                    n: d,
                    k: rows,
                    trans_a: true,
                    trans_b: false,
                    alpha: 1.0,
                    beta: 0.0,
                };
                gemm(&tn, &z, &dy, None, &mut dw_dec);
                let mut dpre = vec![0.0f32; rows * n];
                let coef = if cfg.arch == Arch::Relu {
                    cfg.l1
                } else {
                    cfg.l0
                } * sparsity_scale;
                if cfg.arch == Arch::Relu {
                    // L1 = coef * mean_b sum_i z_i ||W_dec[i]||
                    l1_backward(&z, rows, n, &norms, coef * inv_b, &mut dz);
                    let mut zsum = vec![0.0f32; n];
                    col_sum(&z, rows, n, &mut zsum, false);
                    l1_decoder_grad(&zsum, &p.w_dec, &norms, n, d, coef * inv_b, &mut dw_dec);
                    relu_backward(&pre, &dz, &mut dpre);
                } else {
                    jumprelu_backward(
                        &pre,
                        &dz,
                        rows,
                        n,
                        &p.log_threshold,
                        cfg.bandwidth,
                        coef * inv_b,
                        &mut dpre,
                        &mut g.log_threshold,
                    );
                }
                // dW_enc = xc^T dpre, db_enc = column sums of dpre
                let mut dw_enc = vec![0.0f32; d * n];
                let tn2 = GemmSpec {
                    m: d,
                    n,
                    k: rows,
                    trans_a: true,
                    trans_b: false,
                    alpha: 1.0,
                    beta: 0.0,
                };
                gemm(&tn2, &xc, &dpre, None, &mut dw_enc);
                let mut db_enc = vec![0.0f32; n];
                col_sum(&dpre, rows, n, &mut db_enc, false);
                g.w_dec = dw_dec;
                g.w_enc = dw_enc;
                g.b_enc = db_enc;
            }
        }
    }

    // db_dec = sum_b dy_b - db_enc W_enc^T   (b_dec enters through x_hat and through xc)
    col_sum(&dy, rows, d, &mut g.b_dec, false);
    let bd = GemmSpec {
        m: 1,
        n: d,
        k: n,
        trans_a: false,
        trans_b: true,
        alpha: -1.0,
        beta: 1.0,
    };
    gemm(&bd, &g.b_enc, &p.w_enc, None, &mut g.b_dec);

    g
}
