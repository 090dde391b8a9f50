//! The CPU engine: the training step as the reference kernels of `crate::reference`, in the
//! stages of the GPU engine (`gpu.rs`), with the same names in the same order, so the two
//! files read side by side. It is both the judge of the GPU engine and the engine that runs
//! when there is no hardware GPU: the reference kernels, except where a faster twin gives
//! bitwise the same result (top-k, batch top-k and the ReLU / JumpReLU codes: `cpu_codes`;
//! sparse decode, sparse dot, W_enc's and W_dec's sparse gradients: `cpu_sparse`; their
//! Matryoshka forms: `cpu_matryoshka`; Adam: `cpu_optim`; W_dec's row norms and the dense
//! path's column sums, statistics and L1 backward: `cpu_reduce`; the dense path's
//! activations: `cpu_activations`; each tested bit for bit against the reference) and the
//! dense products (`crate::blas`, tested against the reference). The CPU takes the whole
//! batch as one chunk (the GPU splits a batch whose pre-activations exceed one storage
//! binding; the math is the same).
//!
//! A step, for input rows x (B, d) already scaled (a transcoder's: x (B, d_in) followed by
//! its targets y (B, d_out), and then the decoder's side, x_hat, dy, AuxK's e, has d_out
//! columns, the loss is against y and the encoder takes x as it is: see
//! `super::transcoder`; an SAE's target is its input, y = x):
//!
//!   prepare           row_norms of W_dec; topk / batchtopk: dead_list (AuxK's latents)
//!   per chunk:
//!     encode          xc = x - b_dec (sub_row); pre = xc W_enc + b_enc (gemm, then the
//!                     bias with pre's block maxima: add_bias_block_max)
//!     codes           topk: topk_codes from the block maxima (the k largest positive,
//!                     latents ascending; k of this step, `TrainConfig::k_at`); encode and
//!                     topk_codes are `forward`'s, the stages the inference `Encoder` runs
//!                     too; batchtopk / matryoshka: batchtopk from the block maxima,
//!                     threshold_ema, relu_forward; all three: AuxK's
//!                     topk_codes among the dead latents. relu / jumprelu: activation_codes,
//!                     kept sparse when they fit `code_capacity`, else the dense path
//!     decode          x_hat = codes W_dec + b_dec (sparse_decode; matryoshka: every
//!                     level's prefix decode, matryoshka_decode), or z = act(pre) and
//!                     x_hat = z W_dec + b_dec (gemm); AuxK: e_hat = aux codes W_dec
//!     loss            dy = 2 / B (x_hat - x) with SSE / SST (mse_backward); matryoshka:
//!                     each group's dy over its levels (matryoshka_residuals); L0 / L1 and
//!                     firing counts (sparse_stats / dense_stats); AuxK: e = x - x_hat (sub),
//!                     de = 2 aux_coef / B (e_hat - e) with the aux loss (mse_backward)
//!     backward        topk / batchtopk: sparse_backward of the codes, then of AuxK's codes
//!                     (added); matryoshka: the same with each latent's group's dy
//!                     (sparse_dot_levels, gather_dw_dec_levels); relu / jumprelu: sparse_activation_backward or
//!                     dense_backward (the penalty's and the activation's backward in both);
//!                     db_dec's first term, col_sum of dy
//!   finish_gradients  relu: the L1 penalty's decoder-norm term (l1_decoder_grad);
//!                     db_dec -= db_enc W_enc^T (gemm)
//!   optimizer         unit-norm decoders: decoder_grad_prep; sums of squares, global norm
//!                     clip (clip_scale); adam (adam_unit_rows for a unit-norm W_dec)
//!   count_dead        update_dead: firing counters, tokens since each latent fired
//!
//! The stages after the chunks (`finish_gradients`, `optimizer`) are in `cpu/update.rs`, as
//! the GPU engine's are in `gpu/update.rs`. [`step_marked`] calls a mark after each stage
//! with the GPU engine's stage names (`gpu::Mark`); `train --profile` times the stages by
//! it. The step's large buffers (pre-activations, gradients, the per-row buffers) come from
//! the engine's [`Scratch`] and go back to it, so that a run allocates them once
//! (`cpu/scratch.rs` says why).

mod scratch;
mod update;

use std::borrow::Cow;

pub use scratch::Scratch;
use update::optimizer;

use crate::blas::gemm;
use crate::cpu_activations::{jumprelu_backward, jumprelu_forward, relu_backward, relu_forward};
use crate::cpu_codes::{BLOCK, batchtopk_from_bmax};
use crate::cpu_matryoshka::{
    gather_dw_dec_levels, matryoshka_decode, matryoshka_residuals, sparse_dot_levels,
};
use crate::cpu_reduce::{col_sum, dense_stats, l1_backward};
use crate::cpu_sparse::{gather_dw_dec, gather_dw_enc, sparse_decode, sparse_dot};
use crate::reference::codes::dead_list;
use crate::reference::gemm::GemmSpec;
use crate::reference::ops::threshold_ema;
use crate::reference::optim::{rescale_grads, rescale_view};
use crate::reference::reduce::{mse_backward, slot, sparse_stats, sub, update_dead};
use crate::reference::sparse::{
    build_transpose, gather_db_enc, gather_jumprelu_threshold, sparse_jumprelu_backward,
    sparse_l1_backward,
};

use super::engine::{StepEngine, StepScalars, TrainState, code_capacity, dead_after, selects_topk};
use super::forward::{
    Codes, Eligible, EncoderWeights, activation_cpu_within, encode_cpu, topk_cpu,
};
use super::storage::{self, BatchDtype};
use super::{Arch, DecoderNorm, SaeParams, TrainConfig};
use crate::Result;
use crate::data::paired::split_batch;

/// Gradients of one step, one per parameter tensor.
pub type Grads = SaeParams;

/// The per-latent transpose of a batch's codes.
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

/// One chunk of the batch and everything the step keeps per row (`gpu.rs`' `Chunk`).
struct Chunk<'x> {
    rows: usize,
    /// The target (rows, d_out): the input x itself for an SAE. xc (rows, d_in) and the
    /// rest (rows, d_out) each.
    y: &'x [f32],
    xc: Vec<f32>,
    x_hat: Vec<f32>,
    dy: Vec<f32>,
    /// (rows, n)
    pre: Vec<f32>,
    /// The maxima of pre's blocks of `cpu_codes::BLOCK` entries, (rows, ceil(n / BLOCK)):
    /// where the top-k selections start (the GPU's come from its GEMM's epilogue).
    bmax: Vec<f32>,
    /// Every entry of `pre` finite (the encoder checks them as it adds the bias).
    pre_finite: bool,
    /// topk / batchtopk: the top-k codes; relu / jumprelu: the kept entries when they fit
    /// `code_capacity`, else None and the dense `z`.
    codes: Option<Codes>,
    /// relu / jumprelu over capacity: z = act(pre), (rows, n).
    z: Option<Vec<f32>>,
    /// topk / batchtopk: AuxK's codes, its residual e, reconstruction e_hat and gradient
    /// de, (rows, d) each.
    aux: Option<Codes>,
    e: Vec<f32>,
    e_hat: Vec<f32>,
    de: Vec<f32>,
    /// matryoshka: each level's reconstruction and each group's dy, (M, rows, d) each.
    x_hat_levels: Vec<f32>,
    dy_levels: Vec<f32>,
}

impl Chunk<'_> {
    /// Its buffers back to `scratch`, for the next step.
    fn recycle(self, scratch: &mut Scratch) {
        let (z, levels) = (self.z.unwrap_or_default(), self.x_hat_levels);
        let per_row = [self.xc, self.x_hat, self.dy, self.e, self.e_hat, self.de];
        for v in per_row
            .into_iter()
            .chain([self.pre, self.bmax, z, levels, self.dy_levels])
        {
            scratch.give(v);
        }
    }
}

/// What a step keeps across its chunks (`gpu.rs`' `GpuEngine` buffers): the state it
/// reads and updates, the decoder norms, AuxK's eligible latents and the gradients.
struct Step<'s> {
    cfg: &'s TrainConfig,
    st: &'s mut TrainState,
    fired: &'s mut [u32],
    scratch: &'s mut Scratch,
    /// 1 / rows of the whole batch.
    inv_b: f32,
    /// The sparsity penalty's coefficient of this step.
    coef: f32,
    norms: Vec<f32>,
    /// AuxK's eligible latents: the dead ones, ascending, and their count.
    dead: Vec<u32>,
    ndead: [u32; 1],
    grads: Grads,
    /// relu: column sums of z, for the L1 penalty's decoder-norm term.
    zsum: Vec<f32>,
    /// matryoshka: the level widths (empty otherwise).
    widths: Vec<u32>,
}

/// Called at the end of each stage of the CPU step with the stage's name (the GPU engine's
/// `Mark` without an encoder); a no-op in training, `train --profile` times the stages.
pub type CpuMark<'a> = dyn FnMut(&'static str) + 'a;

/// One training step of the CPU engine on `x` (rows x d, scaled; with --batch-dtype f16
/// rounded to halves first, as the GPU engine's upload does).
pub fn step(cfg: &TrainConfig, st: &mut TrainState, x: &[f32], rows: usize) {
    step_marked(cfg, st, &mut Scratch::default(), x, rows, &mut |_| {})
}

/// [`step`] with `mark` called after each stage, its working buffers taken from and handed
/// back to `scratch`.
pub fn step_marked(
    cfg: &TrainConfig,
    st: &mut TrainState,
    scratch: &mut Scratch,
    x: &[f32],
    rows: usize,
    mark: &mut CpuMark,
) {
    let rounded;
    let x = match cfg.batch_dtype {
        BatchDtype::F32 => x,
        BatchDtype::F16 => {
            rounded = storage::round_f16(x);
            &rounded
        }
    };
    let n = st.params.n;
    let sc = StepScalars::at(cfg, st.step);
    let mut fired = vec![0u32; n];
    let coef = sc.sparsity_coef;
    let g = marked_gradients(cfg, st, scratch, x, rows, coef, &mut fired, mark);
    optimizer(cfg, st, &g, &sc);
    for t in g.into_tensors() {
        scratch.give(t);
    }
    mark("optimizer");
    count_dead(cfg, st, &mut fired, rows);
    mark("dead latents");
    st.step += 1;
}

/// `grads` (the step's gradients of the parameters in `st`) taken on the unit-row view of
/// `st.params`, mapped back to the parameters.
fn rescaled(st: &mut TrainState, grads: &mut dyn FnMut(&mut TrainState) -> Grads) -> Grads {
    let (n, d) = (st.params.n, st.params.d);
    let mut view = st.params.clone();
    let mut norms = vec![0.0f32; n];
    let p = &st.params;
    #[rustfmt::skip]
    rescale_view(&p.w_enc, &p.b_enc, &p.w_dec, n, d, &mut view.w_enc, &mut view.b_enc, &mut view.w_dec, &mut norms);
    let own = std::mem::replace(&mut st.params, view);
    let mut g = grads(st);
    let view = std::mem::replace(&mut st.params, own);
    let p = &st.params;
    #[rustfmt::skip]
    rescale_grads(&p.w_enc, &p.b_enc, &view.w_dec, &norms, n, d, &mut g.w_enc, &mut g.b_enc, &mut g.w_dec);
    g
}

/// Forward and backward of one step: the loss gradients (before the decoder-norm
/// projection and clipping), metric sums added into `st.metrics`, per-latent fire counts
/// into `fired`, and the BatchTopK threshold EMA updated. `sparsity_coef` is the step's L1 /
/// L0 coefficient (`TrainConfig::sparsity_coef_at`). With a decoder whose norms are folded
/// into the codes (`DecoderNorm::Rescale`) the stages run on the unit-row view of the
/// parameters and the gradients are mapped back (`rescale_view`, `rescale_grads`).
pub fn gradients(
    cfg: &TrainConfig,
    st: &mut TrainState,
    x: &[f32],
    rows: usize,
    sparsity_coef: f32,
    fired: &mut [u32],
) -> Grads {
    let scratch = &mut Scratch::default();
    marked_gradients(cfg, st, scratch, x, rows, sparsity_coef, fired, &mut |_| {})
}

/// [`gradients`] with `mark` called after each stage, the working buffers from `scratch`.
#[allow(clippy::too_many_arguments)]
fn marked_gradients(
    cfg: &TrainConfig,
    st: &mut TrainState,
    scratch: &mut Scratch,
    x: &[f32],
    rows: usize,
    sparsity_coef: f32,
    fired: &mut [u32],
    mark: &mut CpuMark,
) -> Grads {
    // The stages on the parameters in `st` as they are.
    let mut stages = |st: &mut TrainState| -> Grads {
        let mut s = Step::prepare(cfg, st, &mut *fired, &mut *scratch, rows, sparsity_coef);
        mark("prepare");
        let (x, y) = split_batch(x, rows, cfg.d_in, cfg.d_out);
        let mut ch = s.encode(x, y, rows);
        mark("encode");
        if !ch.pre_finite {
            // The run has diverged (the data are checked, so the parameters overflowed).
            // Top-k has no order on NaN: poison the gradients and the loss instead, so the
            // trainer stops at its next check exactly as it does when the GPU engine meets
            // a NaN.
            s.st.metrics[slot::SSE as usize] = f32::NAN;
            return s.st.params.map(|_, t| vec![f32::NAN; t.len()]);
        }
        s.codes(&mut ch);
        mark("codes");
        s.decode(&mut ch);
        mark("decode");
        s.loss(&mut ch);
        mark("loss");
        s.backward(&ch);
        mark("backward");
        ch.recycle(s.scratch);
        s.finish_gradients();
        mark("finish gradients");
        s.grads
    };
    if cfg.decoder_norm == DecoderNorm::Rescale {
        rescaled(st, &mut stages)
    } else {
        stages(st)
    }
}

impl<'s> Step<'s> {
    /// Before the chunks: decoder row norms, AuxK's dead latents, the gradients (the small
    /// ones zeroed).
    fn prepare(
        cfg: &'s TrainConfig,
        st: &'s mut TrainState,
        fired: &'s mut [u32],
        scratch: &'s mut Scratch,
        rows: usize,
        coef: f32,
    ) -> Step<'s> {
        let p = &st.params;
        let (d_out, n) = (p.d_out(), p.n);
        let mut norms = vec![0.0f32; n];
        crate::cpu_reduce::row_norms(&p.w_dec, n, d_out, &mut norms);
        let mut dead = vec![0u32; n];
        let mut ndead = [0u32];
        if selects_topk(cfg.arch) {
            dead_list(&st.since_fired, dead_after(cfg), &mut dead, &mut ndead);
        }
        let grads = scratch.gradients(p);
        Step {
            cfg,
            st,
            fired,
            scratch,
            inv_b: 1.0 / rows as f32,
            coef,
            norms,
            dead,
            ndead,
            grads,
            zsum: vec![0.0f32; n],
            widths: super::matryoshka::widths_u32(cfg),
        }
    }

    /// xc = x - b_dec (a transcoder: xc = x); pre = xc W_enc + b_enc.
    fn encode<'x>(&mut self, x: &'x [f32], y: &'x [f32], rows: usize) -> Chunk<'x> {
        let (p, sc) = (&self.st.params, &mut *self.scratch);
        let (d, n, d_out) = (p.d, p.n, p.d_out());
        let b_dec = self.cfg.d_out.is_none().then_some(&p.b_dec[..]);
        let (w_enc, b_enc) = (&p.w_enc[..], &p.b_enc[..]);
        let w = EncoderWeights {
            w_enc,
            b_enc,
            b_dec,
        };
        let (mut xc, mut pre) = (sc.overwritten(rows * d), sc.overwritten(rows * n));
        let mut bmax = sc.overwritten(rows * n.div_ceil(BLOCK));
        let pre_finite = encode_cpu(&w, x, rows, d, &mut xc, &mut pre, &mut bmax);
        let aux = selects_topk(self.cfg.arch);
        let mut per_row = || sc.zeros(if aux { rows * d_out } else { 0 });
        let (e, e_hat, de) = (per_row(), per_row(), per_row());
        let levels = self.widths.len() * rows * d_out;
        Chunk {
            rows,
            y,
            xc,
            x_hat: sc.zeros(rows * d_out),
            dy: sc.zeros(rows * d_out),
            pre,
            bmax,
            pre_finite,
            codes: None,
            z: None,
            aux: None,
            e,
            e_hat,
            de,
            x_hat_levels: sc.zeros(levels),
            dy_levels: sc.zeros(levels),
        }
    }

    /// The codes of the chunk (and AuxK's), or, for relu / jumprelu past the capacity,
    /// none (the dense path).
    fn codes(&mut self, ch: &mut Chunk) {
        let cfg = self.cfg;
        let (rows, n) = (ch.rows, self.st.params.n);
        let (pre, bmax) = (&ch.pre, &ch.bmax[..]);
        // This step's k (`TrainConfig::k_at`: --k, or on the annealing schedule).
        let k = cfg.k_at(self.st.step);
        match cfg.arch {
            Arch::Topk => {
                let all = Eligible::All { bmax: Some(bmax) };
                ch.codes = Some(topk_cpu(pre, rows, n, k, all));
            }
            Arch::Batchtopk | Arch::Matryoshka => {
                let kt = k * rows;
                let mut row_ptr = vec![0u32; rows + 1];
                let mut idx = vec![0u32; kt];
                let mut val = vec![0.0f32; kt];
                let mut thr = [0.0f32];
                #[rustfmt::skip]
                batchtopk_from_bmax(pre, rows, n, kt, bmax, &mut row_ptr, &mut idx, &mut val, &mut thr);
                let mut state = [self.st.threshold];
                let first = self.st.step == 0;
                threshold_ema(&thr, &mut state, cfg.threshold_ema, first);
                self.st.threshold = state[0];
                ch.codes = Some(relu_codes(row_ptr, idx, val));
            }
            Arch::Relu | Arch::Jumprelu => {
                // The kept entries; sparse when they fit the capacity both engines use.
                let p = &self.st.params;
                let jump =
                    (cfg.arch == Arch::Jumprelu).then_some((&p.log_threshold[..], cfg.bandwidth));
                ch.codes = activation_cpu_within(pre, rows, n, jump, code_capacity(rows, n));
            }
        }
        if selects_topk(cfg.arch) {
            // AuxK: the k_aux largest positive pre among the dead latents.
            let dead = Eligible::Listed(&self.dead[..self.ndead[0] as usize]);
            ch.aux = Some(topk_cpu(pre, rows, n, cfg.k_aux, dead));
        }
    }

    /// x_hat = codes W_dec + b_dec, or z = act(pre), x_hat = z W_dec + b_dec; AuxK's
    /// e_hat = aux codes W_dec.
    fn decode(&mut self, ch: &mut Chunk) {
        let p = &self.st.params;
        let (rows, n, d) = (ch.rows, p.n, p.d_out());
        match &ch.codes {
            Some(c) if !self.widths.is_empty() => {
                let (w, lv) = (&self.widths, &mut ch.x_hat_levels);
                #[rustfmt::skip]
                matryoshka_decode(&c.row_ptr, &c.idx, &c.val, &p.w_dec, &p.b_dec, w, rows, n, d, lv);
                // The full reconstruction is the last level.
                ch.x_hat.copy_from_slice(&lv[lv.len() - rows * d..]);
            }
            Some(c) => {
                #[rustfmt::skip]
                sparse_decode(&c.row_ptr, &c.idx, &c.val, &p.w_dec, Some(&p.b_dec), rows, n, d, &mut ch.x_hat);
            }
            None => {
                let mut z = self.scratch.overwritten(rows * n);
                if self.cfg.arch == Arch::Relu {
                    relu_forward(&ch.pre, &mut z);
                } else {
                    jumprelu_forward(&ch.pre, rows, n, &p.log_threshold, &mut z);
                }
                let spec = GemmSpec::nn(rows, d, n);
                gemm(&spec, &z, &p.w_dec, Some(&p.b_dec), &mut ch.x_hat);
                ch.z = Some(z);
            }
        }
        if let Some(a) = &ch.aux {
            #[rustfmt::skip]
            sparse_decode(&a.row_ptr, &a.idx, &a.val, &p.w_dec, None, rows, n, d, &mut ch.e_hat);
        }
    }

    /// dy = 2 / B (x_hat - x) with the SSE / SST sums; L0 / L1 and the firing counts;
    /// AuxK's residual e = x - x_hat and its gradient de with the aux loss.
    fn loss(&mut self, ch: &mut Chunk) {
        let (rows, n, d) = (ch.rows, self.st.params.n, self.st.params.d_out());
        let (inv_b, metrics) = (self.inv_b, &mut self.st.metrics);
        #[rustfmt::skip]
        mse_backward(ch.y, &ch.x_hat, rows, d, 2.0 * inv_b, &mut ch.dy, metrics, slot::SSE, Some(slot::SST));
        if !self.widths.is_empty() {
            let (m, lv, dl) = (self.widths.len(), &ch.x_hat_levels, &mut ch.dy_levels);
            matryoshka_residuals(ch.y, lv, m, rows, d, 2.0 * inv_b, dl, metrics);
        }
        match (&ch.codes, &ch.z) {
            (Some(c), _) => {
                #[rustfmt::skip]
                sparse_stats(&c.row_ptr, &c.idx, &c.val, rows, n, &self.norms, self.fired, metrics);
            }
            (None, Some(z)) => dense_stats(z, rows, n, &self.norms, self.fired, metrics),
            (None, None) => unreachable!("decode leaves codes or z"),
        }
        if ch.aux.is_some() && self.ndead[0] > 0 {
            // With no dead latent AuxK has no loss (the GPU engine's gate; SAELens's too).
            sub(ch.y, &ch.x_hat, &mut ch.e);
            let scale = self.cfg.aux_coef * 2.0 * inv_b;
            #[rustfmt::skip]
            mse_backward(&ch.e, &ch.e_hat, rows, d, scale, &mut ch.de, metrics, slot::AUX, None);
        }
    }

    /// The chunk's gradients; db_dec's first term, the column sums of dy.
    fn backward(&mut self, ch: &Chunk) {
        let (rows, d) = (ch.rows, self.st.params.d_out());
        // AuxK's backward only with dead latents, as the GPU engine's gate: with none its
        // codes are empty and would add nothing, after passes over every latent.
        let aux_live = self.ndead[0] > 0;
        match (&ch.codes, &ch.aux) {
            (Some(c), Some(a)) if !self.widths.is_empty() => {
                self.levels_backward(ch, c);
                if aux_live {
                    self.sparse_backward(ch, a, &ch.de, true);
                }
            }
            (Some(c), Some(a)) => {
                self.sparse_backward(ch, c, &ch.dy, false);
                if aux_live {
                    self.sparse_backward(ch, a, &ch.de, true);
                }
            }
            (Some(c), None) => self.sparse_activation_backward(ch, c),
            (None, _) => self.dense_backward(ch),
        }
        // b_dec enters every level: matryoshka's first group's dy sums them all.
        let dy = if self.widths.is_empty() {
            &ch.dy
        } else {
            &ch.dy_levels[..rows * d]
        };
        col_sum(dy, rows, d, &mut self.grads.b_dec, false);
    }

    /// Gradients of a sparse code path: given dL/dx_hat-like `dy` (rows, d) for a decode
    /// of `c`, the slot gradients, ReLU mask, transpose, and the gathers of dW_dec, dW_enc
    /// and db_enc (added to what is there, for the latents with entries, when
    /// `accumulate`).
    fn sparse_backward(&mut self, ch: &Chunk, c: &Codes, dy: &[f32], accumulate: bool) {
        let p = &self.st.params;
        let (rows, n, d) = (ch.rows, p.n, p.d_out());
        let cap = c.idx.len();
        let mut gslot = vec![0.0f32; cap];
        sparse_dot(&c.row_ptr, &c.idx, dy, &p.w_dec, rows, n, d, &mut gslot);
        let mut dval = vec![0.0f32; cap];
        relu_backward(&c.pre_val, &gslot, &mut dval);
        self.gather_grads(ch, c, dy, &dval, accumulate);
    }

    /// matryoshka's `sparse_backward`: each latent's slot gradient and decoder gradient
    /// from its group's dy (`dy_levels`); the encoder's gathers as in `gather_grads`.
    fn levels_backward(&mut self, ch: &Chunk, c: &Codes) {
        let p = &self.st.params;
        // The decoder's side has d_out values (d for an SAE), the encoder's d.
        let (rows, n, d, d_out, w) = (ch.rows, p.n, p.d, p.d_out(), &self.widths);
        let cap = c.idx.len();
        let mut gslot = vec![0.0f32; cap];
        #[rustfmt::skip]
        sparse_dot_levels(&c.row_ptr, &c.idx, &ch.dy_levels, &p.w_dec, w, rows, n, d_out, &mut gslot);
        let mut dval = vec![0.0f32; cap];
        relu_backward(&c.pre_val, &gslot, &mut dval);
        let (lat_ptr, lat_row, lat_slot) = c.transpose(rows, n);
        let (lp, lr, ls, g) = (&lat_ptr, &lat_row, &lat_slot, &mut self.grads);
        let dl = &ch.dy_levels;
        #[rustfmt::skip]
        gather_dw_dec_levels(lp, lr, ls, &c.val, dl, w, rows, n, d_out, false, &mut g.w_dec);
        gather_dw_enc(lp, lr, ls, &dval, &ch.xc, n, d, false, &mut g.w_enc);
        gather_db_enc(lp, ls, &dval, n, false, &mut g.b_enc);
    }

    /// The per-latent transpose of `c` (returned: lat_ptr, lat_row, lat_slot) and the
    /// gathers of dW_dec (from the code values and `dy`), dW_enc and db_enc (from the slot
    /// gradients `dval` and xc) into the gradients (added to them, for the latents with
    /// entries, when `accumulate`).
    fn gather_grads(
        &mut self,
        ch: &Chunk,
        c: &Codes,
        dy: &[f32],
        dval: &[f32],
        accumulate: bool,
    ) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let p = &self.st.params;
        let (rows, n, d, d_out) = (ch.rows, p.n, p.d, p.d_out());
        let (lat_ptr, lat_row, lat_slot) = c.transpose(rows, n);
        let (lp, lr, ls, g) = (&lat_ptr, &lat_row, &lat_slot, &mut self.grads);
        gather_dw_dec(lp, lr, ls, &c.val, dy, n, d_out, accumulate, &mut g.w_dec);
        gather_dw_enc(lp, lr, ls, dval, &ch.xc, n, d, accumulate, &mut g.w_enc);
        gather_db_enc(lp, ls, dval, n, accumulate, &mut g.b_enc);
        (lat_ptr, lat_row, lat_slot)
    }

    /// The sparse backward of a ReLU / JumpReLU step: dz at the kept entries, the
    /// penalty's and the activation's backward, the gathers (and z's column sums for relu's
    /// decoder-norm term, or the threshold gradient for jumprelu).
    fn sparse_activation_backward(&mut self, ch: &Chunk, c: &Codes) {
        let (cfg, p) = (self.cfg, &self.st.params);
        let (rows, n, d) = (ch.rows, p.n, p.d_out());
        let scale = self.coef * self.inv_b;
        let (rp, idx) = (&c.row_ptr, &c.idx);
        let nnz = idx.len();
        let mut gslot = vec![0.0f32; nnz];
        sparse_dot(rp, idx, &ch.dy, &p.w_dec, rows, n, d, &mut gslot);
        let mut dval = vec![0.0f32; nnz];
        if cfg.arch == Arch::Relu {
            #[rustfmt::skip]
            sparse_l1_backward(rp, idx, &c.val, rows, n, &self.norms, scale, &mut gslot);
            relu_backward(&c.pre_val, &gslot, &mut dval);
        } else {
            #[rustfmt::skip]
            sparse_jumprelu_backward(rp, idx, &c.pre_val, &gslot, rows, n, &p.log_threshold, &mut dval);
        }
        let (lat_ptr, _, lat_slot) = self.gather_grads(ch, c, &ch.dy, &dval, false);
        let (lp, ls, p) = (&lat_ptr, &lat_slot, &self.st.params);
        if cfg.arch == Arch::Relu {
            gather_db_enc(lp, ls, &c.val, n, false, &mut self.zsum);
        } else {
            let (lt, eps, g) = (&p.log_threshold, cfg.bandwidth, &mut self.grads);
            #[rustfmt::skip]
            gather_jumprelu_threshold(lp, ls, &c.pre_val, &gslot, n, lt, eps, scale, &mut g.log_threshold);
        }
    }

    /// The dense path's backward: dz = dy W_dec^T, dW_dec = z^T dy, the penalty's and the
    /// activation's backward, dW_enc = xc^T dpre, db_enc = column sums of dpre.
    fn dense_backward(&mut self, ch: &Chunk) {
        let (cfg, p) = (self.cfg, &self.st.params);
        let (rows, n, d, d_out) = (ch.rows, p.n, p.d, p.d_out());
        let scale = self.coef * self.inv_b;
        let (z, pre, g) = (ch.z.as_ref().expect("dense z"), &ch.pre, &mut self.grads);
        let mut dz = self.scratch.overwritten(rows * n);
        gemm(
            &GemmSpec::nt(rows, n, d_out),
            &ch.dy,
            &p.w_dec,
            None,
            &mut dz,
        );
        gemm(&GemmSpec::tn(n, d_out, rows), z, &ch.dy, None, &mut g.w_dec);
        let mut dpre = self.scratch.zeros(rows * n);
        if cfg.arch == Arch::Relu {
            l1_backward(z, rows, n, &self.norms, scale, &mut dz);
            col_sum(z, rows, n, &mut self.zsum, false);
            relu_backward(pre, &dz, &mut dpre);
        } else {
            let (lt, eps) = (&p.log_threshold, cfg.bandwidth);
            #[rustfmt::skip]
            jumprelu_backward(pre, &dz, rows, n, lt, eps, scale, &mut dpre, &mut g.log_threshold);
        }
        gemm(&GemmSpec::tn(d, n, rows), &ch.xc, &dpre, None, &mut g.w_enc);
        col_sum(&dpre, rows, n, &mut g.b_enc, false);
        self.scratch.give(dz);
        self.scratch.give(dpre);
    }
}

/// The firing counters: total fires, tokens since each latent last fired, dead count.
fn count_dead(cfg: &TrainConfig, st: &mut TrainState, fired: &mut [u32], rows: usize) {
    #[rustfmt::skip]
    update_dead(fired, &mut st.since_fired, &mut st.fire_total, rows, dead_after(cfg), &mut st.metrics);
}

/// The CPU engine: the CPU step on a host-side state, with the working buffers it keeps
/// from one step to the next.
pub struct CpuEngine {
    pub st: TrainState,
    pub scratch: Scratch,
}

impl CpuEngine {
    pub fn new(st: TrainState) -> CpuEngine {
        CpuEngine {
            st,
            scratch: Scratch::default(),
        }
    }
}

impl dyn StepEngine {
    /// This engine as the CPU engine, if it is one.
    pub fn as_cpu(&mut self) -> Option<&mut CpuEngine> {
        self.as_any().downcast_mut()
    }
}

impl StepEngine for CpuEngine {
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn step(&mut self, cfg: &TrainConfig, x: &[f32], rows: usize) -> Result<()> {
        step_marked(cfg, &mut self.st, &mut self.scratch, x, rows, &mut |_| {});
        Ok(())
    }
    fn take_metrics(&mut self) -> Result<(Vec<f32>, f32)> {
        let m = self.st.metrics.clone();
        for (i, v) in self.st.metrics.iter_mut().enumerate() {
            if i != slot::DEAD as usize {
                *v = 0.0;
            }
        }
        Ok((m, self.st.grad_norm))
    }
    fn state(&mut self) -> Result<Cow<'_, TrainState>> {
        Ok(Cow::Borrowed(&self.st))
    }
}
