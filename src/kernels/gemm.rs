//! (being written)

use crate::gpu::Shader;

pub static SHADER: Shader = Shader {
    name: "gemm",
    source: include_str!("../../shaders/gemm.wgsl"),
};
