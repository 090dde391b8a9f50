//! (being written)

use crate::gpu::Shader;

pub static SHADER: Shader = Shader {
    name: "topk",
    source: include_str!("../../shaders/topk.wgsl"),
};
