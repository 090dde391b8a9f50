//! Recording a step: [`GpuEngine::record_full_step`] (the uploads, then every stage of
//! `record_step` in order), or the same step around an encoder product that a sweep records
//! for several same-shape members in one launch (`sweep::merge`): the stages up to the
//! product ([`GpuEngine::record_until_product`]), the shared launch, then the rest
//! ([`GpuEngine::record_after_product`]). The member's buffers the shared launch reads and
//! writes are slots of pools ([`GpuEngine::adopt_encoder_slots`]); its stages are the same
//! dispatches either way, so a member's step is bitwise the same.

use std::sync::Arc;

use crate::gpu::{Gpu, GpuTensor};
use crate::kernels::gemm::GemmSpec;
use crate::kernels::optim::write_hyper;
use crate::sae::engine::{StepScalars, selects_topk};
use crate::sae::forward::center_gpu;
use crate::sae::{Arch, TrainConfig, storage};
use crate::{Error, Result};

use super::{Chunk, GpuEngine, Mark};

/// The tensors of a member's encoder product, in the order of `gemm::batched`'s operands:
/// xc (rows, d), W_enc (d, n), b_enc (n), pre (rows, n), block maxima (rows * n / 32).
pub type EncoderSlots = [GpuTensor; 5];

impl GpuEngine {
    /// The step's stages in order, `mark` called after each. batchtopk in several chunks
    /// encodes every chunk and selects over the batch before the chunks' codes.
    fn record_step(&self, enc: &mut wgpu::CommandEncoder, mark: &mut Mark) -> Result<()> {
        self.prepare(enc)?;
        mark("prepare", enc)?;
        let whole_batch = self.batch_codes.is_some();
        if whole_batch {
            for ch in &self.chunks {
                self.encode(enc, ch)?;
                mark("encode", enc)?;
            }
            self.select_batch(enc)?;
            mark("codes", enc)?;
        }
        for (i, ch) in self.chunks.iter().enumerate() {
            if !whole_batch {
                self.encode(enc, ch)?;
                mark("encode", enc)?;
            }
            self.chunk_stages(enc, ch, i, mark)?;
        }
        self.step_end(enc, mark)
    }

    /// A chunk's stages after its encoder product.
    fn chunk_stages(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        i: usize,
        mark: &mut Mark,
    ) -> Result<()> {
        self.codes(enc, ch)?;
        mark("codes", enc)?;
        self.decode(enc, ch)?;
        mark("decode", enc)?;
        self.loss(enc, ch)?;
        mark("loss", enc)?;
        self.backward(enc, ch, i)?;
        mark("backward", enc)
    }

    /// The stages after the chunks.
    fn step_end(&self, enc: &mut wgpu::CommandEncoder, mark: &mut Mark) -> Result<()> {
        self.finish_gradients(enc)?;
        mark("finish gradients", enc)?;
        self.optimizer(enc)?;
        mark("optimizer", enc)?;
        self.count_dead(enc)?;
        mark("dead latents", enc)
    }

    /// The GPU the engine runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// How the batch is split: (chunks, rows of the largest).
    pub fn chunking(&self) -> (usize, usize) {
        (self.chunks.len(), self.chunk_rows)
    }

    /// One step as `StepEngine::step`, with `mark` called at the end of each stage (see
    /// [`Mark`]); the last stage's encoder is submitted here.
    pub fn step_marked(
        &mut self,
        cfg: &TrainConfig,
        x: &[f32],
        rows: usize,
        mark: &mut Mark,
    ) -> Result<()> {
        let mut enc = self.gpu.encoder();
        self.record_full_step(cfg, x, rows, &mut enc, mark)?;
        self.gpu.submit(enc);
        self.submitted()
    }

    /// After the submission holding a step recorded by [`Self::record_full_step`] (or
    /// [`Self::record_after_product`]).
    pub fn submitted(&mut self) -> Result<()> {
        // Out of memory, device lost or a driver error: reported by the device's callbacks.
        self.gpu.check()?;
        self.step += 1;
        Ok(())
    }

    /// Everything of a step but its submission: the uploads, then the whole step recorded
    /// into `enc` (a sweep records every member's step into one encoder and submits once).
    pub fn record_full_step(
        &mut self,
        cfg: &TrainConfig,
        x: &[f32],
        rows: usize,
        enc: &mut wgpu::CommandEncoder,
        mark: &mut Mark,
    ) -> Result<()> {
        self.begin_step(cfg, x, rows, enc)?;
        self.record_step(enc, mark)?;
        self.finish_gates()
    }

    /// The uploads of a step and its per-step scalars.
    fn begin_step(
        &mut self,
        cfg: &TrainConfig,
        x: &[f32],
        rows: usize,
        enc: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        if rows != self.rows {
            return Err(Error::Internal(format!(
                "GPU engine built for batches of {} rows, got {rows}",
                self.rows
            )));
        }
        let g = &*self.gpu;
        // A transcoder's batch is its input rows followed by its target rows.
        let (x, y) = x.split_at(rows * self.d);
        let transcoder = self.cfg.d_out.is_some();
        storage::upload(g, enc, x, &self.x, self.x16.as_ref())?;
        if transcoder {
            storage::upload(g, enc, y, &self.y, self.y16.as_ref())?;
        }
        if self.chunks.len() > 1 {
            let (mut start, mut start_y) = (0, 0);
            for ch in &self.chunks {
                g.copy_into(enc, &self.x, start, &ch.x)?;
                if transcoder {
                    g.copy_into(enc, &self.y, start_y, &ch.y)?;
                }
                start += ch.rows * self.d;
                start_y += ch.rows * self.d_out;
            }
        }
        let sc = StepScalars::at(cfg, self.step);
        write_hyper(g, &self.hyper, &sc.adam(cfg, self.step));
        if selects_topk(cfg.arch) {
            // This step's k (`TrainConfig::k_at`): the codes are its rows * k slots.
            let k = cfg.k_at(self.step);
            // batchtopk in several chunks: room for any share of the batch's entries.
            let several = self.batch_codes.is_some();
            for ch in &mut self.chunks {
                ch.codes = ch
                    .code_store
                    .prefix(if several { self.rows } else { ch.rows } * k);
            }
        }
        Ok(())
    }

    /// The gates' tables, after the step's dispatches are recorded.
    fn finish_gates(&self) -> Result<()> {
        let chunk_gates = self
            .chunks
            .iter()
            .flat_map(|ch| [ch.gate.as_ref(), ch.aux_gate.as_ref()]);
        for gate in chunk_gates.flatten() {
            gate.finish(&self.gpu)?;
        }
        Ok(())
    }

    /// The encoder product of this engine's step (pre = xc W_enc + b_enc with its block
    /// maxima, no offsets) when another launch may compute it for several engines: one
    /// chunk, an SAE (not a transcoder: its encoder reads x itself), not jumprelu (whose
    /// block maxima subtract threshold offsets). None otherwise.
    pub fn shared_product(&self) -> Option<GemmSpec> {
        let one = self.chunks.len() == 1 && self.chunks[0].kept.is_none();
        let plain = self.cfg.arch != Arch::Jumprelu && self.off.is_none();
        (plain && one && self.cfg.d_out.is_none()).then(|| GemmSpec::nn(self.rows, self.n, self.d))
    }

    /// The tensors of [`Self::shared_product`], in `gemm::batched`'s order.
    pub fn encoder_slots(&self) -> EncoderSlots {
        let ch = &self.chunks[0];
        let p = &self.fwd;
        [
            ch.xc.view(&ch.xc.shape),
            p.w_enc.view(&p.w_enc.shape),
            p.b_enc.view(&p.b_enc.shape),
            self.pre(ch),
            self.bmax(ch),
        ]
    }

    /// Move the tensors of [`Self::shared_product`] into `slots` (each of the same shape,
    /// e.g. slots of pools): W_enc and b_enc copied there (recorded into `enc`; the
    /// parameters themselves when the step reads them directly, else the rescaled view the
    /// step recomputes from them), xc, pre and the block maxima only re-pointed (every step
    /// writes them before it reads them).
    pub fn adopt_encoder_slots(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        slots: EncoderSlots,
    ) -> Result<()> {
        if self.shared_product().is_none() {
            return Err(Error::Internal(
                "adopt_encoder_slots: this engine's product is not shared".into(),
            ));
        }
        for (new, old) in slots.iter().zip(self.encoder_slots()) {
            if new.len() != old.len() || new.dtype != old.dtype {
                return Err(Error::Internal(format!(
                    "adopt_encoder_slots: a {:?} slot of shape {:?} for {:?} of {:?}",
                    new.dtype, new.shape, old.dtype, old.shape
                )));
            }
        }
        let [xc, w_enc, b_enc, pre, bmax] = slots;
        let same = |a: &GpuTensor, b: &GpuTensor| a.buf == b.buf && a.offset == b.offset;
        let g = self.gpu.clone();
        for (new, (fwd, param)) in [
            (w_enc, (&mut self.fwd.w_enc, &mut self.params.w_enc)),
            (b_enc, (&mut self.fwd.b_enc, &mut self.params.b_enc)),
        ] {
            let new = new.view(&fwd.shape);
            g.copy_into(enc, fwd, 0, &new)?;
            if same(fwd, param) {
                *param = new.view(&new.shape);
            }
            *fwd = new;
        }
        self.chunks[0].xc = xc.view(&self.chunks[0].xc.shape);
        self.pre = pre.view(&self.pre.shape);
        // batchtopk / matryoshka: the block maxima the batch selection reads.
        match &mut self.batch {
            Some(sc) => sc.bmax = bmax.view(&sc.bmax.shape),
            None => self.bmax = bmax.view(&self.bmax.shape),
        }
        Ok(())
    }

    /// A step up to its encoder product (the uploads, `prepare`, xc = x - b_dec), for a
    /// launch that computes the products of several engines; then
    /// [`Self::record_after_product`].
    pub fn record_until_product(
        &mut self,
        cfg: &TrainConfig,
        x: &[f32],
        rows: usize,
        enc: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        if self.shared_product().is_none() {
            return Err(Error::Internal(
                "record_until_product: this engine's product is not shared".into(),
            ));
        }
        self.begin_step(cfg, x, rows, enc)?;
        self.prepare(enc)?;
        let ch = &self.chunks[0];
        center_gpu(&self.gpu, enc, &ch.x, &self.fwd.b_dec, ch.rows, &ch.xc)
    }

    /// The rest of a step begun by [`Self::record_until_product`], after the launch that
    /// wrote its pre-activations and block maxima.
    pub fn record_after_product(&mut self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let mark: &mut Mark = &mut |_, _| Ok(());
        self.chunk_stages(enc, &self.chunks[0], 0, mark)?;
        self.step_end(enc, mark)?;
        self.finish_gates()
    }
}
