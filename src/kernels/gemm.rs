//! GEMM launchers (shaders/gemm.wgsl): C = alpha * op(A) op(B) + bias + beta * C.
//!
//! Three kernels, one contract; [`gemm`] picks by adapter and shape, [`gemm_with`] forces one
//! (tests run every path on every adapter):
//!
//! * [`GemmPath::Texture`] (software adapters): lavapipe compiles each storage-buffer load in
//!   a loop into a per-lane loop with branches, while a read-only storage-texture load is a
//!   branch-free gather, about 6x cheaper. So A and B are copied (in the encoder, no
//!   readback) into rgba32float textures laid out exactly like the buffers, and the kernel
//!   reads texels. Needs k and n divisible by 4 and stored row lengths that the texture copy
//!   accepts (multiples of 64 floats, or a single row); see shaders/gemm.wgsl for the figures.
//! * [`GemmPath::TextureSubgroup`] (software adapters with wgpu's SUBGROUP feature and
//!   subgroups of 8+ lanes, as lavapipe has): the texture path with each A texel loaded by
//!   one lane and shared by subgroupBroadcast (shaders/gemm_subgroup.wgsl), 16 rows per
//!   invocation by default; ~1.5x the texture path on lavapipe.
//! * [`GemmPath::Reg`] (hardware adapters): the register-blocked kernel of
//!   src/kernels/gemm_reg.rs (8 x 8 outputs per invocation, 128 x 128 tiles by default,
//!   double-buffered stages), its tile sizes per adapter type ([`GemmTuning::rg`]), the
//!   block maxima fused into its epilogue.
//! * [`GemmPath::Tiled`]: tiles staged in workgroup memory, 4 x 4 per invocation, their
//!   sizes per adapter type ([`GemmTuning`]); what hardware adapters used before `Reg`.
//! * [`GemmPath::General`]: any shape, plain storage buffers, no workgroup memory; what
//!   software adapters use for shapes the texture path cannot take.
//!
//! [`gemm_block_max`] also writes the block maxima of C that the code stages of
//! src/kernels/codes.rs start from (`codes::selection::block_max`, blocks of 32 columns), in the subgroup
//! kernel's epilogue where it can (shuffles over the 8 lanes of a block) and in gemm_reg's
//! (workgroup atomics), saving the code stages a full pass over C; elsewhere it records
//! `gemm` then `codes::selection::block_max`.
//!
//! `SAEFORGE_FORCE_PATH=hardware` makes a software adapter (lavapipe) take the kernels and
//! launch shapes of a discrete GPU: [`GemmTuning::of`] and `Gpu::is_software` (which the
//! other kernel families branch on) answer as for a hardware adapter, so the test suites
//! check on a CPU what a real GPU will run. Unset (or empty) is the default; any other value
//! is refused when the device opens.
//!
//! The texture path's textures are cached per (buffer, shape) on the device ([`texture_of`])
//! and refilled only when their buffer was written since, so a training step creates nothing
//! after its first step and copies W_enc once even though two products read it.

use crate::gpu::{Gpu, GpuTensor, Shader, grid_1d};
use crate::{Error, Result};

use super::decl::{Entry, Grid, Slot, Uniform, Wg, rf, wf, wu};
use super::expect_shape;
use super::gemm_reg::{self, RegTiles};

pub use crate::reference::gemm::GemmSpec;

pub static SHADER: Shader = crate::shader!("gemm");

/// gemm_tex with A shared by subgroupBroadcast: a module of its own, created only on
/// devices with subgroups (it does not validate elsewhere).
pub static SUBGROUP_SHADER: Shader = Shader {
    name: "gemm_subgroup",
    source: include_str!("../../shaders/gemm_subgroup.wgsl"),
};

/// Lanes gemm_tex_sg broadcasts from: the device's subgroups must be at least this wide.
const SG_LANES: u32 = 8;

/// Rows of C per invocation of gemm_tex / gemm_general (fixed in the shader), and the
/// elements per invocation of gemm_tiled along each side of its tile.
const TX_ROWS: usize = 8;
const GN_ROWS: usize = 4;
const TL_PER: usize = 4;

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
    /// gemm_reg (src/kernels/gemm_reg.rs): workgroup and k step of the register-blocked
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
    /// The register-blocked kernel of src/kernels/gemm_reg.rs (hardware adapters).
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

crate::uniform! {
    struct Params {
        m: u32, n: u32, k: u32, _pad0: u32,
        alpha: f32, beta: f32, _pad1: [u32; 2],
    }
}

/// The override constants every GEMM entry point takes at launch (the transposes, bias and
/// beta flags); workgroup sizes come from [`GemmTuning`].
const FLAGS: &[&str] = &["TRANS_A", "TRANS_B", "HAS_BIAS", "USE_BETA"];

const fn gemm_entry(
    shader: &'static Shader,
    name: &'static str,
    binds: &'static [Slot],
    wg: [Wg; 2],
) -> Entry {
    Entry::new(shader, name, Params::LAYOUT, binds)
        .vars(FLAGS)
        .wg2(wg[0], wg[1])
}

/// A and B as stored ((m, k) or (k, m); (k, n) or (n, k)), bias, C.
const BUFFERS: &[Slot] = &[
    rf("a", "ar, ac"),
    rf("b", "br, bc"),
    rf("bias", "n"),
    wf("c", "m, n"),
];
/// The texture kernels' bindings: A and B as rgba32float textures of the stored layouts,
/// bias, C, then for the fused block_max epilogue the block maxima of C and the offsets
/// subtracted before them (`_bmax` entry points take the first 5, `_bmax_off` all 6).
const TEXTURES_BMAX_OFF: &[Slot] = &[
    Slot::texture("a", "ar, ac / 4"),
    Slot::texture("b", "br, bc / 4"),
    rf("bias", "n"),
    wf("c", "m, n"),
    wu("bmax", "m, nb"),
    rf("off", "n"),
];
const TEXTURES: &[Slot] = TEXTURES_BMAX_OFF.split_at(4).0;
const TEXTURES_BMAX: &[Slot] = TEXTURES_BMAX_OFF.split_at(5).0;

const fn sg(name: &'static str, binds: &'static [Slot]) -> Entry {
    gemm_entry(
        &SUBGROUP_SHADER,
        name,
        binds,
        [Wg::Var("SG_WG"), Wg::Fixed(1)],
    )
}

pub static GEMM_TEX: Entry = gemm_entry(
    &SHADER,
    "gemm_tex",
    TEXTURES,
    [Wg::Var("TX_WG"), Wg::Fixed(1)],
);
pub static GEMM_TILED: Entry = Entry {
    vars: &["TRANS_A", "TRANS_B", "HAS_BIAS", "USE_BETA", "TL_BK"],
    ..gemm_entry(
        &SHADER,
        "gemm_tiled",
        BUFFERS,
        [Wg::Var("TL_WX"), Wg::Var("TL_WY")],
    )
};
pub static GEMM_GENERAL: Entry = gemm_entry(
    &SHADER,
    "gemm_general",
    BUFFERS,
    [Wg::Var("GN_WG"), Wg::Fixed(1)],
);
pub static FILL_TEXTURE: Entry = Entry::new(
    &SHADER,
    "fill_texture",
    Params::LAYOUT,
    &[
        rf("src", "rows, cols"),
        Slot::texture_write("dst", "rows, cols / 4"),
    ],
)
.consts(&[("FT_WG", FT_WG as f64)])
.wg(Wg::Fixed(FT_WG as u32))
.grid(Grid::Items);
pub static GEMM_TEX_SG: Entry = sg("gemm_tex_sg", TEXTURES);
pub static GEMM_TEX_SG16: Entry = sg("gemm_tex_sg16", TEXTURES);
pub static GEMM_TEX_SG32: Entry = sg("gemm_tex_sg32", TEXTURES);
pub static GEMM_TEX_SG_BMAX: Entry = sg("gemm_tex_sg_bmax", TEXTURES_BMAX);
pub static GEMM_TEX_SG16_BMAX: Entry = sg("gemm_tex_sg16_bmax", TEXTURES_BMAX);
pub static GEMM_TEX_SG32_BMAX: Entry = sg("gemm_tex_sg32_bmax", TEXTURES_BMAX);
pub static GEMM_TEX_SG_BMAX_OFF: Entry = sg("gemm_tex_sg_bmax_off", TEXTURES_BMAX_OFF);
pub static GEMM_TEX_SG16_BMAX_OFF: Entry = sg("gemm_tex_sg16_bmax_off", TEXTURES_BMAX_OFF);
pub static GEMM_TEX_SG32_BMAX_OFF: Entry = sg("gemm_tex_sg32_bmax_off", TEXTURES_BMAX_OFF);

/// Every entry point of shaders/gemm.wgsl and shaders/gemm_subgroup.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &GEMM_TEX,
    &GEMM_TILED,
    &GEMM_GENERAL,
    &FILL_TEXTURE,
    &GEMM_TEX_SG,
    &GEMM_TEX_SG16,
    &GEMM_TEX_SG32,
    &GEMM_TEX_SG_BMAX,
    &GEMM_TEX_SG16_BMAX,
    &GEMM_TEX_SG32_BMAX,
    &GEMM_TEX_SG_BMAX_OFF,
    &GEMM_TEX_SG16_BMAX_OFF,
    &GEMM_TEX_SG32_BMAX_OFF,
];

/// C = alpha * op(A) op(B) + bias + beta * C, on the kernel [`GemmPath::Auto`] picks.
/// a: (m, k) or (k, m) when trans_a, b: (k, n) or (n, k) when trans_b, bias: (n) -> c: (m, n).
/// beta == 0: C is not read (it may hold NaN).
pub fn gemm(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<()> {
    gemm_with(gpu, enc, spec, a, b, bias, c, GemmPath::Auto)
}

/// The kernel [`gemm`] uses for `spec` on this adapter (never `Auto`).
pub fn auto_path(gpu: &Gpu, spec: &GemmSpec) -> GemmPath {
    auto_path_for(gpu, spec, &GemmTuning::of(gpu))
}

fn auto_path_for(gpu: &Gpu, spec: &GemmSpec, tuning: &GemmTuning) -> GemmPath {
    match tuning.preferred {
        GemmPath::Texture | GemmPath::TextureSubgroup if texture_fits_for(gpu, spec, tuning) => {
            if gpu.has_subgroups(SG_LANES) {
                GemmPath::TextureSubgroup
            } else {
                GemmPath::Texture
            }
        }
        GemmPath::Texture | GemmPath::TextureSubgroup | GemmPath::General => GemmPath::General,
        GemmPath::Reg => GemmPath::Reg,
        GemmPath::Tiled | GemmPath::Auto => GemmPath::Tiled,
    }
}

/// Whether [`GemmPath::Texture`] can take `spec` on this adapter.
pub fn texture_fits(gpu: &Gpu, spec: &GemmSpec) -> bool {
    texture_fits_for(gpu, spec, &GemmTuning::of(gpu))
}

fn texture_fits_for(gpu: &Gpu, spec: &GemmSpec, tuning: &GemmTuning) -> bool {
    let max = gpu.limits.max_texture_dimension_2d as usize;
    let copyable = |[rows, cols]: [usize; 2]| {
        cols.is_multiple_of(4)
            && (rows == 1 || cols.is_multiple_of(64))
            && cols / 4 <= max
            && rows <= max
    };
    let max_groups = gpu.limits.max_compute_workgroups_per_dimension as usize;
    spec.m > 0
        && spec.k > 0
        && spec.k.is_multiple_of(4)
        && spec.n.is_multiple_of(4)
        && (spec.n / 4).div_ceil(tuning.tx_wg) <= max_groups
        && copyable(spec.a_shape())
        && copyable(spec.b_shape())
}

/// [`gemm`] on a chosen kernel; `Texture` on a shape it cannot take, or
/// `TextureSubgroup` on a device without subgroups of 8 lanes, is an error.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    path: GemmPath,
) -> Result<()> {
    gemm_tuned(gpu, enc, spec, a, b, bias, c, path, &GemmTuning::of(gpu))
}

/// [`gemm_with`] with explicit tile sizes (`tuning.preferred` only matters for `Auto`).
#[allow(clippy::too_many_arguments)]
pub fn gemm_tuned(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    path: GemmPath,
    tuning: &GemmTuning,
) -> Result<()> {
    gemm_impl(gpu, enc, spec, a, b, bias, c, path, tuning, None)
}

/// [`gemm_tuned`], and with `fused` = (bmax, off) on the subgroup texture path or the
/// register path the fused block_max epilogue (the caller checked [`fuses_block_max`]).
#[allow(clippy::too_many_arguments)]
fn gemm_impl(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    path: GemmPath,
    tuning: &GemmTuning,
    fused: Option<(&GpuTensor, Option<&GpuTensor>)>,
) -> Result<()> {
    let GemmSpec { m, n, k, .. } = *spec;
    expect_shape("gemm", "A", a, &spec.a_shape())?;
    expect_shape("gemm", "B", b, &spec.b_shape())?;
    if !spec.alpha.is_finite() || !spec.beta.is_finite() {
        return Err(Error::Internal(format!(
            "gemm: alpha {} and beta {} must be finite",
            spec.alpha, spec.beta
        )));
    }
    let u = |what, v| super::decl::to_u32("gemm", what, v);
    let params = Params {
        m: u("m", m)?,
        n: u("n", n)?,
        k: u("k", k)?,
        _pad0: 0,
        alpha: spec.alpha,
        beta: spec.beta,
        _pad1: [0; 2],
    };
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    let [ar, ac] = spec.a_shape();
    let [br, bc] = spec.b_shape();
    let dims = [
        ("m", m),
        ("n", n),
        ("k", k),
        ("ar", ar),
        ("ac", ac),
        ("br", br),
        ("bc", bc),
        ("nb", super::codes::blocks(n, BMAX_BLOCK)),
    ];
    let (path, t) = resolve(gpu, spec, path, tuning);
    if fused.is_some() && !matches!(path, GemmPath::TextureSubgroup | GemmPath::Reg) {
        return Err(Error::Internal(format!(
            "gemm: the fused block_max needs the subgroup texture or register path, not {}",
            path.name()
        )));
    }
    // Launch-time constants and (for the buffer paths) bindings of an entry; without a
    // bias, binding 3 still needs a buffer: A's, which the kernel never reads then.
    let flags = |e: &'static Entry| {
        e.call(params)
            .dims(&dims)
            .set("TRANS_A", flag(spec.trans_a))
            .set("TRANS_B", flag(spec.trans_b))
            .set("HAS_BIAS", flag(bias.is_some()))
            .set("USE_BETA", flag(spec.beta != 0.0))
            .skip_if(m == 0 || n == 0)
    };
    let max = gpu.limits.max_compute_workgroups_per_dimension;
    let grid = |rows_per: usize, cols_per: usize| {
        let rows = grid_1d(m.div_ceil(rows_per) as u32, max);
        [rows[0], n.div_ceil(cols_per) as u32, rows[1]]
    };
    if m == 0 || n == 0 {
        // Checked as the buffer kernel would take it; nothing to record.
        return flags(&GEMM_GENERAL)
            .set("GN_WG", 1.0)
            .bind(a)
            .bind(b)
            .bind_opt(bias, a)
            .bind(c)
            .grid([1, 1, 1])
            .record(gpu, enc);
    }
    match path {
        GemmPath::Auto => unreachable!("resolved above"),
        GemmPath::Texture | GemmPath::TextureSubgroup => {
            if !texture_fits_for(gpu, spec, &t) {
                return Err(Error::Internal(format!(
                    "gemm: the texture path cannot take {spec:?} on adapter {}",
                    gpu.info.name
                )));
            }
            let (e, rows_per, wg) = if path == GemmPath::Texture {
                (&GEMM_TEX, TX_ROWS, "TX_WG")
            } else {
                if !gpu.has_subgroups(SG_LANES) {
                    return Err(Error::Internal(format!(
                        "gemm: adapter {} has no subgroups of {SG_LANES} lanes",
                        gpu.info.name
                    )));
                }
                let e = sg_entry(t.sg_rows, fused.map(|(_, off)| off.is_some()))?;
                (e, t.sg_rows, "SG_WG")
            };
            let va = texture_of(gpu, enc, a, spec.a_shape())?;
            let vb = texture_of(gpu, enc, b, spec.b_shape())?;
            let mut call = flags(e)
                .set(wg, t.tx_wg as f64)
                .texture(&va)
                .texture(&vb)
                .bind_opt(bias, a)
                .bind(c)
                .grid(grid(rows_per, 4 * t.tx_wg));
            if let Some((bmax, off)) = fused {
                call = call.bind(bmax);
                if let Some(o) = off {
                    call = call.bind(o);
                }
            }
            call.record(gpu, enc)
        }
        GemmPath::Reg => gemm_reg::gemm_reg(gpu, enc, spec, a, b, bias, c, t.rg, fused),
        GemmPath::Tiled => flags(&GEMM_TILED)
            .set("TL_WX", t.tl_wx as f64)
            .set("TL_WY", t.tl_wy as f64)
            .set("TL_BK", t.tl_bk as f64)
            .bind(a)
            .bind(b)
            .bind_opt(bias, a)
            .bind(c)
            .grid(grid(TL_PER * t.tl_wy, TL_PER * t.tl_wx))
            .record(gpu, enc),
        GemmPath::General => flags(&GEMM_GENERAL)
            .set("GN_WG", t.gn_wg as f64)
            .bind(a)
            .bind(b)
            .bind_opt(bias, a)
            .bind(c)
            .grid(grid(GN_ROWS, t.gn_wg))
            .record(gpu, enc),
    }
}

/// The kernel `path` records `spec` on (never `Auto`) and the tuning it runs with: `Auto`
/// takes 8 rows per invocation for m <= 8 (a single input row wastes less).
fn resolve(
    gpu: &Gpu,
    spec: &GemmSpec,
    path: GemmPath,
    tuning: &GemmTuning,
) -> (GemmPath, GemmTuning) {
    let mut t = *tuning;
    match path {
        GemmPath::Auto => {
            if spec.m <= 8 {
                t.sg_rows = 8;
            }
            (auto_path_for(gpu, spec, &t), t)
        }
        p => (p, t),
    }
}

/// The subgroup texture entry point for `rows` rows per invocation; with `bmax` = Some(has
/// off) its fused block_max variant.
fn sg_entry(rows: usize, bmax: Option<bool>) -> Result<&'static Entry> {
    Ok(match (rows, bmax) {
        (8, None) => &GEMM_TEX_SG,
        (16, None) => &GEMM_TEX_SG16,
        (32, None) => &GEMM_TEX_SG32,
        (8, Some(false)) => &GEMM_TEX_SG_BMAX,
        (16, Some(false)) => &GEMM_TEX_SG16_BMAX,
        (32, Some(false)) => &GEMM_TEX_SG32_BMAX,
        (8, Some(true)) => &GEMM_TEX_SG_BMAX_OFF,
        (16, Some(true)) => &GEMM_TEX_SG16_BMAX_OFF,
        (32, Some(true)) => &GEMM_TEX_SG32_BMAX_OFF,
        (r, _) => {
            return Err(Error::Internal(format!(
                "gemm: GemmTuning::sg_rows {r} is not 8, 16 or 32"
            )));
        }
    })
}

// ------------------------------------------------------------------ fused block_max

/// Columns per block of the fused block_max: `codes::BLOCK` (8 lanes x one column quad).
pub const BMAX_BLOCK: usize = super::codes::BLOCK;

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
    if bmax.dtype != crate::gpu::DType::U32 {
        return Err(Error::Internal(format!("{kn}: bmax must hold u32")));
    }
    super::expect_len(kn, "bmax", bmax, m * super::codes::blocks(n, BMAX_BLOCK))?;
    if let Some(o) = off {
        super::expect_len(kn, "off", o, n)?;
    }
    if !fuses_block_max(gpu, spec, path, tuning) {
        gemm_tuned(gpu, enc, spec, a, b, bias, c, path, tuning)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        return super::codes::selection::block_max(gpu, enc, c, BMAX_BLOCK, None, off, bmax);
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

// ------------------------------------------------------------------ texture path

/// The rgba32float texture holding the (rows, cols) tensor `t` (cols / 4 texels per row),
/// cached per (buffer, shape) on the device and refreshed only when the buffer was written
/// since: by a copy, or, inside a gate (`Gpu::gated`), by the gated `fill_texture` kernel
/// (a copy cannot be skipped on the device). cols must be a multiple of 4 and, for the
/// copy, a multiple of 64 when rows > 1 (see `texture_fits`).
/// t: (rows, cols) -> its texture view
pub fn texture_of(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    t: &GpuTensor,
    [rows, cols]: [usize; 2],
) -> Result<wgpu::TextureView> {
    if t.len() != rows * cols || !cols.is_multiple_of(4) {
        return Err(Error::Internal(format!(
            "texture_of: tensor {:?} as ({rows}, {cols})",
            t.shape
        )));
    }
    let (texture, view, fresh) = gpu.texture_slot(&t.buf, rows, cols);
    if fresh {
        return Ok(view);
    }
    if gpu.is_gated() {
        let p = Params {
            m: rows as u32,
            n: (cols / 4) as u32,
            ..Default::default()
        };
        FILL_TEXTURE
            .call(p)
            .dims(&[("rows", rows), ("cols", cols)])
            .bind(t)
            .texture_write(&view)
            .items(rows * cols / 4)
            .record(gpu, enc)?;
        return Ok(view);
    }
    let size = wgpu::Extent3d {
        width: (cols / 4) as u32,
        height: rows as u32,
        depth_or_array_layers: 1,
    };
    enc.copy_buffer_to_texture(
        wgpu::TexelCopyBufferInfo {
            buffer: &t.buf,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: (rows > 1).then_some((cols * 4) as u32),
                rows_per_image: None,
            },
        },
        wgpu::TexelCopyTextureInfo {
            texture: &texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        size,
    );
    gpu.texture_filled(&t.buf, rows, cols);
    Ok(view)
}

/// Invocations per workgroup of fill_texture.
const FT_WG: usize = 64;
