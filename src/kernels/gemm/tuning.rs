//! Tile and workgroup sizes of the GEMM kernels per adapter type ([`GemmTuning`]) and the
//! kernel choice ([`GemmPath`]): a module of its own because they are the knobs tests and
//! benches turn (`gemm_tuned`, `gemm_block_max_tuned`), apart from how a launch is laid out.

use crate::gpu::Gpu;

use super::TL_PER;
use super::reg::RegTiles;

/// Workgroup and tile sizes of the GEMM kernels for one adapter, passed to the shaders as
/// override constants, and the kernel [`gemm`] prefers there. [`GemmTuning::of`] picks by
/// the adapter's device type; tests and benches can pass their own to [`gemm_tuned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTuning {
    /// What [`GemmPath::Auto`] resolves to when the shape allows it: `Texture` (which
    /// becomes `TextureSubgroup` on devices with subgroups of 8+ lanes, and `General` for
    /// shapes the texture path cannot take), `Reg` or `Tiled` (any shape).
    pub preferred: GemmPath,
    /// gemm_tex and gemm_tex_sg*: invocations per workgroup, one column quad each.
    pub tx_wg: usize,
    /// Rows of C per invocation of the subgroup texture kernel (one column quad each):
    /// 8 gemm_tex_sg, 16 gemm_tex_sg16, 32 gemm_tex_sg32. `Auto` uses 8 when m <= 8.
    pub sg_rows: usize,
    /// gemm_tiled: workgroup of wx x wy invocations, each 4x4 elements, so a
    /// (4 wy) x (4 wx) tile of C; bk steps of k staged per barrier pair.
    pub tl_wx: usize,
    pub tl_wy: usize,
    pub tl_bk: usize,
    /// gemm_general: invocations per workgroup, one column each.
    pub gn_wg: usize,
    /// gemm_reg (src/kernels/gemm/reg.rs): workgroup and k step of the register-blocked
    /// kernel.
    pub rg: RegTiles,
}

impl GemmTuning {
    /// Software adapters (lavapipe): textures, A shared by subgroup broadcasts with 16 rows
    /// per invocation when the device has subgroups, and no workgroup memory (each barrier
    /// splits the shader there); figures in shaders/gemm.wgsl.
    pub const SOFTWARE: GemmTuning = GemmTuning {
        preferred: GemmPath::Texture,
        tx_wg: 64,
        sg_rows: 16,
        tl_wx: 16,
        tl_wy: 16,
        tl_bk: 16,
        gn_wg: 64,
        rg: RegTiles {
            wx: 16,
            wy: 16,
            bk: 8,
        },
    };
    /// Discrete and virtual GPUs: gemm_reg with 128 x 128 tiles (16 x 16 invocations of
    /// 8 x 8), 16 k-steps per stage (32 KiB of workgroup memory in two stages, 34 with the
    /// fused block maxima; halved by [`GemmTuning::fitted`] where the adapter allows less).
    /// gemm_tiled, when forced: 64 x 64 tiles, 16 k-steps per stage.
    pub const DISCRETE: GemmTuning = GemmTuning {
        preferred: GemmPath::Reg,
        tl_wx: 16,
        tl_wy: 16,
        tl_bk: 16,
        rg: RegTiles {
            wx: 16,
            wy: 16,
            bk: 16,
        },
        ..Self::SOFTWARE
    };
    /// Integrated GPUs (and adapters of unknown type): the same tiles with 8 k-steps
    /// per stage, half the workgroup memory (more workgroups resident on small GPUs).
    pub const INTEGRATED: GemmTuning = GemmTuning {
        tl_bk: 8,
        rg: RegTiles {
            wx: 16,
            wy: 16,
            bk: 8,
        },
        ..Self::DISCRETE
    };

    pub fn for_device_type(t: wgpu::DeviceType) -> GemmTuning {
        match t {
            wgpu::DeviceType::Cpu => Self::SOFTWARE,
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::VirtualGpu => Self::DISCRETE,
            wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::Other => Self::INTEGRATED,
        }
    }

    /// The tuning for `gpu`'s adapter, shrunk to its workgroup limits; a discrete GPU's
    /// for a software adapter under `SAEFORGE_FORCE_PATH=hardware` (`Gpu::is_software`
    /// false).
    pub fn of(gpu: &Gpu) -> GemmTuning {
        let t = match gpu.info.device_type {
            wgpu::DeviceType::Cpu if !gpu.is_software() => wgpu::DeviceType::DiscreteGpu,
            t => t,
        };
        Self::for_device_type(t).fitted(&gpu.limits)
    }

    /// Halve the tiled workgroup until it fits the adapter's invocation and
    /// workgroup-memory limits, and cap the 1-D workgroups likewise.
    pub fn fitted(mut self, l: &wgpu::Limits) -> GemmTuning {
        let inv = l.max_compute_invocations_per_workgroup as usize;
        let mem = l.max_compute_workgroup_storage_size as usize;
        let tile_bytes = |t: &GemmTuning| 4 * t.tl_bk * TL_PER * (t.tl_wx + t.tl_wy);
        while self.tl_wx * self.tl_wy > inv
            || self.tl_wx > l.max_compute_workgroup_size_x as usize
            || self.tl_wy > l.max_compute_workgroup_size_y as usize
            || tile_bytes(&self) > mem
        {
            if self.tl_wx == 1 && self.tl_wy == 1 {
                break;
            }
            if self.tl_wx >= self.tl_wy {
                self.tl_wx = (self.tl_wx / 2).max(1);
            } else {
                self.tl_wy = (self.tl_wy / 2).max(1);
            }
        }
        let x = inv.min(l.max_compute_workgroup_size_x as usize).max(1);
        self.tx_wg = self.tx_wg.min(x);
        self.gn_wg = self.gn_wg.min(x);
        self.rg = self.rg.fitted(l);
        self
    }
}

/// Which kernel records the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// On software adapters TextureSubgroup (or Texture without subgroups) when the shape
    /// allows, General otherwise; Tiled on hardware adapters ([`GemmTuning::preferred`]).
    Auto,
    Texture,
    /// The texture path with A loaded once per subgroup and shared by subgroupBroadcast
    /// (devices with subgroups of 8 or more lanes; lavapipe).
    TextureSubgroup,
    /// The register-blocked kernel of src/kernels/gemm/reg.rs (hardware adapters).
    Reg,
    Tiled,
    General,
}

impl GemmPath {
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Auto => "auto",
            GemmPath::Texture => "texture",
            GemmPath::TextureSubgroup => "texture_sg",
            GemmPath::Reg => "reg",
            GemmPath::Tiled => "tiled",
            GemmPath::General => "general",
        }
    }
}
