//! Optimizer launchers (shaders/optim.wgsl): AdamW, global gradient-norm clipping, and the
//! fused unit-norm decoder update.
//!
//! A step records, with no read-back in between (src/sae/gpu.rs):
//! `decoder_grad_prep(W_dec, dW_dec)` and `sum_slot` (the decoder gradient's sum of squares
//! without its component along each row), `sumsq(grad_i, acc, i)` for the other parameter
//! tensors, `clip_scale(acc, slots, max_norm, clip)`, `adam_unit_rows(W_dec, ...)` (Adam,
//! the projection and the row normalisation in one pass) and `adam(param_i, grad_i, m_i,
//! v_i, hyper, clip)` for the others; with a free decoder norm, `sumsq` and `adam` on W_dec
//! too. The learning rate and step number reach Adam through a uniform buffer the host
//! rewrites before each submission ([`write_hyper`]), so the recorded dispatches (and every
//! cached bind group) stay the same from step to step.
//!
//! Every sum has a fixed order, so results are identical run to run on one device.

use crate::gpu::{DType, Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Call, Entry, Grid, Slot, Uniform, Wg, fits, rf, vec4_if, vec4_split, wf};

pub use crate::reference::optim::AdamHyper;

pub static SHADER: Shader = crate::shader!("optim");

/// Elementwise and sumsq_partial workgroup size (override `WG`).
const WG: usize = 256;
/// sumsq_finish workgroup size (override `FW`, a power of two).
const FW: usize = 256;
/// Invocations per row in the row kernels (override `RW`, a power of two): 64 on hardware
/// (a 2 KiB row is two coalesced sweeps), 8 on software adapters, where each of the tree's
/// barriers splits the shader and one 8-lane batch per row was 2.5x faster than 64 lanes
/// (normalize_rows 16384 x 512 on lavapipe: 52 ms at 8, 104 ms at 32, 132 ms at 64).
fn row_lanes(gpu: &Gpu) -> usize {
    if gpu.is_software() { 8 } else { 64 }
}
/// sumsq_partial uses at most this many workgroups, so at most `MAX_PARTIAL_GROUPS * WG`
/// partials (256 KiB): enough invocations to keep a large GPU's memory busy, few enough for
/// one workgroup to finish.
const MAX_PARTIAL_GROUPS: usize = 256;
/// The most elements a kernel here indexes (room for the partials' stride).
const MAX_LEN: usize = u32::MAX as usize - MAX_PARTIAL_GROUPS * WG;

crate::uniform! {
    struct Params {
        len: u32, d: u32, stride: u32, slot: u32,
        max_norm: f32, _pad: [u32; 3],
    }
}

impl super::decl::Uniform for AdamHyper {
    const LAYOUT: super::decl::Layout = super::decl::Layout {
        name: "AdamHyper",
        size: size_of::<AdamHyper>(),
        fields: &[
            ("lr", std::mem::offset_of!(AdamHyper, lr)),
            ("beta1", std::mem::offset_of!(AdamHyper, beta1)),
            ("beta2", std::mem::offset_of!(AdamHyper, beta2)),
            ("eps", std::mem::offset_of!(AdamHyper, eps)),
            ("bias1", std::mem::offset_of!(AdamHyper, bias1)),
            ("bias2", std::mem::offset_of!(AdamHyper, bias2)),
            (
                "weight_decay",
                std::mem::offset_of!(AdamHyper, weight_decay),
            ),
        ],
    };
}

fn params(len: usize) -> Params {
    Params {
        len: len as u32,
        ..Default::default()
    }
}

const fn optim(name: &'static str, binds: &'static [Slot], wg: Wg, grid: Grid) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .consts(&[("WG", WG as f64), ("FW", FW as f64)])
        .wg(wg)
        .grid(grid)
}

/// The elementwise kernels: `WG` invocations per workgroup, one item each.
const fn elementwise(name: &'static str, binds: &'static [Slot]) -> Entry {
    optim(name, binds, Wg::Fixed(WG as u32), Grid::Items)
}

/// The row kernels: one workgroup of `RW` (set per adapter) per row.
const fn per_row(name: &'static str, binds: &'static [Slot]) -> Entry {
    optim(name, binds, Wg::Var("RW"), Grid::Groups)
}

const ADAM: &[Slot] = &[
    wf("param", "len"),
    rf("grad", "len"),
    wf("m", "len"),
    wf("v", "len"),
    Slot::uniform("hyper", AdamHyper::LAYOUT),
    rf("clip", ">= 1"),
];
const SUMSQ_PARTIAL: &[Slot] = &[rf("g", "any"), wf("part", "any")];
const DECODER_GRAD_PREP: &[Slot] = &[
    rf("w", "n, d"),
    rf("g", "n, d"),
    wf("coef", "n"),
    wf("part", "n"),
];
const ADAM_UNIT_ROWS: &[Slot] = &[
    wf("param", "n, d"),
    rf("grad", "n, d"),
    wf("m", "n, d"),
    wf("v", "n, d"),
    Slot::uniform("hyper", AdamHyper::LAYOUT),
    rf("clip", ">= 1"),
    rf("coef", "n"),
];

pub static ADAM_E: Entry = elementwise("adam", ADAM);
pub static ADAM_VEC4: Entry = elementwise("adam_vec4", ADAM);
pub static SUMSQ_PARTIAL_E: Entry = elementwise("sumsq_partial", SUMSQ_PARTIAL).grid(Grid::Custom);
pub static SUMSQ_PARTIAL_VEC4: Entry =
    elementwise("sumsq_partial_vec4", SUMSQ_PARTIAL).grid(Grid::Custom);
pub static SUMSQ_FINISH: Entry = optim(
    "sumsq_finish",
    &[rf("part", "any"), wf("acc", "any")],
    Wg::Fixed(FW as u32),
    Grid::Single,
);
pub static CLIP_SCALE: Entry = optim(
    "clip_scale",
    &[rf("acc", "any"), wf("clip", "2")],
    Wg::Fixed(1),
    Grid::Single,
);
pub static DECODER_GRAD_PREP_E: Entry = per_row("decoder_grad_prep", DECODER_GRAD_PREP);
pub static DECODER_GRAD_PREP_VEC4: Entry = per_row("decoder_grad_prep_vec4", DECODER_GRAD_PREP);
pub static ADAM_UNIT_ROWS_E: Entry = per_row("adam_unit_rows", ADAM_UNIT_ROWS);
pub static ADAM_UNIT_ROWS_VEC4: Entry = per_row("adam_unit_rows_vec4", ADAM_UNIT_ROWS);

/// Every entry point of shaders/optim.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &ADAM_E,
    &ADAM_VEC4,
    &SUMSQ_PARTIAL_E,
    &SUMSQ_PARTIAL_VEC4,
    &SUMSQ_FINISH,
    &CLIP_SCALE,
    &DECODER_GRAD_PREP_E,
    &DECODER_GRAD_PREP_VEC4,
    &ADAM_UNIT_ROWS_E,
    &ADAM_UNIT_ROWS_VEC4,
];

/// A uniform buffer sized for [`AdamHyper`], to be filled with [`write_hyper`].
pub fn hyper_buffer(gpu: &Gpu) -> wgpu::Buffer {
    gpu.uniform_buffer("adam hyper", size_of::<AdamHyper>())
}

/// Queue `h` into `buf` (a [`hyper_buffer`]); it takes effect from the next submission on,
/// so write once per step, between submissions.
pub fn write_hyper(gpu: &Gpu, buf: &wgpu::Buffer, h: &AdamHyper) {
    gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(h));
}

/// One AdamW step in place, elementwise over the tensor:
/// g = grad * clip[0]; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
/// param -= lr * ((m / bias1) / (sqrt(v / bias2) + eps) + weight_decay * param).
/// param, grad, m, v: (any shape, same length), hyper: uniform [`AdamHyper`],
/// clip: (>= 1), clip[0] read -> param, m, v updated.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    param: &GpuTensor,
    grad: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
    hyper: &wgpu::Buffer,
    clip: &GpuTensor,
) -> Result<()> {
    let len = param.len();
    fits("adam", "param", len, MAX_LEN)?;
    let (e, items) = vec4_split(len, &ADAM_E, &ADAM_VEC4);
    e.call(params(items))
        .dim("len", len)
        .binds(&[param, grad, m, v])
        .uniform(hyper)
        .bind(clip)
        .items_or_skip(items)
        .record(gpu, enc)
}

/// Partials of sumsq live in one scratch tensor per device (`Gpu::scratch`), shared by
/// every call: the two dispatches of one call are adjacent in the encoder, and wgpu orders
/// dispatches and submissions, so calls never see each other's partials.
fn scratch(gpu: &Gpu) -> Result<GpuTensor> {
    let t = gpu.scratch("sumsq partials", DType::F32, MAX_PARTIAL_GROUPS * WG)?;
    Ok(t.prefix(&[MAX_PARTIAL_GROUPS * WG]))
}

fn expect_slot(kernel: &str, acc: &GpuTensor, slot: u32) -> Result<()> {
    if slot as usize >= acc.len() {
        return Err(Error::Internal(format!(
            "{kernel}: slot {slot} is outside acc {}",
            acc.shape_str()
        )));
    }
    Ok(())
}

/// acc[slot] = sum of g^2 over the whole tensor (overwritten; other slots untouched).
/// Two dispatches: up to 256 workgroups write one partial per invocation, one workgroup
/// sums them in a fixed order.
/// g: (any shape), acc: (slots) -> acc[slot]
pub fn sumsq(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    g: &GpuTensor,
    acc: &GpuTensor,
    slot: u32,
) -> Result<()> {
    let len = g.len();
    fits("sumsq", "g", len, MAX_LEN)?;
    expect_slot("sumsq", acc, slot)?;
    let (e, items) = if len.is_multiple_of(4) && len > 0 {
        (&SUMSQ_PARTIAL_VEC4, len / 4)
    } else {
        (&SUMSQ_PARTIAL_E, len)
    };
    let groups = items.div_ceil(WG).clamp(1, MAX_PARTIAL_GROUPS);
    let partials = groups * WG;
    let part = scratch(gpu)?;
    let p = Params {
        stride: partials as u32,
        ..params(items)
    };
    e.call(p)
        .binds(&[g, &part])
        .grid([groups as u32, 1, 1])
        .record(gpu, enc)?;
    sum_slot_of(gpu, enc, &part, partials, acc, slot)
}

/// acc[slot] = the sum of the first `len` partials, in a fixed order.
fn sum_slot_of(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    part: &GpuTensor,
    len: usize,
    acc: &GpuTensor,
    slot: u32,
) -> Result<()> {
    let p = Params {
        slot,
        ..params(len)
    };
    SUMSQ_FINISH.call(p).binds(&[part, acc]).record(gpu, enc)
}

/// norm = sqrt(acc[0] + ... + acc[slots - 1]) (in that order);
/// clip[0] = max_norm / norm if max_norm > 0 and norm > max_norm, else 1; clip[1] = norm.
/// acc: (>= slots) -> clip: (2)
pub fn clip_scale(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    acc: &GpuTensor,
    slots: u32,
    max_norm: f32,
    clip: &GpuTensor,
) -> Result<()> {
    if slots as usize > acc.len() {
        return Err(Error::Internal(format!(
            "clip_scale: {slots} slots but acc is {}",
            acc.shape_str()
        )));
    }
    let p = Params {
        max_norm,
        ..params(slots as usize)
    };
    CLIP_SCALE.call(p).binds(&[acc, clip]).record(gpu, enc)
}

/// The parameters of a row kernel over (n, d): items per row are vec4s when d % 4 == 0.
fn row_params(kernel: &str, n: usize, d: usize) -> Result<(bool, Params)> {
    fits(kernel, "n * d", n.saturating_mul(d), MAX_LEN)?;
    let vec4 = d.is_multiple_of(4);
    let p = Params {
        d: if vec4 { d / 4 } else { d } as u32,
        ..params(n)
    };
    Ok((vec4, p))
}

/// The unit-norm decoder's gradient pass: per row, coef[i] = (g . w) / (w . w) (0 where
/// w is zero) and part[i] = ||g[i] - coef[i] w[i]||^2, taken as max(g.g - 2 coef g.w +
/// coef^2 w.w, 0) (g.g where w is zero), g left unprojected ([`adam_unit_rows`] projects
/// it). One workgroup per row, one sweep.
/// w: (n, d), g: (n, d) -> coef: (n), part: (n)
#[allow(clippy::too_many_arguments)]
pub fn decoder_grad_prep(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    w: &GpuTensor,
    g: &GpuTensor,
    n: usize,
    d: usize,
    coef: &GpuTensor,
    part: &GpuTensor,
) -> Result<()> {
    let e = [&DECODER_GRAD_PREP_E, &DECODER_GRAD_PREP_VEC4];
    row_launch(gpu, enc, e, n, d, |c| c.binds(&[w, g, coef, part]))
}

/// acc[slot] = sum of part (partial sums of squares, e.g. [`decoder_grad_prep`]'s), in a
/// fixed order (sumsq's second level); other slots untouched.
/// part: (len), acc: (slots) -> acc[slot]
pub fn sum_slot(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    part: &GpuTensor,
    acc: &GpuTensor,
    slot: u32,
) -> Result<()> {
    expect_slot("sum_slot", acc, slot)?;
    fits("sum_slot", "part", part.len(), MAX_LEN)?;
    sum_slot_of(gpu, enc, part, part.len(), acc, slot)
}

/// AdamW on a unit-norm decoder, one workgroup per row: g = (grad - coef[i] w) * clip[0]
/// (the gradient without its component along the row, see [`decoder_grad_prep`]), the
/// update of [`adam`], then the row divided by its norm (rows of zero norm unchanged).
/// param: (n, d), grad: (n, d), coef: (n), m, v: (n, d), hyper: uniform, clip: (>= 1)
///   -> param, m, v updated
#[allow(clippy::too_many_arguments)]
pub fn adam_unit_rows(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    param: &GpuTensor,
    grad: &GpuTensor,
    coef: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
    hyper: &wgpu::Buffer,
    clip: &GpuTensor,
    n: usize,
    d: usize,
) -> Result<()> {
    let e = [&ADAM_UNIT_ROWS_E, &ADAM_UNIT_ROWS_VEC4];
    row_launch(gpu, enc, e, n, d, |c| {
        c.binds(&[param, grad, m, v])
            .uniform(hyper)
            .binds(&[clip, coef])
    })
}

/// A one-workgroup-per-row launch over (n, d) rows of the scalar or (d % 4 == 0) vec4
/// entry point of `e`, `bind` adding its bindings in order; nothing recorded for no rows.
fn row_launch<'a>(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    [scalar, v4]: [&'static Entry; 2],
    n: usize,
    d: usize,
    bind: impl FnOnce(Call<'a, Params>) -> Call<'a, Params>,
) -> Result<()> {
    let (vec4, p) = row_params(scalar.name, n, d)?;
    let call = vec4_if(vec4, scalar, v4)
        .call(p)
        .dims(&[("n", n), ("d", d)]);
    bind(call)
        .set("RW", row_lanes(gpu) as f64)
        .items(n)
        .skip_if(n == 0 || d == 0)
        .record(gpu, enc)
}
