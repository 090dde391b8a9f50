//! The sparse step's gathers over the per-latent (transposed) index that
//! [`build_transpose`](super::build_transpose) lists (the decoder, encoder and encoder-bias
//! gradients, the JumpReLU threshold gradient) and the sparse backward of the penalties:
//! each latent sums its own entries in ascending slot order, no float atomics. Kept apart
//! from the forward launchers (decode, dot, transpose) of `sparse/mod.rs`.

use crate::gpu::{Gpu, GpuTensor};
use crate::kernels::decl::Entry;
use crate::{Error, Result};

use super::*;

/// dw_dec[i, :] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of
/// val[lat_slot[e]] * dy[lat_row[e], :]; latents with no entries get 0. With `accumulate`,
/// dw_dec[i, :] + that sum instead, for the latents with entries (the others untouched).
/// lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap), val: (cap), dy: (rows, d)
/// -> dw_dec: (n, d)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_dec(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    lat_ptr: &GpuTensor,
    lat_row: &GpuTensor,
    lat_slot: &GpuTensor,
    val: &GpuTensor,
    dy: &GpuTensor,
    n: usize,
    d: usize,
    accumulate: bool,
    dw_dec: &GpuTensor,
) -> Result<()> {
    let t = [lat_ptr, lat_row, lat_slot, val, dy, dw_dec];
    let g = gather("gather_dw_dec", t, n, d, accumulate)?;
    if let Some(v) = g.source_texture(gpu, enc)? {
        return g.texture(&GATHER_DW_DEC_TEX_E, &v, n * (d / 16), gpu, enc);
    }
    let e = pick(d, &GATHER_DW_DEC_E, &GATHER_DW_DEC_VEC4);
    record_cols(gpu, enc, g.buffer(e), n, d)
}

/// dw_enc[:, i] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of
/// dval[lat_slot[e]] * xc[lat_row[e], :]; latents with no entries get 0. With `accumulate`,
/// dw_enc[:, i] + that sum instead, for the latents with entries.
/// lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap), dval: (cap), xc: (rows, d)
/// -> dw_enc: (d, n)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_enc(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    lat_ptr: &GpuTensor,
    lat_row: &GpuTensor,
    lat_slot: &GpuTensor,
    dval: &GpuTensor,
    xc: &GpuTensor,
    n: usize,
    d: usize,
    accumulate: bool,
    dw_enc: &GpuTensor,
) -> Result<()> {
    let t = [lat_ptr, lat_row, lat_slot, dval, xc, dw_enc];
    let g = gather("gather_dw_enc", t, n, d, accumulate)?;
    if let Some(v) = g.source_texture(gpu, enc)? {
        // dW_enc (d, n): four latents per invocation, stored as vec4s along them; a
        // workgroup per 4 quads x WG / 4 column blocks (see the shader).
        if n.is_multiple_of(4) {
            let groups = (n / 4).div_ceil(4) * (d / 16).div_ceil(WG / 4);
            return g.texture(&GATHER_DW_ENC_TEX4, &v, groups * WG, gpu, enc);
        }
        return g.texture(&GATHER_DW_ENC_TEX_E, &v, n * (d / 16), gpu, enc);
    }
    // One invocation per (block of 4 columns or of 4 vec4s, latent).
    let blocks = per_row(d).div_ceil(4);
    let e = pick(d, &GATHER_DW_ENC_E, &GATHER_DW_ENC_VEC4);
    g.buffer(e).items(n * blocks).record(gpu, enc)
}

/// What gather_dw_dec and gather_dw_enc share: the same transpose inputs, one value per
/// entry, one source row of d per entry, the same params and binding order (lat_ptr,
/// lat_row, lat_slot, values, source, output); only the output layout differs.
struct Gather<'a> {
    p: Params,
    dims: [(&'static str, usize); 2],
    /// lat_ptr, lat_row, lat_slot, values, source rows, output.
    t: [&'a GpuTensor; 6],
}

/// Check the source rows (rows, d) for some rows and start a [`Gather`].
fn gather<'a>(
    kernel: &str,
    t: [&'a GpuTensor; 6],
    n: usize,
    d: usize,
    accumulate: bool,
) -> Result<Gather<'a>> {
    let src = t[4];
    if src.shape.len() != 2 || src.shape[1] != d {
        return Err(Error::Internal(format!(
            "{kernel}: source has shape {:?}, expected (rows, {d})",
            src.shape
        )));
    }
    let p = Params {
        rows: 0,
        flag: accumulate as u32,
        ..params(0, n, d, t[2].len())?
    };
    Ok(Gather {
        p,
        dims: [("n", n), ("d", d)],
        t,
    })
}

impl<'a> Gather<'a> {
    /// The storage-buffer entry point `e`, bound.
    fn buffer(&self, e: &'static Entry) -> Call<'a, Params> {
        e.call(self.p).dims(&self.dims).binds(&self.t)
    }

    /// The source rows as a texture when the `_tex` entry points take them
    /// ([`texture_path`]), else None.
    fn source_texture(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
    ) -> Result<Option<wgpu::TextureView>> {
        let (src, d) = (self.t[4], self.p.d as usize);
        if !texture_path(gpu, &[src.shape[0]], d) {
            return Ok(None);
        }
        tex(gpu, enc, src, d).map(Some)
    }

    /// A `_tex` entry point: the source rows read from texture `v`, 16 columns per
    /// invocation (software adapters).
    fn texture(
        &self,
        e: &'static Entry,
        v: &wgpu::TextureView,
        items: usize,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        let [lp, lr, ls, vals, src, out] = self.t;
        e.call(self.p)
            .dims(&self.dims)
            .dim("rows", src.shape[0])
            .binds(&[lp, lr, ls, vals])
            .texture(v)
            .bind(out)
            .items(items)
            .record(gpu, enc)
    }
}

/// db_enc[i] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of dval[lat_slot[e]].
/// With `accumulate`, db_enc[i] + that sum instead, for the latents with entries.
/// lat_ptr: (n + 1), lat_slot: (cap), dval: (cap) -> db_enc: (n)
#[allow(clippy::too_many_arguments)]
pub fn gather_db_enc(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    lat_ptr: &GpuTensor,
    lat_slot: &GpuTensor,
    dval: &GpuTensor,
    n: usize,
    accumulate: bool,
    db_enc: &GpuTensor,
) -> Result<()> {
    let p = Params {
        flag: accumulate as u32,
        ..params(0, n, 0, lat_slot.len())?
    };
    GATHER_DB_ENC
        .call(p)
        .dim("n", n)
        .binds(&[lat_ptr, lat_slot, dval, db_enc])
        .items(n)
        .record(gpu, enc)
}

/// g[s] += scale * norms[idx[s]] for s < nnz with val[s] > 0.
/// row_ptr: (rows + 1), idx: (cap), val: (cap), norms: (n) -> g: (cap), accumulated
#[allow(clippy::too_many_arguments)]
pub fn sparse_l1_backward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    rows: usize,
    n: usize,
    norms: &GpuTensor,
    scale: f32,
    g: &GpuTensor,
) -> Result<()> {
    let cap = idx.len();
    let p = Params {
        scale,
        ..params(rows, n, 0, cap)?
    };
    SPARSE_L1_BACKWARD
        .call(p)
        .dims(&[("rows", rows), ("n", n)])
        .binds(&[row_ptr, idx, val, norms, g])
        .items(cap)
        .record(gpu, enc)
}

/// dval[s] = g[s] * [pre[s] > exp(log_theta[idx[s]])] for s < nnz; 0 for nnz <= s < cap.
/// row_ptr: (rows + 1), idx: (cap), pre: (cap), g: (cap), log_theta: (n) -> dval: (cap)
#[allow(clippy::too_many_arguments)]
pub fn sparse_jumprelu_backward(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    pre: &GpuTensor,
    g: &GpuTensor,
    rows: usize,
    n: usize,
    log_theta: &GpuTensor,
    dval: &GpuTensor,
) -> Result<()> {
    let cap = idx.len();
    SPARSE_JUMPRELU_BACKWARD
        .call(params(rows, n, 0, cap)?)
        .dims(&[("rows", rows), ("n", n)])
        .binds(&[row_ptr, idx, pre, g, log_theta, dval])
        .items(cap)
        .record(gpu, enc)
}

/// dlog_theta[i] = theta * (sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) with
/// |pre - theta| <= eps / 2 of g * (-theta / eps) + l0_scale * (-1 / eps)), where
/// pre = pre[lat_slot[e]], g = g[lat_slot[e]], theta = exp(log_theta[i]).
/// lat_ptr: (n + 1), lat_slot: (cap), pre: (cap), g: (cap), log_theta: (n)
///   -> dlog_theta: (n)
#[allow(clippy::too_many_arguments)]
pub fn gather_jumprelu_threshold(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    lat_ptr: &GpuTensor,
    lat_slot: &GpuTensor,
    pre: &GpuTensor,
    g: &GpuTensor,
    n: usize,
    log_theta: &GpuTensor,
    eps: f32,
    l0_scale: f32,
    dlog_theta: &GpuTensor,
) -> Result<()> {
    let p = Params {
        scale: l0_scale,
        eps,
        ..params(0, n, 0, lat_slot.len())?
    };
    GATHER_JUMPRELU_THRESHOLD
        .call(p)
        .dim("n", n)
        .binds(&[lat_ptr, lat_slot, pre, g, log_theta, dlog_theta])
        .items(n)
        .record(gpu, enc)
}
