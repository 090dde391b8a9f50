//! Activation launchers (shaders/activations.wgsl). relu is elementwise: each invocation
//! owns one element and the grid is 1-D folded into the per-dimension limit. jumprelu runs
//! one invocation per latent (forward: per latent and block of RB rows), so that
//! theta = exp(log_theta) is computed once and the threshold gradient is summed over rows
//! in order, deterministically, without atomics.

use crate::Result;
use crate::gpu::{Gpu, GpuTensor, Shader};

use super::decl::{Entry, Grid, Slot, Uniform, Wg, elements, rf, vec4_split, wf};

pub static SHADER: Shader = crate::shader!("activations");

const WG: usize = 256;
/// Rows per invocation in jumprelu_forward (WGSL override `RB`).
const RB: usize = 32;

crate::uniform! {
    struct Params {
        len: u32,
        n: u32,
        _pad: [u32; 2],
    }
}

crate::uniform! {
    struct JumpParams {
        rows: u32,
        n: u32,
        eps: f32,
        l0_scale: f32,
    }
}

const fn relu(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::one_d::<{ WG as u32 }>(&SHADER, name, Params::LAYOUT, binds)
}

const fn jump(name: &'static str, binds: &'static [Slot], grid: Grid) -> Entry {
    Entry::new(&SHADER, name, JumpParams::LAYOUT, binds)
        .consts(&[("WG", WG as f64), ("RB", RB as f64)])
        .wg(Wg::Fixed(WG as u32))
        .grid(grid)
}

const JUMP_BACKWARD: &[Slot] = &[
    rf("pre", "rows, n"),
    rf("dz", "rows, n"),
    rf("log_theta", "n"),
    wf("dpre", "rows, n"),
    wf("dlog_theta", "n"),
];

pub static RELU_FORWARD: Entry = relu("relu_forward", &[rf("pre", "len"), wf("z", "len")]);
pub static RELU_BACKWARD: Entry = relu(
    "relu_backward",
    &[rf("pre", "len"), rf("dz", "len"), wf("dpre", "len")],
);
pub static JUMPRELU_FORWARD: Entry = jump(
    "jumprelu_forward",
    &[
        rf("pre", "rows, n"),
        rf("log_theta", "n"),
        wf("z", "rows, n"),
    ],
    Grid::Custom,
);
pub static JUMPRELU_BACKWARD: Entry = jump("jumprelu_backward", JUMP_BACKWARD, Grid::Items);
pub static JUMPRELU_BACKWARD_VEC4: Entry =
    jump("jumprelu_backward_vec4", JUMP_BACKWARD, Grid::Items);

/// Every entry point of shaders/activations.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &RELU_FORWARD,
    &RELU_BACKWARD,
    &JUMPRELU_FORWARD,
    &JUMPRELU_BACKWARD,
    &JUMPRELU_BACKWARD_VEC4,
];

/// A relu launch, one invocation per element of pre (`binds[0]`), `binds` bound in order.
fn relu_launch(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    e: &'static Entry,
    binds: &[&GpuTensor],
) -> Result<()> {
    let pre = binds[0];
    let n = *pre.shape.last().unwrap_or(&1);
    let p = Params {
        len: super::decl::to_u32("relu", "len", pre.len())?,
        n: n as u32,
        _pad: [0; 2],
    };
    e.call(p)
        .dim("len", pre.len())
        .binds(binds)
        .items(pre.len())
        .record(gpu, enc)
}

/// z = max(pre, 0).
/// pre: (rows, n) -> z: (rows, n)
pub fn relu_forward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pre: &GpuTensor,
    z: &GpuTensor,
) -> Result<()> {
    relu_launch(gpu, enc, &RELU_FORWARD, &[pre, z])
}

/// dpre = dz * [pre > 0].
/// pre: (rows, n), dz: (rows, n) -> dpre: (rows, n)
pub fn relu_backward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pre: &GpuTensor,
    dz: &GpuTensor,
    dpre: &GpuTensor,
) -> Result<()> {
    relu_launch(gpu, enc, &RELU_BACKWARD, &[pre, dz, dpre])
}

fn jump_params(kernel: &str, rows: usize, n: usize, eps: f32, l0_scale: f32) -> Result<JumpParams> {
    elements(kernel, rows, n)?;
    Ok(JumpParams {
        rows: rows as u32,
        n: n as u32,
        eps,
        l0_scale,
    })
}

/// JumpReLU: z = pre * [pre > theta_i], theta = exp(log_theta). One invocation per
/// (latent, block of RB rows).
/// pre: (rows, n), log_theta: (n) -> z: (rows, n)
pub fn jumprelu_forward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pre: &GpuTensor,
    rows: usize,
    n: usize,
    log_theta: &GpuTensor,
    z: &GpuTensor,
) -> Result<()> {
    JUMPRELU_FORWARD
        .call(jump_params("jumprelu_forward", rows, n, 0.0, 0.0)?)
        .dims(&[("rows", rows), ("n", n)])
        .binds(&[pre, log_theta, z])
        .grid([
            n.div_ceil(WG).max(1) as u32,
            rows.div_ceil(RB).max(1) as u32,
            1,
        ])
        .record(gpu, enc)
}

/// JumpReLU backward, straight-through estimator with the rectangle kernel R(u) =
/// [|u| <= 1/2] of u = (pre - theta_i) / eps, evaluated as R = [|pre - theta_i| <= eps / 2]
/// (Rajamanoharan et al. 2024):
/// dpre = dz * [pre > theta];
/// dlog_theta[i] = theta_i * sum over rows in order of R * (dz * (-theta_i / eps)
///                 + l0_scale * (-1 / eps)), l0_scale = L0 coefficient / rows.
/// One invocation per latent over all rows (four latents with vec4 loads when n % 4 == 0).
/// pre: (rows, n), dz: (rows, n), log_theta: (n) -> dpre: (rows, n), dlog_theta: (n)
#[allow(clippy::too_many_arguments)]
pub fn jumprelu_backward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pre: &GpuTensor,
    dz: &GpuTensor,
    rows: usize,
    n: usize,
    log_theta: &GpuTensor,
    eps: f32,
    l0_scale: f32,
    dpre: &GpuTensor,
    dlog_theta: &GpuTensor,
) -> Result<()> {
    let p = jump_params("jumprelu_backward", rows, n, eps, l0_scale)?;
    // Four latents per invocation with vec4 loads when n % 4 == 0.
    let (e, items) = vec4_split(n, &JUMPRELU_BACKWARD, &JUMPRELU_BACKWARD_VEC4);
    e.call(p)
        .dims(&[("rows", rows), ("n", n)])
        .binds(&[pre, dz, log_theta, dpre, dlog_theta])
        .items(items)
        .record(gpu, enc)
}
