//! BatchTopK from the block maxima: a radix select over the maxima bounds the k_total-th
//! value of the batch (key_init, key_hist, key_find), topk_candidates lists the entries
//! above it, and `topk::batchtopk` runs on that small (rows, CAND) candidate matrix
//! (candidate_matrix, candidate_map), or on x itself when a row's candidates overflow.

use crate::gpu::{Gate, Gpu, GpuTensor};
use crate::{Error, Result};

use super::super::decl::{Entry, Grid, ru, wf, wu};
use super::selection::{block_max, topk_candidates};
use super::{BLOCK, CAND, Params, blocks, codes, matrix, one_d, params, single};

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
pub(super) static CANDIDATE_MATRIX: Entry = one_d(
    "candidate_matrix",
    &[
        super::super::decl::rf("x", "rows, n"),
        ru("cand", "rows, CAND"),
        ru("cand_n", "rows"),
        ru("thr", "rows"),
        wf("xm", "rows, CAND"),
        wu("state", "4"),
    ],
);
pub(super) static CANDIDATE_MAP: Entry = one_d(
    "candidate_map",
    &[
        ru("row_ptr", "rows + 1"),
        ru("cidx", "cap"),
        ru("cand", "rows, CAND"),
        wu("idx", "cap"),
    ],
);

/// state = (prefix 0, mask 0, need k_total, overflow 0), hist = 0: the start of
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
    KEY_INIT.call(p).bind(state).bind(hist).record(gpu, enc)
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
    let len = keys.len();
    if k_total == 0 || k_total > len {
        return Err(Error::Internal(format!(
            "batch_threshold: k_total {k_total} not in 1..={len}"
        )));
    }
    let rows = thr.len();
    key_init(gpu, enc, k_total, state, hist)?;
    for (shift, last) in [(24u32, false), (16, true)] {
        let p = Params {
            n: len as u32,
            rows: rows as u32,
            shift,
            last: last as u32,
            ..Default::default()
        };
        KEY_HIST
            .call(p)
            .dim("len", len)
            .bind(keys)
            .bind(state)
            .bind(hist)
            .items(len)
            .record(gpu, enc)?;
        KEY_FIND
            .call(p)
            .dim("rows", rows)
            .bind(state)
            .bind(hist)
            .bind(thr)
            .record(gpu, enc)?;
    }
    Ok(())
}

/// xm[r, j] = x[r, cand[r, j]] for j < cand_n[r], -inf after; state[3] += the number of
/// rows with cand_n > CAND or thr at or below key(-inf).
/// x: (rows, n), cand: (rows, CAND) u32, cand_n, thr: (rows) u32
///   -> xm: (rows, CAND), state: (4) u32
#[allow(clippy::too_many_arguments)]
pub fn candidate_matrix(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    cand: &GpuTensor,
    cand_n: &GpuTensor,
    thr: &GpuTensor,
    xm: &GpuTensor,
    state: &GpuTensor,
) -> Result<()> {
    let (rows, n) = matrix("candidate_matrix", x)?;
    CANDIDATE_MATRIX
        .call(params(rows, n, 0, 1, false))
        .dims(&[("rows", rows), ("n", n), ("CAND", CAND)])
        .bind(x)
        .bind(cand)
        .bind(cand_n)
        .bind(thr)
        .bind(xm)
        .bind(state)
        .items(rows * CAND)
        .skip_if(rows == 0)
        .record(gpu, enc)
}

/// idx[s] = cand[r, cidx[s]] for the slots s of row r, s < row_ptr[rows] and < cap.
/// row_ptr: (rows + 1) u32, cidx: (cap) u32, cand: (rows, CAND) u32 -> idx: (cap) u32
pub fn candidate_map(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    cidx: &GpuTensor,
    cand: &GpuTensor,
    idx: &GpuTensor,
) -> Result<()> {
    let rows = row_ptr.len().saturating_sub(1);
    let cap = idx.len();
    let p = Params {
        rows: rows as u32,
        cap: cap as u32,
        ..Default::default()
    };
    CANDIDATE_MAP
        .call(p)
        .dims(&[("rows", rows), ("cap", cap), ("CAND", CAND)])
        .bind(row_ptr)
        .bind(cidx)
        .bind(cand)
        .bind(idx)
        .items(cap)
        .skip_if(cap == 0)
        .record(gpu, enc)
}

/// Scratch of [`batchtopk_codes`], for any k_total up to the one it was made for.
pub struct BatchScratch {
    pub bmax: GpuTensor,
    pub state: GpuTensor,
    pub hist: GpuTensor,
    pub thr: GpuTensor,
    pub cand: GpuTensor,
    pub cand_key: GpuTensor,
    pub cand_n: GpuTensor,
    pub xm: GpuTensor,
    pub cidx: GpuTensor,
    /// topk.wgsl batchtopk's scratch.
    pub select: GpuTensor,
}

impl BatchScratch {
    pub fn new(gpu: &Gpu, rows: usize, n: usize, k_total: usize) -> Result<BatchScratch> {
        let u = |what: &str, len: usize| gpu.zeros_u32(what, &[len]);
        use super::super::topk::batchtopk_scratch_len as select_len;
        Ok(BatchScratch {
            bmax: u("batch bmax", rows * blocks(n, BLOCK))?,
            state: u("batch state", 4)?,
            hist: u("batch hist", 256)?,
            thr: u("batch thr", rows)?,
            cand: u("batch cand", rows * CAND)?,
            cand_key: u("batch cand_key", rows * CAND)?,
            cand_n: u("batch cand_n", rows)?,
            xm: gpu.zeros("batch candidates", &[rows, CAND])?,
            cidx: u("batch cidx", k_total)?,
            // Used on x (rows, n) by the fallback and on the candidates (rows, CAND).
            select: u(
                "batchtopk scratch",
                select_len(rows, n, k_total).max(select_len(rows, CAND, k_total)),
            )?,
        })
    }
}

/// BatchTopK on candidates (see shaders/codes.wgsl): the k_total largest entries of the
/// whole of x, exactly as topk.wgsl's batchtopk on x (same CSR, values and threshold), from
/// a (rows, CAND) candidate matrix; when a row's candidates overflow (or the bound is at or
/// below -inf) `gate` runs batchtopk on x itself instead. Records gate_plan; the caller
/// calls `gate.finish` before submitting. With k_total > rows * blocks(n, BLOCK) (more
/// entries per row than blocks: the bound would be vacuous) it records batchtopk on x alone.
/// x: (rows, n) -> row_ptr: (rows + 1) u32, idx: (k_total) u32, val: (k_total),
/// threshold: (1)
#[allow(clippy::too_many_arguments)]
pub fn batchtopk_codes(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    gate: &std::sync::Arc<Gate>,
    sc: &BatchScratch,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
) -> Result<()> {
    batchtopk_chain(gpu, enc, x, None, gate, sc, row_ptr, idx, val, threshold)
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
    gate: &std::sync::Arc<Gate>,
    sc: &BatchScratch,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
) -> Result<()> {
    batchtopk_chain(
        gpu,
        enc,
        x,
        Some(bmax),
        gate,
        sc,
        row_ptr,
        idx,
        val,
        threshold,
    )
}

/// The chain of [`batchtopk_codes`]; with `given` the block maxima come from it.
#[allow(clippy::too_many_arguments)]
fn batchtopk_chain(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    given: Option<&GpuTensor>,
    gate: &std::sync::Arc<Gate>,
    sc: &BatchScratch,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    threshold: &GpuTensor,
) -> Result<()> {
    use super::super::topk::batchtopk;
    let kn = "batchtopk_codes";
    let (rows, n) = matrix(kn, x)?;
    let k_total = idx.len();
    let nb = blocks(n, BLOCK);
    if let Some(b) = given
        && (b.len() != rows * nb || b.dtype != crate::gpu::DType::U32)
    {
        return Err(Error::Internal(format!(
            "{kn}: bmax is {:?} {:?}, expected ({rows} * {nb}) u32",
            b.shape, b.dtype
        )));
    }
    // The scratch may be sized for a larger k_total (k annealing): its first elements.
    use super::super::topk::batchtopk_scratch_len as select_len;
    let need = |cols: usize| select_len(rows, cols, k_total);
    if sc.cidx.len() < k_total || sc.select.len() < need(n).max(need(CAND)) {
        return Err(Error::Internal(format!(
            "{kn}: scratch for k_total {} / {} elements, fewer than k_total {k_total} needs",
            sc.cidx.len(),
            sc.select.len()
        )));
    }
    let (cidx, select_x) = (sc.cidx.prefix(&[k_total]), sc.select.prefix(&[need(n)]));
    let select_cand = sc.select.prefix(&[need(CAND)]);
    if k_total > rows * nb {
        return batchtopk(gpu, enc, x, row_ptr, idx, val, threshold, &select_x);
    }
    let bmax = match given {
        Some(b) => b,
        None => {
            block_max(gpu, enc, x, BLOCK, None, None, &sc.bmax)?;
            &sc.bmax
        }
    };
    batch_threshold(gpu, enc, bmax, k_total, &sc.state, &sc.hist, &sc.thr)?;
    #[rustfmt::skip]
    topk_candidates(gpu, enc, x, BLOCK, None, bmax, &sc.thr, &sc.cand, &sc.cand_key, &sc.cand_n)?;
    candidate_matrix(
        gpu, enc, x, &sc.cand, &sc.cand_n, &sc.thr, &sc.xm, &sc.state,
    )?;
    super::super::ops::gate_plan(gpu, enc, gate, &sc.state, 3, 0)?;
    gpu.gated(gate, false, || -> Result<()> {
        #[rustfmt::skip]
        batchtopk(gpu, enc, &sc.xm, row_ptr, &cidx, val, threshold, &select_cand)?;
        candidate_map(gpu, enc, row_ptr, &cidx, &sc.cand, idx)
    })?;
    gpu.gated(gate, true, || {
        batchtopk(gpu, enc, x, row_ptr, idx, val, threshold, &select_x)
    })
}
