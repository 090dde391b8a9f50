//! Matryoshka BatchTopK's stages on the GPU engine, as `cpu.rs` runs them: the codes are
//! batchtopk's; the decode writes every level's reconstruction (`matryoshka_decode`, x_hat
//! is the last), the loss adds each level's SSE and each group's dy (`matryoshka_residuals`),
//! and the backward is the sparse backward with each latent's group's dy
//! (`sparse_dot_levels`, `gather_dw_dec_levels`; W_enc's and b_enc's gradients from the
//! slot gradients as for batchtopk). Kernels: `kernels::matryoshka`.

use super::{Chunk, GpuEngine};
use crate::Result;
use crate::gpu::GpuTensor;
use crate::kernels::activations::relu_backward;
use crate::kernels::matryoshka::{
    gather_dw_dec_levels, matryoshka_decode, matryoshka_residuals, sparse_dot_levels,
};
use crate::kernels::reduce::mse_backward;
use crate::kernels::sparse::{build_transpose, gather_db_enc, gather_dw_enc};
use crate::reference::reduce::slot;

impl GpuEngine {
    fn widths(&self) -> &GpuTensor {
        self.widths.as_ref().expect("matryoshka widths")
    }

    /// Every level's reconstruction into lv[0] (M * rows, d_out); x_hat = the last level.
    pub(super) fn decode_levels(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        lv: &[GpuTensor; 4],
    ) -> Result<()> {
        let (g, p, rows, n, d) = (&*self.gpu, &self.fwd, ch.rows, self.n, self.d_out);
        let c = &ch.codes;
        let (rp, idx, val) = (&c.row_ptr, &c.idx, &c.val);
        #[rustfmt::skip]
        matryoshka_decode(g, enc, rp, idx, val, &p.w_dec, &p.b_dec, self.widths(), rows, n, d, &lv[0])?;
        let last = ((self.widths().len() - 1) * rows * d * 4) as u64;
        let bytes = (rows * d * 4) as u64;
        enc.copy_buffer_to_buffer(&lv[0].buf, last, &ch.x_hat.buf, 0, Some(bytes));
        g.stale(&ch.x_hat.buf);
        Ok(())
    }

    /// Each level's SSE into metrics[LEVEL_SSE + m] (the level copied out of lv[0] into
    /// lv[2], its scaled residual discarded into lv[3]) and each group's dy into lv[1].
    pub(super) fn level_residuals(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        lv: &[GpuTensor; 4],
    ) -> Result<()> {
        let (g, rows, d, m) = (&*self.gpu, ch.rows, self.d_out, &self.metrics);
        let scale = 2.0 / self.rows as f32;
        let bytes = (rows * d * 4) as u64;
        for level in 0..self.widths().len() {
            let at = level as u64 * bytes;
            enc.copy_buffer_to_buffer(&lv[0].buf, at, &lv[2].buf, 0, Some(bytes));
            g.stale(&lv[2].buf);
            let sse = slot::LEVEL_SSE + level as u32;
            mse_backward(g, enc, &ch.y, &lv[2], rows, d, scale, &lv[3], m, sse, None)?;
        }
        matryoshka_residuals(g, enc, &ch.y, &lv[0], self.widths(), rows, d, scale, &lv[1])
    }

    /// The sparse backward of the codes with each latent's group's dy (lv[1]): slot
    /// gradients, ReLU mask, transpose, and the gathers of dW_dec, dW_enc and db_enc
    /// (added to the gradients when `accumulate`).
    pub(super) fn levels_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        lv: &[GpuTensor; 4],
        accumulate: bool,
    ) -> Result<()> {
        let (g, rows, n, gr) = (&*self.gpu, ch.rows, self.n, &self.grads);
        let (d, d_out, w) = (self.d, self.d_out, self.widths());
        let c = &ch.codes;
        let (rp, idx) = (&c.row_ptr, &c.idx);
        #[rustfmt::skip]
        sparse_dot_levels(g, enc, rp, idx, &lv[1], &self.fwd.w_dec, w, rows, n, d_out, &c.gslot)?;
        relu_backward(g, enc, &c.pre_val, &c.gslot, &c.dval)?;
        #[rustfmt::skip]
        build_transpose(g, enc, rp, idx, rows, n, &c.lat_ptr, &c.lat_row, &c.lat_slot)?;
        let (lp, lr, ls) = (&c.lat_ptr, &c.lat_row, &c.lat_slot);
        let shape = (rows, n, d_out);
        #[rustfmt::skip]
        gather_dw_dec_levels(g, enc, (lp, lr, ls), &c.val, &lv[1], w, shape, accumulate, &gr.w_dec)?;
        #[rustfmt::skip]
        gather_dw_enc(g, enc, lp, lr, ls, &c.dval, &ch.xc, n, d, accumulate, &gr.w_enc)?;
        gather_db_enc(g, enc, lp, ls, &c.dval, n, accumulate, &gr.b_enc)
    }
}
