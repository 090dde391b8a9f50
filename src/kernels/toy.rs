//! Toy-model launchers (shaders/toy.wgsl): many instances of the toy models of
//! superposition trained in one set of dispatches. A training step records, with no
//! read-back: [`toy_data`] (the batch, hashed on the device from seed, step, instance, row
//! and feature), [`toy_forward`], [`toy_grad`], [`toy_sum_chunks`] for dW and db, then
//! `optim::adam` on w and b. The step number reaches `toy_data` through a uniform buffer
//! the host rewrites before each submission ([`write_step`]), so the recorded dispatches
//! and their cached bind groups stay the same from step to step.
//!
//! Layout and formulas: src/reference/toy.rs (the CPU twins, same names and arguments).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::expect_shape;

pub use crate::reference::toy::ToyShape;

pub static SHADER: Shader = Shader {
    name: "toy",
    source: include_str!("../../shaders/toy.wgsl"),
};

/// Largest hidden width the kernels hold in registers (WGSL `MAXM`).
pub const MAX_HIDDEN: usize = 32;

/// toy_data and toy_sum_chunks invocations per workgroup (overrides `DWG`, `SWG`).
const WG: usize = 256;
/// toy_forward rows per workgroup (override `FWG`).
const FWG: usize = 64;

/// toy_grad features per workgroup (override `GWG`): the feature count rounded up to a power
/// of two, between 8 (lavapipe's lane count) and 64, so that n = 2 does not leave 62 of 64
/// lanes idle.
fn grad_lanes(n: usize) -> usize {
    n.next_power_of_two().clamp(8, 64)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    instances: u32,
    rows: u32,
    n: u32,
    m: u32,
    chunk: u32,
    chunks: u32,
    len: u32,
    relu: u32,
    seed_lo: u32,
    seed_hi: u32,
    scale: f32,
    _pad: u32,
}

impl Params {
    fn new(s: ToyShape) -> Self {
        Params {
            instances: s.instances as u32,
            rows: s.rows as u32,
            n: s.n as u32,
            m: s.m as u32,
            chunk: 0,
            chunks: 0,
            len: 0,
            relu: 0,
            seed_lo: 0,
            seed_hi: 0,
            scale: 0.0,
            _pad: 0,
        }
    }
}

/// The per-step uniform of `toy_data` (WGSL `Step`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Step {
    step: u32,
    _pad: [u32; 3],
}

/// A uniform buffer for the step number, to be filled with [`write_step`].
pub fn step_buffer(gpu: &Gpu) -> wgpu::Buffer {
    gpu.uniform_buffer("toy step", size_of::<Step>())
}

/// Queue `step` into `buf` (a [`step_buffer`]); it takes effect from the next submission.
pub fn write_step(gpu: &Gpu, buf: &wgpu::Buffer, step: u32) {
    let s = Step { step, _pad: [0; 3] };
    gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(&s));
}

fn kernel<'a>(entry: &'static str, constants: &'a [(&'static str, f64)]) -> Kernel<'a> {
    Kernel {
        shader: &SHADER,
        entry,
        constants,
    }
}

/// Refuse shapes the kernels cannot index: empty dimensions, a hidden width past
/// [`MAX_HIDDEN`], or more than u32 elements.
fn check_shape(kernel: &str, s: ToyShape) -> Result<()> {
    if s.instances == 0 || s.rows == 0 || s.n == 0 || s.m == 0 {
        return Err(Error::Internal(format!("{kernel}: empty shape {s:?}")));
    }
    if s.m > MAX_HIDDEN {
        return Err(Error::Internal(format!(
            "{kernel}: hidden width {} exceeds the kernels' {MAX_HIDDEN}",
            s.m
        )));
    }
    let big = s.instances as u64 * s.rows as u64 * s.n.max(s.m) as u64;
    if big > u32::MAX as u64 / 2 {
        return Err(Error::Internal(format!(
            "{kernel}: {s:?} has more elements than the kernels index"
        )));
    }
    Ok(())
}

/// The batch for the step in `step` (a [`step_buffer`]): x[e, r, f] = draw(key, 2f + 1) if
/// draw(key, 2f) < density[e], else 0, with key = row_key(seed, step, e, r) (PCG hash).
/// density: (instances) -> x: (instances, rows, n)
pub fn toy_data(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    shape: ToyShape,
    seed: u64,
    step: &wgpu::Buffer,
    density: &GpuTensor,
    x: &GpuTensor,
) -> Result<()> {
    check_shape("toy_data", shape)?;
    expect_shape("toy_data", "density", density, &[shape.instances])?;
    expect_shape("toy_data", "x", x, &[shape.instances, shape.rows, shape.n])?;
    if step.size() < size_of::<Step>() as u64 {
        return Err(Error::Internal("toy_data: step buffer too small".into()));
    }
    let len = shape.instances * shape.rows * shape.n;
    let mut p = Params::new(shape);
    p.len = len as u32;
    p.seed_lo = seed as u32;
    p.seed_hi = (seed >> 32) as u32;
    gpu.dispatch(
        enc,
        &kernel("toy_data", &[("DWG", WG as f64)]),
        &p,
        &[Bind::Read(density), Bind::Write(x), Bind::Uniform(step)],
        gpu.groups_for(len, WG),
    )
}

/// Forward pass and backward pass to the hidden layer, per row:
/// h = W x; o = W^T h + b; y = relu(o) (or o when `relu` is false);
/// loss = sum_i I_i (y_i - x_i)^2; g = dL/do = (2 / rows) I (y - x) [o > 0 or linear];
/// dh = W g. (L is the instance's batch mean of the row losses.)
/// x: (instances, rows, n), w: (instances, n, m), b, importance: (instances, n)
/// -> h: (instances, rows, m), g: (instances, rows, n), dh: (instances, rows, m),
///    loss: (instances, rows)
#[allow(clippy::too_many_arguments)]
pub fn toy_forward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    shape: ToyShape,
    relu: bool,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    importance: &GpuTensor,
    h: &GpuTensor,
    g: &GpuTensor,
    dh: &GpuTensor,
    loss: &GpuTensor,
) -> Result<()> {
    check_shape("toy_forward", shape)?;
    let ToyShape {
        instances: e,
        rows,
        n,
        m,
    } = shape;
    expect_shape("toy_forward", "x", x, &[e, rows, n])?;
    expect_shape("toy_forward", "w", w, &[e, n, m])?;
    expect_shape("toy_forward", "b", b, &[e, n])?;
    expect_shape("toy_forward", "importance", importance, &[e, n])?;
    expect_shape("toy_forward", "h", h, &[e, rows, m])?;
    expect_shape("toy_forward", "g", g, &[e, rows, n])?;
    expect_shape("toy_forward", "dh", dh, &[e, rows, m])?;
    expect_shape("toy_forward", "loss", loss, &[e, rows])?;
    let mut p = Params::new(shape);
    p.relu = relu as u32;
    p.scale = 2.0f32 / rows as f32;
    gpu.dispatch(
        enc,
        &kernel("toy_forward", &[("M", m as f64), ("FWG", FWG as f64)]),
        &p,
        &[
            Bind::Read(x),
            Bind::Read(w),
            Bind::Read(b),
            Bind::Read(importance),
            Bind::Write(h),
            Bind::Write(g),
            Bind::Write(dh),
            Bind::Write(loss),
        ],
        gpu.groups_for(e * rows.div_ceil(FWG), 1),
    )
}

/// Gradient partials per chunk of `chunk` rows, in row order:
/// pw[e, c, i, k] = sum_r g[e, r, i] h[e, r, k] + x[e, r, i] dh[e, r, k]  (W is used twice),
/// pb[e, c, i] = sum_r g[e, r, i]. Sum the chunks with [`toy_sum_chunks`].
/// x, g: (instances, rows, n), h, dh: (instances, rows, m)
/// -> pw: (instances, chunks, n, m), pb: (instances, chunks, n), chunks = ceil(rows / chunk)
#[allow(clippy::too_many_arguments)]
pub fn toy_grad(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    shape: ToyShape,
    chunk: usize,
    x: &GpuTensor,
    g: &GpuTensor,
    h: &GpuTensor,
    dh: &GpuTensor,
    pw: &GpuTensor,
    pb: &GpuTensor,
) -> Result<()> {
    check_shape("toy_grad", shape)?;
    if chunk == 0 {
        return Err(Error::Internal("toy_grad: chunk is 0".into()));
    }
    let ToyShape {
        instances: e,
        rows,
        n,
        m,
    } = shape;
    let chunks = shape.chunks(chunk);
    expect_shape("toy_grad", "x", x, &[e, rows, n])?;
    expect_shape("toy_grad", "g", g, &[e, rows, n])?;
    expect_shape("toy_grad", "h", h, &[e, rows, m])?;
    expect_shape("toy_grad", "dh", dh, &[e, rows, m])?;
    expect_shape("toy_grad", "pw", pw, &[e, chunks, n, m])?;
    expect_shape("toy_grad", "pb", pb, &[e, chunks, n])?;
    let mut p = Params::new(shape);
    p.chunk = chunk as u32;
    p.chunks = chunks as u32;
    let lanes = grad_lanes(n);
    gpu.dispatch(
        enc,
        &kernel("toy_grad", &[("M", m as f64), ("GWG", lanes as f64)]),
        &p,
        &[
            Bind::Read(x),
            Bind::Read(g),
            Bind::Read(h),
            Bind::Read(dh),
            Bind::Write(pw),
            Bind::Write(pb),
        ],
        gpu.groups_for(n.div_ceil(lanes) * e * chunks, 1),
    )
}

/// out[e, j] = partials[e, 0, j] + ... + partials[e, chunks - 1, j], in that order.
/// partials: (groups, chunks, len) -> out: (groups, len)
pub fn toy_sum_chunks(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    partials: &GpuTensor,
    groups: usize,
    chunks: usize,
    len: usize,
    out: &GpuTensor,
) -> Result<()> {
    if groups == 0 || chunks == 0 || len == 0 {
        return Err(Error::Internal(format!(
            "toy_sum_chunks: empty shape (groups {groups}, chunks {chunks}, len {len})"
        )));
    }
    if partials.len() != groups * chunks * len {
        return Err(Error::Internal(format!(
            "toy_sum_chunks: partials has shape {:?}, expected {groups} x {chunks} x {len} elements",
            partials.shape
        )));
    }
    if out.len() != groups * len {
        return Err(Error::Internal(format!(
            "toy_sum_chunks: out has shape {:?}, expected {groups} x {len} elements",
            out.shape
        )));
    }
    if partials.len() > u32::MAX as usize / 2 {
        return Err(Error::Internal(
            "toy_sum_chunks: more elements than the kernel indexes".into(),
        ));
    }
    let mut p = Params::new(ToyShape {
        instances: groups,
        rows: 0,
        n: 0,
        m: 0,
    });
    p.chunks = chunks as u32;
    p.len = len as u32;
    gpu.dispatch(
        enc,
        &kernel("toy_sum_chunks", &[("SWG", WG as f64)]),
        &p,
        &[Bind::Read(partials), Bind::Write(out)],
        gpu.groups_for(groups * len, WG),
    )
}
