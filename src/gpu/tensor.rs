//! Tensors on the device: a storage buffer with a shape and an element type. Every buffer
//! is STORAGE | COPY_SRC | COPY_DST so that tests can poison and read any of them.
//!
//! A tensor larger than one storage binding allows is refused here, with both sizes, rather
//! than left to a wgpu validation panic later.
//!
//! A tensor may start inside its buffer (`offset`): the slots of a pool ([`Gpu::pool`]),
//! one buffer holding the same tensor of several engines, so that one launch can read or
//! write all of them (a sweep's same-shape members' encoders). Bindings, copies, reads and
//! writes all start at the offset.

use bytemuck::Pod;

use crate::{Error, Result};

use super::Gpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
}

pub struct GpuTensor {
    pub buf: wgpu::Buffer,
    /// Where the tensor starts in `buf`, in bytes (0 but for a pool's slots; a multiple
    /// of the device's storage offset alignment).
    pub offset: u64,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl GpuTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }
    /// Another handle to the same buffer with a different shape of the same length
    /// (e.g. a bias (n) seen as a (1, n) matrix).
    pub fn view(&self, shape: &[usize]) -> GpuTensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "view {shape:?} of {:?}",
            self.shape
        );
        self.prefix(shape)
    }

    /// Another handle to the same buffer seeing only its first elements, as `shape` (a
    /// scratch buffer longer than asked, or the rows of a chunk of a batch).
    pub fn prefix(&self, shape: &[usize]) -> GpuTensor {
        assert!(
            shape.iter().product::<usize>() <= self.len(),
            "prefix {shape:?} of {:?}",
            self.shape
        );
        GpuTensor {
            buf: self.buf.clone(),
            offset: self.offset,
            shape: shape.to_vec(),
            dtype: self.dtype,
        }
    }

    /// The binding a kernel sees: the whole buffer, or from the offset on.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        if self.offset == 0 {
            return self.buf.as_entire_binding();
        }
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buf,
            offset: self.offset,
            size: None,
        })
    }

    /// Shape as written in messages, e.g. `[512, 16384]`.
    pub fn shape_str(&self) -> String {
        format!("{:?}", self.shape)
    }
}

impl Gpu {
    /// Bytes one storage binding may hold on this device.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Refuse a tensor of `bytes` that no single binding can hold.
    pub fn check_fits(&self, what: &str, shape: &[usize], bytes: u64) -> Result<()> {
        if bytes > self.max_binding() {
            return Err(Error::Device(format!(
                "{what} {shape:?} needs {bytes} bytes ({:.1} MiB) in one storage binding, but adapter {} allows {} bytes ({:.1} MiB); use a smaller batch or d_sae",
                bytes as f64 / 1048576.0,
                self.info.name,
                self.max_binding(),
                self.max_binding() as f64 / 1048576.0
            )));
        }
        Ok(())
    }

    fn alloc(&self, what: &str, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let len: usize = shape.iter().product();
        let bytes = (len as u64 * 4).max(4); // wgpu rejects zero-sized bindings
        self.check_fits(what, shape, bytes)?;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes.next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuTensor {
            buf,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Elements between two slots of a pool of tensors of `len` elements: the smallest
    /// multiple of the storage offset alignment that holds one.
    pub fn slot_stride(&self, len: usize) -> usize {
        let align = (self.limits.min_storage_buffer_offset_alignment as usize / 4).max(1);
        len.max(1).next_multiple_of(align)
    }

    /// One buffer holding `count` tensors of `shape` (a pool), and a tensor for each slot
    /// at its offset; the slots are `stride` elements apart, the smallest multiple of the
    /// device's storage offset alignment that holds one. The pool itself is (count,
    /// stride) elements; a launch over every slot binds it and steps by `stride`.
    pub fn pool(
        &self,
        what: &str,
        count: usize,
        shape: &[usize],
        dtype: DType,
    ) -> Result<(GpuTensor, Vec<GpuTensor>, usize)> {
        let stride = self.slot_stride(shape.iter().product());
        let pool = self.alloc(what, &[count, stride], dtype)?;
        let slots = (0..count)
            .map(|i| GpuTensor {
                buf: pool.buf.clone(),
                offset: (i * stride * 4) as u64,
                shape: shape.to_vec(),
                dtype,
            })
            .collect();
        Ok((pool, slots, stride))
    }

    /// A zero-filled f32 tensor.
    pub fn zeros(&self, what: &str, shape: &[usize]) -> Result<GpuTensor> {
        self.alloc(what, shape, DType::F32)
    }

    /// A zero-filled u32 tensor.
    pub fn zeros_u32(&self, what: &str, shape: &[usize]) -> Result<GpuTensor> {
        self.alloc(what, shape, DType::U32)
    }

    /// Upload f32 data; `data.len()` must equal the product of `shape`.
    pub fn upload(&self, what: &str, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        let t = self.alloc(what, shape, DType::F32)?;
        self.write(&t, data)?;
        Ok(t)
    }

    /// Upload u32 data.
    pub fn upload_u32(&self, what: &str, shape: &[usize], data: &[u32]) -> Result<GpuTensor> {
        let t = self.alloc(what, shape, DType::U32)?;
        self.write(&t, data)?;
        Ok(t)
    }

    /// Overwrite a tensor's contents (queued; ordered before the next submission).
    pub fn write<T: Pod>(&self, t: &GpuTensor, data: &[T]) -> Result<()> {
        if data.len() != t.len() || size_of::<T>() != 4 {
            return Err(Error::Internal(format!(
                "write to {:?}: {} elements given for shape {}",
                t.buf,
                data.len(),
                t.shape_str()
            )));
        }
        if !data.is_empty() {
            self.stale(&t.buf);
            self.queue
                .write_buffer(&t.buf, t.offset, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Fill every element with the bit pattern of `value` (tests poison outputs with NaN).
    pub fn fill(&self, t: &GpuTensor, value: f32) {
        if !t.is_empty() {
            self.stale(&t.buf);
            let v = vec![value; t.len()];
            self.queue
                .write_buffer(&t.buf, t.offset, bytemuck::cast_slice(&v));
        }
    }

    /// Record a copy of dst.len() elements of `src`, from element `at`, into `dst`.
    pub fn copy_into(
        &self,
        enc: &mut wgpu::CommandEncoder,
        src: &GpuTensor,
        at: usize,
        dst: &GpuTensor,
    ) -> Result<()> {
        if src.dtype != dst.dtype || at + dst.len() > src.len() {
            return Err(Error::Internal(format!(
                "copy of {} {:?} elements from element {at} of a {} {:?} tensor",
                dst.len(),
                dst.dtype,
                src.len(),
                src.dtype
            )));
        }
        if !dst.is_empty() {
            self.stale(&dst.buf);
            let from = src.offset + at as u64 * 4;
            enc.copy_buffer_to_buffer(&src.buf, from, &dst.buf, dst.offset, Some(dst.bytes()));
        }
        Ok(())
    }

    /// Read a tensor back (waits for all submitted work).
    pub fn read<T: Pod>(&self, t: &GpuTensor) -> Result<Vec<T>> {
        let bytes = t.bytes();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.encoder();
        enc.copy_buffer_to_buffer(&t.buf, t.offset, &staging, 0, bytes);
        self.submit(enc);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::DeviceFault("readback: map callback never ran".into()))?
            .map_err(|e| Error::DeviceFault(format!("readback failed: {e}")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::DeviceFault(format!("readback: {e}")))?;
            bytemuck::cast_slice::<u8, T>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    pub fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.read::<f32>(t)
    }

    pub fn read_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        self.read::<u32>(t)
    }
}
