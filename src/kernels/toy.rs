//! Toy-model launchers (shaders/toy.wgsl): many instances of the toy models of
//! superposition trained in one set of dispatches. A training step records, with no
//! read-back: [`toy_data`] (the batch, hashed on the device from seed, step, instance, row
//! and feature), [`toy_forward`], [`toy_grad`], [`toy_sum_chunks`] for dW and db, then
//! `optim::adam` on w and b. The step number reaches `toy_data` through a uniform buffer
//! the host rewrites before each submission ([`write_step`]), so the recorded dispatches
//! and their cached bind groups stay the same from step to step.
//!
//! Layout and formulas: src/reference/toy.rs (the CPU twins, same names and arguments).

use crate::gpu::{Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Call, Entry, Grid, Slot, Uniform, Wg, rf, wf};

pub use crate::reference::toy::{FeatureSets, SetMode, ToyShape};

pub static SHADER: Shader = crate::shader!("toy");

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

crate::uniform! {
    struct Params {
        instances: u32, rows: u32, n: u32, m: u32,
        chunk: u32, chunks: u32, len: u32, relu: u32,
        seed_lo: u32, seed_hi: u32, scale: f32, _pad: u32,
    }
}

impl Params {
    fn new(s: ToyShape) -> Self {
        Params {
            instances: s.instances as u32,
            rows: s.rows as u32,
            n: s.n as u32,
            m: s.m as u32,
            ..Default::default()
        }
    }
}

crate::uniform! {
    /// The per-step uniform of `toy_data` (WGSL `Step`): the step and the feature sets.
    struct Step {
        step: u32,
        mode: u32,
        sets: u32,
        set_size: u32,
    }
}

const fn toy(name: &'static str, binds: &'static [Slot], wg: Wg, grid: Grid) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .consts(&[("DWG", WG as f64), ("FWG", FWG as f64), ("SWG", WG as f64)])
        .wg(wg)
        .grid(grid)
}

pub static TOY_DATA: Entry = toy(
    "toy_data",
    &[
        rf("density", "instances, n"),
        wf("x", "instances, rows, n"),
        Slot::uniform("step", Step::LAYOUT),
    ],
    Wg::Fixed(WG as u32),
    Grid::Items,
);
pub static TOY_FORWARD: Entry = Entry {
    vars: &["M"],
    ..toy(
        "toy_forward",
        &[
            rf("x", "instances, rows, n"),
            rf("w", "instances, n, m"),
            rf("b", "instances, n"),
            rf("importance", "instances, n"),
            wf("h", "instances, rows, m"),
            wf("g", "instances, rows, n"),
            wf("dh", "instances, rows, m"),
            wf("loss", "instances, rows"),
        ],
        Wg::Fixed(FWG as u32),
        Grid::Groups,
    )
};
pub static TOY_GRAD: Entry = Entry {
    vars: &["M"],
    ..toy(
        "toy_grad",
        &[
            rf("x", "instances, rows, n"),
            rf("g", "instances, rows, n"),
            rf("h", "instances, rows, m"),
            rf("dh", "instances, rows, m"),
            wf("pw", "instances, chunks, n, m"),
            wf("pb", "instances, chunks, n"),
        ],
        Wg::Var("GWG"),
        Grid::Groups,
    )
};
pub static TOY_SUM_CHUNKS: Entry = toy(
    "toy_sum_chunks",
    &[
        rf("partials", "groups, chunks, len"),
        wf("out", "groups, len"),
    ],
    Wg::Fixed(WG as u32),
    Grid::Items,
);

/// Every entry point of shaders/toy.wgsl.
pub static ENTRIES: &[&Entry] = &[&TOY_DATA, &TOY_FORWARD, &TOY_GRAD, &TOY_SUM_CHUNKS];

/// A uniform buffer for the step number, to be filled with [`write_step`].
pub fn step_buffer(gpu: &Gpu) -> wgpu::Buffer {
    gpu.uniform_buffer("toy step", size_of::<Step>())
}

/// Queue `step` into `buf` (a [`step_buffer`]) with independent features; it takes effect
/// from the next submission.
pub fn write_step(gpu: &Gpu, buf: &wgpu::Buffer, step: u32) {
    write_step_sets(gpu, buf, step, FeatureSets::default());
}

/// Queue `step` and the feature sets `toy_data` draws into `buf` (a [`step_buffer`]).
pub fn write_step_sets(gpu: &Gpu, buf: &wgpu::Buffer, step: u32, sets: FeatureSets) {
    let s = Step {
        step,
        mode: sets.code(),
        sets: sets.sets as u32,
        set_size: sets.size as u32,
    };
    gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(&s));
}

/// Refuse shapes the kernels cannot index: empty dimensions, a hidden width past
/// [`MAX_HIDDEN`], or more than u32 elements.
fn check_shape(kernel: &str, s: ToyShape) -> Result<()> {
    check_extent(
        kernel,
        s,
        [s.instances, s.rows, s.n, s.m],
        Some(MAX_HIDDEN),
        0,
    )
}

/// The shape checks of this family and `toy_mlp`'s, for a shape `shape` of
/// `[instances, rows, n, m]`: refuse an empty dimension, then a hidden width m past
/// `max_hidden`, then a buffer (instances x rows x max(n, m), or `elements`) of more than
/// the kernels index.
pub(super) fn check_extent(
    kernel: &str,
    shape: impl std::fmt::Debug,
    [instances, rows, n, m]: [usize; 4],
    max_hidden: Option<usize>,
    elements: u64,
) -> Result<()> {
    if instances == 0 || rows == 0 || n == 0 || m == 0 {
        return Err(Error::Internal(format!("{kernel}: empty shape {shape:?}")));
    }
    if let Some(max) = max_hidden
        && m > max
    {
        return Err(Error::Internal(format!(
            "{kernel}: hidden width {m} exceeds the kernels' {max}"
        )));
    }
    let big = (instances as u64 * rows as u64 * n.max(m) as u64).max(elements);
    if big > u32::MAX as u64 / 2 {
        return Err(Error::Internal(format!(
            "{kernel}: {shape:?} has more elements than the kernels index"
        )));
    }
    Ok(())
}

/// Chunks of `chunk` rows over `rows` rows (the last may be shorter); refuses chunk 0.
pub(super) fn chunk_count(kernel: &str, rows: usize, chunk: usize) -> Result<usize> {
    if chunk == 0 {
        return Err(Error::Internal(format!("{kernel}: chunk is 0")));
    }
    Ok(rows.div_ceil(chunk))
}

/// The batch for the step in `step` (a [`step_buffer`], which also holds the feature sets):
/// x[e, r, f] = draw(key, 2f + 1) if feature f is present, else 0, with
/// key = row_key(seed, step, e, r) (PCG hash); independent features are present when
/// draw(key, 2f) < density[e, f] (the sets: `crate::reference::toy::SetMode`).
/// density: (instances, n) -> x: (instances, rows, n)
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
    let len = shape.instances * shape.rows * shape.n;
    let [seed_lo, seed_hi] = seed_words(seed);
    let p = Params {
        len: len as u32,
        seed_lo,
        seed_hi,
        ..Params::new(shape)
    };
    let call = TOY_DATA.call(p).dims(&dims(shape));
    record_data(gpu, enc, call, step, density, x, len)
}

/// A seed's low and high 32-bit words (the parameters' `seed_lo`, `seed_hi`).
pub(super) fn seed_words(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Record a data kernel of this family or `toy_mlp`'s (`call`, its parameters and
/// dimensions given): x, `len` values, the batch drawn from `density` for the step in
/// `step`, one invocation per value.
pub(super) fn record_data<P: Uniform>(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    call: Call<'_, P>,
    step: &wgpu::Buffer,
    density: &GpuTensor,
    x: &GpuTensor,
    len: usize,
) -> Result<()> {
    call.binds(&[density, x])
        .uniform(step)
        .items(len)
        .record(gpu, enc)
}

/// The named dimensions of a toy shape.
fn dims(s: ToyShape) -> [(&'static str, usize); 4] {
    [
        ("instances", s.instances),
        ("rows", s.rows),
        ("n", s.n),
        ("m", s.m),
    ]
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
    let p = Params {
        relu: relu as u32,
        scale: 2.0f32 / shape.rows as f32,
        ..Params::new(shape)
    };
    TOY_FORWARD
        .call(p)
        .dims(&dims(shape))
        .set("M", shape.m as f64)
        .binds(&[x, w, b, importance, h, g, dh, loss])
        .items(shape.instances * shape.rows.div_ceil(FWG))
        .record(gpu, enc)
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
    let chunks = chunk_count("toy_grad", shape.rows, chunk)?;
    let p = Params {
        chunk: chunk as u32,
        chunks: chunks as u32,
        ..Params::new(shape)
    };
    let lanes = grad_lanes(shape.n);
    TOY_GRAD
        .call(p)
        .dims(&dims(shape))
        .dim("chunks", chunks)
        .set("M", shape.m as f64)
        .set("GWG", lanes as f64)
        .binds(&[x, g, h, dh, pw, pb])
        .items(shape.n.div_ceil(lanes) * shape.instances * chunks)
        .record(gpu, enc)
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
    super::decl::fits(
        "toy_sum_chunks",
        "partials",
        partials.len(),
        u32::MAX as usize / 2,
    )?;
    let p = Params {
        chunks: chunks as u32,
        len: len as u32,
        ..Params::new(ToyShape {
            instances: groups,
            rows: 0,
            n: 0,
            m: 0,
        })
    };
    TOY_SUM_CHUNKS
        .call(p)
        .dims(&[("groups", groups), ("chunks", chunks), ("len", len)])
        .binds(&[partials, out])
        .items(groups * len)
        .record(gpu, enc)
}
