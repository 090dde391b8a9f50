//! [`gemm_block_max_batched`]: [`gemm_block_max`](super::gemm_block_max) over several
//! products of one shape in ONE launch (gemm_reg_bmax_batched), each product's operands a
//! slot of a pool (`Gpu::pool`): what a sweep records for its same-shape members'
//! encoders when one launch is faster than one per member (`sweep::merge`).
//!
//! Only on the register path (hardware adapters, or `SAEFORGE_FORCE_PATH=hardware`), the
//! one whose per-product launch is the fused gemm_reg_bmax: the batched kernel runs the same
//! tiles and the same arithmetic per output, so each slot is bitwise what that product's
//! own launch writes ([`batches`] says when that holds).

use crate::gpu::{Gpu, GpuTensor};
use crate::kernels::codes;
use crate::{Error, Result};

use super::reg::GEMM_REG_BMAX_BATCHED;
use super::{BMAX_BLOCK, GemmPath, GemmSpec, GemmTuning, Params, fuses_block_max, resolve};

/// One operand of a batched launch: the pool and the elements between its slots.
#[derive(Clone, Copy)]
pub struct Pooled<'a> {
    pub pool: &'a GpuTensor,
    pub stride: usize,
}

/// Whether [`gemm_block_max_batched`] can record `spec` on this adapter: its
/// `gemm_block_max` is the fused register kernel (not the experimental cooperative-matrix
/// path), and the rows of C fit one grid dimension.
pub fn batches(gpu: &Gpu, spec: &GemmSpec) -> bool {
    let t = GemmTuning::of(gpu);
    let (path, t) = resolve(gpu, spec, GemmPath::Auto, &t);
    let rows = spec.m.div_ceil(t.rg.bm());
    path == GemmPath::Reg
        && !super::coop::takes(gpu, spec)
        && fuses_block_max(gpu, spec, GemmPath::Auto, &t)
        && rows <= gpu.limits.max_compute_workgroups_per_dimension as usize
        && spec.n.div_ceil(t.rg.bn()) <= gpu.limits.max_compute_workgroups_per_dimension as usize
}

/// For each of `z` products, slot i of every pool: C_i = op(A_i) op(B_i) + bias_i with the
/// block maxima of C_i (no offsets), exactly what `gemm_block_max(spec, A_i, B_i,
/// Some(bias_i), C_i, None, bmax_i)` writes, in one launch. Slot i of a pool starts
/// `i * stride` elements in; each slot holds its product's operand.
/// a: z slots of (m, k) or (k, m), b: of (k, n) or (n, k), bias: of (n) -> c: of (m, n),
///   bmax: of (m, blocks(n, 32)) u32
#[allow(clippy::too_many_arguments)]
pub fn gemm_block_max_batched(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    z: usize,
    a: Pooled,
    b: Pooled,
    bias: Pooled,
    c: Pooled,
    bmax: Pooled,
) -> Result<()> {
    if !batches(gpu, spec) {
        return Err(Error::Internal(format!(
            "gemm_block_max_batched: {spec:?} is not on the fused register path of adapter {}",
            gpu.info.name
        )));
    }
    let (_, t) = resolve(gpu, spec, GemmPath::Auto, &GemmTuning::of(gpu));
    gemm_block_max_batched_tuned(gpu, enc, spec, z, [a, b, bias, c, bmax], &t)
}

/// [`gemm_block_max_batched`] with the register tiles of `tuning` on any adapter (tests
/// compare it with `gemm_block_max_tuned(.., GemmPath::Reg, tuning)` per slot); operands
/// in the order A, B, bias, C, bmax.
pub fn gemm_block_max_batched_tuned(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    z: usize,
    [a, b, bias, c, bmax]: [Pooled; 5],
    tuning: &GemmTuning,
) -> Result<()> {
    let kn = "gemm_block_max_batched";
    let GemmSpec { m, n, k, .. } = *spec;
    let t = tuning;
    if let Some(why) = t.rg.unfit(&gpu.limits, true) {
        return Err(Error::Internal(format!(
            "{kn}: tiles {:?} do not fit adapter {}: {why}",
            t.rg, gpu.info.name
        )));
    }
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if m.div_ceil(t.rg.bm()) > max || n.div_ceil(t.rg.bn()) > max {
        return Err(Error::Internal(format!(
            "{kn}: {m} x {n} is more tiles than one grid dimension holds"
        )));
    }
    let nb = codes::blocks(n, BMAX_BLOCK);
    let slots = [
        ("A", a, m * k),
        ("B", b, k * n),
        ("bias", bias, n),
        ("C", c, m * n),
        ("bmax", bmax, m * nb),
    ];
    for (what, p, len) in slots {
        if p.stride < len {
            return Err(Error::Internal(format!(
                "{kn}: {what}'s slots are {} elements apart, one holds {len}",
                p.stride
            )));
        }
    }
    if spec.beta != 0.0 {
        return Err(Error::Internal(format!("{kn}: beta must be 0")));
    }
    let params = Params::of(kn, spec)?;
    let u = |what, v| crate::kernels::decl::to_u32(kn, what, v);
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    let stride = |p: Pooled| p.stride as f64;
    GEMM_REG_BMAX_BATCHED
        .call(params)
        .dims(&[
            ("zn", z),
            ("za", a.stride),
            ("zb", b.stride),
            ("zbias", bias.stride),
            ("zc", c.stride),
            ("zbmax", bmax.stride),
        ])
        .set("TRANS_A", flag(spec.trans_a))
        .set("TRANS_B", flag(spec.trans_b))
        .set("HAS_BIAS", 1.0)
        .set("USE_BETA", 0.0)
        .set("RG_WX", t.rg.wx as f64)
        .set("RG_WY", t.rg.wy as f64)
        .set("RG_BK", t.rg.bk as f64)
        .set("RG_ZA", stride(a))
        .set("RG_ZB", stride(b))
        .set("RG_ZBIAS", stride(bias))
        .set("RG_ZC", stride(c))
        .set("RG_ZBMAX", stride(bmax))
        .binds(&[a.pool, b.pool, bias.pool, c.pool, bmax.pool])
        .grid([
            m.div_ceil(t.rg.bm()) as u32,
            n.div_ceil(t.rg.bn()) as u32,
            u("z", z)?,
        ])
        .skip_if(m == 0 || n == 0 || z == 0)
        .record(gpu, enc)
}
