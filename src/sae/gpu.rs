//! The GPU engine: the step of `cpu.rs`, launch for launch, recorded into one command
//! buffer per step with no readback. Parameters, Adam moments, counters and metric sums
//! live on the device; the host writes the batch and the per-step Adam scalars
//! (`AdamHyper` in a uniform buffer) before each submission.

use std::sync::Arc;

use crate::gpu::{Gate, Gpu, GpuTensor};
use crate::kernels::activations::{
    jumprelu_backward, jumprelu_forward, relu_backward, relu_forward,
};
use crate::kernels::codes::{
    BLOCK, BatchScratch, activation_codes_from_bmax, batchtopk_codes_from_bmax, dead_list,
    threshold_offsets, topk_codes, topk_codes_from_bmax,
};
use crate::kernels::gemm::{GemmSpec, gemm, gemm_block_max, texture_of};
use crate::kernels::ops::{gate_plan, threshold_ema, zero};
use crate::kernels::optim::{
    adam, adam_unit_rows, clip_scale, decoder_grad_prep, sum_slot, sumsq, write_hyper,
};
use crate::kernels::reduce::{
    col_sum, dense_stats, l1_backward, l1_decoder_grad, mse_backward, row_norms, slot,
    sparse_stats, sub, sub_row, sum_sq_centred, update_dead,
};
use crate::kernels::sparse::{
    build_transpose, gather_db_enc, gather_dw_dec, gather_dw_enc, gather_jumprelu_threshold,
    sparse_decode, sparse_dot, sparse_jumprelu_backward, sparse_l1_backward, texture_path,
};
use crate::reference::reduce::METRIC_SLOTS;
use crate::{Error, Result};

use super::cpu::{Moments, StepScalars, TrainState, code_capacity};
use super::params::PARAM_NAMES;
use super::train::StepEngine;
use super::{Arch, DecoderNorm, SaeParams, TrainConfig};

/// Dispatches a ReLU / JumpReLU step records under its gate (both paths), with room.
const GATE_SLOTS: usize = 96;

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

impl CodeBufs {
    /// Codes of up to `rows * per_row` slots. With `relu_codes` (topk_codes: every value
    /// already positive) pre_val is val's buffer.
    fn new(gpu: &Gpu, rows: usize, n: usize, per_row: usize, relu_codes: bool) -> Result<CodeBufs> {
        let cap = rows * per_row;
        let shape = vec![cap];
        let val = gpu.zeros("val", &shape)?;
        let pre_val = if relu_codes {
            GpuTensor {
                buf: val.buf.clone(),
                shape: shape.clone(),
                dtype: val.dtype,
            }
        } else {
            gpu.zeros("pre_val", &shape)?
        };
        Ok(CodeBufs {
            row_ptr: gpu.zeros_u32("row_ptr", &[rows + 1])?,
            idx: gpu.zeros_u32("idx", &shape)?,
            pre_val,
            val,
            gslot: gpu.zeros("gslot", &[cap])?,
            dval: gpu.zeros("dval", &[cap])?,
            lat_ptr: gpu.zeros_u32("lat_ptr", &[n + 1])?,
            lat_row: gpu.zeros_u32("lat_row", &[cap])?,
            lat_slot: gpu.zeros_u32("lat_slot", &[cap])?,
        })
    }
}

/// Gradient outputs of a sparse backward pass.
struct GradRefs<'a> {
    w_enc: &'a GpuTensor,
    w_dec: &'a GpuTensor,
    b_enc: &'a GpuTensor,
}

/// Called by `record_step` at the end of each named phase with the encoder holding the
/// phase's dispatches; a no-op in training. A profiler (benches/train.rs) submits the
/// encoder, waits, and replaces it with a fresh one, which times each phase on its own.
pub type Mark<'a> = dyn FnMut(&'static str, &mut wgpu::CommandEncoder) -> Result<()> + 'a;

/// One chunk of the batch: its rows, everything the step keeps per row, and the gates that
/// decide its paths on the device. The chunks of a step run one after another over the one
/// pre-activation buffer, their gradients summed (the math of the whole batch: every
/// gradient is a sum over rows scaled by 1 / batch).
struct Chunk {
    rows: usize,
    /// This chunk's rows of the batch, and the step's per-row tensors: (rows, d) each.
    x: GpuTensor,
    xc: GpuTensor,
    x_hat: GpuTensor,
    dy: GpuTensor,
    /// AuxK's residual, its reconstruction and gradient: (rows, d) for topk / batchtopk,
    /// (1, d) unused otherwise.
    e: GpuTensor,
    e_hat: GpuTensor,
    de: GpuTensor,
    /// topk / batchtopk: the top-k codes; relu / jumprelu: the kept entries (capacity
    /// cpu::code_capacity of the chunk's rows).
    codes: CodeBufs,
    aux: Option<CodeBufs>,
    /// relu / jumprelu: runs the sparse path or, when the codes overflow, the dense one.
    gate: Option<Arc<Gate>>,
    /// topk / batchtopk: runs AuxK's selection, decode and backward only with dead latents.
    aux_gate: Option<Arc<Gate>>,
    /// jumprelu with several chunks: this chunk's threshold gradient (n), summed after.
    dthr: Option<GpuTensor>,
}

pub struct GpuEngine {
    gpu: Arc<Gpu>,
    cfg: TrainConfig,
    /// Rows of the batch (all chunks).
    rows: usize,
    d: usize,
    n: usize,
    /// Parameters in `PARAM_NAMES` order: W_enc (d, n), W_dec (n, d), b_enc (n), b_dec (d),
    /// log_threshold (n, or 1 unused element).
    params: Vec<GpuTensor>,
    grads: Vec<GpuTensor>,
    m: Vec<GpuTensor>,
    v: Vec<GpuTensor>,
    /// Which parameters exist for this architecture.
    live: [bool; 5],
    /// The whole batch (rows, d): chunk 0's x when there is one chunk; else only read for
    /// the total sum of squares (the explained-variance denominator is about the batch mean).
    x: GpuTensor,
    /// Several chunks, jumprelu: the chunks' threshold gradients as (chunks, n) rows.
    dthr_rows: Option<GpuTensor>,
    chunks: Vec<Chunk>,
    /// Rows of the largest chunk: `pre` and the dense-path tensors hold (chunk_rows, n).
    chunk_rows: usize,
    pre: GpuTensor,
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
    /// batchtopk (always one chunk): the candidate path's scratch and the gate of its
    /// whole-batch fallback.
    batch: Option<(BatchScratch, Arc<Gate>)>,
    // Dense path (relu / jumprelu), (chunk_rows, n) each.
    z: Option<GpuTensor>,
    dz: Option<GpuTensor>,
    dpre: Option<GpuTensor>,
    zsum: Option<GpuTensor>,
    step: u64,
}

/// Rows per chunk of a batch on this adapter: the whole batch when its pre-activations
/// (rows, n) fit one storage binding (and always for batchtopk, whose threshold is over the
/// whole batch); else the batch split into the fewest chunks that fit, as even as multiples
/// of 16 rows allow (the last may be shorter). 0 when not even 16 rows fit.
pub fn chunk_rows(gpu: &Gpu, cfg: &TrainConfig) -> usize {
    let (b, n) = (cfg.batch, cfg.d_sae.max(1));
    let fit = (gpu.max_binding() / (n as u64 * 4)) as usize;
    if b <= fit || cfg.arch == Arch::Batchtopk {
        return b;
    }
    let fit = fit / 16 * 16;
    if fit == 0 {
        return 0;
    }
    let chunks = b.div_ceil(fit);
    b.div_ceil(chunks).next_multiple_of(16).min(fit)
}

impl GpuEngine {
    /// Upload `st` and allocate every buffer of the step for batches of `cfg.batch` rows,
    /// in chunks of [`chunk_rows`] rows.
    pub fn new(gpu: Arc<Gpu>, cfg: &TrainConfig, st: &TrainState) -> Result<GpuEngine> {
        let rows = chunk_rows(&gpu, cfg);
        Self::with_chunks(gpu, cfg, st, rows)
    }

    /// As [`GpuEngine::new`] with chunks of `chunk` rows (the last may be shorter): tests
    /// split small batches to check that chunked steps keep the whole batch's math.
    /// batchtopk takes the whole batch in one chunk whatever `chunk` says.
    pub fn with_chunks(
        gpu: Arc<Gpu>,
        cfg: &TrainConfig,
        st: &TrainState,
        chunk: usize,
    ) -> Result<GpuEngine> {
        if cfg.decoder_norm == DecoderNorm::Rescale {
            return Err(Error::input(
                "--decoder-norm rescale: not on the GPU engine yet (use --device cpu)",
            ));
        }
        let (d, n, rows) = (cfg.d_in, cfg.d_sae, cfg.batch);
        let chunk = if cfg.arch == Arch::Batchtopk || chunk == 0 {
            rows
        } else {
            chunk.min(rows)
        };
        let g = &*gpu;
        let p = &st.params;
        let shapes = p.shapes();
        let mut params = Vec::new();
        let mut grads = Vec::new();
        let mut m = Vec::new();
        let mut v = Vec::new();
        let mut live = [false; 5];
        for (i, t) in p.tensors().iter().enumerate() {
            live[i] = !t.is_empty();
            let (shape, data, mm, vv) = if t.is_empty() {
                (vec![1], vec![0.0], vec![0.0], vec![0.0])
            } else {
                (
                    shapes[i].clone(),
                    (*t).clone(),
                    st.moments.m[i].clone(),
                    st.moments.v[i].clone(),
                )
            };
            params.push(g.upload(PARAM_NAMES[i], &shape, &data)?);
            grads.push(g.zeros(&format!("grad {}", PARAM_NAMES[i]), &shape)?);
            m.push(g.upload(&format!("adam_m {}", PARAM_NAMES[i]), &shape, &mm)?);
            v.push(g.upload(&format!("adam_v {}", PARAM_NAMES[i]), &shape, &vv)?);
        }
        let sparse = matches!(cfg.arch, Arch::Topk | Arch::Batchtopk);
        let x = g.zeros("x", &[rows, d])?;
        let several = chunk < rows;
        let mut chunks = Vec::new();
        for start in (0..rows.max(1)).step_by(chunk.max(1)) {
            let r = chunk.min(rows - start);
            let per_row = |name: &str| -> Result<GpuTensor> {
                g.zeros(name, &[if sparse { r } else { 1 }, d])
            };
            let codes = if sparse {
                CodeBufs::new(g, r, n, cfg.k, cfg.arch == Arch::Topk)?
            } else {
                CodeBufs::new(g, r, n, code_capacity(r, n) / r.max(1), false)?
            };
            chunks.push(Chunk {
                rows: r,
                x: if several {
                    g.zeros("x chunk", &[r, d])?
                } else {
                    x.view(&[r, d])
                },
                xc: g.zeros("xc", &[r, d])?,
                x_hat: g.zeros("x_hat", &[r, d])?,
                dy: g.zeros("dy", &[r, d])?,
                e: per_row("residual")?,
                e_hat: per_row("aux reconstruction")?,
                de: per_row("aux grad")?,
                codes,
                aux: if sparse {
                    Some(CodeBufs::new(g, r, n, cfg.k_aux, true)?)
                } else {
                    None
                },
                gate: if sparse {
                    None
                } else {
                    Some(g.gate(GATE_SLOTS)?)
                },
                aux_gate: if sparse {
                    Some(g.gate(GATE_SLOTS)?)
                } else {
                    None
                },
                dthr: if several && cfg.arch == Arch::Jumprelu {
                    Some(g.zeros("threshold grad chunk", &[n])?)
                } else {
                    None
                },
            });
        }
        let dense = |name: &str, shape: &[usize]| -> Result<Option<GpuTensor>> {
            if sparse {
                Ok(None)
            } else {
                g.zeros(name, shape).map(Some)
            }
        };
        let eng = GpuEngine {
            dthr_rows: if several && cfg.arch == Arch::Jumprelu {
                Some(g.zeros("threshold grad rows", &[chunks.len(), n])?)
            } else {
                None
            },
            x,
            pre: g.zeros("pre", &[chunk, n])?,
            bmax: g.zeros_u32(
                "pre block maxima",
                &[if cfg.arch == Arch::Batchtopk {
                    1
                } else {
                    chunk * n.div_ceil(BLOCK)
                }],
            )?,
            off: if cfg.arch == Arch::Jumprelu {
                Some(g.zeros("threshold offsets", &[n])?)
            } else {
                None
            },
            norms: g.zeros("norms", &[n])?,
            fired: g.zeros_u32("fired", &[n])?,
            since: g.upload_u32("since_fired", &[n], &st.since_fired)?,
            total: g.upload_u32("fire_total", &[n], &st.fire_total)?,
            metrics: g.upload("metrics", &[METRIC_SLOTS], &st.metrics)?,
            acc: g.zeros("grad sumsq", &[5])?,
            clip: g.zeros("clip", &[2])?,
            dec_coef: g.zeros("decoder grad coef", &[n])?,
            dec_part: g.zeros("decoder grad sumsq", &[n])?,
            hyper: g.uniform_buffer("adam hyper", size_of::<crate::kernels::optim::AdamHyper>()),
            dead: g.zeros_u32("dead latents", &[n])?,
            ndead: g.zeros_u32("dead count", &[1])?,
            thr: g.zeros("batch threshold", &[1])?,
            thr_state: g.upload("threshold", &[1], &[st.threshold])?,
            batch: if cfg.arch == Arch::Batchtopk {
                let sc = BatchScratch::new(g, rows, n, rows * cfg.k)?;
                Some((sc, g.gate(GATE_SLOTS)?))
            } else {
                None
            },
            z: dense("z", &[chunk, n])?,
            dz: dense("dz", &[chunk, n])?,
            dpre: dense("dpre", &[chunk, n])?,
            zsum: dense("zsum", &[n])?,
            chunks,
            chunk_rows: chunk,
            params,
            grads,
            m,
            v,
            live,
            gpu,
            cfg: cfg.clone(),
            rows,
            d,
            n,
            step: st.step,
        };
        // Allocation failures arrive through the device's error callback, not as a Result.
        eng.gpu.check().map_err(|e| {
            Error::Device(format!(
                "{e} while allocating the training buffers (about {:.1} MiB for --d-sae {n}, --batch {rows}); lower --d-sae or --batch, or use --device cpu",
                super::train::estimate_bytes(cfg) as f64 / 1048576.0
            ))
        })?;
        Ok(eng)
    }

    /// The first `rows` rows of a (chunk_rows, n) tensor (pre, or the dense path's).
    fn rows_of(&self, t: &GpuTensor, rows: usize) -> GpuTensor {
        t.prefix(&[rows, t.shape[1]])
    }

    /// Refuse, before anything is allocated or read, a run whose largest tensors do not fit
    /// one storage binding of this adapter: name the tensor, what it needs and what the
    /// adapter allows.
    pub fn check_capacity(gpu: &Gpu, cfg: &TrainConfig) -> Result<()> {
        let (d, n, b) = (cfg.d_in as u128, cfg.d_sae as u128, cfg.batch as u128);
        // Pre-activations are held one chunk at a time (batchtopk: the whole batch).
        let c = match chunk_rows(gpu, cfg) {
            0 => b.min(16),
            r => r as u128,
        };
        let pre = if cfg.arch == Arch::Batchtopk {
            "pre-activations (batchtopk selects over the whole batch, so they are not split)"
                .to_string()
        } else {
            format!("pre-activations of {c} rows")
        };
        let mut big: Vec<(&str, [u128; 2])> = vec![
            ("W_enc", [d, n]),
            ("W_dec", [n, d]),
            (&pre, [c, n]),
            ("batch", [b, d]),
        ];
        if matches!(cfg.arch, Arch::Topk | Arch::Batchtopk) {
            big.push(("codes", [c, cfg.k as u128]));
            big.push(("AuxK codes", [c, cfg.k_aux as u128]));
        }
        let allows = gpu.max_binding() as u128;
        let mib = |x: u128| x as f64 / 1048576.0;
        for (what, [r, c]) in big {
            let bytes = r * c * 4;
            if bytes > allows {
                return Err(Error::Device(format!(
                    "--d-sae {n} with --batch {b}: {what} [{r}, {c}] needs {:.1} MiB in one storage binding, but adapter {} allows {:.1} MiB; lower --d-sae or --batch, or use --device cpu",
                    mib(bytes),
                    gpu.info.name,
                    mib(allows)
                )));
            }
        }
        Ok(())
    }

    /// The sparse backward of `cpu::sparse_backward` for chunk `ch`: slot gradients, ReLU
    /// mask, transpose, gathers into `out` (added to it, for the latents with entries, when
    /// `accumulate`).
    fn sparse_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        c: &CodeBufs,
        dy: &GpuTensor,
        out: &GradRefs,
        accumulate: bool,
    ) -> Result<()> {
        let (g, rows, n, d) = (&*self.gpu, ch.rows, self.n, self.d);
        let (rp, idx) = (&c.row_ptr, &c.idx);
        sparse_dot(g, enc, rp, idx, dy, &self.params[1], rows, n, d, &c.gslot)?;
        relu_backward(g, enc, &c.pre_val, &c.gslot, &c.dval)?;
        #[rustfmt::skip]
        build_transpose(g, enc, rp, idx, rows, n, &c.lat_ptr, &c.lat_row, &c.lat_slot)?;
        let (lp, lr, ls) = (&c.lat_ptr, &c.lat_row, &c.lat_slot);
        gather_dw_dec(g, enc, lp, lr, ls, &c.val, dy, n, d, accumulate, out.w_dec)?;
        #[rustfmt::skip]
        gather_dw_enc(g, enc, lp, lr, ls, &c.dval, &ch.xc, n, d, accumulate, out.w_enc)?;
        gather_db_enc(g, enc, lp, ls, &c.dval, n, accumulate, out.b_enc)
    }

    /// Record the copies of these (rows, d) tensors into the textures the sparse kernels
    /// read on software adapters (`kernels::sparse::texture_path`), if they take that path.
    fn prefetch_textures(
        &self,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
        ts: &[&GpuTensor],
    ) -> Result<()> {
        let g = &*self.gpu;
        if !texture_path(g, &[self.n, rows], self.d) {
            return Ok(());
        }
        for t in ts {
            texture_of(g, enc, t, [t.len() / self.d, self.d])?;
        }
        Ok(())
    }

    /// The dense fallback's forward for chunk `ch`: z = act(pre); x_hat = z W_dec + b_dec.
    fn dense_decode(&self, enc: &mut wgpu::CommandEncoder, ch: &Chunk) -> Result<()> {
        let (g, rows, n, d) = (&*self.gpu, ch.rows, self.n, self.d);
        let z = &self.rows_of(self.z.as_ref().expect("dense buffers"), rows);
        let pre = &self.rows_of(&self.pre, rows);
        if self.cfg.arch == Arch::Relu {
            relu_forward(g, enc, pre, z)?;
        } else {
            jumprelu_forward(g, enc, pre, rows, n, &self.params[4], z)?;
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
        let (w_dec, b_dec) = (&self.params[1], &self.params[3]);
        gemm(g, enc, &dec, z, w_dec, Some(b_dec), &ch.x_hat)
    }

    /// The threshold gradient's destination for chunk `ch`: the parameter's gradient with
    /// one chunk, else the chunk's own row (summed after the chunks).
    fn dthr<'a>(&'a self, ch: &'a Chunk) -> &'a GpuTensor {
        ch.dthr.as_ref().unwrap_or(&self.grads[4])
    }

    /// The sparse backward of a ReLU / JumpReLU step for chunk `ch` (`cpu::gradients`'
    /// sparse branch): stats, dz at the kept entries, the penalty's and the activation's
    /// backward, and the gathers into `out` (added to it when `accumulate`; and the
    /// threshold gradient for JumpReLU).
    fn sparse_activation_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        out: &GradRefs,
        coef: f32,
        accumulate: bool,
    ) -> Result<()> {
        let (g, rows, n, d) = (&*self.gpu, ch.rows, self.n, self.d);
        let c = &ch.codes;
        let inv_b = 1.0 / self.rows as f32;
        let (w_dec, log_thr) = (&self.params[1], &self.params[4]);
        let (rp, idx) = (&c.row_ptr, &c.idx);
        #[rustfmt::skip]
        sparse_stats(g, enc, rp, idx, &c.val, rows, n, &self.norms, &self.fired, &self.metrics)?;
        sparse_dot(g, enc, rp, idx, &ch.dy, w_dec, rows, n, d, &c.gslot)?;
        if self.cfg.arch == Arch::Relu {
            #[rustfmt::skip]
            sparse_l1_backward(g, enc, rp, idx, &c.val, rows, n, &self.norms, coef * inv_b, &c.gslot)?;
            relu_backward(g, enc, &c.pre_val, &c.gslot, &c.dval)?;
        } else {
            #[rustfmt::skip]
            sparse_jumprelu_backward(g, enc, rp, idx, &c.pre_val, &c.gslot, rows, n, log_thr, &c.dval)?;
        }
        #[rustfmt::skip]
        build_transpose(g, enc, rp, idx, rows, n, &c.lat_ptr, &c.lat_row, &c.lat_slot)?;
        let (lp, lr, ls) = (&c.lat_ptr, &c.lat_row, &c.lat_slot);
        #[rustfmt::skip]
        gather_dw_dec(g, enc, lp, lr, ls, &c.val, &ch.dy, n, d, accumulate, out.w_dec)?;
        if self.cfg.arch == Arch::Relu {
            // The chunks' column sums of z, for the decoder-norm term after them.
            let zsum = self.zsum.as_ref().expect("zsum");
            gather_db_enc(g, enc, lp, ls, &c.val, n, accumulate, zsum)?;
        } else {
            let eps = self.cfg.bandwidth;
            #[rustfmt::skip]
            gather_jumprelu_threshold(g, enc, lp, ls, &c.pre_val, &c.gslot, n, log_thr, eps, coef * inv_b, self.dthr(ch))?;
        }
        #[rustfmt::skip]
        gather_dw_enc(g, enc, lp, lr, ls, &c.dval, &ch.xc, n, d, accumulate, out.w_enc)?;
        gather_db_enc(g, enc, lp, ls, &c.dval, n, accumulate, out.b_enc)
    }

    /// The dense fallback's backward for chunk `ch` (`cpu::gradients`' dense branch), added
    /// to `out` when `accumulate`.
    fn dense_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ch: &Chunk,
        out: &GradRefs,
        coef: f32,
        accumulate: bool,
    ) -> Result<()> {
        let (g, rows, n, d) = (&*self.gpu, ch.rows, self.n, self.d);
        let inv_b = 1.0 / self.rows as f32;
        let beta = if accumulate { 1.0 } else { 0.0 };
        let (w_dec, log_thr) = (&self.params[1], &self.params[4]);
        let dense = |t: &Option<GpuTensor>| self.rows_of(t.as_ref().expect("dense buffers"), rows);
        let (z, dz, dpre) = (&dense(&self.z), &dense(&self.dz), &dense(&self.dpre));
        let pre = &self.rows_of(&self.pre, rows);
        dense_stats(g, enc, z, rows, n, &self.norms, &self.fired, &self.metrics)?;
        let nt = GemmSpec {
            m: rows,
            n,
            k: d,
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            beta: 0.0,
        };
        gemm(g, enc, &nt, &ch.dy, w_dec, None, dz)?;
        let tn = GemmSpec {
            m: n,
            n: d,
            k: rows,
            trans_a: true,
            trans_b: false,
            alpha: 1.0,
            beta,
        };
        gemm(g, enc, &tn, z, &ch.dy, None, out.w_dec)?;
        if self.cfg.arch == Arch::Relu {
            let zsum = self.zsum.as_ref().expect("zsum");
            l1_backward(g, enc, z, rows, n, &self.norms, coef * inv_b, dz)?;
            col_sum(g, enc, z, rows, n, zsum, accumulate)?;
            relu_backward(g, enc, pre, dz, dpre)?;
        } else {
            let eps = self.cfg.bandwidth;
            #[rustfmt::skip]
            jumprelu_backward(g, enc, pre, dz, rows, n, log_thr, eps, coef * inv_b, dpre, self.dthr(ch))?;
        }
        let tn2 = GemmSpec {
            m: d,
            n,
            k: rows,
            trans_a: true,
            trans_b: false,
            alpha: 1.0,
            beta,
        };
        gemm(g, enc, &tn2, &ch.xc, dpre, None, out.w_enc)?;
        col_sum(g, enc, dpre, rows, n, out.b_enc, accumulate)
    }

    /// Forward and backward of chunk `ch` (the `index`-th): gradients written by the first
    /// chunk and added to by the others; metrics, firing counts and db_dec's column sum
    /// accumulated.
    fn record_chunk(
        &self,
        enc: &mut wgpu::CommandEncoder,
        mark: &mut Mark,
        ch: &Chunk,
        index: usize,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (g, rows, n, d) = (&*self.gpu, ch.rows, self.n, self.d);
        let accumulate = index > 0;
        // Whole-batch scale: every gradient is a sum over all chunks' rows / batch.
        let inv_b = 1.0 / self.rows as f32;
        // With several chunks the total sum of squares is taken over the whole batch after
        // them (about the batch mean, not each chunk's).
        let sst = (self.chunks.len() == 1).then_some(slot::SST);
        let sc = StepScalars::at(cfg, self.step);
        let [w_enc, w_dec, b_enc, b_dec, log_thr] = [
            &self.params[0],
            &self.params[1],
            &self.params[2],
            &self.params[3],
            &self.params[4],
        ];
        let main = GradRefs {
            w_enc: &self.grads[0],
            w_dec: &self.grads[1],
            b_enc: &self.grads[2],
        };
        let pre = &self.rows_of(&self.pre, rows);
        let nb = n.div_ceil(BLOCK);
        let bmax = &match &self.batch {
            Some((sc, _)) => sc.bmax.view(&[rows * nb]),
            None => self.bmax.prefix(&[rows * nb]),
        };

        sub_row(g, enc, &ch.x, b_dec, rows, d, &ch.xc)?;
        let spec = GemmSpec {
            m: rows,
            n,
            k: d,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        };
        // The pre-activations and their block maxima, which the code stages start from.
        #[rustfmt::skip]
        gemm_block_max(g, enc, &spec, &ch.xc, w_enc, Some(b_enc), pre, self.off.as_ref(), bmax)?;
        mark("encoder", enc)?;

        match cfg.arch {
            Arch::Topk | Arch::Batchtopk => {
                let c = &ch.codes;
                if cfg.arch == Arch::Topk {
                    #[rustfmt::skip]
                    topk_codes_from_bmax(g, enc, pre, cfg.k, bmax, &c.row_ptr, &c.idx, &c.val)?;
                } else {
                    let (sc, bg) = self.batch.as_ref().expect("batchtopk scratch");
                    let (rp, idx, pv) = (&c.row_ptr, &c.idx, &c.pre_val);
                    #[rustfmt::skip]
                    batchtopk_codes_from_bmax(g, enc, pre, bmax, bg, sc, rp, idx, pv, &self.thr)?;
                    threshold_ema(
                        g,
                        enc,
                        &self.thr,
                        &self.thr_state,
                        cfg.threshold_ema,
                        self.step == 0,
                    )?;
                    relu_forward(g, enc, &c.pre_val, &c.val)?;
                }
                mark("activation", enc)?;
                let (rp, idx, val) = (&c.row_ptr, &c.idx, &c.val);
                #[rustfmt::skip]
                sparse_decode(g, enc, rp, idx, val, w_dec, Some(b_dec), rows, n, d, &ch.x_hat)?;
                #[rustfmt::skip]
                mse_backward(g, enc, &ch.x, &ch.x_hat, rows, d, 2.0 * inv_b, &ch.dy, &self.metrics, slot::SSE, sst)?;
                #[rustfmt::skip]
                sparse_stats(g, enc, rp, idx, val, rows, n, &self.norms, &self.fired, &self.metrics)?;
                mark("decode", enc)?;
                self.sparse_backward(enc, ch, c, &ch.dy, &main, accumulate)?;
                mark("backward", enc)?;

                // AuxK: the k_aux largest positive pre among the dead latents.
                let a = ch.aux.as_ref().expect("aux buffers");
                // With no dead latent the codes are empty and e_hat = 0 (as on the CPU,
                // where the decode of no entries is 0): the gate skips the selection,
                // the decode and the backward, and only clears e_hat.
                let ag = ch.aux_gate.as_ref().expect("AuxK gate");
                gate_plan(g, enc, ag, &self.ndead, 0, 0)?;
                sub(g, enc, &ch.x, &ch.x_hat, &ch.e)?;
                g.gated(ag, true, || -> Result<()> {
                    let cols = Some((&self.dead, &self.ndead));
                    #[rustfmt::skip]
                    topk_codes(g, enc, pre, cfg.k_aux, cols, &a.row_ptr, &a.idx, &a.val)?;
                    let (rp, idx, val) = (&a.row_ptr, &a.idx, &a.val);
                    sparse_decode(g, enc, rp, idx, val, w_dec, None, rows, n, d, &ch.e_hat)
                })?;
                g.gated(ag, false, || zero(g, enc, &ch.e_hat))?;
                let scale = cfg.aux_coef * 2.0 * inv_b;
                #[rustfmt::skip]
                mse_backward(g, enc, &ch.e, &ch.e_hat, rows, d, scale, &ch.de, &self.metrics, slot::AUX, None)?;
                self.prefetch_textures(enc, rows, &[&ch.de])?;
                g.gated(ag, true, || {
                    self.sparse_backward(enc, ch, a, &ch.de, &main, true)
                })?;
                mark("auxk", enc)?;
            }
            Arch::Relu | Arch::Jumprelu => {
                let c = &ch.codes;
                let gate = ch.gate.as_ref().expect("dense-fallback gate");
                let jump = (cfg.arch == Arch::Jumprelu).then_some((log_thr, cfg.bandwidth));
                let coef = if cfg.arch == Arch::Relu {
                    cfg.l1
                } else {
                    cfg.l0
                } * sc.sparsity_scale;
                // The kept entries as codes; the dense path runs instead when they overflow
                // the capacity (cpu::code_capacity), decided on the device.
                #[rustfmt::skip]
                activation_codes_from_bmax(g, enc, pre, jump, bmax, &c.row_ptr, &c.idx, &c.val, &c.pre_val)?;
                gate_plan(g, enc, gate, &c.row_ptr, rows, c.idx.len() as u32)?;
                mark("activation", enc)?;
                let (rp, idx, val) = (&c.row_ptr, &c.idx, &c.val);
                // Textures the sparse kernels read on software adapters, copied outside the
                // gate (inside it they would be filled by a kernel, as slow as the reads).
                self.prefetch_textures(enc, rows, &[w_dec])?;
                g.gated(gate, false, || {
                    let b = Some(b_dec);
                    sparse_decode(g, enc, rp, idx, val, w_dec, b, rows, n, d, &ch.x_hat)
                })?;
                g.gated(gate, true, || self.dense_decode(enc, ch))?;
                #[rustfmt::skip]
                mse_backward(g, enc, &ch.x, &ch.x_hat, rows, d, 2.0 * inv_b, &ch.dy, &self.metrics, slot::SSE, sst)?;
                mark("decode", enc)?;
                self.prefetch_textures(enc, rows, &[&ch.dy, &ch.xc])?;
                g.gated(gate, false, || {
                    self.sparse_activation_backward(enc, ch, &main, coef, accumulate)
                })?;
                g.gated(gate, true, || {
                    self.dense_backward(enc, ch, &main, coef, accumulate)
                })?;
                mark("backward", enc)?;
            }
        }
        // db_dec's first term: sum_b dy_b over this chunk's rows.
        col_sum(g, enc, &ch.dy, rows, d, &self.grads[3], accumulate)
    }

    fn record_step(&self, enc: &mut wgpu::CommandEncoder, mark: &mut Mark) -> Result<()> {
        let cfg = &self.cfg;
        let (g, rows, n, d) = (&*self.gpu, self.rows, self.n, self.d);
        let [w_enc, w_dec, ..] = [&self.params[0], &self.params[1]];

        row_norms(g, enc, w_dec, n, d, &self.norms)?;
        if matches!(cfg.arch, Arch::Topk | Arch::Batchtopk) {
            #[rustfmt::skip]
            dead_list(g, enc, &self.since, dead_after(cfg), &self.dead, &self.ndead)?;
        }
        if let Some(off) = &self.off {
            threshold_offsets(g, enc, &self.params[4], cfg.bandwidth, off)?;
        }
        for (i, ch) in self.chunks.iter().enumerate() {
            self.record_chunk(enc, mark, ch, i)?;
        }
        if cfg.arch == Arch::Relu {
            // The L1 penalty's decoder-norm term, d/dW_dec of coef / B sum_i zsum_i
            // ||W_dec_i||: one pass over W_dec for the whole batch (zsum summed by the chunks).
            let coef = cfg.l1 * StepScalars::at(cfg, self.step).sparsity_scale / rows as f32;
            let zsum = self.zsum.as_ref().expect("zsum");
            #[rustfmt::skip]
            l1_decoder_grad(g, enc, zsum, w_dec, &self.norms, n, d, coef, &self.grads[1])?;
        }
        if self.chunks.len() > 1 {
            // The explained-variance total about the batch mean, not each chunk's.
            sum_sq_centred(g, enc, &self.x, rows, d, &self.metrics, slot::SST)?;
        }
        if let Some(all) = &self.dthr_rows {
            // The chunks' threshold gradients, summed in chunk order.
            for (i, ch) in self.chunks.iter().enumerate() {
                let t = ch.dthr.as_ref().expect("chunk threshold grad");
                enc.copy_buffer_to_buffer(&t.buf, 0, &all.buf, (i * n * 4) as u64, Some(t.bytes()));
            }
            g.stale(&all.buf);
            col_sum(g, enc, all, self.chunks.len(), n, &self.grads[4], false)?;
        }

        // db_dec = sum_b dy_b - db_enc W_enc^T (the first term summed by the chunks)
        let bd = GemmSpec {
            m: 1,
            n: d,
            k: n,
            trans_a: false,
            trans_b: true,
            alpha: -1.0,
            beta: 1.0,
        };
        gemm(
            g,
            enc,
            &bd,
            &self.grads[2].view(&[1, n]),
            w_enc,
            None,
            &self.grads[3].view(&[1, d]),
        )?;

        mark("b_dec grad", enc)?;
        // Optimizer, in as few passes over the parameters as the math allows (the global
        // norm must be complete before any Adam update). Passes and bytes at d = 512,
        // n = 16384 (each tensor of W_enc / W_dec is 32 MiB; grads, m, v the same):
        //   1. decoder_grad_prep  W_dec rows: read W_dec, dW_dec            2 x 32 MiB
        //   2. sumsq x 3 (4)      read dW_enc, db_enc, db_dec (dthr)        1 x 32 MiB
        //   3. sum_slot, clip_scale                                          ~64 KiB
        //   4. adam x 3 (4)       W_enc, biases: read p, g, m, v; write p, m, v  7 x 32 MiB
        //   5. adam_unit_rows     W_dec rows: the same 7, plus the normalisation's re-read
        //                         and write of the row (from cache)          7 (+2) x 32 MiB
        // = 17 (+2) x 32 MiB ~ 544 (608) MiB in 10 (12) dispatches, the floor of
        // shaders/optim.wgsl's note; unfused it was 15 (18) dispatches and ~674 MiB. ReLU
        // (free decoder norm) runs sumsq + adam on W_dec instead of 1 and 5.
        let unit = cfg.decoder_norm == DecoderNorm::Unit;
        for i in 0..5 {
            if i == 1 && unit {
                #[rustfmt::skip]
                decoder_grad_prep(g, enc, w_dec, &self.grads[1], n, d, &self.dec_coef, &self.dec_part)?;
                sum_slot(g, enc, &self.dec_part, &self.acc, 1)?;
            } else {
                // An unused parameter's 1-element gradient is kept at 0, as the CPU sums an
                // empty gradient as 0.
                sumsq(g, enc, &self.grads[i], &self.acc, i as u32)?;
            }
        }
        clip_scale(g, enc, &self.acc, 5, cfg.grad_clip, &self.clip)?;
        for i in 0..5 {
            if !self.live[i] {
                continue;
            }
            let (p, gr, m, v) = (&self.params[i], &self.grads[i], &self.m[i], &self.v[i]);
            if i == 1 && unit {
                #[rustfmt::skip]
                adam_unit_rows(g, enc, p, gr, &self.dec_coef, m, v, &self.hyper, &self.clip, n, d)?;
            } else {
                adam(g, enc, p, gr, m, v, &self.hyper, &self.clip)?;
            }
        }
        mark("optimizer", enc)?;
        update_dead(
            g,
            enc,
            &self.fired,
            &self.since,
            &self.total,
            rows,
            dead_after(cfg),
            &self.metrics,
        )?;
        mark("dead latents", enc)
    }
}

fn dead_after(cfg: &TrainConfig) -> u32 {
    cfg.dead_tokens.min(u32::MAX as u64) as u32
}

impl GpuEngine {
    /// The GPU the engine runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// How the batch is split: (chunks, rows of the largest).
    pub fn chunking(&self) -> (usize, usize) {
        (self.chunks.len(), self.chunk_rows)
    }

    /// One step as `StepEngine::step`, with `mark` called at the end of each phase (see
    /// [`Mark`]); the last phase's encoder is submitted here.
    pub fn step_marked(
        &mut self,
        cfg: &TrainConfig,
        x: &[f32],
        rows: usize,
        mark: &mut Mark,
    ) -> Result<()> {
        if rows != self.rows {
            return Err(Error::Internal(format!(
                "GPU engine built for batches of {} rows, got {rows}",
                self.rows
            )));
        }
        let g = &*self.gpu;
        g.write(&self.x, x)?;
        if self.chunks.len() > 1 {
            let mut start = 0;
            for ch in &self.chunks {
                let len = ch.rows * self.d;
                g.write(&ch.x, &x[start..start + len])?;
                start += len;
            }
        }
        let sc = StepScalars::at(cfg, self.step);
        write_hyper(g, &self.hyper, &sc.adam(cfg, self.step));
        let mut enc = g.encoder();
        self.record_step(&mut enc, mark)?;
        let batch_gate = self.batch.as_ref().map(|(_, gate)| gate);
        let chunk_gates = self
            .chunks
            .iter()
            .flat_map(|ch| [ch.gate.as_ref(), ch.aux_gate.as_ref()]);
        for gate in chunk_gates.chain([batch_gate]).flatten() {
            gate.finish(g)?;
        }
        g.submit(enc);
        // Out of memory, device lost or a driver error: reported by the device's callbacks.
        g.check()?;
        self.step += 1;
        Ok(())
    }
}

impl StepEngine for GpuEngine {
    fn step(&mut self, cfg: &TrainConfig, x: &[f32], rows: usize) -> Result<()> {
        self.step_marked(cfg, x, rows, &mut |_, _| Ok(()))
    }

    fn take_metrics(&mut self) -> Result<(Vec<f32>, f32)> {
        let g = &*self.gpu;
        let m = g.read_f32(&self.metrics)?;
        let clip = g.read_f32(&self.clip)?;
        let mut reset = vec![0.0f32; METRIC_SLOTS];
        reset[slot::DEAD as usize] = m[slot::DEAD as usize];
        g.write(&self.metrics, &reset)?;
        Ok((m, clip[1]))
    }

    fn state(&mut self) -> Result<TrainState> {
        let g = &*self.gpu;
        let read = |i: usize, t: &[GpuTensor]| -> Result<Vec<f32>> {
            if self.live[i] {
                g.read_f32(&t[i])
            } else {
                Ok(Vec::new())
            }
        };
        let params = SaeParams {
            d: self.d,
            n: self.n,
            w_enc: read(0, &self.params)?,
            w_dec: read(1, &self.params)?,
            b_enc: read(2, &self.params)?,
            b_dec: read(3, &self.params)?,
            log_threshold: read(4, &self.params)?,
        };
        let mut m: [Vec<f32>; 5] = Default::default();
        let mut v: [Vec<f32>; 5] = Default::default();
        for i in 0..5 {
            m[i] = read(i, &self.m)?;
            v[i] = read(i, &self.v)?;
        }
        Ok(TrainState {
            params,
            moments: Moments { m, v },
            step: self.step,
            since_fired: g.read_u32(&self.since)?,
            fire_total: g.read_u32(&self.total)?,
            threshold: g.read_f32(&self.thr_state)?[0],
            metrics: g.read_f32(&self.metrics)?,
            grad_norm: g.read_f32(&self.clip)?[1],
        })
    }
}
