//! Two-layer toy-model launchers (shaders/toy_mlp.wgsl): the privileged-basis,
//! absolute-value and L1 / top-k models of "Toy Models of Superposition", many instances
//! per dispatch. A training step records, with no read-back: [`mlp_data`] (the batch,
//! hashed on the device like `toy::toy_data`), [`mlp_forward`], [`mlp_grad`], then
//! `toy::toy_sum_chunks` over the chunks and `optim::adam` on the flat parameters.
//!
//! Layout and formulas: src/reference/toy_mlp.rs (the CPU twins, same names and arguments).

use crate::Result;
use crate::gpu::{Gpu, GpuTensor, Shader};

use super::decl::{Entry, Grid, Slot, Uniform, Wg, rf, ru, wf};
use super::toy::{check_extent, chunk_count, record_data, seed_words};

pub use crate::reference::toy_mlp::{HiddenAct, MlpShape, MlpSpec};

pub static SHADER: Shader = crate::shader!("toy_mlp");

/// mlp_data and mlp_grad invocations per workgroup (override `WG`).
const WG: usize = 256;
/// mlp_forward rows per workgroup (override `FWG`).
const FWG: usize = 64;

crate::uniform! {
    struct Params {
        instances: u32, rows: u32, n: u32, m: u32,
        chunk: u32, chunks: u32, len: u32, act_h: u32,
        relu_out: u32, tied: u32, hidden_bias: u32, signed: u32,
        abs_target: u32, seed_lo: u32, seed_hi: u32, scale: f32,
        inv_rows: f32, _pad: [u32; 3],
    }
}

crate::uniform! {
    /// The per-step uniform of `mlp_data` (WGSL `Step`): the layout of `toy`'s, so that a
    /// `toy::step_buffer` filled by `toy::write_step` serves both.
    struct Step {
        step: u32,
        _pad: [u32; 3],
    }
}

impl Params {
    fn new(s: MlpShape, spec: MlpSpec) -> Self {
        Params {
            instances: s.instances as u32,
            rows: s.rows as u32,
            n: s.n as u32,
            m: s.m as u32,
            act_h: spec.act_h.code(),
            relu_out: spec.relu_out as u32,
            tied: spec.tied as u32,
            hidden_bias: spec.hidden_bias as u32,
            signed: spec.signed as u32,
            abs_target: spec.abs_target as u32,
            scale: 2.0f32 / s.rows as f32,
            inv_rows: 1.0f32 / s.rows as f32,
            ..Default::default()
        }
    }
}

const fn mlp(name: &'static str, binds: &'static [Slot], wg: Wg) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .consts(&[("WG", WG as f64), ("FWG", FWG as f64)])
        .wg(wg)
        .grid(Grid::Items)
}

pub static MLP_DATA: Entry = mlp(
    "mlp_data",
    &[
        rf("density", "instances"),
        wf("x", "instances, rows, n"),
        Slot::uniform("step", Step::LAYOUT),
    ],
    Wg::Fixed(WG as u32),
);
pub static MLP_FORWARD: Entry = mlp(
    "mlp_forward",
    &[
        rf("x", "instances, rows, n"),
        rf("prm", "instances, p"),
        rf("importance", "instances, n"),
        rf("l1", "instances"),
        ru("topk", "instances"),
        wf("h", "instances, rows, m"),
        wf("g", "instances, rows, n"),
        wf("dpre", "instances, rows, m"),
        wf("loss", "instances, rows"),
    ],
    Wg::Fixed(FWG as u32),
);
pub static MLP_GRAD: Entry = mlp(
    "mlp_grad",
    &[
        rf("x", "instances, rows, n"),
        rf("g", "instances, rows, n"),
        rf("h", "instances, rows, m"),
        rf("dpre", "instances, rows, m"),
        wf("part", "instances, chunks, p"),
    ],
    Wg::Fixed(WG as u32),
);

/// Every entry point of shaders/toy_mlp.wgsl.
pub static ENTRIES: &[&Entry] = &[&MLP_DATA, &MLP_FORWARD, &MLP_GRAD];

/// Refuse shapes the kernels cannot index.
fn check_shape(kernel: &str, s: MlpShape) -> Result<()> {
    let partials = s.instances as u64 * s.rows as u64 * s.params() as u64;
    check_extent(kernel, s, [s.instances, s.rows, s.n, s.m], None, partials)
}

fn dims(s: MlpShape) -> [(&'static str, usize); 5] {
    [
        ("instances", s.instances),
        ("rows", s.rows),
        ("n", s.n),
        ("m", s.m),
        ("p", s.params()),
    ]
}

/// The batch for the step in `step` (a `toy::step_buffer`): x[e, r, f] = u or 2u - 1
/// (`signed`) if draw(key, 2f) < density[e], else 0 (see the twin).
/// density: (instances) -> x: (instances, rows, n)
#[allow(clippy::too_many_arguments)]
pub fn mlp_data(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    shape: MlpShape,
    signed: bool,
    seed: u64,
    step: &wgpu::Buffer,
    density: &GpuTensor,
    x: &GpuTensor,
) -> Result<()> {
    check_shape("mlp_data", shape)?;
    let len = shape.instances * shape.rows * shape.n;
    let [seed_lo, seed_hi] = seed_words(seed);
    let p = Params {
        len: len as u32,
        signed: signed as u32,
        seed_lo,
        seed_hi,
        ..Params::new(
            shape,
            MlpSpec {
                act_h: HiddenAct::Identity,
                relu_out: false,
                tied: false,
                hidden_bias: false,
                signed,
                abs_target: false,
            },
        )
    };
    let call = MLP_DATA.call(p).dims(&dims(shape));
    record_data(gpu, enc, call, step, density, x, len)
}

/// Forward pass and backward pass to the pre-activations (formulas: the twin).
/// x: (instances, rows, n), prm: (instances, P), importance: (instances, n), l1, topk:
/// (instances) -> h: (instances, rows, m), g: (instances, rows, n), dpre: (instances, rows,
/// m), loss: (instances, rows)
#[allow(clippy::too_many_arguments)]
pub fn mlp_forward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    shape: MlpShape,
    spec: MlpSpec,
    x: &GpuTensor,
    prm: &GpuTensor,
    importance: &GpuTensor,
    l1: &GpuTensor,
    topk: &GpuTensor,
    h: &GpuTensor,
    g: &GpuTensor,
    dpre: &GpuTensor,
    loss: &GpuTensor,
) -> Result<()> {
    check_shape("mlp_forward", shape)?;
    MLP_FORWARD
        .call(Params::new(shape, spec))
        .dims(&dims(shape))
        .binds(&[x, prm, importance, l1, topk, h, g, dpre, loss])
        .items(shape.instances * shape.rows)
        .record(gpu, enc)
}

/// Gradient partials per chunk of `chunk` rows, in row order (formulas: the twin); sum the
/// chunks with `toy::toy_sum_chunks(part, instances, chunks, P)`.
/// x, g: (instances, rows, n), h, dpre: (instances, rows, m)
/// -> part: (instances, chunks, P), chunks = ceil(rows / chunk)
#[allow(clippy::too_many_arguments)]
pub fn mlp_grad(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    shape: MlpShape,
    spec: MlpSpec,
    chunk: usize,
    x: &GpuTensor,
    g: &GpuTensor,
    h: &GpuTensor,
    dpre: &GpuTensor,
    part: &GpuTensor,
) -> Result<()> {
    check_shape("mlp_grad", shape)?;
    let chunks = chunk_count("mlp_grad", shape.rows, chunk)?;
    let p = Params {
        chunk: chunk as u32,
        chunks: chunks as u32,
        ..Params::new(shape, spec)
    };
    MLP_GRAD
        .call(p)
        .dims(&dims(shape))
        .dim("chunks", chunks)
        .binds(&[x, g, h, dpre, part])
        .items(shape.instances * chunks * shape.params())
        .record(gpu, enc)
}
