//! GEMM launchers (shaders/gemm.wgsl): C = alpha * op(A) op(B) + bias + beta * C.
//!
//! Three kernels, one contract; [`gemm`] picks by adapter and shape, [`gemm_tuned`] forces one
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
//!   src/kernels/gemm/reg.rs (8 x 8 outputs per invocation, 128 x 128 tiles by default,
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
//!
//! Layout: this file declares every GEMM entry point (gemm_reg's beside its tiles in
//! `reg.rs`) and lays out the launches; `tuning` holds the per-adapter knobs
//! ([`GemmTuning`], [`GemmPath`]), `block_max` the fused block-maxima variant, `batched`
//! that variant over several same-shape products in one launch, `texture` the cached input
//! textures of the texture path.

use crate::gpu::{Gpu, GpuTensor, Shader, grid_1d};
use crate::{Error, Result};

use super::decl::{Call, Entry, Grid, Slot, Uniform, Wg, rf, wf, wu};
use super::expect_shape;

pub use crate::reference::gemm::GemmSpec;

pub mod batched;
mod block_max;
pub mod coop;
pub mod reg;
mod texture;
mod tuning;

pub use block_max::{BMAX_BLOCK, fuses_block_max, gemm_block_max, gemm_block_max_tuned};
pub use texture::texture_of;
pub use tuning::{GemmPath, GemmTuning};

/// The prelude, then shaders/gemm_head.wgsl (the parameters, override constants and epilogue
/// helpers shared with gemm_reg and gemm_subgroup) ahead of its users: naga's override
/// processing panics on an override used before it is declared.
pub static SHADER: Shader = Shader {
    name: "gemm",
    source: concat!(
        include_str!("../../../shaders/prelude.wgsl"),
        include_str!("../../../shaders/gemm_head.wgsl"),
        include_str!("../../../shaders/gemm.wgsl")
    ),
};

/// gemm_tex with A shared by subgroupBroadcast: a module of its own, created only on
/// devices with subgroups (it does not validate elsewhere).
pub static SUBGROUP_SHADER: Shader = Shader {
    name: "gemm_subgroup",
    source: concat!(
        include_str!("../../../shaders/gemm_head.wgsl"),
        include_str!("../../../shaders/gemm_subgroup.wgsl")
    ),
};

/// Lanes gemm_tex_sg broadcasts from: the device's subgroups must be at least this wide.
const SG_LANES: u32 = 8;

/// Rows of C per invocation of gemm_tex / gemm_general (fixed in the shader), and the
/// elements per invocation of gemm_tiled along each side of its tile.
const TX_ROWS: usize = 8;
const GN_ROWS: usize = 4;
const TL_PER: usize = 4;
/// Invocations per workgroup of fill_texture.
const FT_WG: usize = 64;

crate::uniform! {
    struct Params {
        m: u32, n: u32, k: u32, _pad0: u32,
        alpha: f32, beta: f32, _pad1: [u32; 2],
    }
}

impl Params {
    /// The parameters of `spec` for kernel `kn` (its sizes must fit u32).
    fn of(kn: &'static str, spec: &GemmSpec) -> Result<Params> {
        let u = |what, v| super::decl::to_u32(kn, what, v);
        Ok(Params {
            m: u("m", spec.m)?,
            n: u("n", spec.n)?,
            k: u("k", spec.k)?,
            _pad0: 0,
            alpha: spec.alpha,
            beta: spec.beta,
            _pad1: [0; 2],
        })
    }
}

/// The override constants every GEMM entry point takes at launch (the transposes, bias and
/// beta flags); workgroup sizes come from [`GemmTuning`].
const FLAGS: &[&str] = &["TRANS_A", "TRANS_B", "HAS_BIAS", "USE_BETA"];

pub(super) const fn gemm_entry(
    shader: &'static Shader,
    name: &'static str,
    binds: &'static [Slot],
    wg: [Wg; 2],
) -> Entry {
    Entry::new(shader, name, Params::LAYOUT, binds)
        .vars(FLAGS)
        .wg2(wg[0], wg[1])
}

/// The buffer kernels' bindings: A and B as stored ((m, k) or (k, m); (k, n) or (n, k)),
/// bias, C, then for gemm_reg's fused block_max epilogue the block maxima of C and the
/// offsets subtracted before them (as the texture kernels' below).
pub(super) const BUFFERS_BMAX_OFF: &[Slot] = &[
    rf("a", "ar, ac"),
    rf("b", "br, bc"),
    rf("bias", "n"),
    wf("c", "m, n"),
    wu("bmax", "m, nb"),
    rf("off", "n"),
];
pub(super) const BUFFERS: &[Slot] = BUFFERS_BMAX_OFF.split_at(4).0;
pub(super) const BUFFERS_BMAX: &[Slot] = BUFFERS_BMAX_OFF.split_at(5).0;
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
    gemm_tuned(
        gpu,
        enc,
        spec,
        a,
        b,
        bias,
        c,
        GemmPath::Auto,
        &GemmTuning::of(gpu),
    )
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

/// [`gemm`] on a chosen kernel with explicit tile sizes (`tuning.preferred` only matters
/// for `Auto`); `Texture` on a shape it cannot take, or `TextureSubgroup` on a device
/// without subgroups of 8 lanes, is an error.
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
fn gemm_impl<'a>(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &'a GpuTensor,
    b: &'a GpuTensor,
    bias: Option<&'a GpuTensor>,
    c: &'a GpuTensor,
    path: GemmPath,
    tuning: &GemmTuning,
    fused: Option<(&'a GpuTensor, Option<&'a GpuTensor>)>,
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
    let params = Params::of("gemm", spec)?;
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
    // Launch-time constants of an entry.
    let flags = |e: &'static Entry| {
        e.call(params)
            .dims(&dims)
            .set("TRANS_A", flag(spec.trans_a))
            .set("TRANS_B", flag(spec.trans_b))
            .set("HAS_BIAS", flag(bias.is_some()))
            .set("USE_BETA", flag(spec.beta != 0.0))
            .skip_if(m == 0 || n == 0)
    };
    // The buffer paths' bindings: A, B, bias, C; without a bias, binding 3 still needs a
    // buffer: A's, which the kernel never reads then.
    let buffers = |call: Call<'a, Params>| call.bind(a).bind(b).bind_opt(bias, a).bind(c);
    let max = gpu.limits.max_compute_workgroups_per_dimension;
    let grid = |rows_per: usize, cols_per: usize| {
        let rows = grid_1d(m.div_ceil(rows_per) as u32, max);
        [rows[0], n.div_ceil(cols_per) as u32, rows[1]]
    };
    if m == 0 || n == 0 {
        // Checked as the buffer kernel would take it; nothing to record.
        return buffers(flags(&GEMM_GENERAL).set("GN_WG", 1.0))
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
            let call = flags(e)
                .set(wg, t.tx_wg as f64)
                .texture(&va)
                .texture(&vb)
                .bind_opt(bias, a)
                .bind(c)
                .grid(grid(rows_per, 4 * t.tx_wg));
            bind_fused(call, fused).record(gpu, enc)
        }
        GemmPath::Reg => {
            let e = reg::entry(gpu, &t.rg, fused.map(|(_, off)| off.is_some()))?;
            let call = flags(e)
                .set("RG_WX", t.rg.wx as f64)
                .set("RG_WY", t.rg.wy as f64)
                .set("RG_BK", t.rg.bk as f64);
            let call = buffers(call).grid(grid(t.rg.bm(), t.rg.bn()));
            bind_fused(call, fused).record(gpu, enc)
        }
        GemmPath::Tiled => {
            let call = flags(&GEMM_TILED)
                .set("TL_WX", t.tl_wx as f64)
                .set("TL_WY", t.tl_wy as f64)
                .set("TL_BK", t.tl_bk as f64);
            buffers(call)
                .grid(grid(TL_PER * t.tl_wy, TL_PER * t.tl_wx))
                .record(gpu, enc)
        }
        GemmPath::General => buffers(flags(&GEMM_GENERAL).set("GN_WG", t.gn_wg as f64))
            .grid(grid(GN_ROWS, t.gn_wg))
            .record(gpu, enc),
    }
}

/// The fused block_max epilogue's bindings after C: bmax, then off if given.
fn bind_fused<'a>(
    call: Call<'a, Params>,
    fused: Option<(&'a GpuTensor, Option<&'a GpuTensor>)>,
) -> Call<'a, Params> {
    match fused {
        None => call,
        Some((bmax, None)) => call.bind(bmax),
        Some((bmax, Some(off))) => call.bind(bmax).bind(off),
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
