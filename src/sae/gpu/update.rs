//! The step's last two stages on the GPU engine, after the chunks: `finish_gradients`
//! (what only the whole batch gives: relu's decoder-norm term, the explained-variance
//! total, the chunks' threshold gradients, an SAE's db_dec term through the encoder, the
//! rescale view's gradients) and `optimizer` (global-norm clipping and Adam). The stages
//! are `cpu.rs`'s of the same names; they live apart from `gpu.rs` to keep that module
//! to the per-chunk stages.

use super::GpuEngine;
use crate::Result;
use crate::kernels::gemm::{GemmSpec, gemm};
use crate::kernels::optim::{adam, adam_unit_rows, clip_scale, decoder_grad_prep, sum_slot, sumsq};
use crate::kernels::reduce::{col_sum, l1_decoder_grad, slot, sum_sq_centred};
use crate::kernels::rescale::rescale_grads;
use crate::sae::engine::{GRAD_NORM_SLOT_COUNT, GRAD_NORM_SLOTS};
use crate::sae::{Arch, DecoderNorm};

impl GpuEngine {
    /// After the chunks: relu's L1 decoder-norm term, d/dW_dec of coef / B sum_i zsum_i
    /// ||W_dec_i|| (one pass over W_dec for the whole batch, zsum summed by the chunks);
    /// with several chunks the explained-variance total about the batch mean and the
    /// chunks' threshold gradients summed; db_dec = sum_b dy_b - db_enc W_enc^T (the first
    /// term summed by the chunks; a transcoder's b_dec enters only through y_hat).
    pub(super) fn finish_gradients(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let (g, rows, n, d) = (&*self.gpu, self.rows, self.n, self.d);
        let d_out = self.d_out;
        let (p, gr) = (&self.fwd, &self.grads);
        if self.cfg.arch == Arch::Relu {
            let coef = self.coef() / rows as f32;
            let zsum = self.zsum.as_ref().expect("zsum");
            #[rustfmt::skip]
            l1_decoder_grad(g, enc, zsum, &p.w_dec, &self.norms, n, d_out, coef, &gr.w_dec)?;
        }
        if self.chunks.len() > 1 {
            sum_sq_centred(g, enc, &self.y, rows, d_out, &self.metrics, slot::SST)?;
        }
        if let Some(all) = &self.dthr_rows {
            // The chunks' threshold gradients, summed in chunk order.
            for (i, ch) in self.chunks.iter().enumerate() {
                let t = ch.dthr.as_ref().expect("chunk threshold grad");
                enc.copy_buffer_to_buffer(
                    &t.buf,
                    t.offset,
                    &all.buf,
                    all.offset + (i * n * 4) as u64,
                    Some(t.bytes()),
                );
            }
            g.stale(&all.buf);
            col_sum(g, enc, all, self.chunks.len(), n, &gr.log_threshold, false)?;
        }
        if self.cfg.d_out.is_none() {
            let spec = GemmSpec::nt(1, d, n).alpha(-1.0).accumulate(true);
            let (db_enc, db_dec) = (&gr.b_enc.view(&[1, n]), &gr.b_dec.view(&[1, d]));
            gemm(g, enc, &spec, db_enc, &p.w_enc, None, db_dec)?;
        }
        if let Some(norms) = &self.dec_norms {
            // The view's gradients mapped back to the parameters.
            let q = &self.params;
            #[rustfmt::skip]
            rescale_grads(g, enc, &q.w_enc, &q.b_enc, &p.w_dec, norms, n, d, &gr.w_enc, &gr.b_enc, &gr.w_dec)?;
        }
        Ok(())
    }

    /// Global gradient-norm clipping and Adam, in as few passes over the parameters as the
    /// math allows (the global norm must be complete before any Adam update). Passes and
    /// bytes at d = 512, n = 16384 (each tensor of W_enc / W_dec is 32 MiB; grads, m, v the
    /// same):
    ///
    /// ```text
    ///   1. decoder_grad_prep  W_dec rows: read W_dec, dW_dec            2 x 32 MiB
    ///   2. sumsq x 3 (4)      read dW_enc, db_enc, db_dec (dthr)        1 x 32 MiB
    ///   3. sum_slot, clip_scale                                          ~64 KiB
    ///   4. adam x 3 (4)       W_enc, biases: read p, g, m, v; write p, m, v  7 x 32 MiB
    ///   5. adam_unit_rows     W_dec rows: the same 7, plus the normalisation's re-read
    ///                         and write of the row (from cache)          7 (+2) x 32 MiB
    /// ```
    ///
    /// = 17 (+2) x 32 MiB ~ 544 (608) MiB in 10 (12) dispatches, the floor of
    /// shaders/optim.wgsl's note; unfused it was 15 (18) dispatches and ~674 MiB. ReLU
    /// (free decoder norm) runs sumsq + adam on W_dec instead of 1 and 5.
    pub(super) fn optimizer(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        // The decoder's rows have d_out values (d for an SAE).
        let (g, n, d, cfg) = (&*self.gpu, self.n, self.d_out, &self.cfg);
        let (p, gr, m, v) = (&self.params, &self.grads, &self.m, &self.v);
        let (acc, slots, coef) = (&self.acc, &GRAD_NORM_SLOTS, &self.dec_coef);
        let unit = cfg.decoder_norm == DecoderNorm::Unit;
        sumsq(g, enc, &gr.w_enc, acc, slots.w_enc)?;
        if unit {
            #[rustfmt::skip]
            decoder_grad_prep(g, enc, &p.w_dec, &gr.w_dec, n, d, coef, &self.dec_part)?;
            sum_slot(g, enc, &self.dec_part, acc, slots.w_dec)?;
        } else {
            sumsq(g, enc, &gr.w_dec, acc, slots.w_dec)?;
        }
        sumsq(g, enc, &gr.b_enc, acc, slots.b_enc)?;
        sumsq(g, enc, &gr.b_dec, acc, slots.b_dec)?;
        // Without a threshold its 1-element gradient is kept at 0, as the CPU sums an
        // empty gradient as 0.
        sumsq(g, enc, &gr.log_threshold, acc, slots.log_threshold)?;
        let count = GRAD_NORM_SLOT_COUNT as u32;
        clip_scale(g, enc, acc, count, cfg.grad_clip, &self.clip)?;
        let (h, clip) = (&self.hyper, &self.clip);
        adam(g, enc, &p.w_enc, &gr.w_enc, &m.w_enc, &v.w_enc, h, clip)?;
        if unit {
            #[rustfmt::skip]
            adam_unit_rows(g, enc, &p.w_dec, &gr.w_dec, coef, &m.w_dec, &v.w_dec, h, clip, n, d)?;
        } else {
            adam(g, enc, &p.w_dec, &gr.w_dec, &m.w_dec, &v.w_dec, h, clip)?;
        }
        adam(g, enc, &p.b_enc, &gr.b_enc, &m.b_enc, &v.b_enc, h, clip)?;
        adam(g, enc, &p.b_dec, &gr.b_dec, &m.b_dec, &v.b_dec, h, clip)?;
        if cfg.arch == Arch::Jumprelu {
            #[rustfmt::skip]
            adam(g, enc, &p.log_threshold, &gr.log_threshold, &m.log_threshold, &v.log_threshold, h, clip)?;
        }
        Ok(())
    }
}
