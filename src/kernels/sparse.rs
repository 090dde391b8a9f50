//! Sparse-code launchers (shaders/sparse.wgsl): decode, the latent gradient's dot products,
//! the per-latent (transposed) index and the three gradient gathers of a sparse SAE step.
//!
//! Why gathers: the decoder and encoder gradients are sums over the active (row, latent)
//! pairs, grouped by latent. Scattering them with float atomics would make every step
//! nondeterministic; instead [`build_transpose`] lists each latent's pairs in ascending slot
//! order (u32 atomics only for counts and for a scatter whose order is then fixed by a
//! rank pass), and each gather sums its latent's list in that order, which is also the CPU
//! twin's order. Results are identical run to run.
//!
//! Codes are CSR over rows: row_ptr (rows + 1, row_ptr[0] == 0), idx (cap) u32, val (cap)
//! f32; kernels read nnz = row_ptr[rows] <= cap on the device, and buffers are sized to cap.
//! Kernels with a d axis have a vec4 entry point (`*_vec4`) used when d % 4 == 0, and on
//! software adapters a texture entry point (`*_tex`, see [`texture_path`]) that reads the
//! gathered rows (w_dec, dy, xc) from cached rgba32float textures and takes 16 columns per
//! invocation: on lavapipe a storage-buffer load is a per-lane loop (~300 instructions per
//! vec4 for 8 lanes), a texture load a branch-free gather (~50).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, DType, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::{expect_len, expect_shape};

pub static SHADER: Shader = Shader {
    name: "sparse",
    source: include_str!("../../shaders/sparse.wgsl"),
};

/// Invocations per workgroup of the 1-D kernels (`WG` in the shader).
const WG: usize = 64;
/// Widest workgroup of the kernels with one workgroup per (row or latent, chunk of d);
/// narrower (down to 8) when d is small, so few lanes idle.
const WG_COLS: usize = 64;
/// The single workgroup of the prefix sum (`WG_SCAN`).
const WG_SCAN: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    rows: u32,
    n: u32,
    d: u32,
    dv: u32,
    cap: u32,
    k: u32,
    flag: u32,
    _pad: u32,
    scale: f32,
    eps: f32,
    _pad1: [u32; 2],
}

/// Record `entry` with one override constant set.
fn launch(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    entry: &'static str,
    constant: (&'static str, usize),
    p: &Params,
    binds: &[Bind],
    groups: [u32; 3],
) -> Result<()> {
    let constants = [(constant.0, constant.1 as f64)];
    let k = Kernel {
        shader: &SHADER,
        entry,
        constants: &constants,
    };
    gpu.dispatch(enc, &k, p, binds, groups)
}

/// A 1-D kernel over `len` invocations.
fn launch_1d(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    entry: &'static str,
    p: &Params,
    binds: &[Bind],
    len: usize,
) -> Result<()> {
    let groups = gpu.groups_for(len, WG);
    launch(gpu, enc, entry, ("WG", WG), p, binds, groups)
}

/// One workgroup per (outer item, chunk of `per` columns); nothing to do when either is 0.
fn launch_cols(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    entry: &'static str,
    p: &Params,
    binds: &[Bind],
    outer: usize,
    per: usize,
) -> Result<()> {
    if outer == 0 || per == 0 {
        return Ok(());
    }
    let wg = per.next_power_of_two().clamp(8, WG_COLS);
    let groups = gpu.groups_for(outer * per.div_ceil(wg), 1);
    launch(gpu, enc, entry, ("WG", wg), p, binds, groups)
}

/// Columns per row as the kernels see them: vec4s when d % 4 == 0, else scalars.
fn per_row(d: usize) -> usize {
    if d.is_multiple_of(4) { d / 4 } else { d }
}

/// The vec4 entry point when the rows (of length d) hold whole vec4s.
fn entry(d: usize, scalar: &'static str, vec4: &'static str) -> &'static str {
    if d.is_multiple_of(4) { vec4 } else { scalar }
}

fn expect_dtype(kernel: &str, name: &str, t: &GpuTensor, dtype: DType) -> Result<()> {
    if t.dtype != dtype {
        return Err(Error::Internal(format!(
            "{kernel}: {name} has element type {:?}, expected {dtype:?}",
            t.dtype
        )));
    }
    Ok(())
}

/// A u32 tensor of `len` elements.
fn expect_u32(kernel: &str, name: &str, t: &GpuTensor, len: usize) -> Result<()> {
    expect_dtype(kernel, name, t, DType::U32)?;
    expect_len(kernel, name, t, len)
}

/// An f32 tensor of `len` elements.
fn expect_f32(kernel: &str, name: &str, t: &GpuTensor, len: usize) -> Result<()> {
    expect_dtype(kernel, name, t, DType::F32)?;
    expect_len(kernel, name, t, len)
}

/// Checks shared by the kernels that read a CSR code; returns cap.
fn expect_csr(kernel: &str, row_ptr: &GpuTensor, idx: &GpuTensor, rows: usize) -> Result<usize> {
    expect_u32(kernel, "row_ptr", row_ptr, rows + 1)?;
    expect_dtype(kernel, "idx", idx, DType::U32)?;
    Ok(idx.len())
}

/// Checks shared by the gathers; returns cap.
fn expect_transpose(
    kernel: &str,
    lat_ptr: &GpuTensor,
    lat_row: Option<&GpuTensor>,
    lat_slot: &GpuTensor,
    n: usize,
) -> Result<usize> {
    expect_u32(kernel, "lat_ptr", lat_ptr, n + 1)?;
    expect_dtype(kernel, "lat_slot", lat_slot, DType::U32)?;
    let cap = lat_slot.len();
    if let Some(r) = lat_row {
        expect_u32(kernel, "lat_row", r, cap)?;
    }
    Ok(cap)
}

fn u(x: usize) -> u32 {
    x as u32
}

/// Whether the `*_tex` entry points take rows of length d gathered from tensors of up to
/// `heights` rows: software adapters only (hardware GPUs coalesce buffer loads), d a
/// multiple of 64 (a buffer-to-texture copy needs 256-byte rows), every texture within the
/// adapter's 2-D limit.
pub fn texture_path(gpu: &Gpu, heights: &[usize], d: usize) -> bool {
    let max = gpu.limits.max_texture_dimension_2d as usize;
    gpu.is_software()
        && d > 0
        && d.is_multiple_of(64)
        && d / 4 <= max
        && heights.iter().all(|&h| h > 0 && h <= max)
}

/// The texture of a (rows, d) tensor (see `gemm::texture_of`).
fn tex(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    t: &GpuTensor,
    d: usize,
) -> Result<wgpu::TextureView> {
    super::gemm::texture_of(gpu, enc, t, [t.len() / d.max(1), d])
}

/// x_hat[b, :] = (b_dec or 0) + sum over s in row_ptr[b]..row_ptr[b+1] (ascending) of
/// val[s] * w_dec[idx[s], :].
/// row_ptr: (rows + 1), idx: (cap), val: (cap), w_dec: (n, d), b_dec: (d) -> x_hat: (rows, d)
#[allow(clippy::too_many_arguments)]
pub fn sparse_decode(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    w_dec: &GpuTensor,
    b_dec: Option<&GpuTensor>,
    rows: usize,
    n: usize,
    d: usize,
    x_hat: &GpuTensor,
) -> Result<()> {
    let k = "sparse_decode";
    let cap = expect_csr(k, row_ptr, idx, rows)?;
    expect_f32(k, "val", val, cap)?;
    expect_shape(k, "w_dec", w_dec, &[n, d])?;
    if let Some(b) = b_dec {
        expect_f32(k, "b_dec", b, d)?;
    }
    expect_shape(k, "x_hat", x_hat, &[rows, d])?;
    let p = Params {
        rows: u(rows),
        n: u(n),
        d: u(d),
        dv: u(d / 4),
        cap: u(cap),
        flag: b_dec.is_some() as u32,
        ..Default::default()
    };
    if texture_path(gpu, &[n], d) {
        let w = tex(gpu, enc, w_dec, d)?;
        let binds = [
            Bind::Read(row_ptr),
            Bind::Read(idx),
            Bind::Read(val),
            Bind::Texture(&w),
            Bind::Read(b_dec.unwrap_or(w_dec)),
            Bind::Write(x_hat),
        ];
        return launch_1d(gpu, enc, "sparse_decode_tex", &p, &binds, rows * (d / 16));
    }
    let binds = [
        Bind::Read(row_ptr),
        Bind::Read(idx),
        Bind::Read(val),
        Bind::Read(w_dec),
        // Without a bias the kernel never reads binding 5; w_dec stands in.
        Bind::Read(b_dec.unwrap_or(w_dec)),
        Bind::Write(x_hat),
    ];
    let e = entry(d, "sparse_decode", "sparse_decode_vec4");
    launch_cols(gpu, enc, e, &p, &binds, rows, per_row(d))
}

/// g[s] = dy[row(s), :] . w_dec[idx[s], :] (ascending columns) for s < nnz; g[s] = 0 for
/// nnz <= s < cap.
/// row_ptr: (rows + 1), idx: (cap), dy: (rows, d), w_dec: (n, d) -> g: (cap)
#[allow(clippy::too_many_arguments)]
pub fn sparse_dot(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    dy: &GpuTensor,
    w_dec: &GpuTensor,
    rows: usize,
    n: usize,
    d: usize,
    g: &GpuTensor,
) -> Result<()> {
    let k = "sparse_dot";
    let cap = expect_csr(k, row_ptr, idx, rows)?;
    expect_shape(k, "dy", dy, &[rows, d])?;
    expect_shape(k, "w_dec", w_dec, &[n, d])?;
    expect_f32(k, "g", g, cap)?;
    let p = Params {
        rows: u(rows),
        n: u(n),
        d: u(d),
        dv: u(d / 4),
        cap: u(cap),
        ..Default::default()
    };
    if texture_path(gpu, &[n, rows], d) {
        let (y, w) = (tex(gpu, enc, dy, d)?, tex(gpu, enc, w_dec, d)?);
        let binds = [
            Bind::Read(row_ptr),
            Bind::Read(idx),
            Bind::Texture(&y),
            Bind::Texture(&w),
            Bind::Write(g),
        ];
        return launch_1d(gpu, enc, "sparse_dot_tex", &p, &binds, cap);
    }
    let binds = [
        Bind::Read(row_ptr),
        Bind::Read(idx),
        Bind::Read(dy),
        Bind::Read(w_dec),
        Bind::Write(g),
    ];
    let e = entry(d, "sparse_dot", "sparse_dot_vec4");
    launch_1d(gpu, enc, e, &p, &binds, cap)
}

/// row_ptr[b] = b * k for b in 0..=rows (the CSR of a TopK code).
/// -> row_ptr: (rows + 1)
pub fn row_ptr_fixed(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    rows: usize,
    k: usize,
    row_ptr: &GpuTensor,
) -> Result<()> {
    expect_u32("row_ptr_fixed", "row_ptr", row_ptr, rows + 1)?;
    let p = Params {
        rows: u(rows),
        k: u(k),
        ..Default::default()
    };
    let binds = [Bind::Write(row_ptr)];
    launch_1d(gpu, enc, "row_ptr_fixed", &p, &binds, rows + 1)
}

/// The per-latent (transposed) index: lat_ptr = exclusive prefix sums of per-latent counts
/// (lat_ptr[n] = nnz); for latent i, lat_row / lat_slot[lat_ptr[i]..lat_ptr[i+1]] list the
/// (row, slot) pairs with idx[slot] == i in ascending slot order; entries nnz..cap are 0.
/// Six dispatches (zero, count, scan, scatter, rank, rows; see the shader), no scratch
/// buffers; a latent with m entries costs O(m^2) compares in the rank pass.
/// row_ptr: (rows + 1), idx: (cap) -> lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap)
#[allow(clippy::too_many_arguments)]
pub fn build_transpose(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    rows: usize,
    n: usize,
    lat_ptr: &GpuTensor,
    lat_row: &GpuTensor,
    lat_slot: &GpuTensor,
) -> Result<()> {
    let k = "build_transpose";
    let cap = expect_csr(k, row_ptr, idx, rows)?;
    expect_u32(k, "lat_ptr", lat_ptr, n + 1)?;
    expect_u32(k, "lat_row", lat_row, cap)?;
    expect_u32(k, "lat_slot", lat_slot, cap)?;
    let p = Params {
        rows: u(rows),
        n: u(n),
        cap: u(cap),
        ..Default::default()
    };
    let zero = [Bind::Write(lat_ptr)];
    launch_1d(gpu, enc, "build_transpose_zero", &p, &zero, n + 1)?;
    let count = [Bind::Read(row_ptr), Bind::Read(idx), Bind::Write(lat_ptr)];
    launch_1d(gpu, enc, "build_transpose_count", &p, &count, cap)?;
    let scan = [Bind::Write(lat_ptr)];
    let e = "build_transpose_scan";
    launch(gpu, enc, e, ("WG_SCAN", WG_SCAN), &p, &scan, [1, 1, 1])?;
    let scatter = [
        Bind::Read(row_ptr),
        Bind::Read(idx),
        Bind::Write(lat_ptr),
        Bind::Write(lat_row),
    ];
    launch_1d(gpu, enc, "build_transpose_scatter", &p, &scatter, cap)?;
    let rank = [
        Bind::Read(idx),
        Bind::Read(lat_ptr),
        Bind::Read(lat_row),
        Bind::Write(lat_slot),
    ];
    launch_1d(gpu, enc, "build_transpose_rank", &p, &rank, cap)?;
    let rows_pass = [
        Bind::Read(row_ptr),
        Bind::Read(lat_ptr),
        Bind::Write(lat_row),
        Bind::Write(lat_slot),
    ];
    launch_1d(gpu, enc, "build_transpose_rows", &p, &rows_pass, cap)
}

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
    #[rustfmt::skip]
    let g = Gather { kernel: "gather_dw_dec", tex_entry: "gather_dw_dec_tex", tex4_entry: None, vals: "val", src: "dy", out: "dw_dec", out_shape: [n, d] };
    let (p, binds) = g.check(
        lat_ptr, lat_row, lat_slot, val, dy, n, d, accumulate, dw_dec,
    )?;
    if texture_path(gpu, &[dy.shape[0]], d) {
        return g.texture(gpu, enc, &p, binds, dy, n, d);
    }
    let e = entry(d, "gather_dw_dec", "gather_dw_dec_vec4");
    launch_cols(gpu, enc, e, &p, &binds, n, per_row(d))
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
    #[rustfmt::skip]
    let g = Gather { kernel: "gather_dw_enc", tex_entry: "gather_dw_enc_tex", tex4_entry: Some("gather_dw_enc_tex4"), vals: "dval", src: "xc", out: "dw_enc", out_shape: [d, n] };
    let (p, binds) = g.check(
        lat_ptr, lat_row, lat_slot, dval, xc, n, d, accumulate, dw_enc,
    )?;
    if texture_path(gpu, &[xc.shape[0]], d) {
        return g.texture(gpu, enc, &p, binds, xc, n, d);
    }
    // One invocation per (block of 4 columns or of 4 vec4s, latent).
    let blocks = per_row(d).div_ceil(4);
    let e = entry(d, "gather_dw_enc", "gather_dw_enc_vec4");
    launch_1d(gpu, enc, e, &p, &binds, n * blocks)
}

/// What gather_dw_dec and gather_dw_enc share: the same transpose inputs, one value per
/// entry, one source row of d per entry, and the same params and bindings (binding order:
/// lat_ptr, lat_row, lat_slot, values, source, output); only the output layout differs.
struct Gather {
    kernel: &'static str,
    tex_entry: &'static str,
    /// A `_tex` entry point taking four latents per invocation, used when n % 4 == 0.
    tex4_entry: Option<&'static str>,
    vals: &'static str,
    src: &'static str,
    out: &'static str,
    out_shape: [usize; 2],
}

impl Gather {
    /// Shape checks, params and the buffer bindings.
    #[allow(clippy::too_many_arguments)]
    fn check<'a>(
        &self,
        lat_ptr: &'a GpuTensor,
        lat_row: &'a GpuTensor,
        lat_slot: &'a GpuTensor,
        vals: &'a GpuTensor,
        src: &'a GpuTensor,
        n: usize,
        d: usize,
        accumulate: bool,
        out: &'a GpuTensor,
    ) -> Result<(Params, [Bind<'a>; 6])> {
        let k = self.kernel;
        let cap = expect_transpose(k, lat_ptr, Some(lat_row), lat_slot, n)?;
        expect_f32(k, self.vals, vals, cap)?;
        expect_rows_of(k, self.src, src, d)?;
        expect_shape(k, self.out, out, &self.out_shape)?;
        let p = Params {
            n: u(n),
            d: u(d),
            dv: u(d / 4),
            cap: u(cap),
            flag: accumulate as u32,
            ..Default::default()
        };
        let binds = [
            Bind::Read(lat_ptr),
            Bind::Read(lat_row),
            Bind::Read(lat_slot),
            Bind::Read(vals),
            Bind::Read(src),
            Bind::Write(out),
        ];
        Ok((p, binds))
    }

    /// The `_tex` entry point: the source rows read from a texture, 16 columns per
    /// invocation (software adapters).
    #[allow(clippy::too_many_arguments)]
    fn texture(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        p: &Params,
        binds: [Bind<'_>; 6],
        src: &GpuTensor,
        n: usize,
        d: usize,
    ) -> Result<()> {
        let t = tex(gpu, enc, src, d)?;
        let [a, b, c, v, _, out] = binds;
        let binds = [a, b, c, v, Bind::Texture(&t), out];
        // dW_enc (d, n): four latents per invocation, stored as vec4s along them.
        if let Some(entry) = self.tex4_entry.filter(|_| n.is_multiple_of(4)) {
            return launch_1d(gpu, enc, entry, p, &binds, n / 4 * (d / 16));
        }
        launch_1d(gpu, enc, self.tex_entry, p, &binds, n * (d / 16))
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
    let k = "gather_db_enc";
    let cap = expect_transpose(k, lat_ptr, None, lat_slot, n)?;
    expect_f32(k, "dval", dval, cap)?;
    expect_f32(k, "db_enc", db_enc, n)?;
    let p = Params {
        n: u(n),
        cap: u(cap),
        flag: accumulate as u32,
        ..Default::default()
    };
    let binds = [
        Bind::Read(lat_ptr),
        Bind::Read(lat_slot),
        Bind::Read(dval),
        Bind::Write(db_enc),
    ];
    launch_1d(gpu, enc, "gather_db_enc", &p, &binds, n)
}

/// A (rows, d) matrix for some rows: two dimensions, the last one d.
fn expect_rows_of(kernel: &str, name: &str, t: &GpuTensor, d: usize) -> Result<()> {
    if t.shape.len() != 2 || t.shape[1] != d {
        return Err(Error::Internal(format!(
            "{kernel}: {name} has shape {:?}, expected (rows, {d})",
            t.shape
        )));
    }
    Ok(())
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
    let k = "sparse_l1_backward";
    let cap = expect_csr(k, row_ptr, idx, rows)?;
    expect_f32(k, "val", val, cap)?;
    expect_f32(k, "norms", norms, n)?;
    expect_f32(k, "g", g, cap)?;
    let p = Params {
        rows: u(rows),
        n: u(n),
        cap: u(cap),
        scale,
        ..Default::default()
    };
    let binds = [
        Bind::Read(row_ptr),
        Bind::Read(idx),
        Bind::Read(val),
        Bind::Read(norms),
        Bind::Write(g),
    ];
    launch_1d(gpu, enc, k, &p, &binds, cap)
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
    let k = "sparse_jumprelu_backward";
    let cap = expect_csr(k, row_ptr, idx, rows)?;
    expect_f32(k, "pre", pre, cap)?;
    expect_f32(k, "g", g, cap)?;
    expect_f32(k, "log_theta", log_theta, n)?;
    expect_f32(k, "dval", dval, cap)?;
    let p = Params {
        rows: u(rows),
        n: u(n),
        cap: u(cap),
        ..Default::default()
    };
    let binds = [
        Bind::Read(row_ptr),
        Bind::Read(idx),
        Bind::Read(pre),
        Bind::Read(g),
        Bind::Read(log_theta),
        Bind::Write(dval),
    ];
    launch_1d(gpu, enc, k, &p, &binds, cap)
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
    let k = "gather_jumprelu_threshold";
    let cap = expect_transpose(k, lat_ptr, None, lat_slot, n)?;
    expect_f32(k, "pre", pre, cap)?;
    expect_f32(k, "g", g, cap)?;
    expect_f32(k, "log_theta", log_theta, n)?;
    expect_f32(k, "dlog_theta", dlog_theta, n)?;
    let p = Params {
        n: u(n),
        cap: u(cap),
        scale: l0_scale,
        eps,
        ..Default::default()
    };
    let binds = [
        Bind::Read(lat_ptr),
        Bind::Read(lat_slot),
        Bind::Read(pre),
        Bind::Read(g),
        Bind::Read(log_theta),
        Bind::Write(dlog_theta),
    ];
    launch_1d(gpu, enc, k, &p, &binds, n)
}
