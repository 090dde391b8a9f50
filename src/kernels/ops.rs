//! Launchers for shaders/ops.wgsl: small operations of the training step.

use bytemuck::{Pod, Zeroable};

use super::expect_len;
use crate::gpu::{Bind, DType, Gate, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

pub static SHADER: Shader = Shader {
    name: "ops",
    source: include_str!("../../shaders/ops.wgsl"),
};

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    len: u32,
    first: u32,
    decay: f32,
    index: u32,
    threshold: u32,
    _pad: [u32; 3],
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
        ..Default::default()
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
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel("threshold_ema"),
        &p,
        &[Bind::Read(thr), Bind::Write(state)],
        [1, 1, 1],
    )
}

/// The plan of `gate`: flag = src[index] > threshold; each dispatch recorded under the gate
/// (its grid and the flag value it runs on are in gate.table, written by `Gate::finish`)
/// gets its grid as indirect arguments when its value equals the flag, else zero groups.
/// Record it after whatever writes src and before the gated dispatches; never gated itself.
/// src: (>= index + 1) u32, table: (slots, 4) u32 -> args: (slots, 3) u32
pub fn gate_plan(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    gate: &Gate,
    src: &GpuTensor,
    index: usize,
    threshold: u32,
) -> Result<()> {
    if src.dtype != DType::U32 || index >= src.len() {
        return Err(Error::Internal(format!(
            "gate_plan: src {:?} ({:?}) has no u32 element {index}",
            src.shape, src.dtype
        )));
    }
    if gpu.is_gated() {
        return Err(Error::Internal("gate_plan: recorded inside a gate".into()));
    }
    let slots = gate.slots();
    let p = Params {
        len: slots as u32,
        index: index as u32,
        threshold,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel("gate_plan"),
        &p,
        &[
            Bind::Read(src),
            Bind::Read(&gate.table),
            Bind::Write(&gate.args),
        ],
        gpu.groups_for(slots, WG),
    )
}

/// a = 0 (a dispatch, so that it can be gated; `Gpu::fill` is a queue write).
/// a: (len)
pub fn zero(gpu: &Gpu, enc: &mut wgpu::CommandEncoder, a: &GpuTensor) -> Result<()> {
    let len = a.len();
    let p = Params {
        len: len as u32,
        ..Default::default()
    };
    gpu.dispatch(
        enc,
        &kernel("zero"),
        &p,
        &[Bind::Write(a)],
        gpu.groups_for(len, WG),
    )
}
