//! [`gemm_block_max`]: the encoder GEMM with the block maxima of C that the code stages
//! start from, fused into the GEMM's epilogue where the path allows it (the subgroup texture
//! kernel, gemm_reg) and recorded as `gemm` then `codes::selection::block_max` elsewhere, so
//! callers need no case analysis.

use crate::gpu::{DType, Gpu, GpuTensor};
use crate::kernels::{codes, expect_len, expect_shape};
use crate::{Error, Result};

use super::{
    GemmPath, GemmSpec, GemmTuning, SG_LANES, gemm_impl, gemm_tuned, resolve, texture_fits_for,
};

/// Columns per block of the fused block_max: `codes::BLOCK` (8 lanes x one column quad).
pub const BMAX_BLOCK: usize = codes::BLOCK;

/// Whether [`gemm_block_max_tuned`] records `spec` on `path` with `tuning` as one fused
/// kernel (else as [`gemm_tuned`] then `codes::selection::block_max`): the path resolves to
/// [`GemmPath::Reg`] (any shape), or to [`GemmPath::TextureSubgroup`] on this adapter with
/// a shape the texture path takes and n a multiple of [`BMAX_BLOCK`] (so each block is one
/// aligned group of 8 lanes).
pub fn fuses_block_max(gpu: &Gpu, spec: &GemmSpec, path: GemmPath, tuning: &GemmTuning) -> bool {
    let (p, t) = resolve(gpu, spec, path, tuning);
    if p == GemmPath::Reg {
        return t.rg.unfit(&gpu.limits, true).is_none();
    }
    p == GemmPath::TextureSubgroup
        && gpu.has_subgroups(SG_LANES)
        && texture_fits_for(gpu, spec, &t)
        && spec.n.is_multiple_of(BMAX_BLOCK)
        && matches!(t.sg_rows, 8 | 16 | 32)
}

/// C = alpha * op(A) op(B) + bias + beta * C exactly as [`gemm`] computes it, and
/// bmax[r, j] = max over c in 32 j .. 32 j + 32 of key_of(C[r, c] - off[c]) (no subtraction
/// without off), exactly what `codes::selection::block_max(gpu, enc, c, 32, None, off, bmax)` gives on
/// the stored C: the input the code stages (`codes::selection::topk_codes_from_bmax`,
/// `codes::compaction::activation_codes_from_bmax`, `codes::batch_topk::batchtopk_codes_from_bmax`) take instead of
/// reading C once more. One kernel where [`fuses_block_max`] holds (the block maxima from
/// the accumulators in the GEMM's epilogue, reduced over 8 lanes by subgroup shuffles);
/// elsewhere [`gemm`] then `codes::selection::block_max`, so callers need no case analysis.
/// a: (m, k) or (k, m) when trans_a, b: (k, n) or (n, k) when trans_b, bias: (n), off: (n)
///   -> c: (m, n), bmax: (m, blocks(n, 32)) u32
#[allow(clippy::too_many_arguments)]
pub fn gemm_block_max(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    off: Option<&GpuTensor>,
    bmax: &GpuTensor,
) -> Result<()> {
    if super::coop::takes(gpu, spec) {
        // Experimental (SAEFORGE_COOP_MATRIX=1): the product on cooperative matrices, then
        // the block maxima in their own pass.
        super::coop::gemm_coop(gpu, enc, spec, a, b, bias, c)?;
        return codes::selection::block_max(gpu, enc, c, BMAX_BLOCK, None, off, bmax);
    }
    let t = GemmTuning::of(gpu);
    gemm_block_max_tuned(gpu, enc, spec, a, b, bias, c, off, bmax, GemmPath::Auto, &t)
}

/// [`gemm_block_max`] on a chosen path and tuning (tests and benches): fused when
/// [`fuses_block_max`] holds for them, else [`gemm_tuned`] on them then `codes::selection::block_max`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_block_max_tuned(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    off: Option<&GpuTensor>,
    bmax: &GpuTensor,
    path: GemmPath,
    tuning: &GemmTuning,
) -> Result<()> {
    let kn = "gemm_block_max";
    let GemmSpec { m, n, .. } = *spec;
    expect_shape(kn, "C", c, &[m, n])?;
    if bmax.dtype != DType::U32 {
        return Err(Error::Internal(format!("{kn}: bmax must hold u32")));
    }
    expect_len(kn, "bmax", bmax, m * codes::blocks(n, BMAX_BLOCK))?;
    if let Some(o) = off {
        expect_len(kn, "off", o, n)?;
    }
    if !fuses_block_max(gpu, spec, path, tuning) {
        gemm_tuned(gpu, enc, spec, a, b, bias, c, path, tuning)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        return codes::selection::block_max(gpu, enc, c, BMAX_BLOCK, None, off, bmax);
    }
    gemm_impl(
        gpu,
        enc,
        spec,
        a,
        b,
        bias,
        c,
        path,
        tuning,
        Some((bmax, off)),
    )
}
