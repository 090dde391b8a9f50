//! Matryoshka BatchTopK's stages on the GPU engine, as `cpu.rs` runs them: the codes are
//! batchtopk's; the decode writes every level's reconstruction (`matryoshka_decode`, x_hat
//! is the last), the loss adds each level's SSE and each group's dy (`matryoshka_residuals`),
//! and the backward is `GpuEngine::sparse_backward` with each latent's group's dy
//! (`Dy::Levels`: `sparse_dot_levels`, `gather_dw_dec_levels`; W_enc's and b_enc's
//! gradients from the slot gradients as for batchtopk). Kernels: `kernels::matryoshka`.

use super::{Chunk, CodeBufs, GpuEngine};
use crate::Result;
use crate::gpu::{Gpu, GpuTensor};
use crate::kernels::matryoshka::{
    gather_dw_dec_levels, matryoshka_decode, matryoshka_residuals, sparse_dot_levels,
};
use crate::kernels::reduce::mse_backward;
use crate::kernels::sparse::{gather_dw_dec, sparse_dot};
use crate::reference::reduce::slot;

/// The dL/dx_hat a sparse backward reads: one (rows, d_out) tensor, or matryoshka's dy per
/// group, (M * rows, d_out), each latent reading its group's.
#[derive(Clone, Copy)]
pub(super) enum Dy<'a> {
    Plain(&'a GpuTensor),
    Levels(&'a GpuTensor),
}

/// What the stages of a sparse backward (`GpuEngine::sparse_backward` and the methods it
/// calls) read: the chunk, its codes `c`, the `dy` of their decode, and whether the
/// gradients are added to (`accumulate`) rather than written.
#[derive(Clone, Copy)]
pub(super) struct SparseGrad<'a> {
    pub ch: &'a Chunk,
    pub c: &'a CodeBufs,
    pub dy: Dy<'a>,
    pub accumulate: bool,
}

impl<'a> SparseGrad<'a> {
    pub fn new(ch: &'a Chunk, c: &'a CodeBufs, dy: Dy<'a>, accumulate: bool) -> Self {
        SparseGrad {
            ch,
            c,
            dy,
            accumulate,
        }
    }
}

/// A chunk's matryoshka tensors: every level's reconstruction and every group's dy, (M *
/// rows, d_out) each, and a level's copy and its discarded gradient, (rows, d_out), for the
/// levels' SSE.
pub(super) struct Levels {
    pub x_hat: GpuTensor,
    pub dy: GpuTensor,
    copy: GpuTensor,
    discard: GpuTensor,
}

impl Levels {
    pub fn new(g: &Gpu, levels: usize, rows: usize, d_out: usize) -> Result<Levels> {
        Ok(Levels {
            x_hat: g.zeros("x_hat levels", &[levels * rows, d_out])?,
            dy: g.zeros("dy levels", &[levels * rows, d_out])?,
            copy: g.zeros("level copy", &[rows, d_out])?,
            discard: g.zeros("level discard", &[rows, d_out])?,
        })
    }
}

impl GpuEngine {
    fn widths(&self) -> &GpuTensor {
        self.widths.as_ref().expect("matryoshka widths")
    }

    /// Every level's reconstruction into lv.x_hat; x_hat = the last level.
    pub(super) fn decode_levels(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        lv: &Levels,
    ) -> Result<()> {
        let (g, p, rows, n, d) = (&*self.gpu, &self.fwd, ch.rows, self.n, self.d_out);
        let c = &ch.codes;
        let (rp, idx, val) = (&c.row_ptr, &c.idx, &c.val);
        #[rustfmt::skip]
        matryoshka_decode(g, enc, rp, idx, val, &p.w_dec, &p.b_dec, self.widths(), rows, n, d, &lv.x_hat)?;
        let last = (self.widths().len() - 1) * rows * d;
        g.copy_into(enc, &lv.x_hat, last, &ch.x_hat)
    }

    /// Each level's SSE into metrics[LEVEL_SSE + m] (through `mse_backward` on a copy of
    /// the level, its scaled residual discarded) and each group's dy into lv.dy.
    pub(super) fn level_residuals(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        lv: &Levels,
    ) -> Result<()> {
        let (g, rows, d, m) = (&*self.gpu, ch.rows, self.d_out, &self.metrics);
        let scale = 2.0 / self.rows as f32;
        for level in 0..self.widths().len() {
            g.copy_into(enc, &lv.x_hat, level * rows * d, &lv.copy)?;
            let sse = slot::LEVEL_SSE + level as u32;
            mse_backward(
                g,
                enc,
                &ch.y,
                &lv.copy,
                rows,
                d,
                scale,
                &lv.discard,
                m,
                sse,
                None,
            )?;
        }
        matryoshka_residuals(
            g,
            enc,
            &ch.y,
            &lv.x_hat,
            self.widths(),
            rows,
            d,
            scale,
            &lv.dy,
        )
    }

    /// The slot gradients of the codes `c` against `dy`: g[s] = dy[row(s)] . W_dec[idx[s]]
    /// (`sparse_dot`), or with each latent's group's dy (`sparse_dot_levels`).
    pub(super) fn slot_dots(&self, enc: &mut wgpu::CommandEncoder, sg: SparseGrad) -> Result<()> {
        let SparseGrad { ch, c, dy, .. } = sg;
        let (g, rows, n, d, w_dec) = (&*self.gpu, ch.rows, self.n, self.d_out, &self.fwd.w_dec);
        let (rp, idx) = (&c.row_ptr, &c.idx);
        match dy {
            Dy::Plain(t) => sparse_dot(g, enc, rp, idx, t, w_dec, rows, n, d, &c.gslot),
            Dy::Levels(t) => {
                let w = self.widths();
                sparse_dot_levels(g, enc, rp, idx, t, w_dec, w, rows, n, d, &c.gslot)
            }
        }
    }

    /// dW_dec from the code values and `dy` over the transpose of `c` (`gather_dw_dec`, or
    /// `gather_dw_dec_levels` with each latent's group's dy), added when `accumulate`.
    pub(super) fn dw_dec_gather(
        &self,
        enc: &mut wgpu::CommandEncoder,
        sg: SparseGrad,
    ) -> Result<()> {
        let (ch, c, dy, accumulate) = (sg.ch, sg.c, sg.dy, sg.accumulate);
        let (g, rows, n, d, out) = (&*self.gpu, ch.rows, self.n, self.d_out, &self.grads.w_dec);
        let (lp, lr, ls) = (&c.lat_ptr, &c.lat_row, &c.lat_slot);
        match dy {
            Dy::Plain(t) => gather_dw_dec(g, enc, lp, lr, ls, &c.val, t, n, d, accumulate, out),
            Dy::Levels(t) => {
                let (lat, w, shape) = ((lp, lr, ls), self.widths(), (rows, n, d));
                gather_dw_dec_levels(g, enc, lat, &c.val, t, w, shape, accumulate, out)
            }
        }
    }
}
