//! Inference with an exported SAE on either engine: the codes of a batch of rows, for
//! `encode`, `steer` and the demo. The CPU engine is `SaeModel::encode`; the GPU engine runs
//! the same sequence with the training step's kernels (sub_row, gemm, then topk + relu for
//! TopK SAEs) and reads back only the k codes per row, or the pre-activations for the dense
//! architectures, whose threshold is applied on the host by `SaeModel::codes_from_pre` so
//! that both engines share it.
//!
//! Callers stream their input through fixed-size batches (`Encoder::batch` rows), so memory
//! stays bounded whatever the size of the data.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::Dtype;

use super::export::{Codes, SaeKind, SaeModel};
use crate::data::Shard;
use crate::gpu::{Engine, Gpu, GpuTensor};
use crate::io::StreamWriter;
use crate::kernels::activations::relu_forward;
use crate::kernels::gemm::{GemmSpec, gemm};
use crate::kernels::reduce::sub_row;
use crate::kernels::topk::{MAX_K, topk};
use crate::{Error, Result};

/// Rows per batch so that the pre-activations (rows, d_sae) take about 64 MiB.
pub fn default_batch(d_sae: usize) -> usize {
    ((16usize << 20) / d_sae.max(1)).clamp(16, 4096)
}

/// An SAE's encoder on one engine.
pub struct Encoder<'m> {
    model: &'m SaeModel,
    gpu: Option<GpuEncoder>,
    /// Largest batch `encode` takes.
    pub batch: usize,
}

impl<'m> Encoder<'m> {
    /// Upload what the engine needs (nothing for the CPU engine).
    pub fn new(model: &'m SaeModel, engine: &Engine, batch: usize) -> Result<Encoder<'m>> {
        let batch = batch.max(1);
        let gpu = match engine {
            Engine::Cpu => None,
            Engine::Gpu(g) => Some(GpuEncoder::new(g.clone(), model, batch)?),
        };
        Ok(Encoder { model, gpu, batch })
    }

    /// Codes of `rows` rows of x (rows, d), rows <= `self.batch`; CSR with ascending latents
    /// within a row, non-zero activations only.
    pub fn encode(&self, x: &[f32], rows: usize) -> Result<Codes> {
        if rows > self.batch || x.len() != rows * self.model.d {
            return Err(Error::Internal(format!(
                "encode: {} values for {rows} rows of d {} (batch at most {})",
                x.len(),
                self.model.d,
                self.batch
            )));
        }
        match &self.gpu {
            None => Ok(self.model.encode(x, rows)),
            Some(g) => g.encode(self.model, x, rows),
        }
    }
}

/// The encoder's tensors on the device, sized for `rows` rows; a shorter batch is padded
/// with zero rows whose codes are dropped.
struct GpuEncoder {
    gpu: Arc<Gpu>,
    rows: usize,
    w_enc: GpuTensor,
    b_enc: GpuTensor,
    b_dec: GpuTensor,
    x: GpuTensor,
    xc: GpuTensor,
    pre: GpuTensor,
    /// TopK: (idx, pre_val, val), each (rows, k).
    topk: Option<(GpuTensor, GpuTensor, GpuTensor)>,
}

impl GpuEncoder {
    fn new(gpu: Arc<Gpu>, m: &SaeModel, rows: usize) -> Result<GpuEncoder> {
        let g = &*gpu;
        let (d, n) = (m.d, m.n);
        let topk = match m.kind {
            SaeKind::Topk { k } if k <= MAX_K => Some((
                g.zeros_u32("encode idx", &[rows, k])?,
                g.zeros("encode pre_val", &[rows, k])?,
                g.zeros("encode val", &[rows, k])?,
            )),
            _ => None,
        };
        Ok(GpuEncoder {
            w_enc: g.upload("W_enc", &[d, n], &m.w_enc)?,
            b_enc: g.upload("b_enc", &[n], &m.b_enc)?,
            b_dec: g.upload("b_dec", &[d], &m.b_dec)?,
            x: g.zeros("encode x", &[rows, d])?,
            xc: g.zeros("encode xc", &[rows, d])?,
            pre: g.zeros("encode pre", &[rows, n])?,
            topk,
            rows,
            gpu,
        })
    }

    fn encode(&self, m: &SaeModel, x: &[f32], rows: usize) -> Result<Codes> {
        let (g, d, n, cap) = (&*self.gpu, m.d, m.n, self.rows);
        if rows == cap {
            g.write(&self.x, x)?;
        } else {
            let mut padded = x.to_vec();
            padded.resize(cap * d, 0.0);
            g.write(&self.x, &padded)?;
        }
        let mut enc = g.encoder();
        sub_row(g, &mut enc, &self.x, &self.b_dec, cap, d, &self.xc)?;
        gemm(
            g,
            &mut enc,
            &GemmSpec::nn(cap, n, d),
            &self.xc,
            &self.w_enc,
            Some(&self.b_enc),
            &self.pre,
        )?;
        let Some((idx, pre_val, val)) = &self.topk else {
            g.submit(enc);
            let pre = g.read_f32(&self.pre)?;
            return Ok(m.codes_from_pre(&pre[..rows * n], rows));
        };
        topk(g, &mut enc, &self.pre, None, idx, pre_val)?;
        relu_forward(g, &mut enc, pre_val, val)?;
        g.submit(enc);
        let k = idx.shape[1];
        let (idx, val) = (g.read_u32(idx)?, g.read_f32(val)?);
        let mut codes = Codes {
            row_ptr: Vec::with_capacity(rows + 1),
            idx: Vec::with_capacity(rows * k),
            val: Vec::with_capacity(rows * k),
        };
        codes.row_ptr.push(0);
        let mut pairs = Vec::with_capacity(k);
        for r in 0..rows {
            pairs.clear();
            pairs.extend(
                (r * k..(r + 1) * k)
                    .map(|s| (idx[s], val[s]))
                    .filter(|&(_, v)| v > 0.0),
            );
            pairs.sort_by_key(|&(i, _)| i);
            for &(i, v) in &pairs {
                codes.idx.push(i);
                codes.val.push(v);
            }
            codes.row_ptr.push(codes.idx.len());
        }
        Ok(codes)
    }
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
    let m = encoder.model;
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
