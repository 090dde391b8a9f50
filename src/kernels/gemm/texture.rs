//! The texture path's inputs: A and B copied (in the encoder, no readback) into cached
//! rgba32float textures laid out like their buffers ([`texture_of`]), refilled only when the
//! buffer was written since.

use crate::gpu::{Gpu, GpuTensor};
use crate::{Error, Result};

use super::{FILL_TEXTURE, Params};

/// The rgba32float texture holding the (rows, cols) tensor `t` (cols / 4 texels per row),
/// cached per (buffer, shape) on the device and refreshed only when the buffer was written
/// since: by a copy, or, inside a gate (`Gpu::gated`), by the gated `fill_texture` kernel
/// (a copy cannot be skipped on the device). cols must be a multiple of 4 and, for the
/// copy, a multiple of 64 when rows > 1 (see `texture_fits`).
/// t: (rows, cols) -> its texture view
pub fn texture_of(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    t: &GpuTensor,
    [rows, cols]: [usize; 2],
) -> Result<wgpu::TextureView> {
    if t.len() != rows * cols || !cols.is_multiple_of(4) {
        return Err(Error::Internal(format!(
            "texture_of: tensor {:?} as ({rows}, {cols})",
            t.shape
        )));
    }
    let (texture, view, fresh) = gpu.texture_slot(t, rows, cols);
    if fresh {
        return Ok(view);
    }
    if gpu.is_gated() {
        let p = Params {
            m: rows as u32,
            n: (cols / 4) as u32,
            ..Default::default()
        };
        FILL_TEXTURE
            .call(p)
            .dims(&[("rows", rows), ("cols", cols)])
            .bind(t)
            .texture_write(&view)
            .items(rows * cols / 4)
            .record(gpu, enc)?;
        return Ok(view);
    }
    let size = wgpu::Extent3d {
        width: (cols / 4) as u32,
        height: rows as u32,
        depth_or_array_layers: 1,
    };
    enc.copy_buffer_to_texture(
        wgpu::TexelCopyBufferInfo {
            buffer: &t.buf,
            layout: wgpu::TexelCopyBufferLayout {
                offset: t.offset,
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
    gpu.texture_filled(t, rows, cols);
    Ok(view)
}
