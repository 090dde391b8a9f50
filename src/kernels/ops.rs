//! Launchers for shaders/ops.wgsl: small operations of the training step.

use bytemuck::{Pod, Zeroable};

use super::expect_len;
use crate::Result;
use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader};

pub static SHADER: Shader = Shader {
    name: "ops",
    source: include_str!("../../shaders/ops.wgsl"),
};

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    len: u32,
    first: u32,
    decay: f32,
    _pad: u32,
}

fn kernel(entry: &'static str) -> Kernel<'static> {
    Kernel {
        shader: &SHADER,
        entry,
        constants: &[],
    }
}

/// a += b.
/// a: (len), b: (len)
pub fn add_into(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    a: &GpuTensor,
    b: &GpuTensor,
) -> Result<()> {
    let len = a.len();
    expect_len("add_into", "b", b, len)?;
    let p = Params {
        len: len as u32,
        first: 0,
        decay: 0.0,
        _pad: 0,
    };
    gpu.dispatch(
        enc,
        &kernel("add_into"),
        &p,
        &[Bind::Write(a), Bind::Read(b)],
        gpu.groups_for(len, WG),
    )
}

/// state = first ? max(thr, 0) : decay * state + (1 - decay) * max(thr, 0).
/// thr: (1), state: (1)
pub fn threshold_ema(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    thr: &GpuTensor,
    state: &GpuTensor,
    decay: f32,
    first: bool,
) -> Result<()> {
    expect_len("threshold_ema", "thr", thr, 1)?;
    expect_len("threshold_ema", "state", state, 1)?;
    let p = Params {
        len: 1,
        first: first as u32,
        decay,
        _pad: 0,
    };
    gpu.dispatch(
        enc,
        &kernel("threshold_ema"),
        &p,
        &[Bind::Read(thr), Bind::Write(state)],
        [1, 1, 1],
    )
}
