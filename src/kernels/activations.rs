//! Activation launchers (shaders/activations.wgsl). relu is elementwise: each invocation
//! owns one element and the grid is 1-D folded into the per-dimension limit. jumprelu runs
//! one invocation per latent (forward: per latent and block of RB rows), so that
//! theta = exp(log_theta) is computed once and the threshold gradient is summed over rows
//! in order, deterministically, without atomics.

use bytemuck::{Pod, Zeroable};

use crate::Result;
use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader};

use super::expect_len;

pub static SHADER: Shader = Shader {
    name: "activations",
    source: include_str!("../../shaders/activations.wgsl"),
};

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    len: u32,
    n: u32,
    _pad: [u32; 2],
}

fn kernel(entry: &'static str) -> Kernel<'static> {
    Kernel {
        shader: &SHADER,
        entry,
        constants: &[],
    }
}

/// z = max(pre, 0).
/// pre: (rows, n) -> z: (rows, n)
pub fn relu_forward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pre: &GpuTensor,
    z: &GpuTensor,
) -> Result<()> {
    let len = pre.len();
    expect_len("relu_forward", "z", z, len)?;
    let p = Params {
        len: len as u32,
        n: *pre.shape.last().unwrap_or(&1) as u32,
        _pad: [0; 2],
    };
    gpu.dispatch(
        enc,
        &kernel("relu_forward"),
        &p,
        &[Bind::Read(pre), Bind::Write(z)],
        gpu.groups_for(len, WG),
    )
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
    let len = pre.len();
    expect_len("relu_backward", "dz", dz, len)?;
    expect_len("relu_backward", "dpre", dpre, len)?;
    let p = Params {
        len: len as u32,
        n: *pre.shape.last().unwrap_or(&1) as u32,
        _pad: [0; 2],
    };
    gpu.dispatch(
        enc,
        &kernel("relu_backward"),
        &p,
        &[Bind::Read(pre), Bind::Read(dz), Bind::Write(dpre)],
        gpu.groups_for(len, WG),
    )
}

/// Rows per invocation in jumprelu_forward (WGSL override `RB`).
const RB: usize = 32;

const JUMP_CONSTANTS: &[(&str, f64)] = &[("WG", WG as f64), ("RB", RB as f64)];

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct JumpParams {
    rows: u32,
    n: u32,
    eps: f32,
    l0_scale: f32,
}

fn jump_params(kernel: &str, rows: usize, n: usize, eps: f32, l0_scale: f32) -> Result<JumpParams> {
    match rows.checked_mul(n) {
        Some(len) if len <= u32::MAX as usize => Ok(JumpParams {
            rows: rows as u32,
            n: n as u32,
            eps,
            l0_scale,
        }),
        _ => Err(crate::Error::Internal(format!(
            "{kernel}: {rows} x {n} elements do not fit 32-bit indices"
        ))),
    }
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
    let k = "jumprelu_forward";
    let p = jump_params(k, rows, n, 0.0, 0.0)?;
    expect_len(k, "pre", pre, rows * n)?;
    expect_len(k, "log_theta", log_theta, n)?;
    expect_len(k, "z", z, rows * n)?;
    gpu.dispatch(
        enc,
        &Kernel {
            shader: &SHADER,
            entry: k,
            constants: JUMP_CONSTANTS,
        },
        &p,
        &[Bind::Read(pre), Bind::Read(log_theta), Bind::Write(z)],
        [
            n.div_ceil(WG).max(1) as u32,
            rows.div_ceil(RB).max(1) as u32,
            1,
        ],
    )
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
    let k = "jumprelu_backward";
    let p = jump_params(k, rows, n, eps, l0_scale)?;
    expect_len(k, "pre", pre, rows * n)?;
    expect_len(k, "dz", dz, rows * n)?;
    expect_len(k, "log_theta", log_theta, n)?;
    expect_len(k, "dpre", dpre, rows * n)?;
    expect_len(k, "dlog_theta", dlog_theta, n)?;
    let (entry, per_invocation) = if n.is_multiple_of(4) {
        ("jumprelu_backward_vec4", 4)
    } else {
        (k, 1)
    };
    gpu.dispatch(
        enc,
        &Kernel {
            shader: &SHADER,
            entry,
            constants: JUMP_CONSTANTS,
        },
        &p,
        &[
            Bind::Read(pre),
            Bind::Read(dz),
            Bind::Read(log_theta),
            Bind::Write(dpre),
            Bind::Write(dlog_theta),
        ],
        gpu.groups_for(n / per_invocation, WG),
    )
}
