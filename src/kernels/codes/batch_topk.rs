//! BatchTopK from the block maxima: a radix select over the maxima bounds the k_total-th
//! value of the batch (key_init, key_hist, key_find), topk_candidates lists the entries
//! at or above it, row by row (a workgroup per row on hardware GPUs, as in `selection`), and `topk::batchtopk_chunks` selects among those lists
//! (batchtopk_gather appends them to its candidates; its own bound over x is skipped), or
//! reads x itself when a row's list overflows.
//!
//! A batch whose pre-activations do not fit one storage binding comes as row chunks
//! ([`batchtopk_codes_chunks`]): the histograms of the radix select add up every chunk's
//! block maxima before each level's find, and each chunk's lists are made and gathered in
//! turn (one chunk's worth of list scratch). The answer is the whole batch's, as with one
//! chunk.

use crate::gpu::{Gpu, GpuTensor};
use crate::{Error, Result};

use super::super::decl::{Entry, Grid, rf, ru, wf, wu};
use super::selection::{RowPath, block_max, topk_candidates};
use super::{BLOCK, CAND, Params, blocks, codes, matrix, one_d, single};

pub(super) static KEY_INIT: Entry = single("key_init", &[wu("state", "4"), wu("hist", "256")]);
pub(super) static KEY_HIST: Entry = one_d(
    "key_hist",
    &[ru("keys", "len"), ru("state", "4"), wu("hist", "256")],
);
pub(super) static KEY_FIND: Entry = codes(
    "key_find",
    &[wu("state", "4"), wu("hist", "256"), wu("thr", "rows")],
    1,
    Grid::Single,
);
pub(super) static CSR_ROWS: Entry = one_d(
    "csr_rows",
    &[
        ru("row_ptr", "rows_all + 1"),
        ru("idx", "k_total"),
        rf("val", "k_total"),
        wu("row_ptr_c", "rows + 1"),
        wu("idx_c", "cap"),
        wf("val_c", "cap"),
    ],
);

/// state = (prefix 0, mask 0, need k_total, 0), hist = 0: the start of
/// [`batch_threshold`]'s radix select.
/// -> state: (4) u32, hist: (256) u32
pub fn key_init(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    k_total: usize,
    state: &GpuTensor,
    hist: &GpuTensor,
) -> Result<()> {
    let p = Params {
        k: k_total as u32,
        ..Default::default()
    };
    KEY_INIT.call(p).binds(&[state, hist]).record(gpu, enc)
}

/// The 16-bit key prefix T of the k_total-th largest of `keys` (as the twin
/// `reference::codes::batch_threshold`), in state[0], and thr[r] = T for every row: two
/// radix levels (key_hist, key_find) after key_init. Needs 1 <= k_total <= keys.len().
/// keys: (len) u32 -> state: (4) u32, hist: (256) u32 scratch, thr: (rows) u32
pub fn batch_threshold(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    keys: &GpuTensor,
    k_total: usize,
    state: &GpuTensor,
    hist: &GpuTensor,
    thr: &GpuTensor,
) -> Result<()> {
    batch_threshold_chunks(gpu, enc, &[keys], k_total, state, hist, thr)
}

/// [`batch_threshold`] of the concatenation of `keys` (each level's histogram adds up
/// every part before its find).
/// keys: (len_c) u32 each -> state: (4) u32, hist: (256) u32 scratch, thr: (rows) u32
pub fn batch_threshold_chunks(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    keys: &[&GpuTensor],
    k_total: usize,
    state: &GpuTensor,
    hist: &GpuTensor,
    thr: &GpuTensor,
) -> Result<()> {
    let len: usize = keys.iter().map(|k| k.len()).sum();
    if k_total == 0 || k_total > len {
        return Err(Error::Internal(format!(
            "batch_threshold: k_total {k_total} not in 1..={len}"
        )));
    }
    let rows = thr.len();
    key_init(gpu, enc, k_total, state, hist)?;
    for (shift, last) in [(24u32, false), (16, true)] {
        for &part in keys {
            let len = part.len();
            let p = Params {
                n: len as u32,
                shift,
                ..Default::default()
            };
            KEY_HIST
                .call(p)
                .dim("len", len)
                .binds(&[part, state, hist])
                .items_or_skip(len.div_ceil(super::KEY_EPT))
                .record(gpu, enc)?;
        }
        let p = Params {
            n: len as u32,
            rows: rows as u32,
            shift,
            last: last as u32,
            ..Default::default()
        };
        KEY_FIND
            .call(p)
            .dim("rows", rows)
            .binds(&[state, hist, thr])
            .record(gpu, enc)?;
    }
    Ok(())
}

/// Scratch of [`batchtopk_codes`], for any k_total up to the one it was made for.
pub struct BatchScratch {
    pub bmax: GpuTensor,
    pub state: GpuTensor,
    pub hist: GpuTensor,
    pub thr: GpuTensor,
    /// One chunk's candidate lists (the batch's rows when it comes whole): (rows_c, CAND)
    /// latents and keys, (rows_c) counts.
    pub cand: GpuTensor,
    pub cand_key: GpuTensor,
    pub cand_n: GpuTensor,
    /// topk.wgsl batchtopk's scratch.
    pub select: GpuTensor,
}

impl BatchScratch {
    /// For a batch of `rows` rows coming in chunks of at most `chunk_rows` (>= rows: whole).
    pub fn new(
        gpu: &Gpu,
        rows: usize,
        n: usize,
        k_total: usize,
        chunk_rows: usize,
    ) -> Result<BatchScratch> {
        let u = |what: &str, len: usize| gpu.zeros_u32(what, &[len]);
        let c = chunk_rows.min(rows);
        Ok(BatchScratch {
            bmax: u("batch bmax", rows * blocks(n, BLOCK))?,
            state: u("batch state", 4)?,
            hist: u("batch hist", 256)?,
            thr: u("batch thr", rows)?,
            cand: u("batch cand", c * CAND)?,
            cand_key: u("batch cand_key", c * CAND)?,
            cand_n: u("batch cand_n", c)?,
            select: u(
                "batchtopk scratch",
                super::super::topk::batchtopk_scratch_len(rows, n, k_total),
            )?,
        })
    }
}

/// BatchTopK on candidates (see shaders/codes.wgsl): the k_total largest entries of the
/// whole of x, exactly as topk.wgsl's batchtopk on x (same CSR, values and threshold), from
/// each row's list of the entries at or above the block maxima's bound; when a row's list
/// overflows, the selection reads x itself instead. With k_total > rows * blocks(n, BLOCK)
/// (more entries per row than blocks: the bound would be vacuous) it records batchtopk on
/// x alone.
/// x: (rows, n) -> row_ptr: (rows + 1) u32, idx: (k_total) u32, val: (k_total),
/// threshold: (1)
#[allow(clippy::too_many_arguments)]
pub fn batchtopk_codes(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    sc: &BatchScratch,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
) -> Result<()> {
    let (rows, n) = matrix("batchtopk_codes", x)?;
    let bmax = sc.bmax.prefix(&[rows * blocks(n, BLOCK)]);
    if idx.len() <= bmax.len() {
        block_max(gpu, enc, x, BLOCK, None, None, &bmax)?;
    }
    #[rustfmt::skip]
    return batchtopk_codes_chunks(gpu, enc, &[x], &[&bmax], sc, row_ptr, idx, val, threshold);
}

/// [`batchtopk_codes`] with the block maxima already computed (by
/// `gemm::gemm_block_max` in the encoder GEMM's epilogue; `&sc.bmax` may be passed):
/// skips block_max.
/// x: (rows, n), bmax: (rows, blocks(n, BLOCK)) u32 = block_max(x, BLOCK, None, None)
///   -> row_ptr: (rows + 1) u32, idx: (k_total) u32, val: (k_total), threshold: (1)
#[allow(clippy::too_many_arguments)]
pub fn batchtopk_codes_from_bmax(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    bmax: &GpuTensor,
    sc: &BatchScratch,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
) -> Result<()> {
    #[rustfmt::skip]
    return batchtopk_codes_chunks(gpu, enc, &[x], &[bmax], sc, row_ptr, idx, val, threshold);
}

/// [`batchtopk_codes_from_bmax`] of the batch whose rows are the chunks `xs` one after
/// another, each with its block maxima (`bmaxs`): the same codes as of their
/// concatenation. `sc` is made for the batch's rows and chunks of at most the largest
/// chunk's rows (`BatchScratch::new`).
/// xs: (rows_c, n) each, bmaxs: (rows_c, blocks(n, BLOCK)) u32 each
///   -> row_ptr: (rows + 1) u32, idx: (k_total) u32, val: (k_total), threshold: (1)
#[allow(clippy::too_many_arguments)]
pub fn batchtopk_codes_chunks(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    xs: &[&GpuTensor],
    bmaxs: &[&GpuTensor],
    sc: &BatchScratch,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
) -> Result<()> {
    use super::super::topk::{Lists, batchtopk_chunks};
    let kn = "batchtopk_codes";
    let mut shapes = Vec::with_capacity(xs.len());
    for x in xs {
        shapes.push(matrix(kn, x)?);
    }
    let n = shapes.first().map_or(0, |s| s.1);
    let rows: usize = shapes.iter().map(|s| s.0).sum();
    let k_total = idx.len();
    let nb = blocks(n, BLOCK);
    let bad_bmax = bmaxs.len() != xs.len()
        || bmaxs
            .iter()
            .zip(&shapes)
            .any(|(b, &(r, _))| b.len() != r * nb || b.dtype != crate::gpu::DType::U32);
    let widest = shapes.iter().map(|s| s.0).max().unwrap_or(0);
    if bad_bmax || shapes.iter().any(|s| s.1 != n) || sc.thr.len() != rows {
        return Err(Error::Internal(format!(
            "{kn}: chunks {shapes:?} with block maxima {:?} and scratch for {} rows: expected ({nb}) u32 maxima per row of one n, the scratch's rows in all",
            bmaxs.iter().map(|b| &b.shape).collect::<Vec<_>>(),
            sc.thr.len()
        )));
    }
    // The scratch may be sized for a larger k_total (k annealing): its first elements.
    let need = super::super::topk::batchtopk_scratch_len(rows, n, k_total);
    if sc.select.len() < need || sc.cand_n.len() < widest {
        return Err(Error::Internal(format!(
            "{kn}: scratch of {} elements with lists for {} rows; k_total {k_total} needs {need}, the chunks {widest} rows",
            sc.select.len(),
            sc.cand_n.len()
        )));
    }
    let select = sc.select.prefix(&[need]);
    if k_total > rows * nb {
        return batchtopk_chunks(gpu, enc, xs, None, row_ptr, idx, val, threshold, &select);
    }
    batch_threshold_chunks(gpu, enc, bmaxs, k_total, &sc.state, &sc.hist, &sc.thr)?;
    // Chunk c's lists: its rows' entries at or above the bound (thr is T for every row).
    let mut fill = |enc: &mut wgpu::CommandEncoder, c: usize| {
        let rc = shapes[c].0;
        let (cand, key) = (
            sc.cand.prefix(&[rc * CAND]),
            sc.cand_key.prefix(&[rc * CAND]),
        );
        let (cn, thr) = (sc.cand_n.prefix(&[rc]), sc.thr.prefix(&[rc]));
        let path = RowPath::of(gpu);
        topk_candidates(
            gpu, enc, path, xs[c], BLOCK, None, bmaxs[c], &thr, &cand, &key, &cn,
        )
    };
    let lists = Lists {
        cand: &sc.cand,
        cand_key: &sc.cand_key,
        cand_n: &sc.cand_n,
        width: CAND,
        fill: &mut fill,
    };
    #[rustfmt::skip]
    return batchtopk_chunks(gpu, enc, xs, Some(lists), row_ptr, idx, val, threshold, &select);
}

/// Rows row0 .. row0 + rows of the batch's codes as the CSR of a chunk (see the twin
/// `reference::codes::csr_rows`): row_ptr_c from 0, idx_c / val_c the rows' slots.
/// row_ptr: (rows_all + 1) u32, idx: (k_total) u32, val: (k_total)
///   -> row_ptr_c: (rows + 1) u32, idx_c: (cap) u32, val_c: (cap)
#[allow(clippy::too_many_arguments)]
pub fn csr_rows(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    row0: usize,
    row_ptr_c: &GpuTensor,
    idx_c: &GpuTensor,
    val_c: &GpuTensor,
) -> Result<()> {
    let rows_all = row_ptr.len().saturating_sub(1);
    let rows = row_ptr_c.len().saturating_sub(1);
    let cap = idx_c.len();
    if row0 + rows > rows_all || idx.len() != val.len() {
        return Err(Error::Internal(format!(
            "csr_rows: rows {row0}..{} of {rows_all}, idx {:?}, val {:?}",
            row0 + rows,
            idx.shape,
            val.shape
        )));
    }
    let p = Params {
        rows: rows as u32,
        cap: cap as u32,
        row0: row0 as u32,
        ..Default::default()
    };
    #[rustfmt::skip]
    let dims = [("rows_all", rows_all), ("k_total", idx.len()), ("rows", rows), ("cap", cap)];
    CSR_ROWS
        .call(p)
        .dims(&dims)
        .binds(&[row_ptr, idx, val, row_ptr_c, idx_c, val_c])
        .items(cap.max(rows + 1))
        .record(gpu, enc)
}
