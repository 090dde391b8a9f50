//! Reduction, metric and elementwise-loss launchers (shaders/reduce.wgsl).
//!
//! Metrics accumulate on the device in one f32 buffer of [`METRIC_SLOTS`] values (slots in
//! [`slot`]) and are read back only when the caller logs. Every sum is deterministic: a
//! producer kernel writes per-invocation partials (each summed in index order) to a scratch
//! buffer, and `finish_partials` adds them in a fixed tree in one workgroup, so results are
//! identical run to run on a given device and override constants. No float atomics; u32
//! atomics only for fire counts.
//!
//! Dimensions are explicit arguments (as in the CPU twins); each tensor's element count is
//! checked against them. The metrics tensor must have exactly METRIC_SLOTS elements.
//!
//! Scratch: partial sums go to buffers owned by this module, one per (device, purpose),
//! grown to the largest size asked for and then kept, so a training step with fixed shapes
//! allocates nothing after its first step and keeps hitting the bind-group cache. Sharing
//! one scratch buffer between calls is safe because the dispatches that write and read it
//! run in submission order.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, DType, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::expect_len;

pub use crate::reference::reduce::{METRIC_SLOTS, slot};

pub static SHADER: Shader = Shader {
    name: "reduce",
    source: include_str!("../../shaders/reduce.wgsl"),
};

/// Invocations per workgroup (WGSL override `WG`).
const WG: usize = 256;
/// Rows per invocation in the row-blocked column kernels (WGSL override `RB`).
const RB: usize = 32;

const CONSTANTS: &[(&str, f64)] = &[("WG", WG as f64), ("RB", RB as f64)];

#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    len: u32,
    flag: u32,
    scale: f32,
    u0: u32,
    nparts: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct FinishParams {
    nparts: u32,
    nvals: u32,
    counts: u32,
    overwrite: u32,
    slots: [u32; 4],
}

fn kernel(entry: &'static str) -> Kernel<'static> {
    Kernel {
        shader: &SHADER,
        entry,
        constants: CONSTANTS,
    }
}

fn expect_dtype(kernel: &str, name: &str, t: &GpuTensor, dtype: DType) -> Result<()> {
    if t.dtype != dtype {
        return Err(Error::Internal(format!(
            "{kernel}: {name} is {:?}, expected {dtype:?}",
            t.dtype
        )));
    }
    Ok(())
}

fn expect_metrics(kernel: &str, metrics: &GpuTensor, slots: &[u32]) -> Result<()> {
    expect_len(kernel, "metrics", metrics, METRIC_SLOTS)?;
    expect_dtype(kernel, "metrics", metrics, DType::F32)?;
    if let Some(s) = slots.iter().find(|&&s| s as usize >= METRIC_SLOTS) {
        return Err(Error::Internal(format!(
            "{kernel}: metric slot {s} is outside 0..{METRIC_SLOTS}"
        )));
    }
    Ok(())
}

/// A dimension as the shaders' u32.
fn to_u32(kernel: &str, name: &str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| Error::Internal(format!("{kernel}: {name} = {v} does not fit 32 bits")))
}

/// Check that rows * cols fits the u32 indices the shaders use.
fn dims(kernel: &str, rows: usize, cols: usize) -> Result<(u32, u32, u32)> {
    let len = rows.checked_mul(cols).filter(|&l| l <= u32::MAX as usize);
    match len {
        Some(len) if cols <= u32::MAX as usize => Ok((rows as u32, cols as u32, len as u32)),
        _ => Err(Error::Internal(format!(
            "{kernel}: {rows} x {cols} elements do not fit 32-bit indices"
        ))),
    }
}

/// Grid for the row-blocked column kernels: x = column groups of WG, y = row blocks of RB.
fn col_block_grid(rows: usize, cols: usize) -> [u32; 3] {
    [
        cols.div_ceil(WG).max(1) as u32,
        rows.div_ceil(RB).max(1) as u32,
        1,
    ]
}

/// A scratch tensor of at least `len` elements for `purpose` on this device
/// (`Gpu::scratch`; see the module docs). Its shape is its allocated length.
fn scratch(gpu: &Gpu, purpose: &'static str, dtype: DType, len: usize) -> Result<GpuTensor> {
    gpu.scratch(purpose, dtype, len)
}

/// How finish_partials treats one value of the partials.
#[derive(Clone, Copy)]
struct Total {
    slot: u32,
    /// The partials are u32 counts (else f32 bits).
    count: bool,
    /// metrics[slot] = total (else +=).
    overwrite: bool,
}

/// Add `nparts` partials of each value (laid out (values, nparts) in `parts`) in a fixed
/// tree and store the totals into `metrics`.
fn finish(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    parts: &GpuTensor,
    nparts: usize,
    totals: &[Total],
    metrics: &GpuTensor,
) -> Result<()> {
    debug_assert!((1..=4).contains(&totals.len()));
    let mut p = FinishParams {
        nparts: nparts as u32,
        nvals: totals.len() as u32,
        ..Default::default()
    };
    for (v, t) in totals.iter().enumerate() {
        p.slots[v] = t.slot;
        p.counts |= (t.count as u32) << v;
        p.overwrite |= (t.overwrite as u32) << v;
    }
    gpu.dispatch(
        enc,
        &kernel("finish_partials"),
        &p,
        &[Bind::Read(parts), Bind::Write(metrics)],
        [1, 1, 1],
    )
}

/// out[r, j] = x[r, j] - b[j] (the centred input x - b_dec).
/// x: (rows, d), b: (d) -> out: (rows, d)
pub fn sub_row(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    b: &GpuTensor,
    rows: usize,
    d: usize,
    out: &GpuTensor,
) -> Result<()> {
    let k = "sub_row";
    let (rows_u, d_u, len) = dims(k, rows, d)?;
    expect_len(k, "x", x, rows * d)?;
    expect_len(k, "b", b, d)?;
    expect_len(k, "out", out, rows * d)?;
    let p = Params {
        rows: rows_u,
        cols: d_u,
        len,
        ..Default::default()
    };
    let (entry, invocations) = if d.is_multiple_of(4) {
        ("sub_row_vec4", rows * d / 4)
    } else {
        (k, rows * d)
    };
    gpu.dispatch(
        enc,
        &kernel(entry),
        &p,
        &[Bind::Read(x), Bind::Read(b), Bind::Write(out)],
        gpu.groups_for(invocations, WG),
    )
}

/// out = a - b elementwise (the residual e = x - x_hat).
/// a: (len), b: (len) -> out: (len)
pub fn sub(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    a: &GpuTensor,
    b: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    let k = "sub";
    let len = to_u32(k, "len", a.len())?;
    expect_len(k, "b", b, a.len())?;
    expect_len(k, "out", out, a.len())?;
    let p = Params {
        len,
        ..Default::default()
    };
    let (entry, invocations) = if a.len().is_multiple_of(4) {
        ("sub_vec4", a.len() / 4)
    } else {
        (k, a.len())
    };
    gpu.dispatch(
        enc,
        &kernel(entry),
        &p,
        &[Bind::Read(a), Bind::Read(b), Bind::Write(out)],
        gpu.groups_for(invocations, WG),
    )
}

fn dispatch_col_sum(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    a: &GpuTensor,
    rows: u32,
    cols: u32,
    out: &GpuTensor,
    accumulate: bool,
) -> Result<()> {
    let p = Params {
        rows,
        cols,
        len: rows * cols,
        flag: accumulate as u32,
        ..Default::default()
    };
    let (entry, per_invocation) = if cols.is_multiple_of(4) {
        ("col_sum_vec4", 4)
    } else {
        ("col_sum", 1)
    };
    gpu.dispatch(
        enc,
        &kernel(entry),
        &p,
        &[Bind::Read(a), Bind::Write(out)],
        gpu.groups_for(cols as usize / per_invocation, WG),
    )
}

/// out[j] = (accumulate ? out[j] : 0) + sum over rows in order of a[r, j]
/// (one invocation per column, four with vec4 loads when cols % 4 == 0, each summing its
/// column in row order, so the result is exactly the CPU twin's).
/// a: (rows, cols) -> out: (cols)
pub fn col_sum(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    a: &GpuTensor,
    rows: usize,
    cols: usize,
    out: &GpuTensor,
    accumulate: bool,
) -> Result<()> {
    let k = "col_sum";
    let (rows_u, cols_u, _) = dims(k, rows, cols)?;
    expect_len(k, "a", a, rows * cols)?;
    expect_len(k, "out", out, cols)?;
    dispatch_col_sum(gpu, enc, a, rows_u, cols_u, out, accumulate)
}

/// grad = scale * (pred - target); metrics[sse_slot] += sum (target - pred)^2; with
/// sst_slot, metrics[sst_slot] += sum_b ||target_b - mean_b(target)||^2 (mean over the rows
/// of this call). Nothing is written when rows == 0 or d == 0.
/// Dispatches: col_sum of target into scratch (with sst_slot), mse_backward (row-blocked,
/// partials per (row block, column)), finish_partials.
/// target: (rows, d), pred: (rows, d) -> grad: (rows, d), metrics: (METRIC_SLOTS)
#[allow(clippy::too_many_arguments)]
pub fn mse_backward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    target: &GpuTensor,
    pred: &GpuTensor,
    rows: usize,
    d: usize,
    scale: f32,
    grad: &GpuTensor,
    metrics: &GpuTensor,
    sse_slot: u32,
    sst_slot: Option<u32>,
) -> Result<()> {
    let k = "mse_backward";
    let (rows_u, d_u, len) = dims(k, rows, d)?;
    expect_len(k, "target", target, rows * d)?;
    expect_len(k, "pred", pred, rows * d)?;
    expect_len(k, "grad", grad, rows * d)?;
    let mut slots = vec![sse_slot];
    slots.extend(sst_slot);
    expect_metrics(k, metrics, &slots)?;
    if rows == 0 || d == 0 {
        return Ok(());
    }
    let colsum = scratch(gpu, "reduce.colsum", DType::F32, d)?;
    if sst_slot.is_some() {
        dispatch_col_sum(gpu, enc, target, rows_u, d_u, &colsum, false)?;
    }
    let nparts = rows.div_ceil(RB) * d;
    let parts = scratch(gpu, "reduce.partials", DType::U32, 2 * nparts)?;
    let p = Params {
        rows: rows_u,
        cols: d_u,
        len,
        flag: sst_slot.is_some() as u32,
        scale,
        nparts: nparts as u32,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[
            Bind::Read(target),
            Bind::Read(pred),
            Bind::Read(&colsum),
            Bind::Write(grad),
            Bind::Write(&parts),
        ],
        col_block_grid(rows, d),
    )?;
    let totals: Vec<Total> = slots
        .iter()
        .map(|&slot| Total {
            slot,
            count: false,
            overwrite: false,
        })
        .collect();
    finish(gpu, enc, &parts, nparts, &totals, metrics)
}

/// metrics[slot] += sum_b ||target_b - mean(target)||^2 with the mean over the rows: the
/// explained-variance total of [`mse_backward`] alone, for a batch whose gradient was
/// taken in chunks. Nothing is written when rows == 0 or d == 0.
/// Dispatches: col_sum of target into scratch, sum_sq_centred (row-blocked, partials per
/// (row block, column)), finish_partials.
/// target: (rows, d) -> metrics: (METRIC_SLOTS)
pub fn sum_sq_centred(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    target: &GpuTensor,
    rows: usize,
    d: usize,
    metrics: &GpuTensor,
    slot: u32,
) -> Result<()> {
    let k = "sum_sq_centred";
    let (rows_u, d_u, len) = dims(k, rows, d)?;
    expect_len(k, "target", target, rows * d)?;
    expect_metrics(k, metrics, &[slot])?;
    if rows == 0 || d == 0 {
        return Ok(());
    }
    let colsum = scratch(gpu, "reduce.colsum", DType::F32, d)?;
    dispatch_col_sum(gpu, enc, target, rows_u, d_u, &colsum, false)?;
    let nparts = rows.div_ceil(RB) * d;
    let parts = scratch(gpu, "reduce.partials", DType::U32, nparts)?;
    let p = Params {
        rows: rows_u,
        cols: d_u,
        len,
        nparts: nparts as u32,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[Bind::Read(target), Bind::Read(&colsum), Bind::Write(&parts)],
        col_block_grid(rows, d),
    )?;
    let total = Total {
        slot,
        count: false,
        overwrite: false,
    };
    finish(gpu, enc, &parts, nparts, &[total], metrics)
}

/// norms[i] = ||w[i, :]|| (sum of squares in order along the row, then sqrt; vec4 loads
/// when d % 4 == 0, same order).
/// w: (n, d) -> norms: (n)
pub fn row_norms(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    w: &GpuTensor,
    n: usize,
    d: usize,
    norms: &GpuTensor,
) -> Result<()> {
    let k = "row_norms";
    let (n_u, d_u, len) = dims(k, n, d)?;
    expect_len(k, "w", w, n * d)?;
    expect_len(k, "norms", norms, n)?;
    let p = Params {
        rows: n_u,
        cols: d_u,
        len,
        ..Default::default()
    };
    let entry = if d.is_multiple_of(4) {
        "row_norms_vec4"
    } else {
        k
    };
    gpu.dispatch(
        enc,
        &kernel(entry),
        &p,
        &[Bind::Read(w), Bind::Write(norms)],
        gpu.groups_for(n, WG),
    )
}

/// CSR codes, nnz = min(row_ptr[rows], cap): for every slot s < nnz with val[s] > 0 and
/// idx[s] < n: metrics[L0] += 1, metrics[L1] += val[s] * norms[idx[s]], fired[idx[s]] += 1.
/// Dispatches: sparse_stats (one invocation per 32 consecutive slots), finish_partials.
/// row_ptr: (rows + 1) u32, idx: (cap) u32, val: (cap), norms: (n)
///   -> fired: (n) u32 (accumulated), metrics: (METRIC_SLOTS)
#[allow(clippy::too_many_arguments)]
pub fn sparse_stats(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    rows: usize,
    n: usize,
    norms: &GpuTensor,
    fired: &GpuTensor,
    metrics: &GpuTensor,
) -> Result<()> {
    let k = "sparse_stats";
    let cap = idx.len();
    let rows_u = to_u32(k, "rows", rows)?;
    let n_u = to_u32(k, "n", n)?;
    let cap_u = to_u32(k, "cap", cap)?;
    expect_len(k, "row_ptr", row_ptr, rows + 1)?;
    expect_dtype(k, "row_ptr", row_ptr, DType::U32)?;
    expect_dtype(k, "idx", idx, DType::U32)?;
    expect_len(k, "val", val, cap)?;
    expect_len(k, "norms", norms, n)?;
    expect_len(k, "fired", fired, n)?;
    expect_dtype(k, "fired", fired, DType::U32)?;
    expect_metrics(k, metrics, &[slot::L0, slot::L1])?;
    // One partial per run of SS_RUN (shaders/reduce.wgsl) slots.
    let nparts = cap.div_ceil(SS_RUN).max(1);
    let parts = scratch(gpu, "reduce.partials", DType::U32, 2 * nparts)?;
    let p = Params {
        rows: rows_u,
        cols: n_u,
        len: cap_u,
        nparts: nparts as u32,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[
            Bind::Read(row_ptr),
            Bind::Read(idx),
            Bind::Read(val),
            Bind::Read(norms),
            Bind::Write(fired),
            Bind::Write(&parts),
        ],
        gpu.groups_for(nparts, WG),
    )?;
    finish(gpu, enc, &parts, nparts, &stats_totals(), metrics)
}

/// Code slots per sparse_stats invocation (SS_RUN in shaders/reduce.wgsl).
const SS_RUN: usize = 32;

fn stats_totals() -> [Total; 2] {
    [
        Total {
            slot: slot::L0,
            count: true,
            overwrite: false,
        },
        Total {
            slot: slot::L1,
            count: false,
            overwrite: false,
        },
    ]
}

/// The same as [`sparse_stats`] for a dense z: every z[r, i] > 0 is active.
/// Dispatches: dense_stats (row-blocked, partials per (row block, latent)), finish_partials.
/// z: (rows, n), norms: (n) -> fired: (n) u32 (accumulated), metrics: (METRIC_SLOTS)
#[allow(clippy::too_many_arguments)]
pub fn dense_stats(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    z: &GpuTensor,
    rows: usize,
    n: usize,
    norms: &GpuTensor,
    fired: &GpuTensor,
    metrics: &GpuTensor,
) -> Result<()> {
    let k = "dense_stats";
    let (rows_u, n_u, len) = dims(k, rows, n)?;
    expect_len(k, "z", z, rows * n)?;
    expect_len(k, "norms", norms, n)?;
    expect_len(k, "fired", fired, n)?;
    expect_dtype(k, "fired", fired, DType::U32)?;
    expect_metrics(k, metrics, &[slot::L0, slot::L1])?;
    let nparts = rows.div_ceil(RB) * n;
    let parts = scratch(gpu, "reduce.partials", DType::U32, 2 * nparts)?;
    let p = Params {
        rows: rows_u,
        cols: n_u,
        len,
        nparts: nparts as u32,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[
            Bind::Read(z),
            Bind::Read(norms),
            Bind::Write(fired),
            Bind::Write(&parts),
        ],
        col_block_grid(rows, n),
    )?;
    finish(gpu, enc, &parts, nparts, &stats_totals(), metrics)
}

/// After a step of `rows` tokens, for each latent i: total[i] += fired[i] (saturating);
/// since[i] = fired[i] > 0 ? 0 : since[i] + rows (saturating); fired[i] = 0; then
/// metrics[DEAD] = number of latents with since[i] >= dead_after (overwritten).
/// Dispatches: update_dead, finish_partials.
/// fired, since, total: (n) u32 -> updated in place, metrics: (METRIC_SLOTS)
#[allow(clippy::too_many_arguments)]
pub fn update_dead(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    fired: &GpuTensor,
    since: &GpuTensor,
    total: &GpuTensor,
    rows: usize,
    dead_after: u32,
    metrics: &GpuTensor,
) -> Result<()> {
    let k = "update_dead";
    let n = fired.len();
    let n_u = to_u32(k, "n", n)?;
    for (name, t) in [("fired", fired), ("since", since), ("total", total)] {
        expect_len(k, name, t, n)?;
        expect_dtype(k, name, t, DType::U32)?;
    }
    expect_metrics(k, metrics, &[slot::DEAD])?;
    let parts = scratch(gpu, "reduce.partials", DType::U32, n)?;
    let p = Params {
        rows: u32::try_from(rows).unwrap_or(u32::MAX),
        cols: n_u,
        len: n_u,
        u0: dead_after,
        nparts: n_u,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[
            Bind::Write(fired),
            Bind::Write(since),
            Bind::Write(total),
            Bind::Write(&parts),
        ],
        gpu.groups_for(n, WG),
    )?;
    let dead = Total {
        slot: slot::DEAD,
        count: true,
        overwrite: true,
    };
    finish(gpu, enc, &parts, n, &[dead], metrics)
}

/// mask[i] = (since[i] >= dead_after) as u32 (the latents AuxK may use).
/// since: (n) u32 -> mask: (n) u32
pub fn dead_mask(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    since: &GpuTensor,
    dead_after: u32,
    mask: &GpuTensor,
) -> Result<()> {
    let k = "dead_mask";
    let n = since.len();
    let n_u = to_u32(k, "n", n)?;
    expect_dtype(k, "since", since, DType::U32)?;
    expect_len(k, "mask", mask, n)?;
    expect_dtype(k, "mask", mask, DType::U32)?;
    let p = Params {
        cols: n_u,
        len: n_u,
        u0: dead_after,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[Bind::Read(since), Bind::Write(mask)],
        gpu.groups_for(n, WG),
    )
}

/// dz[r, i] += scale * norms[i] where z[r, i] > 0 (gradient of scale * sum z_i ||W_dec[i]||
/// for z >= 0).
/// z: (rows, n), norms: (n) -> dz: (rows, n), accumulated
#[allow(clippy::too_many_arguments)]
pub fn l1_backward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    z: &GpuTensor,
    rows: usize,
    n: usize,
    norms: &GpuTensor,
    scale: f32,
    dz: &GpuTensor,
) -> Result<()> {
    let k = "l1_backward";
    let (rows_u, n_u, len) = dims(k, rows, n)?;
    expect_len(k, "z", z, rows * n)?;
    expect_len(k, "norms", norms, n)?;
    expect_len(k, "dz", dz, rows * n)?;
    let p = Params {
        rows: rows_u,
        cols: n_u,
        len,
        scale,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[Bind::Read(z), Bind::Read(norms), Bind::Write(dz)],
        col_block_grid(rows, n),
    )
}

/// dw_dec[i, k] += c_i * w_dec[i, k] with c_i = scale * zsum[i] / norms[i], skipping rows
/// with norms[i] == 0 (gradient of scale * sum_i zsum[i] ||W_dec[i]||).
/// zsum: (n), w_dec: (n, d), norms: (n) -> dw_dec: (n, d), accumulated
#[allow(clippy::too_many_arguments)]
pub fn l1_decoder_grad(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    zsum: &GpuTensor,
    w_dec: &GpuTensor,
    norms: &GpuTensor,
    n: usize,
    d: usize,
    scale: f32,
    dw_dec: &GpuTensor,
) -> Result<()> {
    let k = "l1_decoder_grad";
    let (n_u, d_u, len) = dims(k, n, d)?;
    expect_len(k, "zsum", zsum, n)?;
    expect_len(k, "w_dec", w_dec, n * d)?;
    expect_len(k, "norms", norms, n)?;
    expect_len(k, "dw_dec", dw_dec, n * d)?;
    let p = Params {
        rows: n_u,
        cols: d_u,
        len,
        scale,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel(k),
        &p,
        &[
            Bind::Read(zsum),
            Bind::Read(w_dec),
            Bind::Read(norms),
            Bind::Write(dw_dec),
        ],
        col_block_grid(n, d),
    )
}
