//! Top-k launchers (shaders/topk.wgsl): per-row top-k for TopK SAEs and AuxK, and batch
//! top-k for BatchTopK SAEs. Both bound the answer from below with per-invocation maxima,
//! then radix-select over an order-preserving u32 key of the float bits with u32 histogram
//! counters, so results are identical run to run; see the shader for the details and the
//! CPU twins in `crate::reference::topk` for the semantics.
//!
//! Shapes come from the tensors: rows and n from x, k from idx's second dimension, k_total
//! from idx's length. `batchtopk` needs a u32 scratch tensor from the caller
//! (`batchtopk_scratch_len`), so that a training step allocates nothing.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::{expect_len, expect_shape};

pub static SHADER: Shader = Shader {
    name: "topk",
    source: include_str!("../../shaders/topk.wgsl"),
};

/// Invocations per workgroup (a power of two <= 2048).
const WG: usize = 256;
/// topk: candidates held in workgroup memory; bounds k.
const CAP: usize = 1024;
/// batchtopk_hist: entries per invocation.
const EPT: usize = 64;
/// batchtopk_hist: most workgroups of one histogram dispatch (they stride over the keys).
const HIST_GROUPS: usize = 256;
/// Histogram bins of one radix digit (shader constant BINS).
const BINS: usize = 2048;

/// Largest k `topk` accepts: its lower bound is the k-th largest of the 4 * WG keys the
/// invocations keep, and the candidates live in workgroup memory (CAP).
pub const MAX_K: usize = if CAP < 4 * WG { CAP } else { 4 * WG };

/// topk: candidates ranked by counting (at most WG); more are bitonic-sorted.
const RANK_MAX: usize = 256;

const CONSTANTS: &[(&str, f64)] = &[
    ("WG", WG as f64),
    ("CAP", CAP as f64),
    ("EPT", EPT as f64),
    ("RANK_MAX", RANK_MAX as f64),
];

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TopkParams {
    rows: u32,
    n: u32,
    k: u32,
    has_mask: u32,
    vec4: u32,
    fast: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BatchParams {
    rows: u32,
    n: u32,
    k_total: u32,
    level: u32,
    src: u32,
    capg: u32,
    vec4: u32,
    _pad: u32,
}

fn kernel(entry: &'static str) -> Kernel<'static> {
    Kernel {
        shader: &SHADER,
        entry,
        constants: CONSTANTS,
    }
}

fn matrix_shape(kernel: &str, x: &GpuTensor) -> Result<(usize, usize)> {
    match x.shape[..] {
        [rows, n] if n >= 1 && rows * n < u32::MAX as usize => Ok((rows, n)),
        _ => Err(Error::Internal(format!(
            "{kernel}: x has shape {:?}, expected (rows, n) with n >= 1 and fewer than 2^32 entries",
            x.shape
        ))),
    }
}

/// Per row, the k largest values of x among the eligible latents (mask[i] != 0, or all
/// when mask is None), in descending value order with ties to (and first) the lower index;
/// slots past a row's eligible count get idx 0, val -inf. Values are copies of x.
/// rows, n from x; k from idx (1 <= k <= min(n, MAX_K)).
/// x: (rows, n), mask: (n) u32 -> idx: (rows, k) u32, val: (rows, k)
/// CPU: idx[r] = eligible i sorted by (x[r, i] desc, i asc), first k; val[r, j] = x[r, idx[r, j]].
pub fn topk(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    mask: Option<&GpuTensor>,
    idx: &GpuTensor,
    val: &GpuTensor,
) -> Result<()> {
    let (rows, n) = matrix_shape("topk", x)?;
    let k = *idx.shape.last().unwrap_or(&0);
    if k == 0 || k > n || k > MAX_K {
        return Err(Error::Internal(format!(
            "topk: k = {k} (from idx {:?}) must be in 1..={}",
            idx.shape,
            n.min(MAX_K)
        )));
    }
    expect_shape("topk", "idx", idx, &[rows, k])?;
    expect_shape("topk", "val", val, &[rows, k])?;
    if let Some(m) = mask {
        expect_shape("topk", "mask", m, &[n])?;
    }
    if rows == 0 {
        return Ok(());
    }
    let p = TopkParams {
        rows: rows as u32,
        n: n as u32,
        k: k as u32,
        has_mask: mask.is_some() as u32,
        vec4: (n % 4 == 0) as u32,
        fast: (k <= WG / 4) as u32,
        _pad: [0; 2],
    };
    // The vec4 views (bindings 2 and 4) are read only when n % 4 == 0, but every binding
    // needs a buffer of at least one vec4; below that size, bind a small zero buffer.
    let dummy;
    let x4 = if x.len() >= 4 {
        x
    } else {
        dummy = gpu.zeros_u32("topk dummy", &[4])?;
        &dummy
    };
    let mask = mask.unwrap_or(x);
    let mask4 = if mask.len() >= 4 { mask } else { x4 };
    gpu.dispatch(
        enc,
        &kernel("topk"),
        &p,
        &[
            Bind::Read(x),
            Bind::Read(x4),
            Bind::Read(mask),
            Bind::Read(mask4),
            Bind::Write(idx),
            Bind::Write(val),
        ],
        gpu.groups_for(rows, 1),
    )
}

/// batchtopk: candidates the fast path can hold (beyond that, the slow path runs).
fn candidate_capacity(rows: usize, n: usize, k_total: usize) -> usize {
    (2 * k_total + 4096).min(rows * n)
}

/// u32 elements of the scratch tensor `batchtopk` needs for x: (rows, n) and k_total.
pub fn batchtopk_scratch_len(rows: usize, n: usize, k_total: usize) -> usize {
    BINS + 16 + 4 * rows + rows * WG + 2 * candidate_capacity(rows, n, k_total)
}

/// The k_total largest entries of the whole of x (ties to the lower flat index
/// row * n + latent), as CSR: row_ptr (rows + 1) with row_ptr[0] = 0 and
/// row_ptr[rows] = k_total; per row, latent indices in ascending order in idx and their
/// values (copies of x) in val; threshold[0] the smallest selected value (a zero as +0.0).
/// rows, n from x; k_total from idx (1 <= k_total <= rows * n). scratch: a u32 tensor of
/// batchtopk_scratch_len(rows, n, k_total) elements, overwritten (no need to clear it).
/// x: (rows, n) -> row_ptr: (rows + 1) u32, idx: (k_total) u32, val: (k_total), threshold: (1)
/// CPU: t = k_total-th largest of x; take x > t and the first (k_total - #(x > t)) of x == t
/// in flat order.
#[allow(clippy::too_many_arguments)]
pub fn batchtopk(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
    scratch: &GpuTensor,
) -> Result<()> {
    let (rows, n) = matrix_shape("batchtopk", x)?;
    let k_total = idx.len();
    if k_total == 0 || k_total > rows * n {
        return Err(Error::Internal(format!(
            "batchtopk: k_total = {k_total} (from idx {:?}) must be in 1..={}",
            idx.shape,
            rows * n
        )));
    }
    expect_len("batchtopk", "row_ptr", row_ptr, rows + 1)?;
    expect_len("batchtopk", "val", val, k_total)?;
    expect_len("batchtopk", "threshold", threshold, 1)?;
    expect_len(
        "batchtopk",
        "scratch",
        scratch,
        batchtopk_scratch_len(rows, n, k_total),
    )?;
    let capg = candidate_capacity(rows, n, k_total);
    let params = |level: u32, src: u32| BatchParams {
        rows: rows as u32,
        n: n as u32,
        k_total: k_total as u32,
        level,
        src,
        capg: capg as u32,
        vec4: (n % 4 == 0) as u32,
        _pad: 0,
    };
    let dummy;
    let x4 = if x.len() >= 4 {
        x
    } else {
        dummy = gpu.zeros_u32("batchtopk dummy", &[4])?;
        &dummy
    };
    let per_row = gpu.groups_for(rows, 1);
    gpu.dispatch(
        enc,
        &kernel("batchtopk_init"),
        &params(0, 0),
        &[Bind::Write(scratch)],
        [1, 1, 1],
    )?;
    gpu.dispatch(
        enc,
        &kernel("batchtopk_bound"),
        &params(0, 0),
        &[Bind::Read(x), Bind::Read(x4), Bind::Write(scratch)],
        per_row,
    )?;
    // Radix levels over src 0 (lane maxima) or 1 (candidates, or x after an overflow).
    let hist_groups = |len: usize| gpu.groups_for(len.div_ceil(WG * EPT).min(HIST_GROUPS), 1);
    let select = |enc: &mut wgpu::CommandEncoder, src: u32, levels: u32, len: usize| {
        for level in 0..levels {
            gpu.dispatch(
                enc,
                &kernel("batchtopk_hist"),
                &params(level, src),
                &[Bind::Read(x), Bind::Write(scratch)],
                hist_groups(len),
            )?;
            gpu.dispatch(
                enc,
                &kernel("batchtopk_find"),
                &params(level, src),
                &[Bind::Write(scratch)],
                [1, 1, 1],
            )?;
        }
        Ok::<(), Error>(())
    };
    select(enc, 0, 2, rows * WG)?;
    gpu.dispatch(
        enc,
        &kernel("batchtopk_collect"),
        &params(0, 1),
        &[
            Bind::Read(x),
            Bind::Read(x4),
            Bind::Write(scratch),
            Bind::Write(scratch),
        ],
        per_row,
    )?;
    select(enc, 1, 3, rows * n)?;
    gpu.dispatch(
        enc,
        &kernel("batchtopk_count"),
        &params(0, 1),
        &[Bind::Read(x), Bind::Write(scratch)],
        per_row,
    )?;
    gpu.dispatch(
        enc,
        &kernel("batchtopk_scan"),
        &params(0, 0),
        &[
            Bind::Write(scratch),
            Bind::Write(row_ptr),
            Bind::Write(threshold),
        ],
        [1, 1, 1],
    )?;
    gpu.dispatch(
        enc,
        &kernel("batchtopk_scatter"),
        &params(0, 1),
        &[
            Bind::Read(x),
            Bind::Read(scratch),
            Bind::Read(row_ptr),
            Bind::Write(idx),
            Bind::Write(val),
        ],
        per_row,
    )?;
    Ok(())
}
