//! Optimizer launchers (shaders/optim.wgsl): AdamW, global gradient-norm clipping, decoder
//! row normalisation and removal of the decoder gradient's component along each row.
//!
//! A step records, with no read-back in between:
//! `remove_parallel(W_dec, dW_dec)`, `sumsq(grad_i, acc, i)` for every parameter tensor,
//! `clip_scale(acc, slots, max_norm, clip)`, `adam(param_i, grad_i, m_i, v_i, hyper, clip)`,
//! `normalize_rows(W_dec)`. The learning rate and step number reach Adam through a uniform
//! buffer the host rewrites before each submission ([`write_hyper`]), so the recorded
//! dispatches (and every cached bind group) stay the same from step to step.
//!
//! Every sum has a fixed order, so results are identical run to run on one device.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, DType, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::{expect_len, expect_shape};

pub use crate::reference::optim::AdamHyper;

pub static SHADER: Shader = Shader {
    name: "optim",
    source: include_str!("../../shaders/optim.wgsl"),
};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    len: u32,
    d: u32,
    stride: u32,
    slot: u32,
    max_norm: f32,
    _pad: [u32; 3],
}

impl Params {
    fn new(len: usize) -> Self {
        Params {
            len: len as u32,
            d: 0,
            stride: 0,
            slot: 0,
            max_norm: 0.0,
            _pad: [0; 3],
        }
    }
}

const ELEMENTWISE: &[(&str, f64)] = &[("WG", WG as f64)];
const FINISH: &[(&str, f64)] = &[("FW", FW as f64)];

fn kernel<'a>(entry: &'static str, constants: &'a [(&'static str, f64)]) -> Kernel<'a> {
    Kernel {
        shader: &SHADER,
        entry,
        constants,
    }
}

fn fits_u32(kernel: &str, what: &str, len: usize) -> Result<()> {
    if len > u32::MAX as usize - MAX_PARTIAL_GROUPS * WG {
        return Err(Error::Internal(format!(
            "{kernel}: {what} has {len} elements, more than the kernels index"
        )));
    }
    Ok(())
}

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
    fits_u32("adam", "param", len)?;
    expect_len("adam", "grad", grad, len)?;
    expect_len("adam", "m", m, len)?;
    expect_len("adam", "v", v, len)?;
    if clip.is_empty() {
        return Err(Error::Internal(
            "adam: clip is empty, expected (>= 1)".into(),
        ));
    }
    if hyper.size() < size_of::<AdamHyper>() as u64 {
        return Err(Error::Internal(format!(
            "adam: hyper buffer has {} bytes, AdamHyper needs {}",
            hyper.size(),
            size_of::<AdamHyper>()
        )));
    }
    if len == 0 {
        return Ok(());
    }
    let (entry, items) = if len.is_multiple_of(4) {
        ("adam_vec4", len / 4)
    } else {
        ("adam", len)
    };
    gpu.dispatch(
        enc,
        &kernel(entry, ELEMENTWISE),
        &Params::new(items),
        &[
            Bind::Write(param),
            Bind::Read(grad),
            Bind::Write(m),
            Bind::Write(v),
            Bind::Uniform(hyper),
            Bind::Read(clip),
        ],
        gpu.groups_for(items, WG),
    )
}

/// Partials of sumsq live in one scratch tensor per device (`Gpu::scratch`), shared by
/// every call: the two dispatches of one call are adjacent in the encoder, and wgpu orders
/// dispatches and submissions, so calls never see each other's partials.
fn scratch(gpu: &Gpu) -> Result<GpuTensor> {
    let t = gpu.scratch("sumsq partials", DType::F32, MAX_PARTIAL_GROUPS * WG)?;
    Ok(t.prefix(&[MAX_PARTIAL_GROUPS * WG]))
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
    fits_u32("sumsq", "g", len)?;
    if slot as usize >= acc.len() {
        return Err(Error::Internal(format!(
            "sumsq: slot {slot} is outside acc {}",
            acc.shape_str()
        )));
    }
    let (entry, items) = if len.is_multiple_of(4) && len > 0 {
        ("sumsq_partial_vec4", len / 4)
    } else {
        ("sumsq_partial", len)
    };
    let groups = items.div_ceil(WG).clamp(1, MAX_PARTIAL_GROUPS);
    let partials = groups * WG;
    let part = scratch(gpu)?;
    let mut p = Params::new(items);
    p.stride = partials as u32;
    gpu.dispatch(
        enc,
        &kernel(entry, ELEMENTWISE),
        &p,
        &[Bind::Read(g), Bind::Write(&part)],
        [groups as u32, 1, 1],
    )?;
    let mut p = Params::new(partials);
    p.slot = slot;
    gpu.dispatch(
        enc,
        &kernel("sumsq_finish", FINISH),
        &p,
        &[Bind::Read(&part), Bind::Write(acc)],
        [1, 1, 1],
    )
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
    expect_len("clip_scale", "clip", clip, 2)?;
    let mut p = Params::new(slots as usize);
    p.max_norm = max_norm;
    gpu.dispatch(
        enc,
        &kernel("clip_scale", &[]),
        &p,
        &[Bind::Read(acc), Bind::Write(clip)],
        [1, 1, 1],
    )
}

fn row_params(n: usize, d: usize) -> (bool, Params) {
    let vec4 = d.is_multiple_of(4);
    let mut p = Params::new(n);
    p.d = if vec4 { d / 4 } else { d } as u32;
    (vec4, p)
}

/// w[i, :] /= ||w[i, :]|| for every row; rows of zero norm are left unchanged.
/// One workgroup per row.
/// w: (n, d) -> w: (n, d)
pub fn normalize_rows(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    w: &GpuTensor,
    n: usize,
    d: usize,
) -> Result<()> {
    expect_shape("normalize_rows", "w", w, &[n, d])?;
    fits_u32("normalize_rows", "w", n * d)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    let (vec4, p) = row_params(n, d);
    let entry = if vec4 {
        "normalize_rows_vec4"
    } else {
        "normalize_rows"
    };
    gpu.dispatch(
        enc,
        &kernel(entry, &[("RW", row_lanes(gpu) as f64)]),
        &p,
        &[Bind::Write(w)],
        gpu.groups_for(n, 1),
    )
}

/// g[i, :] -= (g[i, :] . w[i, :] / ||w[i, :]||^2) w[i, :] for every row; rows where w is
/// zero keep their gradient. One workgroup per row.
/// w: (n, d), g: (n, d) -> g: (n, d)
pub fn remove_parallel(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    w: &GpuTensor,
    g: &GpuTensor,
    n: usize,
    d: usize,
) -> Result<()> {
    expect_shape("remove_parallel", "w", w, &[n, d])?;
    expect_shape("remove_parallel", "g", g, &[n, d])?;
    fits_u32("remove_parallel", "w", n * d)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    let (vec4, p) = row_params(n, d);
    let entry = if vec4 {
        "remove_parallel_vec4"
    } else {
        "remove_parallel"
    };
    gpu.dispatch(
        enc,
        &kernel(entry, &[("RW", row_lanes(gpu) as f64)]),
        &p,
        &[Bind::Read(w), Bind::Write(g)],
        gpu.groups_for(n, 1),
    )
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
    let k = "decoder_grad_prep";
    expect_shape(k, "w", w, &[n, d])?;
    expect_shape(k, "g", g, &[n, d])?;
    expect_len(k, "coef", coef, n)?;
    expect_len(k, "part", part, n)?;
    fits_u32(k, "w", n * d)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    let (vec4, p) = row_params(n, d);
    let entry = if vec4 { "decoder_grad_prep_vec4" } else { k };
    gpu.dispatch(
        enc,
        &kernel(entry, &[("RW", row_lanes(gpu) as f64)]),
        &p,
        &[
            Bind::Read(w),
            Bind::Read(g),
            Bind::Write(coef),
            Bind::Write(part),
        ],
        gpu.groups_for(n, 1),
    )
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
    if slot as usize >= acc.len() {
        return Err(Error::Internal(format!(
            "sum_slot: slot {slot} is outside acc {}",
            acc.shape_str()
        )));
    }
    fits_u32("sum_slot", "part", part.len())?;
    let mut p = Params::new(part.len());
    p.slot = slot;
    gpu.dispatch(
        enc,
        &kernel("sumsq_finish", FINISH),
        &p,
        &[Bind::Read(part), Bind::Write(acc)],
        [1, 1, 1],
    )
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
    let k = "adam_unit_rows";
    for (name, t) in [("param", param), ("grad", grad), ("m", m), ("v", v)] {
        expect_shape(k, name, t, &[n, d])?;
    }
    expect_len(k, "coef", coef, n)?;
    if clip.is_empty() {
        return Err(Error::Internal(format!("{k}: clip is empty")));
    }
    fits_u32(k, "param", n * d)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    let (vec4, p) = row_params(n, d);
    let entry = if vec4 { "adam_unit_rows_vec4" } else { k };
    gpu.dispatch(
        enc,
        &kernel(entry, &[("RW", row_lanes(gpu) as f64)]),
        &p,
        &[
            Bind::Write(param),
            Bind::Read(grad),
            Bind::Write(m),
            Bind::Write(v),
            Bind::Uniform(hyper),
            Bind::Read(clip),
            Bind::Read(coef),
        ],
        gpu.groups_for(n, 1),
    )
}
