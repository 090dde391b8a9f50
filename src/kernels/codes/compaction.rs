//! The entries a ReLU or JumpReLU keeps, as CSR: (threshold_offsets -> block_max) ->
//! compact_count -> csr_scan -> compact_write, the counting and writing one invocation per
//! row on software adapters and a workgroup per row on hardware GPUs (`_group`;
//! [`RowPath`]).

use crate::Result;
use crate::gpu::{DType, Gpu, GpuTensor};

use super::super::decl::{Call, Entry, Grid, Slot, rf, ru, wf, wu};
use super::selection::{RowPath, block_max, csr_scan};
use super::{
    BLOCK, Params, WG_ROW, blocks, codes, dims, expect_block, matrix, one_d, params, scratch,
};

const COUNT: &[Slot] = &[
    rf("x", "rows, n"),
    ru("bmax", "rows, nb"),
    rf("log_thr", "n"),
    wu("counts", "rows"),
];
const WRITE: &[Slot] = &[
    rf("x", "rows, n"),
    ru("bmax", "rows, nb"),
    rf("log_thr", "n"),
    ru("row_ptr", "rows + 1"),
    wu("idx", "cap"),
    wf("val", "cap"),
    wf("pre_val", "cap"),
];

pub(super) static THRESHOLD_OFFSETS: Entry =
    one_d("threshold_offsets", &[rf("log_thr", "n"), wf("off", "n")]);
pub(super) static COMPACT_COUNT: Entry = one_d("compact_count", COUNT);
pub(super) static COMPACT_COUNT_VEC4: Entry = one_d("compact_count_vec4", COUNT);
pub(super) static COMPACT_WRITE: Entry = one_d("compact_write", WRITE);
pub(super) static COMPACT_WRITE_VEC4: Entry = one_d("compact_write_vec4", WRITE);
pub(super) static COMPACT_COUNT_GROUP: Entry =
    codes("compact_count_group", COUNT, WG_ROW, Grid::Groups);
pub(super) static COMPACT_WRITE_GROUP: Entry =
    codes("compact_write_group", WRITE, WG_ROW, Grid::Groups);

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
    let p = Params {
        n: n as u32,
        eps,
        ..Default::default()
    };
    THRESHOLD_OFFSETS
        .call(p)
        .dim("n", n)
        .binds(&[log_thr, off])
        .items_or_skip(n)
        .record(gpu, enc)
}

/// Whether compact_count / compact_write take their vec4 entry points (x and bmax rows
/// whole vec4s, whole blocks).
fn compact_vec4(p: &Params) -> bool {
    p.n.is_multiple_of(4)
        && p.block.is_multiple_of(4)
        && p.n.is_multiple_of(p.block)
        && p.nb.is_multiple_of(4)
}

/// What compact_count and compact_write read, and on which [`RowPath`]: x (rows, n), its
/// block maxima bmax (rows, blocks(n, block)) u32 (block_max of x, or of x -
/// threshold_offsets for JumpReLU), and JumpReLU's (log_thr: (n), eps) or None for ReLU.
#[derive(Clone, Copy)]
pub struct CompactIn<'a> {
    pub path: RowPath,
    pub x: &'a GpuTensor,
    pub block: usize,
    pub bmax: &'a GpuTensor,
    pub jumprelu: Option<(&'a GpuTensor, f32)>,
}

/// Per row, how many entries the activation keeps: ReLU (jumprelu None) pre > 0; JumpReLU
/// pre > theta or |pre - theta| <= eps / 2, theta = exp(log_thr). Reads only the blocks whose
/// bmax is a key >= key(0.0).
/// x: (rows, n), bmax: (rows, blocks(n, block)) u32, log_thr: (n) -> counts: (rows) u32
pub fn compact_count(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    input: CompactIn,
    counts: &GpuTensor,
) -> Result<()> {
    let e = [&COMPACT_COUNT, &COMPACT_COUNT_VEC4, &COMPACT_COUNT_GROUP];
    compact(gpu, enc, e, input, None, |c| c.bind(counts))
}

/// The kept entries of each row, ascending, at row_ptr[r] + j for slots < cap: idx the
/// latent, val the activation (pre, or 0 in JumpReLU's window below theta), pre_val pre.
/// x: (rows, n), bmax as compact_count, log_thr: (n), row_ptr: (rows + 1) u32
///   -> idx: (cap) u32, val: (cap), pre_val: (cap)
pub fn compact_write(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    input: CompactIn,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    pre_val: &GpuTensor,
) -> Result<()> {
    let e = [&COMPACT_WRITE, &COMPACT_WRITE_VEC4, &COMPACT_WRITE_GROUP];
    compact(gpu, enc, e, input, Some(idx.len()), |c| {
        c.binds(&[row_ptr, idx, val, pre_val])
    })
}

/// A compact_count / compact_write launch (the scalar or vec4 entry point of `e`, one
/// invocation per row, or its workgroup-per-row one): x, bmax and log_thr bound, then
/// `bind`'s outputs; `cap` for compact_write.
fn compact<'a>(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    entries: [&'static Entry; 3],
    input: CompactIn<'a>,
    cap: Option<usize>,
    bind: impl FnOnce(Call<'a, Params>) -> Call<'a, Params>,
) -> Result<()> {
    let CompactIn {
        path,
        x,
        block,
        bmax,
        jumprelu,
    } = input;
    let kernel = entries[0].name;
    let (rows, n) = matrix(kernel, x)?;
    expect_block(kernel, block)?;
    let mut p = params(rows, n, 0, block, false);
    if let Some((_, eps)) = jumprelu {
        p.has_off = 1;
        p.eps = eps;
    }
    if let Some(cap) = cap {
        p.cap = cap as u32;
    }
    let e = path.pick(compact_vec4(&p), entries);
    let call = e
        .call(p)
        .dims(&dims(rows, n, block))
        .binds(&[x, bmax])
        .bind_opt(jumprelu.map(|j| j.0), x);
    bind(call).items_or_skip(rows).record(gpu, enc)
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
    path: RowPath,
    x: &GpuTensor,
    jumprelu: Option<(&GpuTensor, f32)>,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    pre_val: &GpuTensor,
) -> Result<()> {
    activation_chain(
        gpu, enc, path, x, jumprelu, None, row_ptr, idx, val, pre_val,
    )
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
        RowPath::of(gpu),
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
    path: RowPath,
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
    let counts = scratch(gpu, "codes counts", DType::U32, rows)?;
    let scratch_bmax;
    let bmax = match given {
        // Checked against (rows, nb) by compact_count.
        Some(b) => b,
        None => {
            scratch_bmax = scratch(gpu, "codes bmax", DType::U32, rows * nb)?;
            let bmax = &scratch_bmax;
            let off = match jumprelu {
                Some((l, eps)) => {
                    let off = scratch(gpu, "codes off", DType::F32, n)?;
                    threshold_offsets(gpu, enc, l, eps, &off)?;
                    Some(off)
                }
                None => None,
            };
            block_max(gpu, enc, x, BLOCK, None, off.as_ref(), bmax)?;
            bmax
        }
    };
    let input = CompactIn {
        path,
        x,
        block: BLOCK,
        bmax,
        jumprelu,
    };
    compact_count(gpu, enc, input, &counts)?;
    csr_scan(gpu, enc, &counts, row_ptr)?;
    compact_write(gpu, enc, input, row_ptr, idx, val, pre_val)
}
