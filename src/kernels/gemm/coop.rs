//! The encoder GEMM on cooperative matrices (shaders/gemm_coop.wgsl): experimental, behind
//! SAEFORGE_COOP_MATRIX=1 ([`crate::gpu::GpuOptions::cooperative_matrix`]). A and B are
//! rounded to f16 as they are staged, the products accumulate in f32; against the f32 GEMM
//! the result moves by the inputs' rounding (2^-11 relative per factor), which
//! tests/kernels/gemm_coop.rs bounds (`COOP_F16`) against the reference GEMM of the rounded
//! inputs. On an adapter without the feature the device says why in one line when it is
//! opened and the f32 paths run.
//!
//! wgpu 30 validates cooperative matrices of 16x16 f16 and maps them to Vulkan's
//! VK_KHR_cooperative_matrix; the kernel has not yet run on an adapter that has them (the
//! development machine's lavapipe has none), so the option stays experimental.

use crate::gpu::{Gpu, GpuTensor, Shader};
use crate::kernels::decl::{Entry, Grid, Uniform, Wg, rf, wf};
use crate::reference::gemm::GemmSpec;
use crate::{Error, Result};

pub static SHADER: Shader = Shader {
    name: "gemm_coop",
    source: include_str!("../../../shaders/gemm_coop.wgsl"),
};

/// The tile of C one workgroup computes (TM x TN in the shader).
const TILE: usize = 32;

crate::uniform! {
    struct Params {
        m: u32, n: u32, k: u32, has_bias: u32,
    }
}

pub static GEMM_COOP: Entry = Entry::new(
    &SHADER,
    "gemm_coop",
    Params::LAYOUT,
    &[
        rf("a", "m, k"),
        rf("b", "k, n"),
        rf("bias", "n"),
        wf("c", "m, n"),
    ],
)
.wg(Wg::Fixed(32))
.grid(Grid::Custom);

/// Every entry point of shaders/gemm_coop.wgsl.
pub static ENTRIES: &[&Entry] = &[&GEMM_COOP];

/// Whether `spec` is a product gemm_coop computes: A (m, k) B (k, n) as stored, alpha 1,
/// beta 0, on a device where it is on.
pub fn takes(gpu: &Gpu, spec: &GemmSpec) -> bool {
    gpu.coop_missing.is_none()
        && !spec.trans_a
        && !spec.trans_b
        && spec.alpha == 1.0
        && spec.beta == 0.0
}

/// C = A B + bias on cooperative matrices (f16 inputs, f32 accumulation).
/// a: (m, k), b: (k, n), bias: (n) -> c: (m, n)
#[allow(clippy::too_many_arguments)]
pub fn gemm_coop(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<()> {
    if let Some(why) = &gpu.coop_missing {
        return Err(Error::Device(format!("gemm_coop: {why}")));
    }
    if !takes(gpu, spec) {
        return Err(Error::Internal(format!(
            "gemm_coop: computes A B + bias only, got {spec:?}"
        )));
    }
    let GemmSpec { m, n, k, .. } = *spec;
    let u = |what, v| crate::kernels::decl::to_u32("gemm_coop", what, v);
    let p = Params {
        m: u("m", m)?,
        n: u("n", n)?,
        k: u("k", k)?,
        has_bias: bias.is_some() as u32,
    };
    GEMM_COOP
        .call(p)
        .dims(&[("m", m), ("n", n), ("k", k)])
        .binds(&[a, b])
        .bind_opt(bias, a)
        .bind(c)
        .grid([n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1])
        .skip_if(m == 0 || n == 0)
        .record(gpu, enc)
}
