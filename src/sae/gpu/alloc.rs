//! The GPU engine's buffers: every tensor of the step allocated once, for batches of
//! `cfg.batch` rows split into chunks that fit one storage binding, and the capacity check
//! that refuses a run the adapter cannot hold before anything is allocated.

use std::sync::Arc;

use super::{Chunk, CodeBufs, GATE_SLOTS, GpuEngine};
use crate::gpu::{Gpu, GpuTensor};
use crate::kernels::codes::batch_topk::BatchScratch;
use crate::kernels::codes::{BLOCK, CAND};
use crate::kernels::sparse::transpose_marks_len;
use crate::reference::reduce::METRIC_SLOTS;
use crate::sae::engine::{TrainState, code_capacity, selects_batch_topk, selects_topk};
use crate::sae::params::ParamSet;
use crate::sae::storage::BatchDtype;
use crate::sae::{Arch, DecoderNorm, SaeParams, TrainConfig};
use crate::{Error, Result};

impl CodeBufs {
    /// The first `cap` slots of every per-slot buffer (row_ptr and lat_ptr whole).
    pub(super) fn prefix(&self, cap: usize) -> CodeBufs {
        let p = |t: &GpuTensor| t.prefix(&[cap]);
        CodeBufs {
            row_ptr: self.row_ptr.view(&self.row_ptr.shape),
            idx: p(&self.idx),
            pre_val: p(&self.pre_val),
            val: p(&self.val),
            gslot: p(&self.gslot),
            dval: p(&self.dval),
            lat_ptr: self.lat_ptr.view(&self.lat_ptr.shape),
            lat_row: p(&self.lat_row),
            lat_slot: p(&self.lat_slot),
        }
    }

    /// Codes of up to `rows * per_row` slots. With `relu_codes` (topk_codes: every value
    /// already positive) pre_val is val's buffer.
    pub(super) fn new(
        gpu: &Gpu,
        rows: usize,
        n: usize,
        per_row: usize,
        relu_codes: bool,
    ) -> Result<CodeBufs> {
        let cap = rows * per_row;
        let shape = vec![cap];
        let val = gpu.zeros("val", &shape)?;
        let pre_val = if relu_codes {
            GpuTensor {
                buf: val.buf.clone(),
                offset: val.offset,
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

/// Rows per chunk of a batch on this adapter: the whole batch when its pre-activations
/// (rows, n) fit one storage binding; else the batch split into the fewest chunks that fit,
/// as even as multiples of 16 rows allow (the last may be shorter). 0 when not even 16 rows
/// fit. (batchtopk keeps every chunk's pre-activations in a buffer of its own until the
/// batch's selection.)
pub fn chunk_rows(gpu: &Gpu, cfg: &TrainConfig) -> usize {
    let (b, n) = (cfg.batch, cfg.d_sae.max(1));
    let fit = (gpu.max_binding() / (n as u64 * 4)) as usize;
    if b <= fit {
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
    pub fn with_chunks(
        gpu: Arc<Gpu>,
        cfg: &TrainConfig,
        st: &TrainState,
        chunk: usize,
    ) -> Result<GpuEngine> {
        let (d, n, rows) = (cfg.d_in, cfg.d_sae, cfg.batch);
        // A transcoder's decoder writes its target's width.
        let (transcoder, d_out) = (cfg.d_out.is_some(), cfg.d_out.unwrap_or(cfg.d_in));
        let chunk = if chunk == 0 { rows } else { chunk.min(rows) };
        let g = &*gpu;
        // Every tensor of the parameter set on the device; log_threshold, when the
        // architecture has none, as one unused element kept at 0.
        let shapes = st.params.shapes();
        let shape_of = |shape: &Vec<usize>| {
            if shape.iter().product::<usize>() == 0 {
                vec![1]
            } else {
                shape.clone()
            }
        };
        let upload = |what: &str, set: &SaeParams| {
            set.try_zip_map(&shapes, |name, t, shape| {
                let t: &[f32] = if t.is_empty() { &[0.0] } else { t };
                g.upload(&format!("{what}{name}"), &shape_of(shape), t)
            })
        };
        let params = upload("", &st.params)?;
        // --decoder-norm rescale: the unit-row view the step runs on (see `GpuEngine::fwd`).
        let rescale = cfg.decoder_norm == DecoderNorm::Rescale;
        let alias = |t: &GpuTensor| t.view(&t.shape);
        let fwd = ParamSet {
            d: params.d,
            n: params.n,
            w_enc: if rescale {
                g.zeros("rescaled W_enc", &[d, n])?
            } else {
                alias(&params.w_enc)
            },
            w_dec: if rescale {
                g.zeros("unit W_dec", &[n, d_out])?
            } else {
                alias(&params.w_dec)
            },
            b_enc: if rescale {
                g.zeros("rescaled b_enc", &[n])?
            } else {
                alias(&params.b_enc)
            },
            b_dec: alias(&params.b_dec),
            log_threshold: alias(&params.log_threshold),
        };
        let dec_norms = if rescale {
            Some(g.zeros("decoder norms", &[n])?)
        } else {
            None
        };
        let zeros = |what: &str| {
            shapes.try_map(|name, shape| g.zeros(&format!("{what}{name}"), &shape_of(shape)))
        };
        let grads = zeros("grad ")?;
        // Fresh moments: the device's zeroed buffers, not an upload (1 GiB of zeros at
        // 2048 -> 32768).
        let (m, v) = if st.moments_are_zero() {
            (zeros("adam_m ")?, zeros("adam_v ")?)
        } else {
            (
                upload("adam_m ", &st.moments.m)?,
                upload("adam_v ", &st.moments.v)?,
            )
        };
        let sparse = selects_topk(cfg.arch);
        // batchtopk and matryoshka: one selection over the whole batch.
        let batch_sel = selects_batch_topk(cfg.arch);
        let x = g.zeros("x", &[rows, d])?;
        let y = if transcoder {
            g.zeros("target", &[rows, d_out])?
        } else {
            x.view(&x.shape)
        };
        let packed = |len: usize| -> Result<Option<GpuTensor>> {
            match cfg.batch_dtype {
                BatchDtype::F32 => Ok(None),
                BatchDtype::F16 => Ok(Some(g.zeros_u32("batch as f16", &[len.div_ceil(2)])?)),
            }
        };
        let x16 = packed(rows * d)?;
        let y16 = if transcoder {
            packed(rows * d_out)?
        } else {
            None
        };
        let several = chunk < rows;
        // batchtopk in several chunks: each keeps its pre-activations and block maxima for
        // the batch's selection, and its codes may hold any number of the batch's entries.
        let batch_chunks = several && batch_sel;
        let mut chunks = Vec::new();
        for start in (0..rows.max(1)).step_by(chunk.max(1)) {
            let r = chunk.min(rows - start);
            let per_row = |name: &str| -> Result<GpuTensor> {
                g.zeros(name, &[if sparse { r } else { 1 }, d_out])
            };
            // topk / batchtopk: for the run's largest k; each step takes its k's slots.
            let code_store = if batch_chunks {
                let per_row = (rows * cfg.k_max()).div_ceil(r.max(1));
                CodeBufs::new(g, r, n, per_row, false)?
            } else if sparse {
                CodeBufs::new(g, r, n, cfg.k_max(), cfg.arch == Arch::Topk)?
            } else {
                CodeBufs::new(g, r, n, code_capacity(r, n) / r.max(1), false)?
            };
            let codes = if batch_chunks {
                code_store.prefix(rows * cfg.k_at(st.step))
            } else if sparse {
                code_store.prefix(r * cfg.k_at(st.step))
            } else {
                code_store.prefix(code_store.idx.len())
            };
            let nb = n.div_ceil(BLOCK);
            let chunk_x = if several {
                g.zeros("x chunk", &[r, d])?
            } else {
                x.view(&[r, d])
            };
            chunks.push(Chunk {
                rows: r,
                row0: start,
                kept: if batch_chunks {
                    Some((
                        g.zeros("pre chunk", &[r, n])?,
                        g.zeros_u32("pre block maxima chunk", &[r * nb])?,
                    ))
                } else {
                    None
                },
                x: chunk_x.view(&[r, d]),
                y: match (transcoder, several) {
                    (false, _) => chunk_x.view(&[r, d]),
                    (true, true) => g.zeros("target chunk", &[r, d_out])?,
                    (true, false) => y.view(&[r, d_out]),
                },
                // A transcoder's encoder takes x as it is.
                xc: if transcoder {
                    chunk_x.view(&[r, d])
                } else {
                    g.zeros("xc", &[r, d])?
                },
                x_hat: g.zeros("x_hat", &[r, d_out])?,
                dy: g.zeros("dy", &[r, d_out])?,
                e: per_row("residual")?,
                e_hat: per_row("aux reconstruction")?,
                de: per_row("aux grad")?,
                codes,
                code_store,
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
                levels: if cfg.arch == Arch::Matryoshka {
                    let lv = cfg.matryoshka_widths.len();
                    Some(super::Levels::new(g, lv, r, d_out)?)
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
            y,
            // batchtopk in several chunks: the chunks' own (`Chunk::kept`).
            pre: g.zeros("pre", &[if batch_chunks { 1 } else { chunk }, n])?,
            marks: {
                // The largest codes any chunk transposes: its codes' store or AuxK's.
                let cap = (chunks.iter())
                    .flat_map(|c| [Some(&c.code_store), c.aux.as_ref()])
                    .flatten()
                    .map(|c| c.idx.len())
                    .max()
                    .unwrap_or(0);
                g.zeros_u32("transpose marks", &[transpose_marks_len(chunk, n, cap)])?
            },
            bmax: g.zeros_u32(
                "pre block maxima",
                &[if batch_sel {
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
            widths: if cfg.arch == Arch::Matryoshka {
                let w = crate::sae::matryoshka::widths_u32(cfg);
                Some(g.upload_u32("matryoshka widths", &[w.len()], &w)?)
            } else {
                None
            },
            batch: if batch_sel {
                Some(BatchScratch::new(g, rows, n, rows * cfg.k_max(), chunk)?)
            } else {
                None
            },
            batch_codes: if batch_chunks {
                let cap = rows * cfg.k_max();
                Some([
                    g.zeros_u32("batch row_ptr", &[rows + 1])?,
                    g.zeros_u32("batch idx", &[cap])?,
                    g.zeros("batch pre_val", &[cap])?,
                ])
            } else {
                None
            },
            z: dense("z", &[chunk, n])?,
            dz: dense("dz", &[chunk, n])?,
            dpre: dense("dpre", &[chunk, n])?,
            zsum: dense("zsum", &[n])?,
            x16,
            y16,
            chunks,
            chunk_rows: chunk,
            params,
            fwd,
            dec_norms,
            grads,
            m,
            v,
            gpu,
            cfg: cfg.clone(),
            rows,
            d,
            d_out,
            n,
            step: st.step,
        };
        // Allocation failures arrive through the device's error callback, not as a Result.
        eng.gpu.check().map_err(|e| {
            let (k0, anneal) = (cfg.k_max(), cfg.anneals_k());
            let (codes, lower) = if anneal {
                (format!(" and codes for k = {k0} of --k-anneal-start"), "--k-anneal-start, --d-sae or --batch")
            } else {
                (String::new(), "--d-sae or --batch")
            };
            Error::Device(format!(
                "{e} while allocating the training buffers (about {:.1} MiB for --d-sae {n}, --batch {rows}{codes}); lower {lower}, or use --device cpu",
                cfg.estimate_bytes() as f64 / 1048576.0
            ))
        })?;
        Ok(eng)
    }

    /// The first `rows` rows of a (chunk_rows, n) tensor (pre, or the dense path's).
    pub(super) fn rows_of(&self, t: &GpuTensor, rows: usize) -> GpuTensor {
        t.prefix(&[rows, t.shape[1]])
    }

    /// Refuse, before anything is allocated or read, a run whose largest tensors do not fit
    /// one storage binding of this adapter: name the tensor, what it needs and what the
    /// adapter allows.
    pub fn check_capacity(gpu: &Gpu, cfg: &TrainConfig) -> Result<()> {
        let (d, n, b) = (cfg.d_in as u128, cfg.d_sae as u128, cfg.batch as u128);
        let d_out = cfg.d_out.unwrap_or(cfg.d_in) as u128;
        // Pre-activations are held one chunk at a time (batchtopk: each chunk's in a buffer
        // of its own).
        let c = match chunk_rows(gpu, cfg) {
            0 => b.min(16),
            r => r as u128,
        };
        let pre = format!("pre-activations of {c} rows");
        let mut big: Vec<(&str, [u128; 2])> = vec![
            ("W_enc", [d, n]),
            ("W_dec", [n, d_out]),
            (&pre, [c, n]),
            ("batch", [b, d]),
            ("targets", [b, d_out]),
        ];
        // Codes for the run's largest k (the start of --k-anneal-steps' decay).
        let codes = if cfg.anneals_k() {
            format!("codes at --k-anneal-start {}", cfg.k_max())
        } else {
            "codes".to_string()
        };
        if selects_topk(cfg.arch) {
            // batchtopk: a chunk's codes may hold the whole batch's entries.
            let rows = if selects_batch_topk(cfg.arch) { b } else { c };
            big.push((&codes, [rows, cfg.k_max() as u128]));
            big.push(("AuxK codes", [c, cfg.k_aux as u128]));
        }
        if selects_batch_topk(cfg.arch) {
            big.push(("BatchTopK's candidate lists", [c, CAND as u128]));
        }
        let allows = gpu.max_binding() as u128;
        let mib = |x: u128| x as f64 / 1048576.0;
        // batchtopk in several chunks holds every chunk's pre-activations at once.
        let held = b * n * 4;
        if selects_batch_topk(cfg.arch)
            && c < b
            && let Some(limit) = gpu.memory_budget()
            && held > limit
        {
            return Err(Error::Device(format!(
                "--d-sae {n} with --batch {b}: batchtopk holds the pre-activations of every chunk of the batch at once ([{b}, {n}], {:.1} MiB), more than the {:.1} MiB adapter {} has; lower --d-sae or --batch, or use --device cpu",
                mib(held),
                mib(limit),
                gpu.info.name
            )));
        }
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
}
