//! Recording dispatches. Every kernel follows one binding convention so that launchers stay
//! short and the caches can key on plain data:
//!
//! * `@group(0) @binding(0)`: the launch parameters, a uniform struct (shapes, scalars);
//! * `@binding(1..)`: storage buffers in the order the launcher lists them, each declared
//!   `read` or `read_write` in WGSL exactly as the launcher's [`Bind`] says;
//! * optional extra uniforms (e.g. Adam's per-step lr) as [`Bind::Uniform`].
//!
//! Layouts are explicit (not `layout: auto`), so an entry point may leave a binding unused.
//! Pipelines are cached by (shader, entry point, override constants, layout); parameter
//! uniforms by their bytes; bind groups by (pipeline, buffers, parameters). A training step
//! with fixed shapes therefore creates nothing after its first step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytemuck::Pod;

use crate::{Error, Result};

use super::{Gpu, GpuTensor};

/// One WGSL source file.
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// An entry point of a shader with its override constants.
pub struct Kernel<'a> {
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub constants: &'a [(&'static str, f64)],
}

/// A buffer bound at binding 1, 2, ... in the order given.
#[derive(Clone, Copy)]
pub enum Bind<'a> {
    Read(&'a GpuTensor),
    Write(&'a GpuTensor),
    Uniform(&'a wgpu::Buffer),
}

impl Bind<'_> {
    fn kind(&self) -> u8 {
        match self {
            Bind::Read(_) => 0,
            Bind::Write(_) => 1,
            Bind::Uniform(_) => 2,
        }
    }
    fn buffer(&self) -> &wgpu::Buffer {
        match self {
            Bind::Read(t) | Bind::Write(t) => &t.buf,
            Bind::Uniform(b) => b,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
    layout: Vec<u8>,
}

#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: PipelineKey,
    buffers: Vec<wgpu::Buffer>,
    params: Vec<u8>,
}

struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// Bind groups hold their buffers alive; past this many entries the cache starts afresh
/// (only tests with many shapes get there; a training step uses a few dozen).
const MAX_BIND_GROUPS: usize = 2048;

type AnyArc = Arc<dyn std::any::Any + Send + Sync>;

#[derive(Default)]
pub(crate) struct Caches {
    /// Scratch tensors by purpose: (buffer, elements allocated).
    scratch: Mutex<HashMap<&'static str, (wgpu::Buffer, usize)>>,
    /// Objects a launcher builds once per device (e.g. texture pipelines), by key.
    objects: Mutex<HashMap<(&'static str, Vec<u64>), AnyArc>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    uniforms: Mutex<HashMap<Vec<u8>, wgpu::Buffer>>,
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
}

/// Fold a 1-D workgroup count into (x, y) within the per-dimension limit. Shaders recover
/// the linear index as `wid.x + wid.y * nwg.x` and return when it is past the end.
pub fn grid_1d(groups: u32, max_per_dim: u32) -> [u32; 3] {
    if groups <= max_per_dim {
        [groups.max(1), 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dim);
        [groups.div_ceil(y), y, 1]
    }
}

impl Gpu {
    /// A scratch tensor of at least `len` elements for `purpose`, owned by this device and
    /// reused by every call (dispatches and submissions are ordered, so callers whose
    /// dispatches are adjacent never see each other's data). Its shape is the allocated
    /// length, which may exceed `len`. Caches are per device: wgpu ids are per instance,
    /// so a process-wide cache keyed by device could hand one device another's buffer.
    pub fn scratch(
        &self,
        purpose: &'static str,
        dtype: super::DType,
        len: usize,
    ) -> Result<GpuTensor> {
        let mut cache = self.caches.scratch.lock().unwrap();
        let len = len.max(1);
        if let Some((buf, have)) = cache.get(purpose)
            && *have >= len
        {
            return Ok(GpuTensor {
                buf: buf.clone(),
                shape: vec![*have],
                dtype,
            });
        }
        let t = match dtype {
            super::DType::F32 => self.zeros(purpose, &[len])?,
            super::DType::U32 => self.zeros_u32(purpose, &[len])?,
        };
        cache.insert(purpose, (t.buf.clone(), len));
        Ok(t)
    }

    /// An object built once per device under `key` (e.g. a pipeline outside `dispatch`).
    pub fn cached<T: std::any::Any + Send + Sync>(
        &self,
        key: (&'static str, Vec<u64>),
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut m = self.caches.objects.lock().unwrap();
        if let Some(v) = m.get(&key)
            && let Ok(t) = v.clone().downcast::<T>()
        {
            return t;
        }
        let t = Arc::new(make());
        m.insert(key, t.clone());
        t
    }

    /// Workgroups for `n` items at `per_group` items each, folded into the grid limit.
    pub fn groups_for(&self, n: usize, per_group: usize) -> [u32; 3] {
        let g = n.div_ceil(per_group.max(1)) as u32;
        grid_1d(g, self.limits.max_compute_workgroups_per_dimension)
    }

    fn module(&self, shader: &'static Shader) -> wgpu::ShaderModule {
        let mut m = self.caches.modules.lock().unwrap();
        m.entry(shader.name)
            .or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                    })
            })
            .clone()
    }

    fn pipeline(&self, key: &PipelineKey, k: &Kernel) -> Arc<Pipeline> {
        if let Some(p) = self.caches.pipelines.lock().unwrap().get(key) {
            return p.clone();
        }
        let module = self.module(k.shader);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = std::iter::once(2u8)
            .chain(key.layout.iter().copied())
            .enumerate()
            .map(|(i, kind)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match kind {
                        0 => wgpu::BufferBindingType::Storage { read_only: true },
                        1 => wgpu::BufferBindingType::Storage { read_only: false },
                        _ => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(k.entry),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(k.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(k.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: k.constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        let p = Arc::new(Pipeline { pipeline, layout });
        self.caches
            .pipelines
            .lock()
            .unwrap()
            .insert(key.clone(), p.clone());
        p
    }

    fn uniform(&self, bytes: &[u8]) -> wgpu::Buffer {
        let mut u = self.caches.uniforms.lock().unwrap();
        if u.len() > MAX_BIND_GROUPS {
            u.clear();
        }
        u.entry(bytes.to_vec())
            .or_insert_with(|| {
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().next_multiple_of(16).max(16), 0);
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: padded.len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                self.queue.write_buffer(&b, 0, &padded);
                b
            })
            .clone()
    }

    /// A uniform buffer the caller owns and rewrites between submissions (e.g. Adam's step).
    pub fn uniform_buffer(&self, label: &str, bytes: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.next_multiple_of(16).max(16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Record one dispatch of `k` into `enc`: `params` at binding 0, `binds` at 1, 2, ...
    pub fn dispatch<P: Pod>(
        &self,
        enc: &mut wgpu::CommandEncoder,
        k: &Kernel,
        params: &P,
        binds: &[Bind],
        groups: [u32; 3],
    ) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::Internal(format!(
                "{}: workgroup grid {groups:?} exceeds the adapter's {max} per dimension",
                k.entry
            )));
        }
        for b in binds {
            if let Bind::Read(t) | Bind::Write(t) = b {
                self.check_fits(k.entry, &t.shape, t.bytes())?;
            }
        }
        let key = PipelineKey {
            shader: k.shader.name,
            entry: k.entry,
            constants: k.constants.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
            layout: binds.iter().map(Bind::kind).collect(),
        };
        let pipeline = self.pipeline(&key, k);
        let params = bytemuck::bytes_of(params).to_vec();
        let bkey = BindKey {
            pipeline: key,
            buffers: binds.iter().map(|b| b.buffer().clone()).collect(),
            params,
        };
        let mut cache = self.caches.bind_groups.lock().unwrap();
        if cache.len() > MAX_BIND_GROUPS {
            cache.clear();
        }
        if !cache.contains_key(&bkey) {
            let ubuf = self.uniform(&bkey.params);
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: ubuf.as_entire_binding(),
            }];
            for (i, b) in binds.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.buffer().as_entire_binding(),
                });
            }
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(k.entry),
                layout: &pipeline.layout,
                entries: &entries,
            });
            cache.insert(
                BindKey {
                    pipeline: bkey.pipeline.clone(),
                    buffers: bkey.buffers.clone(),
                    params: bkey.params.clone(),
                },
                bg,
            );
        }
        let bg = cache.get(&bkey).expect("inserted above");
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(k.entry),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, bg, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        Ok(())
    }
}
