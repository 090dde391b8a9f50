//! The GPU engine: the step of `cpu.rs`, stage for stage (the same names in the same
//! order, see its module doc), recorded into one command buffer per step with no readback.
//! Parameters, Adam moments, counters and metric sums live on the device; the host writes
//! the batch and the per-step Adam scalars (`AdamHyper` in a uniform buffer) before each
//! submission. A batch whose pre-activations exceed one storage binding runs as several
//! chunks, one after another, their gradients summed (batchtopk, whose selection is over
//! the whole batch, first encodes every chunk and selects: `gpu/batch.rs`); the ReLU /
//! JumpReLU paths (sparse codes or dense) and AuxK are chosen on the device, by gates. The
//! buffers are allocated in `gpu/alloc.rs`, the `StepEngine` readbacks are in
//! `gpu/readback.rs`, the step's recording (whole, or around an encoder product shared with
//! other engines) in `gpu/record.rs`, the stages after the chunks (`finish_gradients`, `optimizer`) in
//! `gpu/update.rs`.

mod alloc;
mod batch;
mod levels;
mod readback;
mod record;
use levels::{Dy, Levels, SparseGrad};
mod update;

pub use alloc::chunk_rows;
pub use record::EncoderSlots;

use std::sync::Arc;

use crate::Result;
use crate::gpu::{Gate, Gpu, GpuTensor};
use crate::kernels::activations::{
    jumprelu_backward, jumprelu_forward, relu_backward, relu_forward,
};
use crate::kernels::codes::{
    BLOCK,
    batch_topk::{BatchScratch, batchtopk_codes_from_bmax, csr_rows},
    compaction::{activation_codes_from_bmax, threshold_offsets},
    selection::{RowPath, dead_list, topk_codes, topk_codes_from_bmax},
};
use crate::kernels::gemm::{GemmSpec, gemm, texture_of};
use crate::kernels::ops::{gate_plan, threshold_ema, zero};
use crate::kernels::reduce::{
    col_sum, dense_stats, l1_backward, mse_backward, row_norms, slot, sparse_stats, sub,
    update_dead,
};
use crate::kernels::rescale::rescale_view;
use crate::kernels::sparse::{
    build_transpose, gather_db_enc, gather_dw_enc, gather_jumprelu_threshold, sparse_decode,
    sparse_dot, sparse_jumprelu_backward, sparse_l1_backward, texture_path,
};

use super::engine::{StepScalars, dead_after, selects_topk};
use super::forward::{EncoderWeights, encode_gpu};
use super::params::ParamSet;
use super::{Arch, TrainConfig};

/// Dispatches a ReLU / JumpReLU step records under its gate (both paths), with room.
const GATE_SLOTS: usize = 96;

/// Called by `record_step` at the end of each stage with the encoder holding the stage's
/// dispatches; a no-op in training. A profiler (benches/train.rs) submits the encoder,
/// waits, and replaces it with a fresh one, which times each stage on its own.
pub type Mark<'a> = dyn FnMut(&'static str, &mut wgpu::CommandEncoder) -> Result<()> + 'a;

/// Sparse codes on the device (CSR over rows) with their per-latent transpose.
struct CodeBufs {
    row_ptr: GpuTensor,
    idx: GpuTensor,
    pre_val: GpuTensor,
    val: GpuTensor,
    gslot: GpuTensor,
    dval: GpuTensor,
    lat_ptr: GpuTensor,
    lat_row: GpuTensor,
    lat_slot: GpuTensor,
}

/// One chunk of the batch: its rows, everything the step keeps per row, and the gates that
/// decide its paths on the device. The chunks of a step run one after another over the one
/// pre-activation buffer, their gradients summed (the math of the whole batch: every
/// gradient is a sum over rows scaled by 1 / batch).
struct Chunk {
    rows: usize,
    /// The chunk's first row in the batch.
    row0: usize,
    /// batchtopk in several chunks: this chunk's pre-activations (rows, n) and block maxima
    /// (rows * n / 32) u32, kept until the batch's selection (`batch::select_batch`).
    kept: Option<(GpuTensor, GpuTensor)>,
    /// This chunk's rows of the batch, and the step's per-row tensors: x and xc (rows, d),
    /// the target y and the decoder's side (rows, d_out) (an SAE: y is x, d_out = d; a
    /// transcoder: xc is x, the encoder takes its input as it is).
    x: GpuTensor,
    y: GpuTensor,
    xc: GpuTensor,
    x_hat: GpuTensor,
    dy: GpuTensor,
    /// AuxK's residual, its reconstruction and gradient: (rows, d) for topk / batchtopk,
    /// (1, d) unused otherwise.
    e: GpuTensor,
    e_hat: GpuTensor,
    de: GpuTensor,
    /// topk / batchtopk: the top-k codes, this step's rows * k slots of `code_store`;
    /// relu / jumprelu: the kept entries (capacity engine::code_capacity of the chunk's
    /// rows).
    codes: CodeBufs,
    /// The codes' buffers, for the run's largest k (`TrainConfig::k_max`).
    code_store: CodeBufs,
    aux: Option<CodeBufs>,
    /// relu / jumprelu: runs the sparse path or, when the codes overflow, the dense one.
    gate: Option<Arc<Gate>>,
    /// topk / batchtopk: runs AuxK's selection, decode and backward only with dead latents.
    aux_gate: Option<Arc<Gate>>,
    /// jumprelu with several chunks: this chunk's threshold gradient (n), summed after.
    dthr: Option<GpuTensor>,
    /// matryoshka: every level's reconstruction and every group's dy (`gpu/levels.rs`).
    levels: Option<Levels>,
}

pub struct GpuEngine {
    gpu: Arc<Gpu>,
    cfg: TrainConfig,
    /// Rows of the batch (all chunks).
    rows: usize,
    d: usize,
    /// The decoder's width: the target's (transcoders), else d.
    d_out: usize,
    n: usize,
    /// Parameters, gradients and Adam moments: W_enc (d, n), W_dec (n, d_out), b_enc (n),
    /// b_dec (d_out), log_threshold (n for jumprelu, else 1 unused element kept at 0).
    params: ParamSet<GpuTensor>,
    /// The parameters the step's forward and backward read: `params` itself, or with
    /// --decoder-norm rescale their unit-row view (W_enc', b_enc', U; b_dec and
    /// log_threshold are `params`'), written by `prepare`.
    fwd: ParamSet<GpuTensor>,
    /// --decoder-norm rescale: the decoder row norms the view divides out, (n).
    dec_norms: Option<GpuTensor>,
    grads: ParamSet<GpuTensor>,
    m: ParamSet<GpuTensor>,
    v: ParamSet<GpuTensor>,
    /// The whole batch (rows, d): chunk 0's x when there is one chunk. Its target (rows,
    /// d_out), x itself for an SAE: with several chunks only read for the total sum of
    /// squares (the explained-variance denominator is about the batch mean).
    x: GpuTensor,
    y: GpuTensor,
    /// --batch-dtype f16: the batch and the target as uploaded, two halves per u32
    /// (ceil(rows * d / 2)), widened into `x` and `y` by unpack_f16 (`sae::storage`).
    x16: Option<GpuTensor>,
    y16: Option<GpuTensor>,
    /// Several chunks, jumprelu: the chunks' threshold gradients as (chunks, n) rows.
    dthr_rows: Option<GpuTensor>,
    chunks: Vec<Chunk>,
    /// Rows of the largest chunk: `pre` and the dense-path tensors hold (chunk_rows, n).
    chunk_rows: usize,
    pre: GpuTensor,
    /// build_transpose's scratch for a chunk's codes (`transpose_marks_len`).
    marks: GpuTensor,
    /// Block maxima of each chunk's pre-activations (chunk_rows, n / 32) u32, from the
    /// encoder GEMM's epilogue; batchtopk uses its scratch's instead. JumpReLU's are of
    /// pre - off, off (n) = the thresholds minus half the bandwidth (threshold_offsets).
    bmax: GpuTensor,
    off: Option<GpuTensor>,
    norms: GpuTensor,
    fired: GpuTensor,
    since: GpuTensor,
    total: GpuTensor,
    metrics: GpuTensor,
    acc: GpuTensor,
    clip: GpuTensor,
    /// Unit-norm decoder: per-row projection coefficients and projected sums of squares.
    dec_coef: GpuTensor,
    dec_part: GpuTensor,
    hyper: wgpu::Buffer,
    /// AuxK's eligible latents: the dead ones, ascending, and their count.
    dead: GpuTensor,
    ndead: GpuTensor,
    thr: GpuTensor,
    thr_state: GpuTensor,
    /// matryoshka: the level widths (M) u32.
    widths: Option<GpuTensor>,
    /// batchtopk / matryoshka: the candidate path's scratch and the gate of its whole-batch
    /// fallback.
    batch: Option<BatchScratch>,
    /// batchtopk in several chunks: the batch's codes (row_ptr (rows + 1) u32, idx u32,
    /// pre_val), each chunk's rows of which `codes` takes.
    batch_codes: Option<[GpuTensor; 3]>,
    // Dense path (relu / jumprelu), (chunk_rows, n) each.
    z: Option<GpuTensor>,
    dz: Option<GpuTensor>,
    dpre: Option<GpuTensor>,
    zsum: Option<GpuTensor>,
    step: u64,
}

impl GpuEngine {
    /// Before the chunks: decoder row norms; topk / batchtopk: AuxK's dead latents;
    /// jumprelu: the threshold offsets the block maxima are taken against.
    fn prepare(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let (g, cfg, p) = (&*self.gpu, &self.cfg, &self.fwd);
        if let Some(norms) = &self.dec_norms {
            let (q, n, d) = (&self.params, self.n, self.d);
            #[rustfmt::skip]
            rescale_view(g, enc, &q.w_enc, &q.b_enc, &q.w_dec, n, d, &p.w_enc, &p.b_enc, &p.w_dec, norms)?;
        }
        row_norms(g, enc, &p.w_dec, self.n, self.d_out, &self.norms)?;
        if selects_topk(cfg.arch) {
            #[rustfmt::skip]
            dead_list(g, enc, &self.since, dead_after(cfg), &self.dead, &self.ndead)?;
        }
        if let Some(off) = &self.off {
            threshold_offsets(g, enc, &p.log_threshold, cfg.bandwidth, off)?;
        }
        Ok(())
    }

    /// This chunk's pre-activations (chunk rows, n).
    fn pre(&self, ch: &Chunk) -> GpuTensor {
        match &ch.kept {
            Some((pre, _)) => pre.view(&pre.shape),
            None => self.rows_of(&self.pre, ch.rows),
        }
    }

    /// Block maxima of this chunk's pre-activations (batchtopk: its scratch's, or with
    /// several chunks the chunk's own).
    fn bmax(&self, ch: &Chunk) -> GpuTensor {
        let len = ch.rows * self.n.div_ceil(BLOCK);
        match (&ch.kept, &self.batch) {
            (Some((_, bmax)), _) => bmax.view(&[len]),
            (None, Some(sc)) => sc.bmax.view(&[len]),
            (None, None) => self.bmax.prefix(&[len]),
        }
    }

    /// xc = x - b_dec (a transcoder: xc is x); pre = xc W_enc + b_enc, with the block
    /// maxima the code stages start from (`forward::encode_gpu`, the inference
    /// `Encoder`'s too).
    fn encode(&self, enc: &mut wgpu::CommandEncoder, ch: &Chunk) -> Result<()> {
        let (g, p) = (&*self.gpu, &self.fwd);
        let (pre, bmax, off) = (&self.pre(ch), &self.bmax(ch), self.off.as_ref());
        let b_dec = self.cfg.d_out.is_none().then_some(&p.b_dec);
        let w = EncoderWeights {
            w_enc: &p.w_enc,
            b_enc: &p.b_enc,
            b_dec,
        };
        encode_gpu(g, enc, &w, &ch.x, ch.rows, &ch.xc, pre, Some((bmax, off)))
    }

    /// topk / batchtopk: the codes and AuxK's (gated: only with dead latents); relu /
    /// jumprelu: the kept entries, and the gate that picks the sparse path when they fit
    /// the capacity (`engine::code_capacity`), decided on the device.
    fn codes(&self, enc: &mut wgpu::CommandEncoder, ch: &Chunk) -> Result<()> {
        let (g, cfg, c) = (&*self.gpu, &self.cfg, &ch.codes);
        let (pre, bmax) = (&self.pre(ch), &self.bmax(ch));
        let (rp, idx) = (&c.row_ptr, &c.idx);
        match cfg.arch {
            Arch::Topk => {
                let k = cfg.k_at(self.step);
                topk_codes_from_bmax(g, enc, pre, k, bmax, rp, idx, &c.val)?
            }
            // k_total = rows * this step's k: the length of the codes' view. In several
            // chunks the batch's selection ran after the chunks' encodes: the chunk's rows.
            Arch::Batchtopk | Arch::Matryoshka => {
                let sc = self.batch.as_ref().expect("batchtopk scratch");
                let (pv, thr) = (&c.pre_val, &self.thr);
                if let Some([brp, bidx, bpv]) = &self.batch_codes {
                    csr_rows(g, enc, brp, bidx, bpv, ch.row0, rp, idx, pv)?;
                } else {
                    batchtopk_codes_from_bmax(g, enc, pre, bmax, sc, rp, idx, pv, thr)?;
                    let first = self.step == 0;
                    threshold_ema(g, enc, thr, &self.thr_state, cfg.threshold_ema, first)?;
                }
                relu_forward(g, enc, pv, &c.val)?;
            }
            Arch::Relu | Arch::Jumprelu => {
                let gate = ch.gate.as_ref().expect("dense-path gate");
                let lt = &self.fwd.log_threshold;
                let jump = (cfg.arch == Arch::Jumprelu).then_some((lt, cfg.bandwidth));
                #[rustfmt::skip]
                activation_codes_from_bmax(g, enc, pre, jump, bmax, rp, idx, &c.val, &c.pre_val)?;
                gate_plan(g, enc, gate, rp, ch.rows, idx.len() as u32)?;
            }
        }
        if let (Some(a), Some(ag)) = (&ch.aux, &ch.aux_gate) {
            // AuxK: the k_aux largest positive pre among the dead latents. With no dead
            // latent the gate skips AuxK's selection, decode and backward.
            gate_plan(g, enc, ag, &self.ndead, 0, 0)?;
            g.gated(ag, true, || {
                let cols = Some((&self.dead, &self.ndead));
                let (rp, idx, val) = (&a.row_ptr, &a.idx, &a.val);
                topk_codes(g, enc, RowPath::of(g), pre, cfg.k_aux, cols, rp, idx, val)
            })?;
        }
        Ok(())
    }

    /// x_hat = codes W_dec + b_dec, or (the dense path) z = act(pre), x_hat = z W_dec +
    /// b_dec; AuxK's e_hat = aux codes W_dec (0 with no dead latent, as on the CPU, where
    /// the decode of no entries is 0).
    fn decode(&self, enc: &mut wgpu::CommandEncoder, ch: &Chunk) -> Result<()> {
        let (g, p, rows, n, d) = (&*self.gpu, &self.fwd, ch.rows, self.n, self.d_out);
        let c = &ch.codes;
        let sparse = |enc: &mut wgpu::CommandEncoder| {
            let (rp, idx, val, b) = (&c.row_ptr, &c.idx, &c.val, Some(&p.b_dec));
            sparse_decode(g, enc, rp, idx, val, &p.w_dec, b, rows, n, d, &ch.x_hat)
        };
        match (&ch.levels, &ch.gate) {
            // matryoshka: every level's prefix decode, x_hat the last (`gpu/levels.rs`).
            (Some(lv), _) => self.decode_levels(enc, ch, lv)?,
            (None, None) => sparse(enc)?,
            (None, Some(gate)) => {
                // Textures the sparse kernels read on software adapters, copied outside
                // the gate (inside it they would be filled by a kernel, as slow as the
                // reads).
                self.prefetch_textures(enc, rows, &[(&p.w_dec, d)])?;
                g.gated(gate, false, || sparse(enc))?;
                g.gated(gate, true, || self.dense_decode(enc, ch))?;
            }
        }
        if let (Some(a), Some(ag)) = (&ch.aux, &ch.aux_gate) {
            g.gated(ag, true, || {
                let (rp, idx, val) = (&a.row_ptr, &a.idx, &a.val);
                sparse_decode(g, enc, rp, idx, val, &p.w_dec, None, rows, n, d, &ch.e_hat)
            })?;
            g.gated(ag, false, || zero(g, enc, &ch.e_hat))?;
        }
        Ok(())
    }

    /// The dense path's forward: z = act(pre); x_hat = z W_dec + b_dec.
    fn dense_decode(&self, enc: &mut wgpu::CommandEncoder, ch: &Chunk) -> Result<()> {
        let (g, p, rows, n, d) = (&*self.gpu, &self.fwd, ch.rows, self.n, self.d_out);
        let z = &self.rows_of(self.z.as_ref().expect("dense buffers"), rows);
        let pre = &self.pre(ch);
        if self.cfg.arch == Arch::Relu {
            relu_forward(g, enc, pre, z)?;
        } else {
            jumprelu_forward(g, enc, pre, rows, n, &p.log_threshold, z)?;
        }
        let spec = GemmSpec::nn(rows, d, n);
        gemm(g, enc, &spec, z, &p.w_dec, Some(&p.b_dec), &ch.x_hat)
    }

    /// dy = 2 / B (x_hat - y) with the SSE (and, with one chunk, SST) sums; L0 / L1 and
    /// the firing counts; AuxK's residual e = y - x_hat and its gradient de with the aux
    /// loss (y: the target, x itself for an SAE).
    fn loss(&self, enc: &mut wgpu::CommandEncoder, ch: &Chunk) -> Result<()> {
        let (g, rows, n, d) = (&*self.gpu, ch.rows, self.n, self.d_out);
        // Whole-batch scale: every gradient is a sum over all chunks' rows / batch.
        let inv_b = 1.0 / self.rows as f32;
        // With several chunks the total sum of squares is taken over the whole batch after
        // them (about the batch mean, not each chunk's).
        let sst = (self.chunks.len() == 1).then_some(slot::SST);
        let (m, fired, norms) = (&self.metrics, &self.fired, &self.norms);
        #[rustfmt::skip]
        mse_backward(g, enc, &ch.y, &ch.x_hat, rows, d, 2.0 * inv_b, &ch.dy, m, slot::SSE, sst)?;
        if let Some(lv) = &ch.levels {
            // matryoshka: each level's SSE and each group's dy.
            self.level_residuals(enc, ch, lv)?;
        }
        let c = &ch.codes;
        let (rp, idx, val) = (&c.row_ptr, &c.idx, &c.val);
        let sparse = |enc: &mut wgpu::CommandEncoder| {
            sparse_stats(g, enc, rp, idx, val, rows, n, norms, fired, m)
        };
        match &ch.gate {
            None => sparse(enc)?,
            Some(gate) => {
                g.gated(gate, false, || sparse(enc))?;
                g.gated(gate, true, || {
                    let z = &self.rows_of(self.z.as_ref().expect("dense buffers"), rows);
                    dense_stats(g, enc, z, rows, n, norms, fired, m)
                })?;
            }
        }
        if let (Some(_), Some(ag)) = (&ch.aux, &ch.aux_gate) {
            // Only with dead latents (the gate), as the selection: with none, AuxK has no
            // loss (SAELens's too), rather than aux_coef x the residual's own MSE.
            g.gated(ag, true, || -> Result<()> {
                sub(g, enc, &ch.y, &ch.x_hat, &ch.e)?;
                let scale = self.cfg.aux_coef * 2.0 * inv_b;
                let (e, e_hat, de) = (&ch.e, &ch.e_hat, &ch.de);
                mse_backward(g, enc, e, e_hat, rows, d, scale, de, m, slot::AUX, None)
            })?;
        }
        Ok(())
    }

    /// The chunk's gradients, written by the first chunk (`index` 0) and added to by the
    /// others; db_dec's first term, the column sums of dy.
    fn backward(&self, enc: &mut wgpu::CommandEncoder, ch: &Chunk, index: usize) -> Result<()> {
        let (g, rows) = (&*self.gpu, ch.rows);
        let accumulate = index > 0;
        match (&ch.aux, &ch.aux_gate, &ch.gate) {
            (Some(a), Some(ag), _) => {
                // matryoshka: each latent's group's dy.
                let dy = match &ch.levels {
                    Some(lv) => Dy::Levels(&lv.dy),
                    None => Dy::Plain(&ch.dy),
                };
                self.sparse_backward(enc, SparseGrad::new(ch, &ch.codes, dy, accumulate))?;
                self.prefetch_textures(enc, rows, &[(&ch.de, self.d_out)])?;
                let aux = SparseGrad::new(ch, a, Dy::Plain(&ch.de), true);
                g.gated(ag, true, || self.sparse_backward(enc, aux))?;
            }
            (_, _, Some(gate)) => {
                let tex = [(&ch.dy, self.d_out), (&ch.xc, self.d)];
                self.prefetch_textures(enc, rows, &tex)?;
                g.gated(gate, false, || {
                    self.sparse_activation_backward(enc, ch, accumulate)
                })?;
                g.gated(gate, true, || self.dense_backward(enc, ch, accumulate))?;
            }
            _ => unreachable!("a chunk has AuxK's codes or a dense-path gate"),
        }
        // b_dec enters every level: matryoshka's first group's dy sums them all.
        let dy = match &ch.levels {
            Some(lv) => lv.dy.prefix(&[rows, self.d_out]),
            None => ch.dy.view(&ch.dy.shape),
        };
        col_sum(g, enc, &dy, rows, self.d_out, &self.grads.b_dec, accumulate)
    }

    /// Gradients of a sparse code path (`cpu.rs`' `sparse_backward`): given (in `sg`)
    /// dL/dx_hat-like `dy` for a decode of the codes `c`, the slot gradients, ReLU mask,
    /// transpose, and the gathers of dW_dec, dW_enc and db_enc (added to what is there, for
    /// the latents with entries, when `accumulate`).
    fn sparse_backward(&self, enc: &mut wgpu::CommandEncoder, sg: SparseGrad) -> Result<()> {
        self.slot_dots(enc, sg)?;
        let c = sg.c;
        relu_backward(&self.gpu, enc, &c.pre_val, &c.gslot, &c.dval)?;
        self.gather_grads(enc, sg)
    }

    /// The per-latent transpose of `c` and the gathers of dW_dec (from the code values and
    /// `dy`), dW_enc and db_enc (from the slot gradients `c.dval` and xc) into the
    /// gradients (added to them, for the latents with entries, when `accumulate`).
    fn gather_grads(&self, enc: &mut wgpu::CommandEncoder, sg: SparseGrad) -> Result<()> {
        let (ch, c, accumulate) = (sg.ch, sg.c, sg.accumulate);
        let (g, rows, n, d, gr) = (&*self.gpu, ch.rows, self.n, self.d, &self.grads);
        let (rp, idx) = (&c.row_ptr, &c.idx);
        let (lp, lr, ls) = (&c.lat_ptr, &c.lat_row, &c.lat_slot);
        build_transpose(g, enc, rp, idx, rows, n, &self.marks, lp, lr, ls)?;
        self.dw_dec_gather(enc, sg)?;
        #[rustfmt::skip]
        gather_dw_enc(g, enc, lp, lr, ls, &c.dval, &ch.xc, n, d, accumulate, &gr.w_enc)?;
        gather_db_enc(g, enc, lp, ls, &c.dval, n, accumulate, &gr.b_enc)
    }

    /// The sparse backward of a ReLU / JumpReLU step: dz at the kept entries, the
    /// penalty's and the activation's backward, the gathers (and z's column sums for relu's
    /// decoder-norm term, or the threshold gradient for jumprelu).
    fn sparse_activation_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        accumulate: bool,
    ) -> Result<()> {
        let (g, rows, n, d) = (&*self.gpu, ch.rows, self.n, self.d_out);
        let c = &ch.codes;
        let scale = self.coef() * (1.0 / self.rows as f32);
        let (w_dec, log_thr) = (&self.fwd.w_dec, &self.fwd.log_threshold);
        let (rp, idx) = (&c.row_ptr, &c.idx);
        sparse_dot(g, enc, rp, idx, &ch.dy, w_dec, rows, n, d, &c.gslot)?;
        if self.cfg.arch == Arch::Relu {
            #[rustfmt::skip]
            sparse_l1_backward(g, enc, rp, idx, &c.val, rows, n, &self.norms, scale, &c.gslot)?;
            relu_backward(g, enc, &c.pre_val, &c.gslot, &c.dval)?;
        } else {
            #[rustfmt::skip]
            sparse_jumprelu_backward(g, enc, rp, idx, &c.pre_val, &c.gslot, rows, n, log_thr, &c.dval)?;
        }
        self.gather_grads(enc, SparseGrad::new(ch, c, Dy::Plain(&ch.dy), accumulate))?;
        let (lp, ls) = (&c.lat_ptr, &c.lat_slot);
        if self.cfg.arch == Arch::Relu {
            // The chunks' column sums of z, for the decoder-norm term after them.
            let zsum = self.zsum.as_ref().expect("zsum");
            gather_db_enc(g, enc, lp, ls, &c.val, n, accumulate, zsum)
        } else {
            let (eps, pv, gs, dthr) = (self.cfg.bandwidth, &c.pre_val, &c.gslot, self.dthr(ch));
            gather_jumprelu_threshold(g, enc, lp, ls, pv, gs, n, log_thr, eps, scale, dthr)
        }
    }

    /// The dense path's backward: dz = dy W_dec^T, dW_dec = z^T dy, the penalty's and the
    /// activation's backward, dW_enc = xc^T dpre, db_enc = column sums of dpre (added to
    /// the gradients when `accumulate`).
    fn dense_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        accumulate: bool,
    ) -> Result<()> {
        let (g, rows, n, d, gr) = (&*self.gpu, ch.rows, self.n, self.d, &self.grads);
        let scale = self.coef() * (1.0 / self.rows as f32);
        let (w_dec, log_thr) = (&self.fwd.w_dec, &self.fwd.log_threshold);
        let dense = |t: &Option<GpuTensor>| self.rows_of(t.as_ref().expect("dense buffers"), rows);
        let (z, dz, dpre) = (&dense(&self.z), &dense(&self.dz), &dense(&self.dpre));
        let pre = &self.pre(ch);
        let d_out = self.d_out;
        gemm(
            g,
            enc,
            &GemmSpec::nt(rows, n, d_out),
            &ch.dy,
            w_dec,
            None,
            dz,
        )?;
        let spec = GemmSpec::tn(n, d_out, rows).accumulate(accumulate);
        gemm(g, enc, &spec, z, &ch.dy, None, &gr.w_dec)?;
        if self.cfg.arch == Arch::Relu {
            let zsum = self.zsum.as_ref().expect("zsum");
            l1_backward(g, enc, z, rows, n, &self.norms, scale, dz)?;
            col_sum(g, enc, z, rows, n, zsum, accumulate)?;
            relu_backward(g, enc, pre, dz, dpre)?;
        } else {
            let (eps, dthr) = (self.cfg.bandwidth, self.dthr(ch));
            #[rustfmt::skip]
            jumprelu_backward(g, enc, pre, dz, rows, n, log_thr, eps, scale, dpre, dthr)?;
        }
        let spec = GemmSpec::tn(d, n, rows).accumulate(accumulate);
        gemm(g, enc, &spec, &ch.xc, dpre, None, &gr.w_enc)?;
        col_sum(g, enc, dpre, rows, n, &gr.b_enc, accumulate)
    }

    /// The firing counters: total fires, tokens since each latent last fired, dead count.
    fn count_dead(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let (g, after) = (&*self.gpu, dead_after(&self.cfg));
        let (fired, since, total) = (&self.fired, &self.since, &self.total);
        update_dead(g, enc, fired, since, total, self.rows, after, &self.metrics)
    }

    /// The sparsity penalty's coefficient of this step.
    fn coef(&self) -> f32 {
        StepScalars::at(&self.cfg, self.step).sparsity_coef
    }

    /// The threshold gradient's destination for chunk `ch`: the parameter's gradient with
    /// one chunk, else the chunk's own row (summed after the chunks).
    fn dthr<'a>(&'a self, ch: &'a Chunk) -> &'a GpuTensor {
        ch.dthr.as_ref().unwrap_or(&self.grads.log_threshold)
    }

    /// Record the copies of these (tensor, row width) into the textures the sparse kernels
    /// read on software adapters (`kernels::sparse::texture_path`), if they take that path.
    fn prefetch_textures(
        &self,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
        ts: &[(&GpuTensor, usize)],
    ) -> Result<()> {
        let g = &*self.gpu;
        for &(t, w) in ts {
            if texture_path(g, &[self.n, rows], w) {
                texture_of(g, enc, t, [t.len() / w, w])?;
            }
        }
        Ok(())
    }
}
