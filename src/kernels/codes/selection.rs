//! The row top-k as CSR (TopK codes, AuxK codes over a column list) and the dead-latent
//! list: block_max -> topk_threshold -> topk_candidates -> topk_select (+ topk_select_row)
//! -> csr_scan -> csr_pack, the per-row stages one invocation per row ([`RowPath::Lane`],
//! software adapters); on hardware GPUs their `_group` entry points, a workgroup per row
//! ([`RowPath::Group`]) over the same bindings. Both give the same bits.

use crate::gpu::{DType, Gpu, GpuTensor};
use crate::{Error, Result};

use super::super::decl::{Call, Entry, Grid, Slot, rf, ru, vec4_if, wf, wu};
use super::{
    BLOCK, BLOCK_LISTED, CAND, Params, WG_ROW, blocks, codes, dims, expect_block, matrix, one_d,
    params, scratch, single,
};

/// x and the optional eligible-column list (cols, ncols; x stands in when absent).
const BLOCK_MAX_BINDS: &[Slot] = &[
    rf("x", "rows, n"),
    ru("cols", "n"),
    ru("ncols", "1"),
    wu("bmax", "rows, nb"),
    rf("off", "n"),
];
const THRESHOLD: &[Slot] = &[ru("bmax", "rows, nb"), wu("thr", "rows")];
const CANDIDATES: &[Slot] = &[
    rf("x", "rows, n"),
    ru("cols", "n"),
    ru("ncols", "1"),
    ru("bmax", "rows, nb"),
    ru("thr", "rows"),
    wu("cand", "rows, CAND"),
    wu("cand_key", "rows, CAND"),
    wu("cand_n", "rows"),
];
const SELECT: &[Slot] = &[
    rf("x", "rows, n"),
    ru("cols", "n"),
    ru("ncols", "1"),
    ru("cand", "rows, CAND"),
    ru("cand_key", "rows, CAND"),
    ru("cand_n", "rows"),
    ru("thr", "rows"),
    wu("sel", "rows, k"),
    wf("sel_val", "rows, k"),
    wu("sel_n", "rows"),
];

pub(super) static BLOCK_MAX: Entry = one_d("block_max", BLOCK_MAX_BINDS);
pub(super) static BLOCK_MAX_VEC4: Entry = one_d("block_max_vec4", BLOCK_MAX_BINDS);
pub(super) static TOPK_THRESHOLD: Entry = one_d("topk_threshold", THRESHOLD);
pub(super) static TOPK_THRESHOLD_VEC4: Entry = one_d("topk_threshold_vec4", THRESHOLD);
pub(super) static TOPK_CANDIDATES: Entry = one_d("topk_candidates", CANDIDATES);
pub(super) static TOPK_CANDIDATES_VEC4: Entry = one_d("topk_candidates_vec4", CANDIDATES);
pub(super) static TOPK_SELECT: Entry = one_d("topk_select", SELECT);
pub(super) static TOPK_THRESHOLD_GROUP: Entry =
    codes("topk_threshold_group", THRESHOLD, WG_ROW, Grid::Groups);
pub(super) static TOPK_CANDIDATES_GROUP: Entry =
    codes("topk_candidates_group", CANDIDATES, WG_ROW, Grid::Groups);
pub(super) static TOPK_SELECT_GROUP: Entry =
    codes("topk_select_group", SELECT, WG_ROW, Grid::Groups);
/// One workgroup per row; the rows that did not overflow return at once.
pub(super) static TOPK_SELECT_ROW: Entry = codes("topk_select_row", SELECT, WG_ROW, Grid::Groups);
pub(super) static CSR_SCAN: Entry = single(
    "csr_scan",
    &[ru("counts", "rows"), wu("row_ptr", "rows + 1")],
);
pub(super) static CSR_PACK: Entry = one_d(
    "csr_pack",
    &[
        ru("sel", "rows, k"),
        rf("sel_val", "rows, k"),
        ru("row_ptr", "rows + 1"),
        wu("idx", "cap"),
        wf("val", "cap"),
    ],
);
pub(super) static DEAD_LIST: Entry = single(
    "dead_list",
    &[ru("since", "n"), wu("cols", "n"), wu("ncols", "1")],
);

/// Which entry points run the per-row stages of the row top-k (the same results either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowPath {
    /// One invocation per row (topk_threshold, topk_candidates, topk_select, compact_*): no
    /// barriers, which cost a shader split each on a software adapter.
    Lane,
    /// One workgroup per row (their `_group` entry points): a GPU's thousands of lanes,
    /// where a few thousand rows alone would leave it nearly idle.
    Group,
}

impl RowPath {
    /// Lane on software adapters, Group on hardware GPUs (and under
    /// SAEFORGE_FORCE_PATH=hardware).
    pub fn of(gpu: &Gpu) -> RowPath {
        if gpu.is_software() {
            RowPath::Lane
        } else {
            RowPath::Group
        }
    }

    /// The entry point of a per-row stage on this path: its `_group` one on Group, else its
    /// vec4 one when the launch can take vec4 loads (`vec4`), or its scalar one.
    pub(super) fn pick(
        self,
        vec4: bool,
        [scalar, v4, group]: [&'static Entry; 3],
    ) -> &'static Entry {
        match self {
            RowPath::Lane => vec4_if(vec4, scalar, v4),
            RowPath::Group => group,
        }
    }
}

/// A launch of `e` over x (rows, n), checked by `matrix`, in blocks of `block`: its
/// dimensions, then x and the eligible-column list bound, or x standing in for the list
/// (unread: has_cols is 0).
fn over_x<'a>(
    e: &'static Entry,
    p: Params,
    x: &'a GpuTensor,
    block: usize,
    cols: Option<(&'a GpuTensor, &'a GpuTensor)>,
) -> Call<'a, Params> {
    e.call(p)
        .dims(&dims(x.shape[0], x.shape[1], block))
        .bind(x)
        .bind_opt(cols.map(|c| c.0), x)
        .bind_opt(cols.map(|c| c.1), x)
}

/// bmax[r, j] = the largest key of x[r, col(q)] - off[col(q)] (no subtraction without off)
/// over the eligible positions q of block j (positions j*block .. (j+1)*block; position q is
/// latent q, or cols[q] for q < ncols[0]); 0 for a block with no eligible position.
/// x: (rows, n), cols: (n) u32 + ncols: (1) u32 or None, off: (n) or None
///   -> bmax: (rows, blocks(n, block)) u32
#[allow(clippy::too_many_arguments)]
pub fn block_max(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    block: usize,
    cols: Option<(&GpuTensor, &GpuTensor)>,
    off: Option<&GpuTensor>,
    bmax: &GpuTensor,
) -> Result<()> {
    let k = "block_max";
    let (rows, n) = matrix(k, x)?;
    expect_block(k, block)?;
    let nb = blocks(n, block);
    let mut p = params(rows, n, 0, block, cols.is_some());
    p.has_off = off.is_some() as u32;
    let e = vec4_if(
        cols.is_none() && off.is_none() && n.is_multiple_of(4) && block.is_multiple_of(4),
        &BLOCK_MAX,
        &BLOCK_MAX_VEC4,
    );
    over_x(e, p, x, block, cols)
        .bind(bmax)
        .bind_opt(off, x)
        .items_or_skip(rows * nb)
        .record(gpu, enc)
}

/// thr[r] = max(T, key of the smallest positive f32), T the largest key with zero low 16
/// bits such that at least k blocks of row r have bmax >= T (0 when none).
/// bmax: (rows, nb) u32 -> thr: (rows) u32
#[allow(clippy::too_many_arguments)]
pub fn topk_threshold(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    path: RowPath,
    bmax: &GpuTensor,
    rows: usize,
    nb: usize,
    k: usize,
    thr: &GpuTensor,
) -> Result<()> {
    let p = Params {
        rows: rows as u32,
        nb: nb as u32,
        k: k as u32,
        ..Default::default()
    };
    // vec4 loads of bmax when its rows are whole vec4s.
    let e = path.pick(
        nb.is_multiple_of(4),
        [&TOPK_THRESHOLD, &TOPK_THRESHOLD_VEC4, &TOPK_THRESHOLD_GROUP],
    );
    e.call(p)
        .dims(&[("rows", rows), ("nb", nb)])
        .binds(&[bmax, thr])
        .items_or_skip(rows)
        .record(gpu, enc)
}

/// In position order, the eligible latents of row r with key >= thr[r]: cand_n[r] = how
/// many, the first min(cand_n[r], CAND) in cand[r, ..] with their keys in cand_key[r, ..];
/// the slots past them are left as they were (no stage reads them).
/// x: (rows, n), cols / ncols as block_max, bmax: (rows, blocks(n, block)) u32,
/// thr: (rows) u32 -> cand, cand_key: (rows, CAND) u32, cand_n: (rows) u32
#[allow(clippy::too_many_arguments)]
pub fn topk_candidates(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    path: RowPath,
    x: &GpuTensor,
    block: usize,
    cols: Option<(&GpuTensor, &GpuTensor)>,
    bmax: &GpuTensor,
    thr: &GpuTensor,
    cand: &GpuTensor,
    cand_key: &GpuTensor,
    cand_n: &GpuTensor,
) -> Result<()> {
    let kn = "topk_candidates";
    let (rows, n) = matrix(kn, x)?;
    expect_block(kn, block)?;
    let p = params(rows, n, 0, block, cols.is_some());
    // vec4 loads of x and bmax when there are no cols and both rows are whole vec4s.
    let vec4 = cols.is_none()
        && n.is_multiple_of(4)
        && block.is_multiple_of(4)
        && n.is_multiple_of(block)
        && blocks(n, block).is_multiple_of(4);
    let e = path.pick(
        vec4,
        [
            &TOPK_CANDIDATES,
            &TOPK_CANDIDATES_VEC4,
            &TOPK_CANDIDATES_GROUP,
        ],
    );
    over_x(e, p, x, block, cols)
        .binds(&[bmax, thr, cand, cand_key, cand_n])
        .items_or_skip(rows)
        .record(gpu, enc)
}

/// Per row, the k best entries with key >= thr[r] (key descending, then lower latent), in
/// ascending latent order: sel[r, ..sel_n[r]] and their values x[r, latent] in sel_val;
/// sel_n[r] = min(k, count); 0 / 0.0 past it. From the candidates when cand_n[r] <= CAND,
/// else from the eligible row (a second dispatch, topk_select_row, takes those rows).
/// x: (rows, n), cols / ncols as block_max, cand, cand_key: (rows, CAND) u32,
/// cand_n, thr: (rows) u32 -> sel: (rows, k) u32, sel_val: (rows, k), sel_n: (rows) u32
#[allow(clippy::too_many_arguments)]
pub fn topk_select(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    path: RowPath,
    x: &GpuTensor,
    k: usize,
    cols: Option<(&GpuTensor, &GpuTensor)>,
    cand: &GpuTensor,
    cand_key: &GpuTensor,
    cand_n: &GpuTensor,
    thr: &GpuTensor,
    sel: &GpuTensor,
    sel_val: &GpuTensor,
    sel_n: &GpuTensor,
) -> Result<()> {
    let kn = "topk_select";
    let (rows, n) = matrix(kn, x)?;
    if k == 0 {
        return Err(Error::Internal(format!("{kn}: k must be >= 1")));
    }
    let p = params(rows, n, k, 1, cols.is_some());
    let first = match path {
        RowPath::Lane => &TOPK_SELECT,
        RowPath::Group => &TOPK_SELECT_GROUP,
    };
    for e in [first, &TOPK_SELECT_ROW] {
        over_x(e, p, x, 1, cols)
            .dim("k", k)
            .binds(&[cand, cand_key, cand_n, thr, sel, sel_val, sel_n])
            .items_or_skip(rows)
            .record(gpu, enc)?;
    }
    Ok(())
}

/// row_ptr[0] = 0, row_ptr[r + 1] = row_ptr[r] + counts[r].
/// counts: (rows) u32 -> row_ptr: (rows + 1) u32
pub fn csr_scan(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    counts: &GpuTensor,
    row_ptr: &GpuTensor,
) -> Result<()> {
    let rows = counts.len();
    let p = Params {
        rows: rows as u32,
        ..Default::default()
    };
    CSR_SCAN
        .call(p)
        .dim("rows", rows)
        .binds(&[counts, row_ptr])
        .record(gpu, enc)
}

/// idx[row_ptr[r] + j] = sel[r, j], val[..] = sel_val[r, j] for j < row_ptr[r+1] - row_ptr[r]
/// where the slot is < cap; other slots untouched.
/// sel: (rows, k) u32, sel_val: (rows, k), row_ptr: (rows + 1) u32 -> idx: (cap) u32, val: (cap)
#[allow(clippy::too_many_arguments)]
pub fn csr_pack(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    sel: &GpuTensor,
    sel_val: &GpuTensor,
    row_ptr: &GpuTensor,
    rows: usize,
    k: usize,
    idx: &GpuTensor,
    val: &GpuTensor,
) -> Result<()> {
    let p = Params {
        rows: rows as u32,
        k: k as u32,
        cap: idx.len() as u32,
        ..Default::default()
    };
    CSR_PACK
        .call(p)
        .dims(&[("rows", rows), ("k", k), ("cap", idx.len())])
        .binds(&[sel, sel_val, row_ptr, idx, val])
        .items_or_skip(rows * k)
        .record(gpu, enc)
}

/// The k largest positive entries of each row of x among the eligible latents, ties to the
/// lower latent, as CSR with latents ascending within a row; slots past row_pt[rows] hold
/// whatever they held. The stages run on per-device scratch buffers.
/// x: (rows, n), cols: (n) u32 + ncols: (1) u32 or None
///   -> row_ptr: (rows + 1) u32, idx: (cap >= rows * k) u32, val: (cap)
#[allow(clippy::too_many_arguments)]
pub fn topk_codes(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    path: RowPath,
    x: &GpuTensor,
    k: usize,
    cols: Option<(&GpuTensor, &GpuTensor)>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
) -> Result<()> {
    topk_chain(gpu, enc, path, x, k, cols, None, row_ptr, idx, val)
}

/// [`topk_codes`] over all columns (no cols) with the block maxima already computed (by
/// `gemm::gemm_block_max` in the encoder GEMM's epilogue): skips block_max.
/// x: (rows, n), bmax: (rows, blocks(n, BLOCK)) u32 = block_max(x, BLOCK, None, None)
///   -> row_ptr: (rows + 1) u32, idx: (cap >= rows * k) u32, val: (cap)
#[allow(clippy::too_many_arguments)]
pub fn topk_codes_from_bmax(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    k: usize,
    bmax: &GpuTensor,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
) -> Result<()> {
    let path = RowPath::of(gpu);
    topk_chain(gpu, enc, path, x, k, None, Some(bmax), row_ptr, idx, val)
}

/// The chain of [`topk_codes`]; with `given` (no cols) the block maxima come from it.
#[allow(clippy::too_many_arguments)]
fn topk_chain(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    path: RowPath,
    x: &GpuTensor,
    k: usize,
    cols: Option<(&GpuTensor, &GpuTensor)>,
    given: Option<&GpuTensor>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
) -> Result<()> {
    let kn = "topk_codes";
    let (rows, n) = matrix(kn, x)?;
    if row_ptr.len() != rows + 1 || row_ptr.dtype != DType::U32 {
        return Err(Error::Internal(format!(
            "{kn}: row_ptr is {:?} {:?}, expected ({}) u32",
            row_ptr.shape,
            row_ptr.dtype,
            rows + 1
        )));
    }
    if idx.len() < rows * k {
        return Err(Error::Internal(format!(
            "{kn}: idx has {} slots, fewer than rows * k = {}",
            idx.len(),
            rows * k
        )));
    }
    // AuxK lists: k is large against the list, so smaller blocks keep the bound useful.
    let block = if cols.is_some() { BLOCK_LISTED } else { BLOCK };
    let nb = blocks(n, block);
    let scratch_bmax;
    let bmax = match given {
        Some(b) => {
            if cols.is_some() {
                return Err(Error::Internal(format!(
                    "{kn}: precomputed block maxima are for all columns (no cols)"
                )));
            }
            if b.len() != rows * nb || b.dtype != DType::U32 {
                return Err(Error::Internal(format!(
                    "{kn}: bmax is {:?} {:?}, expected ({rows} * {nb}) u32",
                    b.shape, b.dtype
                )));
            }
            b
        }
        None => {
            scratch_bmax = scratch(gpu, "codes bmax", DType::U32, rows * nb)?;
            &scratch_bmax
        }
    };
    let u = DType::U32;
    let thr = scratch(gpu, "codes thr", u, rows)?;
    let cand = scratch(gpu, "codes cand", u, rows * CAND)?;
    let cand_key = scratch(gpu, "codes cand_key", u, rows * CAND)?;
    let cand_n = scratch(gpu, "codes cand_n", u, rows)?;
    let sel = scratch(gpu, "codes sel", u, rows * k)?;
    let sel_val = scratch(gpu, "codes sel_val", DType::F32, rows * k)?;
    let sel_n = scratch(gpu, "codes sel_n", u, rows)?;
    if given.is_none() {
        block_max(gpu, enc, x, block, cols, None, bmax)?;
    }
    topk_threshold(gpu, enc, path, bmax, rows, nb, k, &thr)?;
    #[rustfmt::skip]
    topk_candidates(gpu, enc, path, x, block, cols, bmax, &thr, &cand, &cand_key, &cand_n)?;
    topk_select(
        gpu, enc, path, x, k, cols, &cand, &cand_key, &cand_n, &thr, &sel, &sel_val, &sel_n,
    )?;
    csr_scan(gpu, enc, &sel_n, row_ptr)?;
    csr_pack(gpu, enc, &sel, &sel_val, row_ptr, rows, k, idx, val)
}

/// cols[..m] = the latents with since >= dead_after, ascending; ncols[0] = m; cols[m..] = 0.
/// since: (n) u32 -> cols: (n) u32, ncols: (1) u32
pub fn dead_list(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    since: &GpuTensor,
    dead_after: u32,
    cols: &GpuTensor,
    ncols: &GpuTensor,
) -> Result<()> {
    let n = since.len();
    let p = Params {
        n: n as u32,
        dead_after,
        ..Default::default()
    };
    DEAD_LIST
        .call(p)
        .dim("n", n)
        .binds(&[since, cols, ncols])
        .record(gpu, enc)
}
