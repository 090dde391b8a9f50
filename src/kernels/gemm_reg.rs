//! The register-blocked GEMM for hardware adapters (shaders/gemm_reg.wgsl), what
//! [`GemmPath::Reg`](super::gemm::GemmPath::Reg) records: C = alpha * op(A) op(B) + bias +
//! beta * C, optionally with the block maxima of C that the code stages start from
//! (`gemm::gemm_block_max`) fused into its epilogue.
//!
//! Why a second tiled kernel: `gemm_tiled` (4 x 4 outputs per invocation, scalar reads of
//! workgroup memory) reached 0.24 of the FMA ceiling on an NVIDIA H200; the public WGSL
//! products that reach 0.6-0.8 of a GPU's peak all hold 8 x 8 outputs per invocation, read
//! vec4s of A and B from workgroup memory (A staged transposed), double-buffer the stages,
//! and check bounds only on edge tiles. This kernel is that shape; the tile sizes are
//! override constants ([`RegTiles`], chosen per adapter type in `gemm::GemmTuning`).
//! Callers go through `gemm::gemm*` (shapes are checked there); this module only lays the
//! launch out.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader, grid_1d};
use crate::{Error, Result};

use super::gemm::GemmSpec;

pub static SHADER: Shader = Shader {
    name: "gemm_reg",
    source: include_str!("../../shaders/gemm_reg.wgsl"),
};

/// Outputs per invocation along each side (fixed in the shader: 16 vec4 accumulators).
pub const PER: usize = 8;
/// Staged vec4 of A (and of B) per invocation per stage, at most (the shader's prefetch
/// registers).
const MAX_SLOTS: usize = 4;
/// Columns per block of the fused block maxima (`codes::BLOCK`).
const BMAX_BLOCK: usize = super::codes::BLOCK;

/// The workgroup of gemm_reg: `wx * wy` invocations (1-D), each 8 x 8 outputs, so a
/// (8 wy) x (8 wx) tile of C; `bk` steps of k per stage (two stages in workgroup memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegTiles {
    pub wx: usize,
    pub wy: usize,
    pub bk: usize,
}

impl RegTiles {
    pub fn bm(&self) -> usize {
        PER * self.wy
    }

    pub fn bn(&self) -> usize {
        PER * self.wx
    }

    /// Staged vec4 per invocation per stage: of A, of B.
    fn slots(&self) -> (usize, usize) {
        let inv = self.wx * self.wy;
        (
            (self.bk * self.bm() / 4).div_ceil(inv),
            (self.bk * self.bn() / 4).div_ceil(inv),
        )
    }

    /// Workgroup memory: two stages of A and B, plus the block maxima when fused.
    pub fn workgroup_bytes(&self, bmax: bool) -> usize {
        let stages = 2 * 4 * self.bk * (self.bm() + self.bn());
        let bm = if bmax {
            4 * self.bm() * self.bn() / BMAX_BLOCK
        } else {
            0
        };
        stages + bm
    }

    /// Why these tiles cannot run on an adapter with limits `l` (None: they can).
    pub fn unfit(&self, l: &wgpu::Limits, bmax: bool) -> Option<String> {
        let inv = self.wx * self.wy;
        let (sa, sb) = self.slots();
        if self.wx == 0 || self.wy == 0 || self.bk == 0 {
            Some("a zero tile size".into())
        } else if !self.wx.is_multiple_of(4) {
            Some(format!("wx {} is not a multiple of 4", self.wx))
        } else if sa > MAX_SLOTS || sb > MAX_SLOTS {
            Some(format!(
                "bk {} stages {sa} / {sb} vec4 per invocation (at most {MAX_SLOTS})",
                self.bk
            ))
        } else if inv > l.max_compute_invocations_per_workgroup as usize
            || inv > l.max_compute_workgroup_size_x as usize
        {
            Some(format!("{inv} invocations per workgroup"))
        } else if self.workgroup_bytes(bmax) > l.max_compute_workgroup_storage_size as usize {
            Some(format!(
                "{} bytes of workgroup memory (the adapter allows {})",
                self.workgroup_bytes(bmax),
                l.max_compute_workgroup_storage_size
            ))
        } else {
            None
        }
    }

    /// Shrunk until they fit `l` (with the fused block maxima): bk halved down to 4, then
    /// the longer workgroup side halved (wx stays a multiple of 4).
    pub fn fitted(mut self, l: &wgpu::Limits) -> RegTiles {
        while self.unfit(l, true).is_some() {
            if self.bk > 4 {
                self.bk /= 2;
            } else if self.wy >= self.wx && self.wy > 1 {
                self.wy /= 2;
            } else if self.wx > 4 {
                self.wx /= 2;
            } else {
                break;
            }
            // keep the staging within the prefetch registers
            while self.slots().0 > MAX_SLOTS || self.slots().1 > MAX_SLOTS {
                self.bk /= 2;
            }
        }
        self
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
    alpha: f32,
    beta: f32,
    _pad1: [u32; 2],
}

/// Records gemm_reg (`fused` None), gemm_reg_bmax (Some((bmax, None))) or
/// gemm_reg_bmax_off (Some((bmax, Some(off)))). The caller (`gemm::gemm_impl`) checked the
/// shapes, m, n > 0 and the scalars; `bias_buf` is bound at binding 3 (A's buffer when
/// there is no bias: never read then).
/// a: (m, k) or (k, m) when trans_a, b: (k, n) or (n, k) when trans_b, bias: (n), off: (n)
///   -> c: (m, n), bmax: (m, ceil(n / 32)) u32
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_reg(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    tiles: RegTiles,
    fused: Option<(&GpuTensor, Option<&GpuTensor>)>,
) -> Result<()> {
    if let Some(why) = tiles.unfit(&gpu.limits, fused.is_some()) {
        return Err(Error::Internal(format!(
            "gemm_reg: tiles {tiles:?} do not fit adapter {}: {why}",
            gpu.info.name
        )));
    }
    let GemmSpec { m, n, k, .. } = *spec;
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        _pad0: 0,
        alpha: spec.alpha,
        beta: spec.beta,
        _pad1: [0; 2],
    };
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    let constants = [
        ("TRANS_A", flag(spec.trans_a)),
        ("TRANS_B", flag(spec.trans_b)),
        ("HAS_BIAS", flag(bias.is_some())),
        ("USE_BETA", flag(spec.beta != 0.0)),
        ("RG_WX", tiles.wx as f64),
        ("RG_WY", tiles.wy as f64),
        ("RG_BK", tiles.bk as f64),
    ];
    let rows = grid_1d(
        m.div_ceil(tiles.bm()) as u32,
        gpu.limits.max_compute_workgroups_per_dimension,
    );
    let groups = [rows[0], n.div_ceil(tiles.bn()) as u32, rows[1]];
    let mut binds = vec![
        Bind::Read(a),
        Bind::Read(b),
        Bind::Read(bias.unwrap_or(a)),
        Bind::Write(c),
    ];
    let entry = match fused {
        None => "gemm_reg",
        Some((bmax, off)) => {
            binds.push(Bind::Write(bmax));
            match off {
                None => "gemm_reg_bmax",
                Some(o) => {
                    binds.push(Bind::Read(o));
                    "gemm_reg_bmax_off"
                }
            }
        }
    };
    gpu.dispatch(
        enc,
        &Kernel {
            shader: &SHADER,
            entry,
            constants: &constants,
        },
        &params,
        &binds,
        groups,
    )
}
