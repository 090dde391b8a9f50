//! Recording dispatches. Every kernel follows one binding convention so that launchers stay
//! short and the caches can key on plain data:
//!
//! * `@group(0) @binding(0)`: the launch parameters, a uniform struct (shapes, scalars);
//! * `@binding(1..)`: storage buffers in the order the launcher lists them, each declared
//!   `read` or `read_write` in WGSL exactly as the launcher's [`Bind`] says;
//! * optional extra uniforms (e.g. Adam's per-step lr) as [`Bind::Uniform`];
//! * rgba32float storage textures ([`Bind::Texture`] read-only, [`Bind::TextureWrite`]
//!   write-only), for the software-adapter paths that read through textures (see
//!   [`Gpu::texture_slot`]).
//!
//! Gates: dispatches recorded while a [`Gate`] is open are indirect, with workgroup counts
//! that a device-side plan (`Gate::plan`'s kernel, see `crate::kernels::ops::gate_plan`)
//! sets to the recorded grid or to zero from a flag computed earlier in the same command
//! buffer. A step can thus hold two alternative paths (sparse codes or the dense fallback)
//! and run one, with no readback.
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
#[derive(Debug)]
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

/// A resource bound at binding 1, 2, ... in the order given.
#[derive(Clone, Copy)]
pub enum Bind<'a> {
    Read(&'a GpuTensor),
    Write(&'a GpuTensor),
    Uniform(&'a wgpu::Buffer),
    /// `texture_storage_2d<rgba32float, read>`
    Texture(&'a wgpu::TextureView),
    /// `texture_storage_2d<rgba32float, write>`
    TextureWrite(&'a wgpu::TextureView),
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Resource {
    /// A buffer from an offset.
    Buffer(wgpu::Buffer, u64),
    View(wgpu::TextureView),
}

impl Bind<'_> {
    fn kind(&self) -> u8 {
        match self {
            Bind::Read(_) => 0,
            Bind::Write(_) => 1,
            Bind::Uniform(_) => 2,
            Bind::Texture(_) => 3,
            Bind::TextureWrite(_) => 4,
        }
    }
    fn resource(&self) -> Resource {
        match self {
            Bind::Read(t) | Bind::Write(t) => Resource::Buffer(t.buf.clone(), t.offset),
            Bind::Uniform(b) => Resource::Buffer((*b).clone(), 0),
            Bind::Texture(v) | Bind::TextureWrite(v) => Resource::View((*v).clone()),
        }
    }
    fn binding(&self) -> wgpu::BindingResource<'_> {
        match self {
            Bind::Read(t) | Bind::Write(t) => t.binding(),
            Bind::Uniform(b) => b.as_entire_binding(),
            Bind::Texture(v) | Bind::TextureWrite(v) => wgpu::BindingResource::TextureView(v),
        }
    }
}

fn layout_type(kind: u8) -> wgpu::BindingType {
    let texture = |access| wgpu::BindingType::StorageTexture {
        access,
        format: wgpu::TextureFormat::Rgba32Float,
        view_dimension: wgpu::TextureViewDimension::D2,
    };
    let buffer = |ty| wgpu::BindingType::Buffer {
        ty,
        has_dynamic_offset: false,
        min_binding_size: None,
    };
    match kind {
        0 => buffer(wgpu::BufferBindingType::Storage { read_only: true }),
        1 => buffer(wgpu::BufferBindingType::Storage { read_only: false }),
        3 => texture(wgpu::StorageTextureAccess::ReadOnly),
        4 => texture(wgpu::StorageTextureAccess::WriteOnly),
        _ => buffer(wgpu::BufferBindingType::Uniform),
    }
}

/// A set of gated dispatches sharing one device-side flag: see the module docs. Record
/// the flag's plan first (`kernels::ops::gate_plan`), then the gated dispatches inside
/// [`Gpu::gated`] scopes, then [`Gate::finish`] before submitting.
pub struct Gate {
    /// (slots, 3) u32 indirect arguments, written by the plan kernel.
    pub args: GpuTensor,
    /// (slots, 4) u32: each gated dispatch's grid and the flag value it runs on.
    pub table: GpuTensor,
    slots: usize,
    entries: Mutex<Vec<[u32; 4]>>,
}

impl Gate {
    /// Dispatches recorded under this gate since the last `finish`.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Capacity in dispatches.
    pub fn slots(&self) -> usize {
        self.slots
    }
    /// Write the table of the dispatches recorded since the last call (queued, so before
    /// the next submission runs) and start a new recording.
    pub fn finish(&self, gpu: &Gpu) -> Result<()> {
        let mut e = self.entries.lock().unwrap();
        let mut flat: Vec<u32> = e.iter().flatten().copied().collect();
        flat.resize(self.slots * 4, 0);
        gpu.write(&self.table, &flat)?;
        e.clear();
        Ok(())
    }
}

/// Cached textures of tensors: (buffer, offset in bytes, rows, cols) -> texture, its view,
/// and whether it holds the tensor's current contents (as far as recorded commands go).
type TextureKey = (wgpu::Buffer, u64, u32, u32);
struct TextureEntry {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    fresh: bool,
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
    buffers: Vec<Resource>,
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
    /// Per recording thread, while its dispatches are being profiled (see
    /// `super::profile`).
    pub(super) profile: Mutex<HashMap<std::thread::ThreadId, super::profile::Profile>>,
    textures: Mutex<HashMap<TextureKey, TextureEntry>>,
    /// Per recording thread: the gate its dispatches are recorded under, and the flag
    /// value they run on (threads share the device, e.g. parallel tests).
    gate: Mutex<HashMap<std::thread::ThreadId, (Arc<Gate>, bool)>>,
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
                offset: 0,
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
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                };
                if self.checked_shaders {
                    self.device.create_shader_module(desc)
                } else {
                    // SAFETY: every shader is validated by naga (tests/shaders.rs) and run
                    // checked by the tests (tests/common opens the device with
                    // checked_shaders); the kernels keep their addresses in range
                    // themselves (clamped or guarded loads, launchers' shape checks), never
                    // divide by zero, and every loop has a bound from the parameters.
                    unsafe {
                        self.device.create_shader_module_trusted(
                            desc,
                            wgpu::ShaderRuntimeChecks::unchecked(),
                        )
                    }
                }
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
                ty: layout_type(kind),
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
            buffers: binds.iter().map(Bind::resource).collect(),
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
                    resource: b.binding(),
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
        for b in binds {
            if let Bind::Write(t) = b {
                self.stale(&t.buf);
            }
        }
        let gate = self.current_gate();
        let stamps = self.profile_stamps();
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(k.entry),
            timestamp_writes: stamps.as_deref().map(super::profile::Stamps::writes),
        });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, bg, &[]);
        match gate {
            None => pass.dispatch_workgroups(groups[0], groups[1], groups[2]),
            Some((g, when)) => {
                let mut e = g.entries.lock().unwrap();
                if e.len() >= g.slots {
                    return Err(Error::Internal(format!(
                        "{}: gate full ({} dispatches)",
                        k.entry, g.slots
                    )));
                }
                e.push([groups[0], groups[1], groups[2], when as u32]);
                pass.dispatch_workgroups_indirect(&g.args.buf, 12 * (e.len() as u64 - 1));
            }
        }
        drop(pass);
        drop(cache);
        if let Some(s) = &stamps {
            s.resolve(enc);
        }
        self.after_dispatch(enc, k.entry, stamps.as_deref())
    }

    /// A gate for up to `slots` dispatches.
    pub fn gate(&self, slots: usize) -> Result<Arc<Gate>> {
        let args = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gate args"),
            size: (slots.max(1) * 12) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::INDIRECT
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Arc::new(Gate {
            args: GpuTensor {
                buf: args,
                offset: 0,
                shape: vec![slots.max(1), 3],
                dtype: super::DType::U32,
            },
            table: self.zeros_u32("gate table", &[slots.max(1), 4])?,
            slots,
            entries: Mutex::new(Vec::new()),
        }))
    }

    /// Record the dispatches of `f` under `gate`: each runs only when the gate's flag
    /// equals `when` (the plan kernel decides, on the device).
    pub fn gated<R>(&self, gate: &Arc<Gate>, when: bool, f: impl FnOnce() -> R) -> R {
        let me = std::thread::current().id();
        let prev = self
            .caches
            .gate
            .lock()
            .unwrap()
            .insert(me, (gate.clone(), when));
        let r = f();
        let mut m = self.caches.gate.lock().unwrap();
        match prev {
            Some(p) => m.insert(me, p),
            None => m.remove(&me),
        };
        r
    }

    fn current_gate(&self) -> Option<(Arc<Gate>, bool)> {
        let me = std::thread::current().id();
        self.caches.gate.lock().unwrap().get(&me).cloned()
    }

    /// True inside [`Gpu::gated`] (on this thread): work recorded now may not run.
    pub fn is_gated(&self) -> bool {
        self.current_gate().is_some()
    }

    /// The cached rgba32float texture for the (rows, cols) tensor in `buf` (cols / 4 texels
    /// per row), created on first use, and whether it is known to hold the buffer's current
    /// contents. After filling it, call [`Gpu::texture_filled`].
    pub fn texture_slot(
        &self,
        t: &GpuTensor,
        rows: usize,
        cols: usize,
    ) -> (wgpu::Texture, wgpu::TextureView, bool) {
        let key = (t.buf.clone(), t.offset, rows as u32, cols as u32);
        let mut m = self.caches.textures.lock().unwrap();
        let e = m.entry(key).or_insert_with(|| {
            let texture = self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("tensor texture"),
                size: wgpu::Extent3d {
                    width: (cols / 4) as u32,
                    height: rows as u32,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
            TextureEntry {
                texture,
                view,
                fresh: false,
            }
        });
        (e.texture.clone(), e.view.clone(), e.fresh)
    }

    /// Mark the texture of (t, rows, cols) as holding the tensor's contents (its fill is
    /// recorded and not gated).
    pub fn texture_filled(&self, t: &GpuTensor, rows: usize, cols: usize) {
        let key = (t.buf.clone(), t.offset, rows as u32, cols as u32);
        if let Some(e) = self.caches.textures.lock().unwrap().get_mut(&key) {
            e.fresh = true;
        }
    }

    /// `buf` is being written: its textures no longer hold its contents.
    pub(crate) fn stale(&self, buf: &wgpu::Buffer) {
        let mut m = self.caches.textures.lock().unwrap();
        if m.is_empty() {
            return;
        }
        for (k, e) in m.iter_mut() {
            if &k.0 == buf {
                e.fresh = false;
            }
        }
    }
}
