//! The register-blocked GEMM for hardware adapters (shaders/gemm_reg.wgsl), what
//! [`GemmPath::Reg`](super::GemmPath::Reg) records: C = alpha * op(A) op(B) + bias +
//! beta * C, optionally with the block maxima of C that the code stages start from
//! (`gemm::gemm_block_max`) fused into its epilogue.
//!
//! Why a second tiled kernel: `gemm_tiled` (4 x 4 outputs per invocation, scalar reads of
//! workgroup memory) reached 0.24 of the FMA ceiling on an NVIDIA H200; the public WGSL
//! products that reach 0.6-0.8 of a GPU's peak all hold 8 x 8 outputs per invocation, read
//! vec4s of A and B from workgroup memory (A staged transposed), double-buffer the stages,
//! and check bounds only on edge tiles. This kernel is that shape; the tile sizes are
//! override constants ([`RegTiles`], chosen per adapter type in `gemm::GemmTuning`).
//! Callers go through `gemm::gemm*` (shapes are checked there, and the launch is recorded
//! from the declarations below); this module holds the tiles and the declarations.

use crate::gpu::{Gpu, Shader};
use crate::{Error, Result};

use super::{BUFFERS, BUFFERS_BMAX, BUFFERS_BMAX_OFF, gemm_entry};
use crate::kernels::decl::{Entry, Slot, Wg, rf, wf, wu};

pub static SHADER: Shader = Shader {
    name: "gemm_reg",
    source: concat!(
        include_str!("../../../shaders/gemm_head.wgsl"),
        include_str!("../../../shaders/gemm_reg.wgsl")
    ),
};

/// Outputs per invocation along each side (fixed in the shader: 16 vec4 accumulators).
pub const PER: usize = 8;
/// Staged vec4 of A (and of B) per invocation per stage, at most (the shader's prefetch
/// registers).
const MAX_SLOTS: usize = 4;
/// Columns per block of the fused block maxima (`codes::BLOCK`).
const BMAX_BLOCK: usize = crate::kernels::codes::BLOCK;

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

/// The override constants every gemm_reg launch sets: the GEMM flags and the tiles (the
/// workgroup, `RG_NT = RG_WX * RG_WY`, follows in the WGSL).
const VARS: &[&str] = &[
    "TRANS_A", "TRANS_B", "HAS_BIAS", "USE_BETA", "RG_WX", "RG_WY", "RG_BK",
];

const fn reg(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry {
        vars: VARS,
        ..gemm_entry(&SHADER, name, binds, [Wg::Derived("RG_NT"), Wg::Fixed(1)])
    }
}

/// gemm_reg; with the fused block maxima gemm_reg_bmax (+ bmax) and gemm_reg_bmax_off
/// (+ bmax, off).
pub static GEMM_REG: Entry = reg("gemm_reg", BUFFERS);
pub static GEMM_REG_BMAX: Entry = reg("gemm_reg_bmax", BUFFERS_BMAX);
pub static GEMM_REG_BMAX_OFF: Entry = reg("gemm_reg_bmax_off", BUFFERS_BMAX_OFF);

/// gemm_reg_bmax over `zn` products at once (`gemm::batched`): each binding a pool whose
/// slots are `za`, `zb`, ... elements apart (the `RG_Z*` constants).
pub static GEMM_REG_BMAX_BATCHED: Entry = Entry {
    vars: &[
        "TRANS_A", "TRANS_B", "HAS_BIAS", "USE_BETA", "RG_WX", "RG_WY", "RG_BK", "RG_ZA", "RG_ZB",
        "RG_ZBIAS", "RG_ZC", "RG_ZBMAX",
    ],
    ..gemm_entry(
        &SHADER,
        "gemm_reg_bmax_batched",
        &[
            rf("a", ">= zn * za"),
            rf("b", ">= zn * zb"),
            rf("bias", ">= zn * zbias"),
            wf("c", ">= zn * zc"),
            wu("bmax", ">= zn * zbmax"),
        ],
        [Wg::Derived("RG_NT"), Wg::Fixed(1)],
    )
};

/// Every entry point of shaders/gemm_reg.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &GEMM_REG,
    &GEMM_REG_BMAX,
    &GEMM_REG_BMAX_OFF,
    &GEMM_REG_BMAX_BATCHED,
];

/// The entry point `gemm::gemm_impl` launches with `tiles` (their override constants set
/// there): gemm_reg (`bmax` None), gemm_reg_bmax (Some(false)) or gemm_reg_bmax_off
/// (Some(true)); an error if the tiles do not fit the adapter.
pub(crate) fn entry(gpu: &Gpu, tiles: &RegTiles, bmax: Option<bool>) -> Result<&'static Entry> {
    if let Some(why) = tiles.unfit(&gpu.limits, bmax.is_some()) {
        return Err(Error::Internal(format!(
            "gemm_reg: tiles {tiles:?} do not fit adapter {}: {why}",
            gpu.info.name
        )));
    }
    Ok(match bmax {
        None => &GEMM_REG,
        Some(false) => &GEMM_REG_BMAX,
        Some(true) => &GEMM_REG_BMAX_OFF,
    })
}
