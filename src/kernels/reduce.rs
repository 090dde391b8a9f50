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

use crate::gpu::{DType, Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{
    Call, Entry, Grid, Layout, Slot, Uniform, Wg, elements, rf, ru, vec4_if, vec4_items,
    vec4_split, wf, wu,
};

pub use crate::reference::reduce::{METRIC_SLOTS, slot};

pub static SHADER: Shader = crate::shader!("reduce");

/// Invocations per workgroup (WGSL override `WG`).
const WG: usize = 256;
/// Rows per invocation in the row-blocked column kernels (WGSL override `RB`): col_sum's
/// blocks, whose order the CPU twins follow.
const RB: usize = crate::reference::reduce::COL_SUM_BLOCK;
/// finish_partials' workgroup (a literal in the shader).
const FINISH_WG: u32 = 256;

crate::uniform! {
    struct Params {
        rows: u32, cols: u32, len: u32, flag: u32,
        scale: f32, u0: u32, nparts: u32, _pad: u32,
    }
}

crate::uniform! {
    struct FinishParams {
        nparts: u32,
        nvals: u32,
        counts: u32,
        overwrite: u32,
        slots: [u32; 4],
    }
}

const fn reduce(
    name: &'static str,
    params: Layout,
    binds: &'static [Slot],
    wg: u32,
    grid: Grid,
) -> Entry {
    Entry::new(&SHADER, name, params, binds)
        .consts(&[("WG", WG as f64), ("RB", RB as f64)])
        .wg(Wg::Fixed(wg))
        .grid(grid)
}

/// One invocation per item.
const fn items(name: &'static str, binds: &'static [Slot]) -> Entry {
    reduce(name, Params::LAYOUT, binds, WG as u32, Grid::Items)
}

/// The row-blocked column kernels: x = column groups of WG, y = row blocks of RB.
const fn col_blocks(name: &'static str, binds: &'static [Slot]) -> Entry {
    reduce(name, Params::LAYOUT, binds, WG as u32, Grid::Custom)
}

const SUB_ROW: &[Slot] = &[rf("x", "rows, d"), rf("b", "d"), wf("out", "rows, d")];
const SUB: &[Slot] = &[rf("a", "len"), rf("b", "len"), wf("out", "len")];
const COL_PART: &[Slot] = &[rf("a", "rows, cols"), wf("part", "any")];
const COL_FINISH: &[Slot] = &[rf("part", "any"), wf("out", "cols")];
const ROW_NORMS: &[Slot] = &[rf("w", "n, d"), wf("norms", "n")];

pub static SUB_ROW_E: Entry = items("sub_row", SUB_ROW);
pub static SUB_ROW_VEC4: Entry = items("sub_row_vec4", SUB_ROW);
pub static SUB_E: Entry = items("sub", SUB);
pub static SUB_VEC4: Entry = items("sub_vec4", SUB);
pub static COL_SUM_PART: Entry = col_blocks("col_sum_part", COL_PART);
pub static COL_SUM_PART_VEC4: Entry = col_blocks("col_sum_part_vec4", COL_PART);
pub static COL_SUM_FINISH: Entry = items("col_sum_finish", COL_FINISH);
pub static COL_SUM_FINISH_VEC4: Entry = items("col_sum_finish_vec4", COL_FINISH);
pub static MSE_BACKWARD: Entry = col_blocks(
    "mse_backward",
    &[
        rf("target", "rows, d"),
        rf("pred", "rows, d"),
        rf("colsum", ">= d"),
        wf("grad", "rows, d"),
        wu("parts", "any"),
    ],
);
pub static SUM_SQ_CENTRED: Entry = col_blocks(
    "sum_sq_centred",
    &[
        rf("target", "rows, d"),
        rf("colsum", ">= d"),
        wu("parts", "any"),
    ],
);
pub static ROW_NORMS_E: Entry = items("row_norms", ROW_NORMS);
pub static ROW_NORMS_VEC4: Entry = items("row_norms_vec4", ROW_NORMS);
pub static SPARSE_STATS: Entry = items(
    "sparse_stats",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        rf("val", "cap"),
        rf("norms", "n"),
        wu("fired", "n"),
        wu("parts", "any"),
    ],
);
pub static DENSE_STATS: Entry = col_blocks(
    "dense_stats",
    &[
        rf("z", "rows, n"),
        rf("norms", "n"),
        wu("fired", "n"),
        wu("parts", "any"),
    ],
);
pub static UPDATE_DEAD: Entry = items(
    "update_dead",
    &[
        wu("fired", "n"),
        wu("since", "n"),
        wu("total", "n"),
        wu("parts", "any"),
    ],
);
pub static DEAD_MASK: Entry = items("dead_mask", &[ru("since", "n"), wu("mask", "n")]);
pub static L1_BACKWARD: Entry = col_blocks(
    "l1_backward",
    &[rf("z", "rows, n"), rf("norms", "n"), wf("dz", "rows, n")],
);
pub static L1_DECODER_GRAD: Entry = col_blocks(
    "l1_decoder_grad",
    &[
        rf("zsum", "n"),
        rf("w_dec", "n, d"),
        rf("norms", "n"),
        wf("dw_dec", "n, d"),
    ],
);
pub static FINISH_PARTIALS: Entry = reduce(
    "finish_partials",
    FinishParams::LAYOUT,
    &[ru("parts", "any"), wf("metrics", "slots")],
    FINISH_WG,
    Grid::Single,
);

/// Every entry point of shaders/reduce.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &SUB_ROW_E,
    &SUB_ROW_VEC4,
    &SUB_E,
    &SUB_VEC4,
    &COL_SUM_PART,
    &COL_SUM_PART_VEC4,
    &COL_SUM_FINISH,
    &COL_SUM_FINISH_VEC4,
    &MSE_BACKWARD,
    &SUM_SQ_CENTRED,
    &ROW_NORMS_E,
    &ROW_NORMS_VEC4,
    &SPARSE_STATS,
    &DENSE_STATS,
    &UPDATE_DEAD,
    &DEAD_MASK,
    &L1_BACKWARD,
    &L1_DECODER_GRAD,
    &FINISH_PARTIALS,
];

/// The metrics tensor (METRIC_SLOTS f32) and the slots a launcher writes.
fn expect_metrics(kernel: &str, metrics: &GpuTensor, slots: &[u32]) -> Result<()> {
    if metrics.len() != METRIC_SLOTS || metrics.dtype != DType::F32 {
        return Err(Error::Internal(format!(
            "{kernel}: metrics is {:?} {:?}, expected ({METRIC_SLOTS}) f32",
            metrics.shape, metrics.dtype
        )));
    }
    if let Some(s) = slots.iter().find(|&&s| s as usize >= METRIC_SLOTS) {
        return Err(Error::Internal(format!(
            "{kernel}: metric slot {s} is outside 0..{METRIC_SLOTS}"
        )));
    }
    Ok(())
}

/// Row-blocked parameters over (rows, cols), checked to fit the shaders' u32 indices.
fn dims(kernel: &str, rows: usize, cols: usize) -> Result<Params> {
    let len = elements(kernel, rows, cols)?;
    Ok(Params {
        rows: rows as u32,
        cols: cols as u32,
        len,
        ..Default::default()
    })
}

/// A launch of a row-blocked column kernel over p's (rows, cols), those two dimensions
/// named `names` in its declaration; the grid: x = column groups of WG, y = row blocks of
/// RB.
fn col_block_call<'a>(e: &'static Entry, p: Params, names: [&'static str; 2]) -> Call<'a, Params> {
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    let grid = [
        cols.div_ceil(WG).max(1) as u32,
        rows.div_ceil(RB).max(1) as u32,
        1,
    ];
    e.call(p)
        .dims(&[(names[0], rows), (names[1], cols)])
        .grid(grid)
}

/// The partials of a row-blocked column kernel over p's (rows, cols): one per (row block
/// of RB, column), `values` per partial (laid out (values, nparts)), in the
/// "reduce.partials" scratch; returns p with `nparts` set, the scratch and nparts.
fn col_block_parts(gpu: &Gpu, p: Params, values: usize) -> Result<(Params, GpuTensor, usize)> {
    let nparts = (p.rows as usize).div_ceil(RB) * p.cols as usize;
    let parts = scratch(gpu, "reduce.partials", DType::U32, values * nparts)?;
    let p = Params {
        nparts: nparts as u32,
        ..p
    };
    Ok((p, parts, nparts))
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
    FINISH_PARTIALS
        .call(p)
        .dim("slots", METRIC_SLOTS)
        .binds(&[parts, metrics])
        .record(gpu, enc)
}

/// Totals added (`+=`) into `slots` from f32 partials.
fn sums(slots: &[u32]) -> Vec<Total> {
    slots
        .iter()
        .map(|&slot| Total {
            slot,
            count: false,
            overwrite: false,
        })
        .collect()
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
    let (e, invocations) = vec4_items(d.is_multiple_of(4), &SUB_ROW_E, &SUB_ROW_VEC4, rows * d);
    e.call(dims("sub_row", rows, d)?)
        .dims(&[("rows", rows), ("d", d)])
        .binds(&[x, b, out])
        .items(invocations)
        .record(gpu, enc)
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
    let len = a.len();
    let (e, invocations) = vec4_split(len, &SUB_E, &SUB_VEC4);
    let p = Params {
        len: super::decl::to_u32("sub", "len", len)?,
        ..Default::default()
    };
    e.call(p)
        .dim("len", len)
        .binds(&[a, b, out])
        .items(invocations)
        .record(gpu, enc)
}

/// out[j] = (accumulate ? out[j] : 0) + column j's sum in blocks of RB rows, the order of
/// [`crate::reference::reduce::col_sum`] (so the result is exactly the CPU twin's).
/// Dispatches: col_sum_part (row-blocked: an invocation per column and block of RB rows,
/// per four columns with vec4 loads when cols % 4 == 0) into the "reduce.colparts"
/// scratch, then col_sum_finish (each column's block sums, in order).
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
    let blocks = rows.div_ceil(RB).max(1);
    let p = Params {
        flag: accumulate as u32,
        nparts: blocks as u32,
        ..dims("col_sum", rows, cols)?
    };
    let vec4 = cols.is_multiple_of(4);
    let part = scratch(gpu, "reduce.colparts", DType::F32, blocks * cols)?;
    let (e, invocations) = vec4_items(vec4, &COL_SUM_PART, &COL_SUM_PART_VEC4, cols);
    e.call(p)
        .dims(&[("rows", rows), ("cols", cols)])
        .binds(&[a, &part])
        .grid([invocations.div_ceil(WG).max(1) as u32, blocks as u32, 1])
        .skip_if(cols == 0)
        .record(gpu, enc)?;
    let (e, invocations) = vec4_items(vec4, &COL_SUM_FINISH, &COL_SUM_FINISH_VEC4, cols);
    e.call(p)
        .dim("cols", cols)
        .binds(&[&part, out])
        .items(invocations)
        .record(gpu, enc)
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
    let p = dims(k, rows, d)?;
    let mut slots = vec![sse_slot];
    slots.extend(sst_slot);
    expect_metrics(k, metrics, &slots)?;
    let colsum = scratch(gpu, "reduce.colsum", DType::F32, d)?;
    let (p, parts, nparts) = col_block_parts(gpu, p, 2)?;
    let p = Params {
        flag: sst_slot.is_some() as u32,
        scale,
        ..p
    };
    let call = col_block_call(&MSE_BACKWARD, p, ["rows", "d"])
        .binds(&[target, pred, &colsum, grad])
        .bind(&parts);
    if rows == 0 || d == 0 {
        return call.skip_if(true).record(gpu, enc);
    }
    if sst_slot.is_some() {
        col_sum(gpu, enc, target, rows, d, &colsum.prefix(&[d]), false)?;
    }
    call.record(gpu, enc)?;
    finish(gpu, enc, &parts, nparts, &sums(&slots), metrics)
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
    let p = dims(k, rows, d)?;
    expect_metrics(k, metrics, &[slot])?;
    let colsum = scratch(gpu, "reduce.colsum", DType::F32, d)?;
    let (p, parts, nparts) = col_block_parts(gpu, p, 1)?;
    let call = col_block_call(&SUM_SQ_CENTRED, p, ["rows", "d"])
        .binds(&[target, &colsum])
        .bind(&parts);
    if rows == 0 || d == 0 {
        return call.skip_if(true).record(gpu, enc);
    }
    col_sum(gpu, enc, target, rows, d, &colsum.prefix(&[d]), false)?;
    call.record(gpu, enc)?;
    finish(gpu, enc, &parts, nparts, &sums(&[slot]), metrics)
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
    let e = vec4_if(d.is_multiple_of(4), &ROW_NORMS_E, &ROW_NORMS_VEC4);
    e.call(dims("row_norms", n, d)?)
        .dims(&[("n", n), ("d", d)])
        .binds(&[w, norms])
        .items(n)
        .record(gpu, enc)
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
    let u = |what, v| super::decl::to_u32(k, what, v);
    expect_metrics(k, metrics, &[slot::L0, slot::L1])?;
    // One partial per run of SS_RUN (shaders/reduce.wgsl) slots.
    let nparts = cap.div_ceil(SS_RUN).max(1);
    let parts = scratch(gpu, "reduce.partials", DType::U32, 2 * nparts)?;
    let p = Params {
        rows: u("rows", rows)?,
        cols: u("n", n)?,
        len: u("cap", cap)?,
        nparts: nparts as u32,
        ..Default::default()
    };
    SPARSE_STATS
        .call(p)
        .dims(&[("rows", rows), ("n", n)])
        .binds(&[row_ptr, idx, val, norms, fired, &parts])
        .items(nparts)
        .record(gpu, enc)?;
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
    let p = dims(k, rows, n)?;
    expect_metrics(k, metrics, &[slot::L0, slot::L1])?;
    let (p, parts, nparts) = col_block_parts(gpu, p, 2)?;
    col_block_call(&DENSE_STATS, p, ["rows", "n"])
        .binds(&[z, norms, fired, &parts])
        .record(gpu, enc)?;
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
    let n_u = super::decl::to_u32(k, "n", n)?;
    expect_metrics(k, metrics, &[slot::DEAD])?;
    let parts = scratch(gpu, "reduce.partials", DType::U32, n)?;
    let p = Params {
        // Saturating: a step never has 2^32 rows, and the count saturates anyway.
        rows: u32::try_from(rows).unwrap_or(u32::MAX),
        cols: n_u,
        len: n_u,
        u0: dead_after,
        nparts: n_u,
        ..Default::default()
    };
    UPDATE_DEAD
        .call(p)
        .dim("n", n)
        .binds(&[fired, since, total, &parts])
        .items(n)
        .record(gpu, enc)?;
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
    let n = since.len();
    let n_u = super::decl::to_u32("dead_mask", "n", n)?;
    let p = Params {
        cols: n_u,
        len: n_u,
        u0: dead_after,
        ..Default::default()
    };
    DEAD_MASK
        .call(p)
        .dim("n", n)
        .binds(&[since, mask])
        .items(n)
        .record(gpu, enc)
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
    let p = Params {
        scale,
        ..dims("l1_backward", rows, n)?
    };
    col_block_call(&L1_BACKWARD, p, ["rows", "n"])
        .binds(&[z, norms, dz])
        .record(gpu, enc)
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
    let p = Params {
        scale,
        ..dims("l1_decoder_grad", n, d)?
    };
    col_block_call(&L1_DECODER_GRAD, p, ["n", "d"])
        .binds(&[zsum, w_dec, norms, dw_dec])
        .record(gpu, enc)
}
