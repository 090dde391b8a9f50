//! Activation launchers (shaders/activations.wgsl). Elementwise, so each invocation owns
//! one element and the grid is 1-D folded into the per-dimension limit.

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
