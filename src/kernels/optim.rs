//! (being written)

use crate::gpu::Shader;

pub static SHADER: Shader = Shader {
    name: "optim",
    source: include_str!("../../shaders/optim.wgsl"),
};
