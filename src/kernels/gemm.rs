//! GEMM launchers (shaders/gemm.wgsl): C = alpha * op(A) op(B) + bias + beta * C.
//!
//! Three kernels, one contract; [`gemm`] picks by adapter and shape, [`gemm_with`] forces one
//! (tests run every path on every adapter):
//!
//! * [`GemmPath::Texture`] (software adapters): lavapipe compiles each storage-buffer load in
//!   a loop into a per-lane loop with branches, while a read-only storage-texture load is a
//!   branch-free gather, about 6x cheaper. So A and B are copied (in the encoder, no
//!   readback) into rgba32float textures laid out exactly like the buffers, and the kernel
//!   reads texels. Needs k and n divisible by 4 and stored row lengths that the texture copy
//!   accepts (multiples of 64 floats, or a single row); see shaders/gemm.wgsl for the figures.
//! * [`GemmPath::Tiled`] (hardware adapters): 64x64 tiles staged in workgroup memory.
//! * [`GemmPath::General`]: any shape, plain storage buffers, no workgroup memory; what
//!   software adapters use for shapes the texture path cannot take.
//!
//! The texture path cannot go through [`Gpu::dispatch`] (which binds buffers only), so it
//! keeps its own small pipeline cache keyed by device and override constants; its textures
//! are created per call and released by wgpu once the submission that uses them is done.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader, grid_1d};
use crate::{Error, Result};

use super::expect_shape;

pub use crate::reference::gemm::GemmSpec;

pub static SHADER: Shader = Shader {
    name: "gemm",
    source: include_str!("../../shaders/gemm.wgsl"),
};

/// Invocations per workgroup of gemm_tex (one column quad each) and gemm_general.
const TX_WG: usize = 64;
const GN_WG: usize = 64;
/// Rows of C per invocation of gemm_tex / gemm_general, and the tile of gemm_tiled.
const TX_ROWS: usize = 8;
const GN_ROWS: usize = 4;
const TL_TILE: usize = 64;

/// Which kernel records the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// Texture on software adapters when the shape allows, General otherwise there;
    /// Tiled on hardware adapters.
    Auto,
    Texture,
    Tiled,
    General,
}

impl GemmPath {
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Auto => "auto",
            GemmPath::Texture => "texture",
            GemmPath::Tiled => "tiled",
            GemmPath::General => "general",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
    alpha: f32,
    beta: f32,
    _pad1: [u32; 2],
}

/// C = alpha * op(A) op(B) + bias + beta * C, on the kernel [`GemmPath::Auto`] picks.
/// a: (m, k) or (k, m) when trans_a, b: (k, n) or (n, k) when trans_b, bias: (n) -> c: (m, n).
/// beta == 0: C is not read (it may hold NaN).
pub fn gemm(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<()> {
    gemm_with(gpu, enc, spec, a, b, bias, c, GemmPath::Auto)
}

/// The kernel [`gemm`] uses for `spec` on this adapter (never `Auto`).
pub fn auto_path(gpu: &Gpu, spec: &GemmSpec) -> GemmPath {
    if !gpu.is_software() {
        GemmPath::Tiled
    } else if texture_fits(gpu, spec) {
        GemmPath::Texture
    } else {
        GemmPath::General
    }
}

/// Whether [`GemmPath::Texture`] can take `spec` on this adapter.
pub fn texture_fits(gpu: &Gpu, spec: &GemmSpec) -> bool {
    let max = gpu.limits.max_texture_dimension_2d as usize;
    let copyable = |[rows, cols]: [usize; 2]| {
        cols.is_multiple_of(4)
            && (rows == 1 || cols.is_multiple_of(64))
            && cols / 4 <= max
            && rows <= max
    };
    let max_groups = gpu.limits.max_compute_workgroups_per_dimension as usize;
    spec.m > 0
        && spec.k > 0
        && spec.k.is_multiple_of(4)
        && spec.n.is_multiple_of(4)
        && (spec.n / 4).div_ceil(TX_WG) <= max_groups
        && copyable(spec.a_shape())
        && copyable(spec.b_shape())
}

/// [`gemm`] on a chosen kernel; `Texture` on a shape it cannot take is an error.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    spec: &GemmSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    path: GemmPath,
) -> Result<()> {
    let GemmSpec { m, n, k, .. } = *spec;
    expect_shape("gemm", "A", a, &spec.a_shape())?;
    expect_shape("gemm", "B", b, &spec.b_shape())?;
    expect_shape("gemm", "C", c, &[m, n])?;
    if let Some(bias) = bias {
        expect_shape("gemm", "bias", bias, &[n])?;
    }
    if !spec.alpha.is_finite() || !spec.beta.is_finite() {
        return Err(Error::Internal(format!(
            "gemm: alpha {} and beta {} must be finite",
            spec.alpha, spec.beta
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    for (what, v) in [("m", m), ("n", n), ("k", k)] {
        if v > u32::MAX as usize {
            return Err(Error::Internal(format!("gemm: {what} = {v} exceeds u32")));
        }
    }
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        _pad0: 0,
        alpha: spec.alpha,
        beta: spec.beta,
        _pad1: [0; 2],
    };
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    let common = [
        ("TRANS_A", flag(spec.trans_a)),
        ("TRANS_B", flag(spec.trans_b)),
        ("HAS_BIAS", flag(bias.is_some())),
        ("USE_BETA", flag(spec.beta != 0.0)),
    ];
    let path = match path {
        GemmPath::Auto => auto_path(gpu, spec),
        p => p,
    };
    // Without a bias, binding 3 still needs a buffer: A's, which the kernel never reads then.
    let bias_buf = bias.unwrap_or(a);
    let max = gpu.limits.max_compute_workgroups_per_dimension;
    match path {
        GemmPath::Auto => unreachable!("resolved above"),
        GemmPath::Texture => {
            if !texture_fits(gpu, spec) {
                return Err(Error::Internal(format!(
                    "gemm: the texture path cannot take {spec:?} on adapter {}",
                    gpu.info.name
                )));
            }
            let rows = grid_1d(m.div_ceil(TX_ROWS) as u32, max);
            let groups = [rows[0], (n / 4).div_ceil(TX_WG) as u32, rows[1]];
            let mut constants = common.to_vec();
            constants.push(("TX_WG", TX_WG as f64));
            texture_dispatch(
                gpu, enc, &params, &constants, a, b, bias_buf, c, spec, groups,
            )
        }
        GemmPath::Tiled => {
            let rows = grid_1d(m.div_ceil(TL_TILE) as u32, max);
            let groups = [rows[0], n.div_ceil(TL_TILE) as u32, rows[1]];
            let mut constants = common.to_vec();
            constants.push(("TL_BK", 16.0));
            gpu.dispatch(
                enc,
                &Kernel {
                    shader: &SHADER,
                    entry: "gemm_tiled",
                    constants: &constants,
                },
                &params,
                &[
                    Bind::Read(a),
                    Bind::Read(b),
                    Bind::Read(bias_buf),
                    Bind::Write(c),
                ],
                groups,
            )
        }
        GemmPath::General => {
            let rows = grid_1d(m.div_ceil(GN_ROWS) as u32, max);
            let groups = [rows[0], n.div_ceil(GN_WG) as u32, rows[1]];
            let mut constants = common.to_vec();
            constants.push(("GN_WG", GN_WG as f64));
            gpu.dispatch(
                enc,
                &Kernel {
                    shader: &SHADER,
                    entry: "gemm_general",
                    constants: &constants,
                },
                &params,
                &[
                    Bind::Read(a),
                    Bind::Read(b),
                    Bind::Read(bias_buf),
                    Bind::Write(c),
                ],
                groups,
            )
        }
    }
}

// ------------------------------------------------------------------ texture path

struct TexturePipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// gemm_tex pipelines by override constants, cached per device (`Gpu::cached`; a handful
/// per training run). The constants are given in a fixed order by `texture_dispatch`.
fn texture_pipeline(gpu: &Gpu, constants: &[(&'static str, f64)]) -> Arc<TexturePipeline> {
    let key = (
        "gemm_tex",
        constants.iter().map(|(_, v)| v.to_bits()).collect(),
    );
    gpu.cached(key, || build_texture_pipeline(gpu, constants))
}

fn build_texture_pipeline(gpu: &Gpu, constants: &[(&'static str, f64)]) -> TexturePipeline {
    let texture = wgpu::BindingType::StorageTexture {
        access: wgpu::StorageTextureAccess::ReadOnly,
        format: wgpu::TextureFormat::Rgba32Float,
        view_dimension: wgpu::TextureViewDimension::D2,
    };
    let buffer = |read_only: bool| wgpu::BindingType::Buffer {
        ty: wgpu::BufferBindingType::Storage { read_only },
        has_dynamic_offset: false,
        min_binding_size: None,
    };
    let types = [
        wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        texture,
        texture,
        buffer(true),
        buffer(false),
    ];
    let entries: Vec<wgpu::BindGroupLayoutEntry> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: *ty,
            count: None,
        })
        .collect();
    let layout = gpu
        .device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("gemm_tex"),
            entries: &entries,
        });
    let pl = gpu
        .device
        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("gemm_tex"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
    let module = gpu
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(SHADER.name),
            source: wgpu::ShaderSource::Wgsl(SHADER.source.into()),
        });
    let pipeline = gpu
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("gemm_tex"),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("gemm_tex"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
    TexturePipeline { pipeline, layout }
}

/// A texture holding the (rows, cols) tensor `t` as rows of cols / 4 rgba32float texels,
/// filled by a copy recorded into `enc`.
fn texture_of(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    what: &str,
    t: &GpuTensor,
    [rows, cols]: [usize; 2],
) -> wgpu::Texture {
    let size = wgpu::Extent3d {
        width: (cols / 4) as u32,
        height: rows as u32,
        depth_or_array_layers: 1,
    };
    let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: Some(what),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    enc.copy_buffer_to_texture(
        wgpu::TexelCopyBufferInfo {
            buffer: &t.buf,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: (rows > 1).then_some((cols * 4) as u32),
                rows_per_image: None,
            },
        },
        wgpu::TexelCopyTextureInfo {
            texture: &texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        size,
    );
    texture
}

#[allow(clippy::too_many_arguments)]
fn texture_dispatch(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    params: &Params,
    constants: &[(&'static str, f64)],
    a: &GpuTensor,
    b: &GpuTensor,
    bias: &GpuTensor,
    c: &GpuTensor,
    spec: &GemmSpec,
    groups: [u32; 3],
) -> Result<()> {
    for t in [a, b, bias, c] {
        gpu.check_fits("gemm", &t.shape, t.bytes())?;
    }
    let pipeline = texture_pipeline(gpu, constants);
    let ta = texture_of(gpu, enc, "gemm A", a, spec.a_shape());
    let tb = texture_of(gpu, enc, "gemm B", b, spec.b_shape());
    let ubuf = gpu.uniform_buffer("gemm params", size_of::<Params>());
    // The uniform is written at the next submission, before any command of this encoder
    // runs; the buffer is this call's own, so that is the value this dispatch sees.
    gpu.queue.write_buffer(&ubuf, 0, bytemuck::bytes_of(params));
    let va = ta.create_view(&wgpu::TextureViewDescriptor::default());
    let vb = tb.create_view(&wgpu::TextureViewDescriptor::default());
    let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("gemm_tex"),
        layout: &pipeline.layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ubuf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::TextureView(&va),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::TextureView(&vb),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: bias.buf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 4,
                resource: c.buf.as_entire_binding(),
            },
        ],
    });
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("gemm_tex"),
        timestamp_writes: None,
    });
    pass.set_pipeline(&pipeline.pipeline);
    pass.set_bind_group(0, &bg, &[]);
    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    Ok(())
}
