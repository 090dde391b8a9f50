//! Feature interventions: edit chosen SAE latents and write the edited activations.
//!
//! For every row, z = encode(x) and z' = z with the edits applied to the chosen latents
//! only (set: z'_I = V, scale: z'_I = F z_I, ablate: z'_I = 0, add: z'_I = z_I + V); the
//! output is x' = x + (z' - z) W_dec. The SAE's reconstruction error therefore stays in the
//! activations and only the chosen features change. A row none of whose edited latents
//! changes is copied byte for byte (no arithmetic), so a run without edits, or an ablation
//! of a latent that never fires, returns the input bit for bit. Within a changed row only
//! the coordinates with a non-zero delta are touched.
//!
//! The file is streamed in batches: the activation tensor is read through the shard's mmap,
//! encoded on the chosen engine, edited and appended to the output; every other tensor of the
//! file (and its metadata) is copied unchanged, in the same order.

use std::path::Path;

use serde::Serialize;

use crate::data::{FloatType, Shard, convert};
use crate::io::{StreamWriter, TensorDecl};
use crate::sae::export::{Codes, SaeModel};
use crate::sae::infer::Encoder;
use crate::{Error, Result};

/// What an edit does to one latent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "op", content = "value")]
pub enum EditOp {
    /// z'_I = V on every row (clamping, as in "Golden Gate Claude").
    Set(f32),
    /// z'_I = F z_I.
    Scale(f32),
    /// z'_I = 0 (unlearning by ablation).
    Ablate,
    /// z'_I = z_I + V.
    Add(f32),
}

/// One edited latent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Edit {
    pub latent: usize,
    #[serde(flatten)]
    pub op: EditOp,
}

impl Edit {
    /// z'_I from z_I.
    pub fn apply(&self, z: f32) -> f32 {
        match self.op {
            EditOp::Set(v) => v,
            EditOp::Scale(f) => f * z,
            EditOp::Ablate => 0.0,
            EditOp::Add(v) => z + v,
        }
    }

    /// As given on the command line, e.g. `--set 12=4`.
    pub fn flag(&self) -> String {
        let i = self.latent;
        match self.op {
            EditOp::Set(v) => format!("--set {i}={v}"),
            EditOp::Scale(f) => format!("--scale {i}={f}"),
            EditOp::Ablate => format!("--ablate {i}"),
            EditOp::Add(v) => format!("--add {i}={v}"),
        }
    }
}

/// Check edits against an SAE: latents below d_sae, finite values, one edit per latent.
/// Returns them sorted by latent (the order deltas are summed in).
pub fn check_edits(edits: &[Edit], d_sae: usize) -> Result<Vec<Edit>> {
    let mut out = edits.to_vec();
    for e in &out {
        if e.latent >= d_sae {
            return Err(Error::input(format!(
                "{}: latent {} is out of range (the SAE has d_sae = {d_sae}, latents 0..{})",
                e.flag(),
                e.latent,
                d_sae - 1
            )));
        }
        let v = match e.op {
            EditOp::Set(v) | EditOp::Scale(v) | EditOp::Add(v) => v,
            EditOp::Ablate => 0.0,
        };
        if !v.is_finite() {
            return Err(Error::input(format!(
                "{}: expected a finite value",
                e.flag()
            )));
        }
    }
    out.sort_by_key(|e| e.latent);
    for w in out.windows(2) {
        if w[0].latent == w[1].latent {
            return Err(Error::input(format!(
                "{} and {} both edit latent {}; give each latent at most one edit",
                w[0].flag(),
                w[1].flag(),
                w[0].latent
            )));
        }
    }
    Ok(out)
}

/// What one edit did over the rows it saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EditStats {
    pub edit: Option<Edit>,
    /// Rows where z'_I != z_I.
    pub rows_changed: u64,
    /// Sum over changed rows of ||(z'_I - z_I) W_dec[I]||.
    pub sum_delta_norm: f64,
    /// Sums over all rows of z_I and z'_I.
    pub sum_before: f64,
    pub sum_after: f64,
}

impl EditStats {
    /// Mean ||delta x|| over the rows this edit changed (0 when none).
    pub fn mean_delta_norm(&self) -> f64 {
        self.sum_delta_norm / self.rows_changed.max(1) as f64
    }
}

/// The outcome of a steering run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SteerReport {
    pub rows: u64,
    /// Rows changed by at least one edit.
    pub rows_changed: u64,
    /// Sum over changed rows of ||x' - x|| (all edits together).
    pub sum_delta_norm: f64,
    pub edits: Vec<EditStats>,
}

impl SteerReport {
    pub fn new(edits: &[Edit]) -> SteerReport {
        SteerReport {
            edits: edits
                .iter()
                .map(|e| EditStats {
                    edit: Some(*e),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn mean_delta_norm(&self) -> f64 {
        self.sum_delta_norm / self.rows_changed.max(1) as f64
    }
}

/// z_I of row r of `codes` (0 when latent I is not active there).
pub fn code_of(codes: &Codes, r: usize, latent: u32) -> f32 {
    let s = &codes.idx[codes.row_ptr[r]..codes.row_ptr[r + 1]];
    match s.binary_search(&latent) {
        Ok(j) => codes.val[codes.row_ptr[r] + j],
        Err(_) => 0.0,
    }
}

/// Apply `edits` (sorted by latent, from [`check_edits`]) to the rows of x (rows, d) in
/// place: x_r += sum over edits of (z'_I - z_I) W_dec[I] for every row where some z'_I !=
/// z_I; other rows are not touched. Returns which rows changed and adds to `report`.
pub fn steer_rows(
    model: &SaeModel,
    edits: &[Edit],
    x: &mut [f32],
    codes: &Codes,
    report: &mut SteerReport,
) -> Vec<bool> {
    let d = model.d;
    let rows = codes.row_ptr.len() - 1;
    debug_assert_eq!(x.len(), rows * d);
    let norms: Vec<f64> = edits
        .iter()
        .map(|e| {
            model.w_dec[e.latent * d..(e.latent + 1) * d]
                .iter()
                .map(|&w| (w as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let mut changed = vec![false; rows];
    let mut delta = vec![0.0f32; d];
    report.rows += rows as u64;
    for (r, ch) in changed.iter_mut().enumerate() {
        let mut any = false;
        delta.fill(0.0);
        for (e, (st, &norm)) in edits.iter().zip(report.edits.iter_mut().zip(&norms)) {
            let z = code_of(codes, r, e.latent as u32);
            let z2 = e.apply(z);
            st.sum_before += z as f64;
            st.sum_after += z2 as f64;
            if z2 == z {
                continue;
            }
            let dz = z2 - z;
            let w = &model.w_dec[e.latent * d..(e.latent + 1) * d];
            for (a, &b) in delta.iter_mut().zip(w) {
                *a += dz * b;
            }
            st.rows_changed += 1;
            st.sum_delta_norm += (dz as f64).abs() * norm;
            any = true;
        }
        if !any {
            continue;
        }
        *ch = true;
        report.rows_changed += 1;
        report.sum_delta_norm += delta
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        for (xv, &dv) in x[r * d..(r + 1) * d].iter_mut().zip(&delta) {
            if dv != 0.0 {
                *xv += dv;
            }
        }
    }
    changed
}

/// f32 values stored as `dtype`, appended to `out` (little-endian).
pub fn push_floats(dtype: FloatType, v: &[f32], out: &mut Vec<u8>) {
    match dtype {
        FloatType::F32 => out.extend_from_slice(bytemuck::cast_slice(v)),
        FloatType::F16 => {
            for &x in v {
                out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
            }
        }
        FloatType::Bf16 => {
            for &x in v {
                out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
            }
        }
    }
}

/// Where the edited activations go and how they are stored.
#[derive(Clone, Debug, Default)]
pub struct SteerOutput {
    /// Stored dtype (default: the input's).
    pub dtype: Option<FloatType>,
    /// Tensor name (default: the input's).
    pub tensor: Option<String>,
}

/// An input error unless the shard's rows are the SAE's input width.
pub fn check_d(shard: &Shard, model: &SaeModel) -> Result<()> {
    if shard.d == model.d {
        return Ok(());
    }
    Err(Error::input(format!(
        "{}: tensor {:?} has d = {}, but the SAE expects d = {} (its d_in)",
        shard.path.display(),
        shard.tensor,
        shard.d,
        model.d
    )))
}

/// Steer the activation tensor of one safetensors file into `out` (see the module doc).
/// `tensor` picks the activation tensor when the file holds several floating ones.
pub fn steer_file(
    encoder: &Encoder,
    model: &SaeModel,
    edits: &[Edit],
    input: &Path,
    tensor: Option<&str>,
    out: &Path,
    opts: &SteerOutput,
) -> Result<SteerReport> {
    let shard = Shard::open(input, tensor)?;
    check_d(&shard, model)?;
    // Read through the shard's positioned reads (no map: a file truncated meanwhile is an
    // error naming it, never SIGBUS).
    let meta = shard.header().clone();
    let out_dtype = opts.dtype.unwrap_or(shard.dtype);
    let out_name = opts.tensor.clone().unwrap_or_else(|| shard.tensor.clone());
    let names = meta.offset_keys();
    if out_name != shard.tensor && names.contains(&out_name) {
        return Err(Error::input(format!(
            "--out-tensor {out_name:?}: {} already holds a tensor of that name",
            input.display()
        )));
    }
    let decls: Vec<TensorDecl> = names
        .iter()
        .map(|name| {
            let info = meta.info(name).expect("listed name");
            if *name == shard.tensor {
                (
                    out_name.clone(),
                    out_dtype.safetensors(),
                    info.shape.clone(),
                )
            } else {
                (name.clone(), info.dtype, info.shape.clone())
            }
        })
        .collect();
    let mut w = StreamWriter::create(out, &decls, meta.metadata().clone())?;
    let mut report = SteerReport::new(edits);
    let d = shard.d;
    let in_w = d * shard.dtype.bytes();
    for name in &names {
        if *name != shard.tensor {
            let (a, b) = meta.info(name).expect("listed name").data_offsets;
            let mut chunk = vec![0u8; (b - a).min(8 << 20)];
            let mut at = a;
            while at < b {
                let n = (b - at).min(chunk.len());
                shard.read_data_at(at as u64, &mut chunk[..n])?;
                w.write(&chunk[..n])?;
                at += n;
            }
            continue;
        }
        let batch = encoder.batch;
        let mut x = vec![0.0f32; batch * d];
        let mut buf = Vec::with_capacity(batch * d * out_dtype.bytes());
        let mut start = 0usize;
        let mut raw_buf = Vec::new();
        while start < shard.rows {
            let rows = batch.min(shard.rows - start);
            shard.read_raw(start, rows, &mut raw_buf)?;
            let raw = raw_buf.as_slice();
            buf.clear();
            if edits.is_empty() && out_dtype == shard.dtype {
                report.rows += rows as u64;
                w.write(raw)?;
                start += rows;
                continue;
            }
            let x = &mut x[..rows * d];
            convert(shard.dtype, raw, x);
            let changed = if edits.is_empty() {
                report.rows += rows as u64;
                vec![false; rows]
            } else {
                if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                    return Err(shard.nonfinite_error(start + i / d, i % d, x[i]));
                }
                let codes = encoder.encode(x, rows)?;
                steer_rows(model, edits, x, &codes, &mut report)
            };
            for (r, &ch) in changed.iter().enumerate() {
                if !ch && out_dtype == shard.dtype {
                    buf.extend_from_slice(&raw[r * in_w..(r + 1) * in_w]);
                } else {
                    push_floats(out_dtype, &x[r * d..(r + 1) * d], &mut buf);
                }
            }
            w.write(&buf)?;
            start += rows;
        }
    }
    w.finish()?;
    Ok(report)
}
