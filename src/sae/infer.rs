//! The one encoder of an exported SAE, on either engine, behind `encode`, `steer`, `eval`,
//! the demo and training's periodic held-out evaluation: the inference half of the
//! training step, as the same sequence of named kernels on the GPU engine and of their CPU
//! twins on the CPU engine. Its first stages are the training step's own (`forward`:
//! `encode_gpu` / `encode_cpu`, and the TopK selection), so a dictionary codes a row the
//! same way while it trains and after.
//!
//!   xc = x - b_dec                      sub_row       } forward::encode_*
//!   pre = xc W_enc + b_enc              gemm          } (topk: gemm_block_max)
//!   standard: z = max(pre, 0)           relu_forward
//!   jumprelu: z = pre * [pre > theta]   jumprelu_forward (log_theta = ln theta)
//!             both as training's codes stage: the kept entries as codes while they fit
//!             `engine::code_capacity`, else the dense z above (on the GPU
//!             activation_codes_from_bmax and a gate deciding on the device, on the
//!             CPU forward::activation_cpu)
//!   topk:     top k of pre per row      topk_codes_from_bmax / forward::topk_cpu (the k
//!                                       largest positive, latents ascending, as training)
//!   x_hat = z W_dec + b_dec             gemm (dense z) or sparse_decode (codes)
//!   L0, L1, fire counts                 dense_stats / sparse_stats with unit weights
//!
//! A transcoder (`SaeModel::d_out`) skips the first line (xc = x: its b_dec is in the
//! output space) and decodes to (rows, d_out), on either engine: the decoder's side
//! (W_dec (n, d_out), b_dec, x_hat) is `SaeModel::out_dim` wide.
//!
//! [`Encoder::encode`] stops after the activation (codes only); [`Encoder::run`] also
//! decodes and counts. JumpReLU thresholds <= 0 are taken as the smallest positive f32 (ln
//! of it is finite), so that such a latent acts as a ReLU, which is what SAELens'
//! relu(pre) * [pre > theta] does. The per-latent fire counts accumulate over every batch
//! run until [`Encoder::reset_counts`].
//!
//! Callers stream their input through batches of at most [`Encoder::batch`] rows (the
//! device buffers are sized for it once), so memory stays bounded whatever the size of
//! the data.

mod gpu;

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use safetensors::Dtype;

use super::engine::code_capacity;
use super::export::{Codes, SaeKind, SaeModel};
use super::forward::{Eligible, EncoderWeights, activation_cpu, encode_cpu, topk_cpu};
use crate::data::Shard;
use crate::gpu::Engine;
use crate::io::StreamWriter;
use crate::reference::gemm::GemmSpec;
use crate::reference::reduce::{METRIC_SLOTS, slot};
use crate::{Error, Result};
use gpu::GpuSae;

/// Rows per batch so that the pre-activations (rows, d_sae) take about 64 MiB.
pub fn default_batch(d_sae: usize) -> usize {
    ((16usize << 20) / d_sae.max(1)).clamp(16, 4096)
}

/// Per-latent counters as u64.
pub(crate) fn widen(counts: &[u32]) -> Vec<u64> {
    counts.iter().map(|&c| c as u64).collect()
}

/// What the encoder returns for one batch.
#[derive(Clone, Debug, Default)]
pub struct BatchOut {
    /// (rows, d) ((rows, d_out) for a transcoder); empty from [`Encoder::encode`].
    pub x_hat: Vec<f32>,
    /// Active latents (code > 0) summed over the batch's rows.
    pub l0_sum: f64,
    /// Code values summed over the batch's rows and latents.
    pub l1_sum: f64,
    /// FISTA: iterations this batch ran.
    pub iterations: Option<usize>,
    /// The codes (CSR, ascending latent within a row), when asked for.
    pub codes: Option<Codes>,
}

impl BatchOut {
    /// An encoder's batch: the reconstruction, L0 / L1 from the metric slots, the codes.
    fn of(x_hat: Vec<f32>, metrics: &[f32], codes: Option<Codes>) -> BatchOut {
        BatchOut {
            x_hat,
            l0_sum: metrics[slot::L0 as usize] as f64,
            l1_sum: metrics[slot::L1 as usize] as f64,
            iterations: None,
            codes,
        }
    }
}

/// ln(theta) per latent, thresholds <= 0 (or not finite) as the smallest positive f32.
pub fn log_thresholds(threshold: &[f32]) -> Vec<f32> {
    threshold
        .iter()
        .map(|&t| {
            if t > 0.0 && t.is_finite() {
                t.ln()
            } else {
                f32::MIN_POSITIVE.ln()
            }
        })
        .collect()
}

/// Dense codes (rows, n) as CSR, keeping values > 0.
pub fn dense_to_codes(z: &[f32], rows: usize, n: usize) -> Codes {
    let mut c = Codes {
        row_ptr: vec![0],
        ..Default::default()
    };
    for r in 0..rows {
        for (i, &v) in z[r * n..(r + 1) * n].iter().enumerate() {
            if v > 0.0 {
                c.idx.push(i as u32);
                c.val.push(v);
            }
        }
        c.row_ptr.push(c.idx.len());
    }
    c
}

/// CSR codes with u32 row pointers (the selections' output) as [`Codes`], keeping values > 0
/// (as [`dense_to_codes`]: a JumpReLU entry exactly at its threshold is kept at 0).
fn csr_codes(row_ptr: &[u32], idx: &[u32], val: &[f32]) -> Codes {
    let mut c = Codes {
        row_ptr: vec![0],
        ..Default::default()
    };
    for w in row_ptr.windows(2) {
        for s in w[0] as usize..w[1] as usize {
            if val[s] > 0.0 {
                c.idx.push(idx[s]);
                c.val.push(val[s]);
            }
        }
        c.row_ptr.push(c.idx.len());
    }
    c
}

/// An SAE's encoder (and decoder) on one engine.
pub struct Encoder {
    model: SaeModel,
    log_theta: Vec<f32>,
    /// Largest batch `encode` and `run` take.
    pub batch: usize,
    backend: Backend,
}

enum Backend {
    Cpu { fired: Mutex<Vec<u32>> },
    Gpu(Box<GpuSae>),
}

impl Encoder {
    /// Put `model` on `engine` for batches of at most `batch` rows (uploads the weights and
    /// allocates the batch's buffers on the GPU engine).
    pub fn new(model: &SaeModel, engine: &Engine, batch: usize) -> Result<Encoder> {
        let batch = batch.max(1);
        let log_theta = if model.kind == SaeKind::Jumprelu {
            log_thresholds(&model.threshold)
        } else {
            Vec::new()
        };
        let backend = match engine {
            Engine::Cpu => Backend::Cpu {
                fired: Mutex::new(vec![0; model.n]),
            },
            Engine::Gpu(gpu) => Backend::Gpu(Box::new(GpuSae::new(
                gpu.clone(),
                model,
                &log_theta,
                batch,
            )?)),
        };
        Ok(Encoder {
            model: model.clone(),
            log_theta,
            batch,
            backend,
        })
    }

    pub fn model(&self) -> &SaeModel {
        &self.model
    }

    /// Codes of `rows` rows of x (rows, d), rows <= `self.batch`; CSR with ascending latents
    /// within a row, non-zero activations only.
    pub fn encode(&self, x: &[f32], rows: usize) -> Result<Codes> {
        let out = self.forward(x, rows, true, false)?;
        Ok(out.codes.unwrap_or_else(|| Codes {
            row_ptr: vec![0],
            ..Default::default()
        }))
    }

    /// Code and reconstruct `rows` rows of `x` (rows, d), rows <= `self.batch`, counting
    /// L0, L1 and the fire counts; the codes only if `want_codes`.
    pub fn run(&self, x: &[f32], rows: usize, want_codes: bool) -> Result<BatchOut> {
        self.forward(x, rows, want_codes, true)
    }

    fn forward(&self, x: &[f32], rows: usize, want: bool, decode: bool) -> Result<BatchOut> {
        if rows > self.batch || x.len() != rows * self.model.d {
            return Err(Error::Internal(format!(
                "encoder: {} values for {rows} rows of d {} (batch at most {})",
                x.len(),
                self.model.d,
                self.batch
            )));
        }
        if rows == 0 {
            return Ok(BatchOut {
                codes: want.then(|| Codes {
                    row_ptr: vec![0],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let mut out = match &self.backend {
            Backend::Cpu { fired } => {
                let mut fired = fired.lock().unwrap_or_else(|e| e.into_inner());
                let m = &self.model;
                run_cpu(m, &self.log_theta, &mut fired, x, rows, want, decode)
            }
            Backend::Gpu(g) => g.run(&self.model, x, rows, want, decode),
        }?;
        if let (true, Some(w_skip)) = (decode, &self.model.skip) {
            // A skip connection (sparsify's W_skip): x_hat += x W_skip^T, on the host on
            // both engines (a (rows, d) x (d, d) product, small beside the encoder's).
            let d = self.model.d;
            let spec = crate::reference::gemm::GemmSpec::nt(rows, d, d).accumulate(true);
            crate::blas::gemm(&spec, x, w_skip, None, &mut out.x_hat);
        }
        Ok(out)
    }

    /// Rows each latent fired on since the last reset (counted by `run`).
    pub fn fire_counts(&self) -> Result<Vec<u64>> {
        Ok(match &self.backend {
            Backend::Cpu { fired } => widen(&fired.lock().unwrap_or_else(|e| e.into_inner())),
            Backend::Gpu(g) => widen(&g.gpu.read_u32(&g.fired)?),
        })
    }

    pub fn reset_counts(&self) -> Result<()> {
        match &self.backend {
            Backend::Cpu { fired } => fired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter_mut()
                .for_each(|c| *c = 0),
            Backend::Gpu(g) => g.gpu.write(&g.fired, &vec![0u32; self.model.n])?,
        }
        Ok(())
    }
}

/// The encoder's weights of `m` on one engine: a transcoder's b_dec is in the output space,
/// not the encoder's.
fn weights<'a, T: ?Sized>(
    m: &SaeModel,
    w_enc: &'a T,
    b_enc: &'a T,
    b_dec: &'a T,
) -> EncoderWeights<'a, T> {
    EncoderWeights {
        w_enc,
        b_enc,
        b_dec: m.d_out.is_none().then_some(b_dec),
    }
}

/// The CPU engine's batch: the sequence of `GpuSae::run` (`infer/gpu.rs`) with the CPU
/// twins. The top-k has no order on NaN: non-finite pre-activations (weights holding NaN
/// or Inf) are an error, not a panic.
fn run_cpu(
    m: &SaeModel,
    log_theta: &[f32],
    fired: &mut [u32],
    x: &[f32],
    rows: usize,
    want: bool,
    decode: bool,
) -> Result<BatchOut> {
    use crate::reference::{activations, reduce};
    let (d, n) = (m.d, m.n);
    let (mut xc, mut pre) = (vec![0.0f32; rows * d], vec![0.0f32; rows * n]);
    let mut bmax = vec![0.0f32; rows * n.div_ceil(crate::cpu_codes::BLOCK)];
    let w = weights(m, &m.w_enc[..], &m.b_enc[..], &m.b_dec[..]);
    let finite = encode_cpu(&w, x, rows, d, &mut xc, &mut pre, &mut bmax);
    if let Some(i) = (!finite)
        .then(|| pre.iter().position(|v| !v.is_finite()))
        .flatten()
    {
        return Err(Error::input(format!(
            "the SAE's pre-activation of latent {} is {} on row {} of the batch: its weights (or the input) are not finite",
            i % n,
            pre[i],
            i / n
        )));
    }
    // The codes: TopK's selection, or the entries ReLU / JumpReLU keep, sparse while they
    // fit `code_capacity` (training's rule), else a dense z.
    let (codes, z) = match m.kind {
        SaeKind::Topk { k } => {
            let all = Eligible::All { bmax: Some(&bmax) };
            (Some(topk_cpu(&pre, rows, n, k, all)), None)
        }
        SaeKind::Standard | SaeKind::Jumprelu => {
            let jumprelu = m.kind == SaeKind::Jumprelu;
            let c = activation_cpu(&pre, rows, n, jumprelu.then_some((log_theta, 0.0)));
            if c.row_ptr[rows] as usize <= code_capacity(rows, n) {
                (Some(c), None)
            } else {
                let mut z = vec![0.0f32; rows * n];
                if jumprelu {
                    activations::jumprelu_forward(&pre, rows, n, log_theta, &mut z);
                } else {
                    activations::relu_forward(&pre, &mut z);
                }
                (None, Some(z))
            }
        }
    };
    let ones = vec![1.0f32; n];
    let mut metrics = vec![0.0f32; METRIC_SLOTS];
    // The decoder's side: d_out columns for a transcoder.
    let d = m.out_dim();
    let mut x_hat = vec![0.0f32; if decode { rows * d } else { 0 }];
    let (w_dec, b_dec) = (&m.w_dec, Some(&m.b_dec[..]));
    if decode {
        match (&codes, &z) {
            (Some(c), _) => {
                let (row_ptr, idx, val) = (&c.row_ptr, &c.idx, &c.val);
                #[rustfmt::skip]
                crate::cpu_sparse::sparse_decode(row_ptr, idx, val, w_dec, b_dec, rows, n, d, &mut x_hat);
                #[rustfmt::skip]
                reduce::sparse_stats(row_ptr, idx, val, rows, n, &ones, fired, &mut metrics);
            }
            (None, Some(z)) => {
                let spec = GemmSpec::nn(rows, d, n);
                crate::blas::gemm(&spec, z, w_dec, b_dec, &mut x_hat);
                reduce::dense_stats(z, rows, n, &ones, fired, &mut metrics);
            }
            (None, None) => unreachable!("codes or z"),
        }
    }
    let codes = want.then(|| match (&codes, &z) {
        (Some(c), _) => csr_codes(&c.row_ptr, &c.idx, &c.val),
        (None, Some(z)) => dense_to_codes(z, rows, n),
        (None, None) => unreachable!("codes or z"),
    });
    Ok(BatchOut::of(x_hat, &metrics, codes))
}

/// Call `f(x, rows)` on consecutive batches of at most `batch` rows of every shard in order
/// (rows in file order), refusing a row with NaN or Inf with its file, row and column.
pub fn for_each_batch(
    shards: &[Shard],
    batch: usize,
    mut f: impl FnMut(&[f32], usize) -> Result<()>,
) -> Result<()> {
    let batch = batch.max(1);
    for s in shards {
        let d = s.d;
        let mut x = vec![0.0f32; batch * d];
        let mut start = 0usize;
        while start < s.rows {
            let rows = batch.min(s.rows - start);
            let x = &mut x[..rows * d];
            s.read_rows(start, rows, x)?;
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(s.nonfinite_error(start + i / d, i % d, x[i]));
            }
            f(x, rows)?;
            start += rows;
        }
    }
    Ok(())
}

/// What `encode_shards` wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EncodeReport {
    pub rows: u64,
    /// Non-zero codes.
    pub nnz: u64,
    /// Latents that fired on at least one row.
    pub latents_fired: usize,
    pub dense: bool,
}

/// Deletes the CSR side files however `encode_shards` ends.
struct SideFiles(Vec<PathBuf>);

impl Drop for SideFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Encode every row of `shards` (in order) into `out`, atomically:
/// - sparse (default): CSR with `indptr` i64 [rows + 1], `indices` i32 [nnz] (ascending
///   within a row) and `values` f32 [nnz]; while streaming, indices and values go to two
///   temporary side files next to `out` (nnz is known only at the end), so memory stays
///   bounded by the batch and indptr;
/// - `dense`: `codes` f32 [rows, d_sae], streamed directly.
///
/// The header's metadata records the format, shape, SAE folder and architecture.
pub fn encode_shards(
    encoder: &Encoder,
    shards: &[Shard],
    out: &Path,
    dense: bool,
    sae_dir: &Path,
) -> Result<EncodeReport> {
    let m = encoder.model();
    let n = m.n;
    let rows: usize = shards.iter().map(|s| s.rows).sum();
    let mut meta = HashMap::from([
        (
            "format".to_string(),
            if dense { "dense" } else { "csr" }.to_string(),
        ),
        ("shape".to_string(), format!("[{rows}, {n}]")),
        ("d_sae".to_string(), n.to_string()),
        ("sae".to_string(), sae_dir.display().to_string()),
        ("architecture".to_string(), m.kind.name().to_string()),
        ("written_by".to_string(), "saeforge encode".to_string()),
    ]);
    if let SaeKind::Topk { k } = m.kind {
        meta.insert("k".into(), k.to_string());
    }
    let mut fired = vec![false; n];
    let mut report = EncodeReport {
        dense,
        ..Default::default()
    };
    if dense {
        let decl = [("codes".to_string(), Dtype::F32, vec![rows, n])];
        let mut w = StreamWriter::create(out, &decl, Some(meta))?;
        let mut dense_rows = Vec::new();
        for_each_batch(shards, encoder.batch, |x, r| {
            let c = encoder.encode(x, r)?;
            dense_rows.clear();
            dense_rows.resize(r * n, 0.0f32);
            for b in 0..r {
                for s in c.row_ptr[b]..c.row_ptr[b + 1] {
                    dense_rows[b * n + c.idx[s] as usize] = c.val[s];
                    fired[c.idx[s] as usize] = true;
                }
            }
            report.rows += r as u64;
            report.nnz += c.idx.len() as u64;
            w.write(bytemuck::cast_slice(&dense_rows))
        })?;
        w.finish()?;
    } else {
        if n > i32::MAX as usize {
            return Err(Error::input(format!(
                "d_sae = {n} does not fit the i32 indices of the CSR output; use --dense"
            )));
        }
        let side = |what: &str| {
            let name = out
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "codes".into());
            out.with_file_name(format!(".{name}.{what}.tmp-{}", std::process::id()))
        };
        let guard = SideFiles(vec![side("indices"), side("values")]);
        let open = |p: &Path| -> Result<BufWriter<std::fs::File>> {
            std::fs::File::create(p)
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .map_err(|e| Error::io(p, e))
        };
        let (mut fi, mut fv) = (open(&guard.0[0])?, open(&guard.0[1])?);
        let mut indptr: Vec<i64> = Vec::with_capacity(rows + 1);
        indptr.push(0);
        for_each_batch(shards, encoder.batch, |x, r| {
            let c = encoder.encode(x, r)?;
            let base = report.nnz as i64;
            indptr.extend(c.row_ptr[1..].iter().map(|&p| base + p as i64));
            let idx: Vec<i32> = c.idx.iter().map(|&i| i as i32).collect();
            for &i in &c.idx {
                fired[i as usize] = true;
            }
            fi.write_all(bytemuck::cast_slice(&idx))
                .map_err(|e| Error::io(&guard.0[0], e))?;
            fv.write_all(bytemuck::cast_slice(&c.val))
                .map_err(|e| Error::io(&guard.0[1], e))?;
            report.rows += r as u64;
            report.nnz += c.idx.len() as u64;
            Ok(())
        })?;
        for (f, p) in [(fi, &guard.0[0]), (fv, &guard.0[1])] {
            f.into_inner()
                .map_err(|e| Error::io(p, e.into_error()))?
                .sync_all()
                .map_err(|e| Error::io(p, e))?;
        }
        let nnz = report.nnz as usize;
        let decls = [
            ("indptr".to_string(), Dtype::I64, vec![rows + 1]),
            ("indices".to_string(), Dtype::I32, vec![nnz]),
            ("values".to_string(), Dtype::F32, vec![nnz]),
        ];
        let mut w = StreamWriter::create(out, &decls, Some(meta))?;
        w.write(bytemuck::cast_slice(&indptr))?;
        for p in &guard.0 {
            let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            w.copy_from(&mut f, nnz as u64 * 4)?;
        }
        w.finish()?;
    }
    report.latents_fired = fired.iter().filter(|&&f| f).count();
    Ok(report)
}
