//! Sparse-code launchers (shaders/codes.wgsl): the k largest positive entries of each row of
//! the pre-activations as CSR (TopK codes after ReLU, AuxK codes over the dead latents), and
//! the dead-latent list.
//!
//! [`topk_codes`] records the whole chain (block_max, topk_threshold, topk_candidates,
//! topk_select, csr_scan, csr_pack) with its intermediates in per-device scratch buffers;
//! each stage also has its own launcher so that tests can hold it to its CPU twin.
//! [`topk_codes_from_bmax`], [`activation_codes_from_bmax`] and [`batchtopk_codes_from_bmax`]
//! are the same chains starting from block maxima the caller already has: those that
//! `gemm::gemm_block_max` writes in the encoder GEMM's epilogue, saving a pass over pre
//! (for JumpReLU the GEMM is given the [`threshold_offsets`]).
//!
//! Why not the radix select of `topk`: it needs a workgroup per row and dozens of barriers
//! (histogram levels, a bitonic sort of up to 1024 candidates), and each barrier splits the
//! shader on lavapipe. Here one pass over the row keeps the maximum of every block of 32
//! entries, a bit search over those maxima bounds the k-th value from below, and only the
//! blocks that reach the bound are read again: a few percent of the row at k = 32 of 16384.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, DType, Gate, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::{expect_len, expect_shape};

pub use crate::reference::codes::{BLOCK, BLOCK_LISTED, CAND, blocks};

pub static SHADER: Shader = Shader {
    name: "codes",
    source: include_str!("../../shaders/codes.wgsl"),
};

/// Invocations per workgroup of the 1-D kernels (`WG`).
const WG: usize = 64;
/// The single workgroup of csr_scan / dead_list (`WG_SCAN`).
const WG_SCAN: usize = 256;
/// topk_select_row: lanes per row (`WG_ROW`); the row's 32 bit-search passes run over
/// chunks of n / WG_ROW, within lavapipe's 65535-iterations-per-invocation loop limit.
const WG_ROW: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    rows: u32,
    n: u32,
    k: u32,
    nb: u32,
    has_cols: u32,
    cap: u32,
    dead_after: u32,
    block: u32,
    has_off: u32,
    eps: f32,
    shift: u32,
    last: u32,
}

fn launch_1d(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    entry: &'static str,
    p: &Params,
    binds: &[Bind],
    len: usize,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let constants = [("WG", WG as f64)];
    let k = Kernel {
        shader: &SHADER,
        entry,
        constants: &constants,
    };
    gpu.dispatch(enc, &k, p, binds, gpu.groups_for(len, WG))
}

fn launch_single(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    entry: &'static str,
    p: &Params,
    binds: &[Bind],
) -> Result<()> {
    let constants = [("WG_SCAN", WG_SCAN as f64)];
    let k = Kernel {
        shader: &SHADER,
        entry,
        constants: &constants,
    };
    gpu.dispatch(enc, &k, p, binds, [1, 1, 1])
}

fn expect_u32(kernel: &str, name: &str, t: &GpuTensor, len: usize) -> Result<()> {
    if t.dtype != DType::U32 {
        return Err(Error::Internal(format!(
            "{kernel}: {name} must hold u32, has {:?}",
            t.dtype
        )));
    }
    expect_len(kernel, name, t, len)
}

fn matrix(kernel: &str, x: &GpuTensor) -> Result<(usize, usize)> {
    match x.shape[..] {
        [rows, n] if n > 0 && n <= u32::MAX as usize / 2 => Ok((rows, n)),
        _ => Err(Error::Internal(format!(
            "{kernel}: x has shape {:?}, expected (rows, n) with n >= 1",
            x.shape
        ))),
    }
}

/// The eligible-column bindings: the list and its count, or x standing in (unread).
fn col_binds<'a>(
    kernel: &str,
    x: &'a GpuTensor,
    n: usize,
    cols: Option<(&'a GpuTensor, &'a GpuTensor)>,
) -> Result<[Bind<'a>; 2]> {
    match cols {
        Some((list, count)) => {
            expect_u32(kernel, "cols", list, n)?;
            expect_u32(kernel, "ncols", count, 1)?;
            Ok([Bind::Read(list), Bind::Read(count)])
        }
        None => Ok([Bind::Read(x), Bind::Read(x)]),
    }
}

fn params(rows: usize, n: usize, k: usize, block: usize, cols: bool) -> Params {
    Params {
        rows: rows as u32,
        n: n as u32,
        k: k as u32,
        nb: blocks(n, block) as u32,
        has_cols: cols as u32,
        block: block as u32,
        ..Default::default()
    }
}

fn expect_block(kernel: &str, block: usize) -> Result<()> {
    if block == 0 || block > 4096 {
        return Err(Error::Internal(format!(
            "{kernel}: block {block} must be in 1..=4096"
        )));
    }
    Ok(())
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
    expect_u32(k, "bmax", bmax, rows * nb)?;
    if let Some(o) = off {
        expect_len(k, "off", o, n)?;
    }
    let [c, cn] = col_binds(k, x, n, cols)?;
    let mut p = params(rows, n, 0, block, cols.is_some());
    p.has_off = off.is_some() as u32;
    let binds = [
        Bind::Read(x),
        c,
        cn,
        Bind::Write(bmax),
        Bind::Read(off.unwrap_or(x)),
    ];
    let e = if cols.is_none() && off.is_none() && n.is_multiple_of(4) && block.is_multiple_of(4) {
        "block_max_vec4"
    } else {
        "block_max"
    };
    launch_1d(gpu, enc, e, &p, &binds, rows * nb)
}

/// thr[r] = max(T, key of the smallest positive f32), T the largest key with zero low 16
/// bits such that at least k blocks of row r have bmax >= T (0 when none).
/// bmax: (rows, nb) u32 -> thr: (rows) u32
pub fn topk_threshold(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    bmax: &GpuTensor,
    rows: usize,
    nb: usize,
    k: usize,
    thr: &GpuTensor,
) -> Result<()> {
    let kn = "topk_threshold";
    expect_u32(kn, "bmax", bmax, rows * nb)?;
    expect_u32(kn, "thr", thr, rows)?;
    let p = Params {
        rows: rows as u32,
        nb: nb as u32,
        k: k as u32,
        ..Default::default()
    };
    // vec4 loads of bmax when its rows are whole vec4s.
    let entry = if nb.is_multiple_of(4) {
        "topk_threshold_vec4"
    } else {
        kn
    };
    let binds = [Bind::Read(bmax), Bind::Write(thr)];
    launch_1d(gpu, enc, entry, &p, &binds, rows)
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
    expect_u32(kn, "bmax", bmax, rows * blocks(n, block))?;
    expect_u32(kn, "thr", thr, rows)?;
    expect_u32(kn, "cand", cand, rows * CAND)?;
    expect_u32(kn, "cand_key", cand_key, rows * CAND)?;
    expect_u32(kn, "cand_n", cand_n, rows)?;
    let [c, cn] = col_binds(kn, x, n, cols)?;
    let p = params(rows, n, 0, block, cols.is_some());
    let binds = [
        Bind::Read(x),
        c,
        cn,
        Bind::Read(bmax),
        Bind::Read(thr),
        Bind::Write(cand),
        Bind::Write(cand_key),
        Bind::Write(cand_n),
    ];
    // vec4 loads of x and bmax when there are no cols and both rows are whole vec4s.
    let vec4 = cols.is_none()
        && n.is_multiple_of(4)
        && block.is_multiple_of(4)
        && n.is_multiple_of(block)
        && blocks(n, block).is_multiple_of(4);
    let entry = if vec4 { "topk_candidates_vec4" } else { kn };
    launch_1d(gpu, enc, entry, &p, &binds, rows)
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
    expect_u32(kn, "cand", cand, rows * CAND)?;
    expect_u32(kn, "cand_key", cand_key, rows * CAND)?;
    expect_u32(kn, "cand_n", cand_n, rows)?;
    expect_u32(kn, "thr", thr, rows)?;
    expect_u32(kn, "sel", sel, rows * k)?;
    expect_len(kn, "sel_val", sel_val, rows * k)?;
    expect_u32(kn, "sel_n", sel_n, rows)?;
    let [c, cn] = col_binds(kn, x, n, cols)?;
    let p = params(rows, n, k, 1, cols.is_some());
    let binds = [
        Bind::Read(x),
        c,
        cn,
        Bind::Read(cand),
        Bind::Read(cand_key),
        Bind::Read(cand_n),
        Bind::Read(thr),
        Bind::Write(sel),
        Bind::Write(sel_val),
        Bind::Write(sel_n),
    ];
    launch_1d(gpu, enc, kn, &p, &binds, rows)?;
    // One workgroup per row; the rows that did not overflow return at once.
    let constants = [("WG_ROW", WG_ROW as f64)];
    let kr = Kernel {
        shader: &SHADER,
        entry: "topk_select_row",
        constants: &constants,
    };
    if rows > 0 {
        gpu.dispatch(enc, &kr, &p, &binds, gpu.groups_for(rows, 1))?;
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
    expect_u32("csr_scan", "counts", counts, rows)?;
    expect_u32("csr_scan", "row_ptr", row_ptr, rows + 1)?;
    let p = Params {
        rows: rows as u32,
        ..Default::default()
    };
    launch_single(
        gpu,
        enc,
        "csr_scan",
        &p,
        &[Bind::Read(counts), Bind::Write(row_ptr)],
    )
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
    let kn = "csr_pack";
    expect_u32(kn, "sel", sel, rows * k)?;
    expect_len(kn, "sel_val", sel_val, rows * k)?;
    expect_u32(kn, "row_ptr", row_ptr, rows + 1)?;
    let cap = idx.len();
    expect_u32(kn, "idx", idx, cap)?;
    expect_len(kn, "val", val, cap)?;
    let p = Params {
        rows: rows as u32,
        k: k as u32,
        cap: cap as u32,
        ..Default::default()
    };
    let binds = [
        Bind::Read(sel),
        Bind::Read(sel_val),
        Bind::Read(row_ptr),
        Bind::Write(idx),
        Bind::Write(val),
    ];
    launch_1d(gpu, enc, kn, &p, &binds, rows * k)
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
    x: &GpuTensor,
    k: usize,
    cols: Option<(&GpuTensor, &GpuTensor)>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
) -> Result<()> {
    topk_chain(gpu, enc, x, k, cols, None, row_ptr, idx, val)
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
    topk_chain(gpu, enc, x, k, None, Some(bmax), row_ptr, idx, val)
}

/// The chain of [`topk_codes`]; with `given` (no cols) the block maxima come from it.
#[allow(clippy::too_many_arguments)]
fn topk_chain(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
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
    expect_u32(kn, "row_ptr", row_ptr, rows + 1)?;
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
    // Scratch buffers may be longer than asked; the stages see the first `len` elements.
    let view = |t: GpuTensor, shape: &[usize]| t.prefix(shape);
    let scratch_bmax;
    let bmax = match given {
        Some(b) => {
            if cols.is_some() {
                return Err(Error::Internal(format!(
                    "{kn}: precomputed block maxima are for all columns (no cols)"
                )));
            }
            expect_u32(kn, "bmax", b, rows * nb)?;
            b
        }
        None => {
            let len = rows * nb;
            scratch_bmax = view(gpu.scratch("codes bmax", DType::U32, len)?, &[len]);
            &scratch_bmax
        }
    };
    let thr = view(gpu.scratch("codes thr", DType::U32, rows)?, &[rows]);
    let cand = view(
        gpu.scratch("codes cand", DType::U32, rows * CAND)?,
        &[rows * CAND],
    );
    let cand_key = view(
        gpu.scratch("codes cand_key", DType::U32, rows * CAND)?,
        &[rows * CAND],
    );
    let cand_n = view(gpu.scratch("codes cand_n", DType::U32, rows)?, &[rows]);
    let sel = view(gpu.scratch("codes sel", DType::U32, rows * k)?, &[rows * k]);
    let sel_val = view(
        gpu.scratch("codes sel_val", DType::F32, rows * k)?,
        &[rows * k],
    );
    let sel_n = view(gpu.scratch("codes sel_n", DType::U32, rows)?, &[rows]);
    if given.is_none() {
        block_max(gpu, enc, x, block, cols, None, bmax)?;
    }
    topk_threshold(gpu, enc, bmax, rows, nb, k, &thr)?;
    #[rustfmt::skip]
    topk_candidates(gpu, enc, x, block, cols, bmax, &thr, &cand, &cand_key, &cand_n)?;
    topk_select(
        gpu, enc, x, k, cols, &cand, &cand_key, &cand_n, &thr, &sel, &sel_val, &sel_n,
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
    expect_u32("dead_list", "since", since, n)?;
    expect_u32("dead_list", "cols", cols, n)?;
    expect_u32("dead_list", "ncols", ncols, 1)?;
    expect_shape("dead_list", "ncols", ncols, &[1])?;
    let p = Params {
        n: n as u32,
        dead_after,
        ..Default::default()
    };
    launch_single(
        gpu,
        enc,
        "dead_list",
        &p,
        &[Bind::Read(since), Bind::Write(cols), Bind::Write(ncols)],
    )
}

/// off[i] = exp(log_thr[i]) - eps.
/// log_thr: (n) -> off: (n)
pub fn threshold_offsets(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    log_thr: &GpuTensor,
    eps: f32,
    off: &GpuTensor,
) -> Result<()> {
    let n = log_thr.len();
    expect_len("threshold_offsets", "off", off, n)?;
    let p = Params {
        n: n as u32,
        eps,
        ..Default::default()
    };
    launch_1d(
        gpu,
        enc,
        "threshold_offsets",
        &p,
        &[Bind::Read(log_thr), Bind::Write(off)],
        n,
    )
}

/// Whether compact_count / compact_write take their vec4 entry points (x and bmax rows
/// whole vec4s, whole blocks).
fn compact_vec4(p: &Params) -> bool {
    p.n.is_multiple_of(4)
        && p.block.is_multiple_of(4)
        && p.n.is_multiple_of(p.block)
        && p.nb.is_multiple_of(4)
}

fn compact_params(
    kernel: &str,
    x: &GpuTensor,
    block: usize,
    bmax: &GpuTensor,
    jumprelu: Option<(&GpuTensor, f32)>,
) -> Result<(usize, Params)> {
    let (rows, n) = matrix(kernel, x)?;
    expect_block(kernel, block)?;
    expect_u32(kernel, "bmax", bmax, rows * blocks(n, block))?;
    let mut p = params(rows, n, 0, block, false);
    if let Some((l, eps)) = jumprelu {
        expect_len(kernel, "log_thr", l, n)?;
        p.has_off = 1;
        p.eps = eps;
    }
    Ok((rows, p))
}

/// Per row, how many entries the activation keeps: ReLU (jumprelu None) pre > 0; JumpReLU
/// pre > theta or |pre - theta| <= eps / 2, theta = exp(log_thr). Reads only the blocks whose
/// bmax (block_max of x, or of x - threshold_offsets for JumpReLU) is a key >= key(0.0).
/// x: (rows, n), bmax: (rows, blocks(n, block)) u32, log_thr: (n) -> counts: (rows) u32
pub fn compact_count(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    block: usize,
    bmax: &GpuTensor,
    jumprelu: Option<(&GpuTensor, f32)>,
    counts: &GpuTensor,
) -> Result<()> {
    let kn = "compact_count";
    let (rows, p) = compact_params(kn, x, block, bmax, jumprelu)?;
    expect_u32(kn, "counts", counts, rows)?;
    let lt = jumprelu.map_or(x, |(l, _)| l);
    let binds = [
        Bind::Read(x),
        Bind::Read(bmax),
        Bind::Read(lt),
        Bind::Write(counts),
    ];
    let entry = if compact_vec4(&p) {
        "compact_count_vec4"
    } else {
        kn
    };
    launch_1d(gpu, enc, entry, &p, &binds, rows)
}

/// The kept entries of each row, ascending, at row_ptr[r] + j for slots < cap: idx the
/// latent, val the activation (pre, or 0 in JumpReLU's window below theta), pre_val pre.
/// x: (rows, n), bmax as compact_count, log_thr: (n), row_ptr: (rows + 1) u32
///   -> idx: (cap) u32, val: (cap), pre_val: (cap)
#[allow(clippy::too_many_arguments)]
pub fn compact_write(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    block: usize,
    bmax: &GpuTensor,
    jumprelu: Option<(&GpuTensor, f32)>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    pre_val: &GpuTensor,
) -> Result<()> {
    let kn = "compact_write";
    let (rows, mut p) = compact_params(kn, x, block, bmax, jumprelu)?;
    expect_u32(kn, "row_ptr", row_ptr, rows + 1)?;
    let cap = idx.len();
    expect_u32(kn, "idx", idx, cap)?;
    expect_len(kn, "val", val, cap)?;
    expect_len(kn, "pre_val", pre_val, cap)?;
    p.cap = cap as u32;
    let lt = jumprelu.map_or(x, |(l, _)| l);
    let binds = [
        Bind::Read(x),
        Bind::Read(bmax),
        Bind::Read(lt),
        Bind::Read(row_ptr),
        Bind::Write(idx),
        Bind::Write(val),
        Bind::Write(pre_val),
    ];
    let entry = if compact_vec4(&p) {
        "compact_write_vec4"
    } else {
        kn
    };
    launch_1d(gpu, enc, entry, &p, &binds, rows)
}

/// The codes of a ReLU (jumprelu None) or JumpReLU activation of x as CSR (latents
/// ascending within a row): row_ptr[rows] = nnz, which may exceed cap = idx.len(), in which
/// case only the first cap entries are written (the caller then takes the dense path; see
/// `crate::kernels::ops::gate_plan`). Records block_max (of x - threshold_offsets for
/// JumpReLU) -> compact_count -> csr_scan -> compact_write, on scratch buffers.
/// x: (rows, n), log_thr: (n) -> row_ptr: (rows + 1) u32, idx: (cap) u32, val, pre_val: (cap)
#[allow(clippy::too_many_arguments)]
pub fn activation_codes(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    jumprelu: Option<(&GpuTensor, f32)>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    pre_val: &GpuTensor,
) -> Result<()> {
    activation_chain(gpu, enc, x, jumprelu, None, row_ptr, idx, val, pre_val)
}

/// [`activation_codes`] with the block maxima already computed (by
/// `gemm::gemm_block_max` in the encoder GEMM's epilogue): skips threshold_offsets and
/// block_max. For JumpReLU, bmax must be of x - off with off from [`threshold_offsets`]
/// (log_thr, eps) (the same log_thr and eps as `jumprelu`); for ReLU, of x.
/// x: (rows, n), log_thr: (n), bmax: (rows, blocks(n, BLOCK)) u32
///   -> row_ptr: (rows + 1) u32, idx: (cap) u32, val, pre_val: (cap)
#[allow(clippy::too_many_arguments)]
pub fn activation_codes_from_bmax(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    jumprelu: Option<(&GpuTensor, f32)>,
    bmax: &GpuTensor,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    pre_val: &GpuTensor,
) -> Result<()> {
    activation_chain(
        gpu,
        enc,
        x,
        jumprelu,
        Some(bmax),
        row_ptr,
        idx,
        val,
        pre_val,
    )
}

/// The chain of [`activation_codes`]; with `given` the block maxima come from it.
#[allow(clippy::too_many_arguments)]
fn activation_chain(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    jumprelu: Option<(&GpuTensor, f32)>,
    given: Option<&GpuTensor>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    pre_val: &GpuTensor,
) -> Result<()> {
    let (rows, n) = matrix("activation_codes", x)?;
    let nb = blocks(n, BLOCK);
    let view = |t: GpuTensor, len: usize| t.prefix(&[len]);
    let counts = view(gpu.scratch("codes counts", DType::U32, rows)?, rows);
    let scratch_bmax;
    let bmax = match given {
        Some(b) => {
            expect_u32("activation_codes", "bmax", b, rows * nb)?;
            b
        }
        None => {
            scratch_bmax = view(gpu.scratch("codes bmax", DType::U32, rows * nb)?, rows * nb);
            let bmax = &scratch_bmax;
            let off = match jumprelu {
                Some((l, eps)) => {
                    let off = view(gpu.scratch("codes off", DType::F32, n)?, n);
                    threshold_offsets(gpu, enc, l, eps, &off)?;
                    Some(off)
                }
                None => None,
            };
            block_max(gpu, enc, x, BLOCK, None, off.as_ref(), bmax)?;
            bmax
        }
    };
    compact_count(gpu, enc, x, BLOCK, bmax, jumprelu, &counts)?;
    csr_scan(gpu, enc, &counts, row_ptr)?;
    compact_write(
        gpu, enc, x, BLOCK, bmax, jumprelu, row_ptr, idx, val, pre_val,
    )
}

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
    expect_u32("key_init", "state", state, 4)?;
    expect_u32("key_init", "hist", hist, 256)?;
    let p = Params {
        k: k_total as u32,
        ..Default::default()
    };
    launch_single(
        gpu,
        enc,
        "key_init",
        &p,
        &[Bind::Write(state), Bind::Write(hist)],
    )
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
    let kn = "batch_threshold";
    let len = keys.len();
    expect_u32(kn, "keys", keys, len)?;
    if k_total == 0 || k_total > len {
        return Err(Error::Internal(format!(
            "{kn}: k_total {k_total} not in 1..={len}"
        )));
    }
    expect_u32(kn, "thr", thr, thr.len())?;
    key_init(gpu, enc, k_total, state, hist)?;
    for (shift, last) in [(24u32, false), (16, true)] {
        let p = Params {
            n: len as u32,
            rows: thr.len() as u32,
            shift,
            last: last as u32,
            ..Default::default()
        };
        #[rustfmt::skip]
        launch_1d(gpu, enc, "key_hist", &p, &[Bind::Read(keys), Bind::Read(state), Bind::Write(hist)], len)?;
        let k = Kernel {
            shader: &SHADER,
            entry: "key_find",
            constants: &[],
        };
        gpu.dispatch(
            enc,
            &k,
            &p,
            &[Bind::Write(state), Bind::Write(hist), Bind::Write(thr)],
            [1, 1, 1],
        )?;
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
    let kn = "candidate_matrix";
    let (rows, n) = matrix(kn, x)?;
    expect_u32(kn, "cand", cand, rows * CAND)?;
    expect_u32(kn, "cand_n", cand_n, rows)?;
    expect_u32(kn, "thr", thr, rows)?;
    expect_shape(kn, "xm", xm, &[rows, CAND])?;
    expect_u32(kn, "state", state, 4)?;
    let p = params(rows, n, 0, 1, false);
    let binds = [
        Bind::Read(x),
        Bind::Read(cand),
        Bind::Read(cand_n),
        Bind::Read(thr),
        Bind::Write(xm),
        Bind::Write(state),
    ];
    launch_1d(gpu, enc, kn, &p, &binds, rows * CAND)
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
    let kn = "candidate_map";
    let rows = row_ptr.len().saturating_sub(1);
    let cap = idx.len();
    expect_u32(kn, "row_ptr", row_ptr, rows + 1)?;
    expect_u32(kn, "cidx", cidx, cap)?;
    expect_u32(kn, "cand", cand, rows * CAND)?;
    expect_u32(kn, "idx", idx, cap)?;
    let p = Params {
        rows: rows as u32,
        cap: cap as u32,
        ..Default::default()
    };
    let binds = [
        Bind::Read(row_ptr),
        Bind::Read(cidx),
        Bind::Read(cand),
        Bind::Write(idx),
    ];
    launch_1d(gpu, enc, kn, &p, &binds, cap)
}

/// Scratch of [`batchtopk_codes`].
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
            select: u(
                "batchtopk scratch",
                // Used on x (rows, n) by the fallback and on the candidates (rows, CAND).
                super::topk::batchtopk_scratch_len(rows, n, k_total)
                    .max(super::topk::batchtopk_scratch_len(rows, CAND, k_total)),
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
    use super::topk::batchtopk;
    let kn = "batchtopk_codes";
    let (rows, n) = matrix(kn, x)?;
    let k_total = idx.len();
    let nb = blocks(n, BLOCK);
    if let Some(b) = given {
        expect_u32(kn, "bmax", b, rows * nb)?;
    }
    if k_total > rows * nb {
        return batchtopk(gpu, enc, x, row_ptr, idx, val, threshold, &sc.select);
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
    super::ops::gate_plan(gpu, enc, gate, &sc.state, 3, 0)?;
    gpu.gated(gate, false, || -> Result<()> {
        #[rustfmt::skip]
        batchtopk(gpu, enc, &sc.xm, row_ptr, &sc.cidx, val, threshold, &sc.select)?;
        candidate_map(gpu, enc, row_ptr, &sc.cidx, &sc.cand, idx)
    })?;
    gpu.gated(gate, true, || {
        batchtopk(gpu, enc, x, row_ptr, idx, val, threshold, &sc.select)
    })
}
