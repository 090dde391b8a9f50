//! BatchTopK over a batch the GPU runs in several chunks (its pre-activations exceed one
//! storage binding): the selection is over the whole batch, so every chunk is encoded first
//! (each into pre-activations of its own, `Chunk::kept`), then the k_total largest entries
//! of all of them are selected at once (`batchtopk_codes_chunks`: the chunks' block maxima
//! histogrammed together, each chunk's candidate lists appended to the batch's candidates),
//! and each chunk's codes stage takes its rows of the batch's codes (`csr_rows`). The same
//! math as one chunk, and as the CPU engine, which takes the whole batch at once.

use super::GpuEngine;
use crate::Result;
use crate::gpu::GpuTensor;
use crate::kernels::codes::batch_topk::batchtopk_codes_chunks;
use crate::kernels::ops::threshold_ema;

impl GpuEngine {
    /// batchtopk in several chunks, after every chunk's encode: the batch's codes
    /// (`batch_codes`) and the threshold's running estimate. Nothing otherwise.
    pub(super) fn select_batch(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let (Some(sc), Some([row_ptr, idx, pre_val])) = (&self.batch, &self.batch_codes) else {
            return Ok(());
        };
        let (g, cfg) = (&*self.gpu, &self.cfg);
        let k_total = self.rows * cfg.k_at(self.step);
        let pres: Vec<GpuTensor> = self.chunks.iter().map(|ch| self.pre(ch)).collect();
        let bmaxs: Vec<GpuTensor> = self.chunks.iter().map(|ch| self.bmax(ch)).collect();
        let (xs, bs): (Vec<&GpuTensor>, Vec<&GpuTensor>) =
            (pres.iter().collect(), bmaxs.iter().collect());
        let (idx, pv) = (idx.prefix(&[k_total]), pre_val.prefix(&[k_total]));
        #[rustfmt::skip]
        batchtopk_codes_chunks(g, enc, &xs, &bs, sc, row_ptr, &idx, &pv, &self.thr)?;
        let first = self.step == 0;
        threshold_ema(g, enc, &self.thr, &self.thr_state, cfg.threshold_ema, first)
    }
}
