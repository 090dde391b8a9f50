//! Batch top-k launchers (shaders/topk.wgsl + topk_write.wgsl) for BatchTopK SAEs (the per-row top-k of TopK
//! SAEs and AuxK is the codes family's `topk_codes`). The selection bounds the answer from
//! below with per-invocation maxima, then radix-selects over an order-preserving u32 key
//! of the float bits with u32 histogram counters, so results are identical run to run; see
//! the shader for the details and the CPU twin, `crate::reference::topk::batchtopk`, for
//! the semantics. `batchtopk_chunks` can also take the bound and per-row candidate lists
//! from its caller ([`Lists`]: the training step's BatchTopK, from the encoder's block
//! maxima).
//!
//! Shapes come from the tensors: rows and n from x, k_total from idx's length. `batchtopk` needs a u32 scratch tensor from the caller
//! (`batchtopk_scratch_len`), so that a training step allocates nothing.

use crate::gpu::{Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Entry, Grid, Slot, Uniform, Wg, rf, ru, wf, wu};

pub static SHADER: Shader = crate::shader!("topk", "topk_write");

/// Invocations per workgroup (a power of two <= 2048).
const WG: usize = 256;
/// batchtopk_hist: entries per invocation.
const EPT: usize = 64;
/// batchtopk_hist: most workgroups of one histogram dispatch (they stride over the keys).
const HIST_GROUPS: usize = 256;
/// Histogram bins of one radix digit (shader constant BINS).
const BINS: usize = 2048;

crate::uniform! {
    struct BatchParams {
        rows: u32, n: u32, k_total: u32, level: u32,
        src: u32, capg: u32, vec4: u32, row0: u32,
        rows_all: u32, first: u32, width: u32, _pad: u32,
    }
}

const fn batch(name: &'static str, binds: &'static [Slot], grid: Grid) -> Entry {
    Entry::new(&SHADER, name, BatchParams::LAYOUT, binds)
        .consts(&[("WG", WG as f64), ("EPT", EPT as f64)])
        .wg(Wg::Fixed(WG as u32))
        .grid(grid)
}

/// The bindings of the kernels over the scratch alone (batchtopk_init, batchtopk_find).
const SCRATCH_SLOTS: &[Slot] = &[wu("scratch", "any")];
/// The bindings of the kernels over x and the scratch (batchtopk_hist, batchtopk_count,
/// batchtopk_count_rows).
const X_SCRATCH_SLOTS: &[Slot] = &[rf("x", "rows, n"), wu("scratch", "any")];

pub static BATCHTOPK_INIT: Entry = batch("batchtopk_init", SCRATCH_SLOTS, Grid::Single);
pub static BATCHTOPK_BOUND: Entry = batch(
    "batchtopk_bound",
    &[rf("x", "rows, n"), rf("x4", "any"), wu("scratch", "any")],
    Grid::Groups,
);
pub static BATCHTOPK_HIST: Entry = batch("batchtopk_hist", X_SCRATCH_SLOTS, Grid::Groups);
pub static BATCHTOPK_FIND: Entry = batch("batchtopk_find", SCRATCH_SLOTS, Grid::Single);
pub static BATCHTOPK_COLLECT: Entry = batch(
    "batchtopk_collect",
    &[
        rf("x", "rows, n"),
        rf("x4", "any"),
        wu("counters", "any"),
        wu("candidates", "any"),
    ],
    Grid::Groups,
);
/// The candidate lists are (rows, width) u32 of the chunk (`width` a parameter).
pub static BATCHTOPK_GATHER: Entry = batch(
    "batchtopk_gather",
    &[
        ru("cand", "rows, width"),
        ru("cand_key", "rows, width"),
        ru("cand_n", "rows"),
        wu("counters", "any"),
        wu("candidates", "any"),
    ],
    Grid::Items,
);
pub static BATCHTOPK_COUNT: Entry = batch("batchtopk_count", X_SCRATCH_SLOTS, Grid::Groups);
/// batchtopk_count with one invocation per row (the lists' short runs).
pub static BATCHTOPK_COUNT_ROWS: Entry =
    batch("batchtopk_count_rows", X_SCRATCH_SLOTS, Grid::Items);
pub static BATCHTOPK_SCAN: Entry = batch(
    "batchtopk_scan",
    &[
        wu("scratch", "any"),
        wu("row_ptr", "rows_all + 1"),
        wf("threshold", "1"),
    ],
    Grid::Single,
);
/// The bindings of batchtopk_scatter and batchtopk_scatter_rows.
const SCATTER_SLOTS: &[Slot] = &[
    rf("x", "rows, n"),
    ru("scratch", "any"),
    ru("row_ptr", "rows_all + 1"),
    wu("idx", "k_total"),
    wf("val", "k_total"),
];
pub static BATCHTOPK_SCATTER: Entry = batch("batchtopk_scatter", SCATTER_SLOTS, Grid::Groups);

/// batchtopk_scatter with one invocation per row (the lists' short runs).
pub static BATCHTOPK_SCATTER_ROWS: Entry =
    batch("batchtopk_scatter_rows", SCATTER_SLOTS, Grid::Items);

/// Every entry point of shaders/topk.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &BATCHTOPK_INIT,
    &BATCHTOPK_BOUND,
    &BATCHTOPK_HIST,
    &BATCHTOPK_FIND,
    &BATCHTOPK_COLLECT,
    &BATCHTOPK_GATHER,
    &BATCHTOPK_COUNT,
    &BATCHTOPK_COUNT_ROWS,
    &BATCHTOPK_SCAN,
    &BATCHTOPK_SCATTER,
    &BATCHTOPK_SCATTER_ROWS,
];

fn matrix_shape(kernel: &str, x: &GpuTensor) -> Result<(usize, usize)> {
    match x.shape[..] {
        [rows, n] if n >= 1 && rows * n < u32::MAX as usize => Ok((rows, n)),
        _ => Err(Error::Internal(format!(
            "{kernel}: x has shape {:?}, expected (rows, n) with n >= 1 and fewer than 2^32 entries",
            x.shape
        ))),
    }
}

/// A tensor of at least one vec4 for the vec4 views (read only when n % 4 == 0, but every
/// binding needs a buffer of at least one vec4): `t`, or a small zero buffer.
fn vec4_view<'a>(
    gpu: &Gpu,
    t: &'a GpuTensor,
    dummy: &'a mut Option<GpuTensor>,
    what: &str,
) -> Result<&'a GpuTensor> {
    if t.len() >= 4 {
        return Ok(t);
    }
    Ok(dummy.insert(gpu.zeros_u32(what, &[4])?))
}

/// batchtopk: candidates the fast path can hold (beyond that, the slow path runs).
fn candidate_capacity(rows: usize, n: usize, k_total: usize) -> usize {
    (2 * k_total + 4096).min(rows * n)
}

/// Where batchtopk's scratch (for x: (rows, n) and k_total) keeps the overflow flag
/// (`over`: 1 when the stages after the candidates read x) and the candidates: row r's run
/// is `count` = s[cnt + r] entries from s[off + r] in the keys (from `keys`) and latents
/// (from `latents`). For tests that check a stage's candidates.
pub struct ScratchLayout {
    pub over: usize,
    pub off: usize,
    pub cnt: usize,
    pub keys: usize,
    pub latents: usize,
}

/// The [`ScratchLayout`] of batchtopk's scratch (the shader's ST, b_off, b_cnt, b_ck0,
/// b_ci0).
pub fn scratch_layout(rows: usize, n: usize, k_total: usize) -> ScratchLayout {
    let rows0 = BINS + 16;
    let keys = rows0 + 4 * rows + rows * WG;
    ScratchLayout {
        over: BINS + 6,
        off: rows0 + 2 * rows,
        cnt: rows0 + 3 * rows,
        keys,
        latents: keys + candidate_capacity(rows, n, k_total),
    }
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
    batchtopk_chunks(gpu, enc, &[x], None, row_ptr, idx, val, threshold, scratch)
}

/// Candidate lists for [`batchtopk_chunks`]: for chunk c, `fill(enc, c)` records into
/// `cand` and `cand_key` ((rows_c, width) u32 each: latents and their keys) and `cand_n`
/// ((rows_c) u32) every entry of the chunk's rows at or above one lower bound of the
/// k_total-th largest entry of the batch, in ascending latent order per row. A row with
/// cand_n > width (its list incomplete) makes the selection read x instead.
pub struct Lists<'a> {
    pub cand: &'a GpuTensor,
    pub cand_key: &'a GpuTensor,
    pub cand_n: &'a GpuTensor,
    pub width: usize,
    pub fill: &'a mut dyn FnMut(&mut wgpu::CommandEncoder, usize) -> Result<()>,
}

/// [`batchtopk`] of the batch whose rows are the chunks `xs` one after another (each
/// (rows_c, n); a batch whose x does not fit one storage binding): the same CSR, values and
/// threshold as `batchtopk` of their concatenation. scratch: batchtopk_scratch_len(rows, n,
/// k_total) for the batch's rows.
/// xs: (rows_c, n) each -> row_ptr: (rows + 1) u32, idx: (k_total) u32, val: (k_total),
/// threshold: (1)
/// With `lists` (`codes::batch_topk`'s, from the encoder's block maxima) instead of its own
/// bound over x: batchtopk_gather appends each chunk's lists to the candidates, then the
/// same radix levels, and count and scatter one invocation per row (the lists' runs are
/// short). The same CSR, values and threshold.
#[allow(clippy::too_many_arguments)]
pub fn batchtopk_chunks(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    xs: &[&GpuTensor],
    mut lists: Option<Lists>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
    scratch: &GpuTensor,
) -> Result<()> {
    let mut shapes = Vec::with_capacity(xs.len());
    for x in xs {
        shapes.push(matrix_shape("batchtopk", x)?);
    }
    let n = shapes.first().map_or(0, |s| s.1);
    if n == 0 || shapes.iter().any(|s| s.1 != n) {
        return Err(Error::Internal(format!(
            "batchtopk: chunks {shapes:?}, expected at least one, all with the same n"
        )));
    }
    let rows: usize = shapes.iter().map(|s| s.0).sum();
    let k_total = idx.len();
    if k_total == 0 || k_total > rows * n || rows * n >= u32::MAX as usize {
        return Err(Error::Internal(format!(
            "batchtopk: k_total = {k_total} (from idx {:?}) must be in 1..={}",
            idx.shape,
            rows * n
        )));
    }
    super::expect_len(
        "batchtopk",
        "scratch",
        scratch,
        batchtopk_scratch_len(rows, n, k_total),
    )?;
    let capg = candidate_capacity(rows, n, k_total);
    let width = lists.as_ref().map_or(0, |l| l.width);
    // Params of a dispatch over chunk c (rows_c rows from row0), or of the whole batch.
    let p = |level: u32, src: u32, rows_c: usize, row0: usize, first: bool| BatchParams {
        rows: rows_c as u32,
        n: n as u32,
        k_total: k_total as u32,
        level,
        src,
        capg: capg as u32,
        vec4: (n % 4 == 0) as u32,
        row0: row0 as u32,
        rows_all: rows as u32,
        first: first as u32,
        width: width as u32,
        _pad: 0,
    };
    let whole = |level: u32, src: u32| p(level, src, rows, 0, true);
    // The chunks with their first rows.
    let chunks: Vec<(&GpuTensor, usize, usize)> = xs
        .iter()
        .zip(&shapes)
        .scan(0, |row0, (x, s)| {
            let c = (*x, s.0, *row0);
            *row0 += s.0;
            Some(c)
        })
        .collect();
    let dims = |rows_c: usize| {
        [
            ("rows", rows_c),
            ("n", n),
            ("k_total", k_total),
            ("rows_all", rows),
        ]
    };
    let mut dummies: Vec<Option<GpuTensor>> = (0..xs.len()).map(|_| None).collect();
    let mut x4s = Vec::with_capacity(xs.len());
    for (x, dummy) in xs.iter().zip(dummies.iter_mut()) {
        x4s.push(vec4_view(gpu, x, dummy, "batchtopk dummy")?);
    }
    // A launch over chunk (rc rows from r0) of the stages after the bound (src 1) or of it.
    let chunk = |e: &'static Entry, src: u32, rc: usize, r0: usize| {
        e.call(p(0, src, rc, r0, true)).dims(&dims(rc))
    };
    BATCHTOPK_INIT
        .call(whole(0, 0))
        .bind(scratch)
        .record(gpu, enc)?;
    // Radix levels over src 0 (lane maxima: once) or 1 (candidates in the first call, or
    // each chunk's x after an overflow).
    let select = |enc: &mut wgpu::CommandEncoder, src: u32, levels: u32| {
        for level in 0..levels {
            for (c, &(x, rc, r0)) in chunks.iter().enumerate() {
                if src == 0 && c > 0 {
                    break;
                }
                let len = if src == 0 { rows * WG } else { rc * n }.max(capg);
                let groups = len.div_ceil(WG * EPT).min(HIST_GROUPS);
                BATCHTOPK_HIST
                    .call(p(level, src, rc, r0, c == 0))
                    .dims(&dims(rc))
                    .binds(&[x, scratch])
                    .items(groups)
                    .record(gpu, enc)?;
            }
            BATCHTOPK_FIND
                .call(whole(level, src))
                .bind(scratch)
                .record(gpu, enc)?;
        }
        Ok::<(), Error>(())
    };
    match &mut lists {
        None => {
            for (&(x, rc, r0), x4) in chunks.iter().zip(&x4s) {
                chunk(&BATCHTOPK_BOUND, 0, rc, r0)
                    .bind(x)
                    .bind_raw(x4)
                    .bind(scratch)
                    .items_or_skip(rc)
                    .record(gpu, enc)?;
            }
            select(enc, 0, 2)?;
            for (&(x, rc, r0), x4) in chunks.iter().zip(&x4s) {
                chunk(&BATCHTOPK_COLLECT, 1, rc, r0)
                    .bind(x)
                    .bind_raw(x4)
                    .binds(&[scratch, scratch])
                    .items_or_skip(rc)
                    .record(gpu, enc)?;
            }
        }
        Some(l) => {
            for (c, &(_, rc, r0)) in chunks.iter().enumerate() {
                (l.fill)(enc, c)?;
                let w = l.width;
                let (cand, key) = (l.cand.prefix(&[rc, w]), l.cand_key.prefix(&[rc, w]));
                let cn = l.cand_n.prefix(&[rc]);
                BATCHTOPK_GATHER
                    .call(p(0, 1, rc, r0, true))
                    .dims(&[("rows", rc), ("width", w)])
                    .binds(&[&cand, &key, &cn, scratch, scratch])
                    .items_or_skip(rc)
                    .record(gpu, enc)?;
            }
        }
    }
    select(enc, 1, 3)?;
    // The lists' runs are short: one invocation per row instead of a workgroup.
    let (count, scatter) = match lists {
        None => (&BATCHTOPK_COUNT, &BATCHTOPK_SCATTER),
        Some(_) => (&BATCHTOPK_COUNT_ROWS, &BATCHTOPK_SCATTER_ROWS),
    };
    for &(x, rc, r0) in &chunks {
        chunk(count, 1, rc, r0)
            .binds(&[x, scratch])
            .items_or_skip(rc)
            .record(gpu, enc)?;
    }
    BATCHTOPK_SCAN
        .call(whole(0, 0))
        .dims(&dims(rows))
        .binds(&[scratch, row_ptr, threshold])
        .record(gpu, enc)?;
    for &(x, rc, r0) in &chunks {
        chunk(scatter, 1, rc, r0)
            .binds(&[x, scratch, row_ptr, idx, val])
            .items_or_skip(rc)
            .record(gpu, enc)?;
    }
    Ok(())
}
