//! Ceiling kernels for benches/kernels.rs (shaders/bench.wgsl): an FMA-throughput loop and
//! a vec4 buffer copy. Kernel throughput is reported as a fraction of these, measured on
//! the same adapter in the same run, because absolute GFLOP/s mean little across adapters
//! (lavapipe on two cores versus a discrete GPU).

use crate::gpu::{Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Entry, Slot, Uniform, rf, wf};

pub static SHADER: Shader = crate::shader!("bench");

const WG: usize = 64;

crate::uniform! {
    struct Params {
        iters: u32,
        len: u32,
        _pad: [u32; 2],
    }
}

const fn bench(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::one_d::<{ WG as u32 }>(&SHADER, name, Params::LAYOUT, binds)
}

pub static FMA_PEAK: Entry = bench("fma_peak", &[wf("out", "any")]);
pub static COPY_VEC4: Entry = bench("copy_vec4", &[rf("src", "len"), wf("dst", "len")]);

/// Every entry point of shaders/bench.wgsl.
pub static ENTRIES: &[&Entry] = &[&FMA_PEAK, &COPY_VEC4];

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
        len: super::decl::to_u32("fma_peak", "len", len)?,
        _pad: [0; 2],
    };
    FMA_PEAK.call(p).bind(out).items(len).record(gpu, enc)
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
    if !len.is_multiple_of(4) {
        return Err(Error::Internal(format!(
            "copy_vec4: {len} elements is not a whole number of vec4"
        )));
    }
    let p = Params {
        iters: 0,
        len: super::decl::to_u32("copy_vec4", "len", len / 4)?,
        _pad: [0; 2],
    };
    COPY_VEC4
        .call(p)
        .dim("len", len)
        .binds(&[src, dst])
        .items(len / 4)
        .record(gpu, enc)
}
