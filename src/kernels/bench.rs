//! Ceiling kernels for benches/kernels.rs (shaders/bench.wgsl): an FMA-throughput loop and
//! a vec4 buffer copy. Kernel throughput is reported as a fraction of these, measured on
//! the same adapter in the same run, because absolute GFLOP/s mean little across adapters
//! (lavapipe on two cores versus a discrete GPU).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::expect_len;

pub static SHADER: Shader = Shader {
    name: "bench",
    source: include_str!("../../shaders/bench.wgsl"),
};

const WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    iters: u32,
    len: u32,
    _pad: [u32; 2],
}

fn kernel(entry: &'static str) -> Kernel<'static> {
    Kernel {
        shader: &SHADER,
        entry,
        constants: &[],
    }
}

/// FLOPs one [`fma_peak`] dispatch performs: 8 vec4 accumulators, 4 multiply-adds each
/// per iteration, 2 FLOPs per multiply-add.
pub fn fma_peak_flops(invocations: usize, iters: u32) -> f64 {
    invocations as f64 * iters as f64 * 4.0 * 8.0 * 4.0 * 2.0
}

/// One invocation per element of `out`, each running `iters` iterations of independent
/// multiply-adds and writing their sum (so the loop cannot be dropped).
/// -> out: (invocations)
pub fn fma_peak(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    iters: u32,
    out: &GpuTensor,
) -> Result<()> {
    let len = out.len();
    let p = Params {
        iters,
        len: len as u32,
        _pad: [0; 2],
    };
    gpu.dispatch(
        enc,
        &kernel("fma_peak"),
        &p,
        &[Bind::Write(out)],
        gpu.groups_for(len, WG),
    )
}

/// dst = src, one vec4 per invocation; moves 2 * 4 * len bytes.
/// src: (len) -> dst: (len), len divisible by 4
pub fn copy_vec4(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    src: &GpuTensor,
    dst: &GpuTensor,
) -> Result<()> {
    let len = src.len();
    expect_len("copy_vec4", "dst", dst, len)?;
    if !len.is_multiple_of(4) {
        return Err(Error::Internal(format!(
            "copy_vec4: {len} elements is not a whole number of vec4"
        )));
    }
    let p = Params {
        iters: 0,
        len: (len / 4) as u32,
        _pad: [0; 2],
    };
    gpu.dispatch(
        enc,
        &kernel("copy_vec4"),
        &p,
        &[Bind::Read(src), Bind::Write(dst)],
        gpu.groups_for(len / 4, WG),
    )
}
