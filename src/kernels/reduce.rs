//! (being written)

use crate::gpu::Shader;

pub static SHADER: Shader = Shader {
    name: "reduce",
    source: include_str!("../../shaders/reduce.wgsl"),
};
