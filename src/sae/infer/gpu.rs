//! The GPU engine's side of the inference [`Encoder`](super::Encoder): the weights on the
//! device, the buffers of one batch, and the batch as the training step's own stages. TopK
//! selects from the encoder's block maxima (`topk_codes_from_bmax`); ReLU / JumpReLU keep
//! their entries as codes (`activation_codes_from_bmax`, JumpReLU's block maxima taken
//! against its thresholds) and a gate decides on the device, as in training, between the
//! sparse decode of those codes and, past `engine::code_capacity`, the dense z through the
//! GEMM. The CPU engine's batch (`super::run_cpu`) follows the same rule.

use std::sync::Arc;

use super::{BatchOut, csr_codes, dense_to_codes, weights};
use crate::Result;
use crate::gpu::{Gate, Gpu, GpuTensor};
use crate::kernels::codes::compaction::threshold_offsets;
use crate::reference::gemm::GemmSpec;
use crate::reference::reduce::METRIC_SLOTS;
use crate::sae::engine::code_capacity;
use crate::sae::export::{SaeKind, SaeModel};
use crate::sae::forward::encode_gpu;

/// Slots of a batch's codes: rows k for TopK, `code_capacity` for ReLU / JumpReLU.
fn code_slots(kind: SaeKind, rows: usize, n: usize) -> usize {
    match kind {
        SaeKind::Topk { k } => rows * k,
        _ => code_capacity(rows, n),
    }
}

/// Room for the dispatches a batch records under its gate (either path: a few each).
const GATE_SLOTS: usize = 64;

/// The weights on the device and the buffers of a batch of `Encoder::batch` rows (a
/// shorter batch uses their first rows).
pub(super) struct GpuSae {
    pub(super) gpu: Arc<Gpu>,
    w_enc: GpuTensor,
    b_enc: GpuTensor,
    w_dec: GpuTensor,
    b_dec: GpuTensor,
    log_theta: GpuTensor,
    ones: GpuTensor,
    /// The fire counts (n) u32, over every batch until `Encoder::reset_counts`.
    pub(super) fired: GpuTensor,
    metrics: GpuTensor,
    x: GpuTensor,
    xc: GpuTensor,
    pre: GpuTensor,
    x_hat: GpuTensor,
    /// The block maxima of pre (rows, blocks(n)) u32 the code stages start from.
    bmax: GpuTensor,
    /// The codes as CSR: row_ptr (rows + 1) u32, idx (cap) u32, val (cap), with cap = rows
    /// k (topk) or `code_capacity(rows, n)` (relu / jumprelu).
    row_ptr: GpuTensor,
    idx: GpuTensor,
    val: GpuTensor,
    /// relu / jumprelu: what their activation keeps besides.
    act: Option<Activation>,
}

/// A ReLU / JumpReLU batch's buffers beside its codes.
struct Activation {
    /// pre at the kept entries (cap).
    pre_val: GpuTensor,
    /// jumprelu: the thresholds (n) its block maxima are taken against.
    off: Option<GpuTensor>,
    /// The dense path's z (rows, n).
    z: GpuTensor,
    /// Dense when row_ptr[rows] > cap, decided on the device.
    gate: Arc<Gate>,
}

impl GpuSae {
    pub(super) fn new(
        gpu: Arc<Gpu>,
        model: &SaeModel,
        log_theta: &[f32],
        rows: usize,
    ) -> Result<GpuSae> {
        let g = &*gpu;
        let (d, n) = (model.d, model.n);
        // The decoder's side: d_out columns for a transcoder.
        let d_out = model.out_dim();
        let lt: &[f32] = if log_theta.is_empty() {
            &[0.0]
        } else {
            log_theta
        };
        let cap = code_slots(model.kind, rows, n);
        let log_theta = g.upload("log_theta", &[lt.len()], lt)?;
        let act = match model.kind {
            SaeKind::Topk { .. } => None,
            kind => Some(Activation {
                pre_val: g.zeros("pre_val", &[cap])?,
                off: match kind {
                    SaeKind::Jumprelu => {
                        // The thresholds never change: taken once, here.
                        let off = g.zeros("thresholds", &[n])?;
                        let mut enc = g.encoder();
                        threshold_offsets(g, &mut enc, &log_theta, 0.0, &off)?;
                        g.submit(enc);
                        Some(off)
                    }
                    _ => None,
                },
                z: g.zeros("z", &[rows, n])?,
                gate: g.gate(GATE_SLOTS)?,
            }),
        };
        let blocks = n.div_ceil(crate::kernels::codes::BLOCK);
        Ok(GpuSae {
            w_enc: g.upload("W_enc", &[d, n], &model.w_enc)?,
            b_enc: g.upload("b_enc", &[n], &model.b_enc)?,
            w_dec: g.upload("W_dec", &[n, d_out], &model.w_dec)?,
            b_dec: g.upload("b_dec", &[d_out], &model.b_dec)?,
            log_theta,
            ones: g.upload("unit weights", &[n], &vec![1.0; n])?,
            fired: g.zeros_u32("fired", &[n])?,
            metrics: g.zeros("metrics", &[METRIC_SLOTS])?,
            x: g.zeros("x", &[rows, d])?,
            xc: g.zeros("xc", &[rows, d])?,
            pre: g.zeros("pre", &[rows, n])?,
            x_hat: g.zeros("x_hat", &[rows, d_out])?,
            bmax: g.zeros_u32("bmax", &[rows, blocks])?,
            row_ptr: g.zeros_u32("row_ptr", &[rows + 1])?,
            idx: g.zeros_u32("idx", &[cap])?,
            val: g.zeros("val", &[cap])?,
            act,
            gpu,
        })
    }

    /// `rows` rows of x through the encoder (and, with `decode`, the decoder and the
    /// counts), on the first rows of the batch buffers.
    pub(super) fn run(
        &self,
        m: &SaeModel,
        x: &[f32],
        rows: usize,
        want: bool,
        decode: bool,
    ) -> Result<BatchOut> {
        use crate::kernels::codes::compaction::activation_codes_from_bmax;
        use crate::kernels::codes::selection::topk_codes_from_bmax;
        use crate::kernels::{activations, gemm, ops, reduce, sparse};
        let (g, n) = (&*self.gpu, m.n);
        let first = |t: &GpuTensor| t.prefix(&[rows, t.shape[1]]);
        let (bx, xc, pre, x_hat, bmax) = (
            &first(&self.x),
            &first(&self.xc),
            &first(&self.pre),
            &first(&self.x_hat),
            &first(&self.bmax),
        );
        // The codes of this many rows.
        let cap = code_slots(m.kind, rows, n);
        let rp = &self.row_ptr.prefix(&[rows + 1]);
        let (idx, val) = (&self.idx.prefix(&[cap]), &self.val.prefix(&[cap]));
        g.write(bx, x)?;
        g.fill(&self.metrics, 0.0);
        let mut encoder = g.encoder();
        let enc = &mut encoder;
        // A transcoder's input goes to the encoder as it is (its b_dec is in the output space).
        let xc = if m.d_out.is_some() { bx } else { xc };
        let w = weights(m, &self.w_enc, &self.b_enc, &self.b_dec);
        let off = self.act.as_ref().and_then(|a| a.off.as_ref());
        encode_gpu(g, enc, &w, bx, rows, xc, pre, Some((bmax, off)))?;
        // The decoder's side: d_out columns for a transcoder.
        let d = m.out_dim();
        let (w_dec, b_dec, ones) = (&self.w_dec, Some(&self.b_dec), &self.ones);
        let (fired, metrics) = (&self.fired, &self.metrics);
        let sparse_path = |enc: &mut wgpu::CommandEncoder| -> Result<()> {
            if decode {
                #[rustfmt::skip]
                sparse::sparse_decode(g, enc, rp, idx, val, w_dec, b_dec, rows, n, d, x_hat)?;
                #[rustfmt::skip]
                reduce::sparse_stats(g, enc, rp, idx, val, rows, n, ones, fired, metrics)?;
            }
            Ok(())
        };
        match (&self.act, m.kind) {
            (None, SaeKind::Topk { k }) => {
                topk_codes_from_bmax(g, enc, pre, k, bmax, rp, idx, val)?;
                sparse_path(enc)?;
            }
            (Some(a), kind) => {
                let jumprelu = kind == SaeKind::Jumprelu;
                let jump = jumprelu.then_some((&self.log_theta, 0.0));
                let pre_val = &a.pre_val.prefix(&[cap]);
                activation_codes_from_bmax(g, enc, pre, jump, bmax, rp, idx, val, pre_val)?;
                ops::gate_plan(g, enc, &a.gate, rp, rows, cap as u32)?;
                if decode && sparse::texture_path(g, &[n, rows], d) {
                    // W_dec's texture for the sparse decode, filled outside the gate (as
                    // the training step does).
                    gemm::texture_of(g, enc, w_dec, [n, d])?;
                }
                g.gated(&a.gate, false, || sparse_path(enc))?;
                g.gated(&a.gate, true, || -> Result<()> {
                    let z = &first(&a.z);
                    if jumprelu {
                        activations::jumprelu_forward(g, enc, pre, rows, n, &self.log_theta, z)?;
                    } else {
                        activations::relu_forward(g, enc, pre, z)?;
                    }
                    if decode {
                        let spec = GemmSpec::nn(rows, d, n);
                        gemm::gemm(g, enc, &spec, z, w_dec, b_dec, x_hat)?;
                        reduce::dense_stats(g, enc, z, rows, n, ones, fired, metrics)?;
                    }
                    Ok(())
                })?;
                a.gate.finish(g)?;
            }
            (None, _) => unreachable!("relu / jumprelu allocate their activation's buffers"),
        }
        g.submit(encoder);
        let (x_hat, metrics) = if decode {
            (g.read_f32(x_hat)?, g.read_f32(metrics)?)
        } else {
            (Vec::new(), vec![0.0; METRIC_SLOTS])
        };
        if !want {
            return Ok(BatchOut::of(x_hat, &metrics, None));
        }
        let rp = g.read_u32(rp)?;
        let nnz = rp[rows] as usize;
        let codes = match &self.act {
            // Past the capacity the gate took the dense path: z holds the codes.
            Some(a) if nnz > cap => dense_to_codes(&g.read_f32(&first(&a.z))?, rows, n),
            _ if nnz == 0 => csr_codes(&rp, &[], &[]),
            _ => {
                let nnz = nnz.min(cap);
                let (idx, val) = (self.idx.prefix(&[nnz]), self.val.prefix(&[nnz]));
                csr_codes(&rp, &g.read_u32(&idx)?, &g.read_f32(&val)?)
            }
        };
        Ok(BatchOut::of(x_hat, &metrics, Some(codes)))
    }
}
