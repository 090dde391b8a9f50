//! (being written)

use crate::gpu::Shader;

pub static SHADER: Shader = Shader {
    name: "sparse",
    source: include_str!("../../shaders/sparse.wgsl"),
};
