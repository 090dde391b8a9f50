//! Matryoshka BatchTopK launchers (shaders/matryoshka.wgsl): the level-aware decode,
//! residuals and sparse backward of a dictionary with nested prefixes (widths, the last =
//! n). Each is named like its CPU twin in `crate::reference::matryoshka`; the plain sparse
//! kernels (`super::sparse`) do the rest of the step (W_enc's and b_enc's gradients follow
//! from the slot gradients as for batchtopk).

use crate::gpu::{Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Entry, Slot, Uniform, rf, ru, to_u32, wf};

pub static SHADER: Shader = crate::shader!("matryoshka");

/// Invocations per workgroup (`WG`).
const WG: usize = 64;

crate::uniform! {
    struct Params {
        rows: u32, n: u32, d: u32, levels: u32,
        cap: u32, flag: u32, scale: f32, _pad0: u32,
    }
}

const fn one_d(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::one_d::<{ WG as u32 }>(&SHADER, name, Params::LAYOUT, binds)
}

pub static MATRYOSHKA_DECODE: Entry = one_d(
    "matryoshka_decode",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        rf("val", "cap"),
        rf("w_dec", "n, d"),
        rf("b_dec", "d"),
        ru("widths", "levels"),
        wf("x_hat_levels", "levels * rows * d"),
    ],
);
pub static MATRYOSHKA_RESIDUALS: Entry = one_d(
    "matryoshka_residuals",
    &[
        rf("y", "rows, d"),
        rf("x_hat_levels", "levels * rows * d"),
        wf("dy_levels", "levels * rows * d"),
    ],
);
pub static SPARSE_DOT_LEVELS: Entry = one_d(
    "sparse_dot_levels",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        rf("dy_levels", "levels * rows * d"),
        rf("w_dec", "n, d"),
        ru("widths", "levels"),
        wf("g", "cap"),
    ],
);
pub static GATHER_DW_DEC_LEVELS: Entry = one_d(
    "gather_dw_dec_levels",
    &[
        ru("lat_ptr", "n + 1"),
        ru("lat_row", "cap"),
        ru("lat_slot", "cap"),
        rf("val", "cap"),
        rf("dy_levels", "levels * rows * d"),
        ru("widths", "levels"),
        wf("dw_dec", "n, d"),
    ],
);

/// Every entry point of shaders/matryoshka.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &MATRYOSHKA_DECODE,
    &MATRYOSHKA_RESIDUALS,
    &SPARSE_DOT_LEVELS,
    &GATHER_DW_DEC_LEVELS,
];

/// The parameters of every kernel here; `levels` from the widths tensor.
fn params(
    kernel: &str,
    rows: usize,
    n: usize,
    d: usize,
    widths: &GpuTensor,
    cap: usize,
) -> Result<Params> {
    let levels = widths.len();
    if levels == 0 || levels > crate::reference::reduce::slot::MAX_LEVELS {
        return Err(Error::Internal(format!("{kernel}: {levels} levels")));
    }
    Ok(Params {
        rows: to_u32(kernel, "rows", rows)?,
        n: to_u32(kernel, "n", n)?,
        d: to_u32(kernel, "d", d)?,
        levels: levels as u32,
        cap: to_u32(kernel, "cap", cap)?,
        ..Default::default()
    })
}

/// Record `e` with parameters `p` (its named dimensions are p's rows, n, d, levels and
/// cap), bindings `binds` and one invocation per item of `items`; nothing when it is 0.
fn launch(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    e: &'static Entry,
    p: Params,
    binds: &[&GpuTensor],
    items: usize,
) -> Result<()> {
    let dims = [
        ("rows", p.rows as usize),
        ("n", p.n as usize),
        ("d", p.d as usize),
        ("levels", p.levels as usize),
        ("cap", p.cap as usize),
    ];
    e.call(p)
        .dims(&dims)
        .binds(binds)
        .items_or_skip(items)
        .record(gpu, enc)
}

/// Every level's reconstruction from the codes (see the shader).
/// row_ptr: (rows + 1) u32, idx: (cap) u32, val: (cap), w_dec: (n, d), b_dec: (d),
/// widths: (M) u32 -> x_hat_levels: (M, rows, d)
#[allow(clippy::too_many_arguments)]
pub fn matryoshka_decode(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    val: &GpuTensor,
    w_dec: &GpuTensor,
    b_dec: &GpuTensor,
    widths: &GpuTensor,
    rows: usize,
    n: usize,
    d: usize,
    x_hat_levels: &GpuTensor,
) -> Result<()> {
    let cap = idx.len();
    let p = params("matryoshka_decode", rows, n, d, widths, cap)?;
    let binds = [row_ptr, idx, val, w_dec, b_dec, widths, x_hat_levels];
    launch(gpu, enc, &MATRYOSHKA_DECODE, p, &binds, rows * d)
}

/// Each group's dy: dy_levels[g] = scale * sum over m >= g of (x_hat_levels[m] - y).
/// y: (rows, d), x_hat_levels: (M, rows, d) -> dy_levels: (M, rows, d)
#[allow(clippy::too_many_arguments)]
pub fn matryoshka_residuals(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    y: &GpuTensor,
    x_hat_levels: &GpuTensor,
    widths: &GpuTensor,
    rows: usize,
    d: usize,
    scale: f32,
    dy_levels: &GpuTensor,
) -> Result<()> {
    let p = Params {
        scale,
        ..params("matryoshka_residuals", rows, 1, d, widths, 0)?
    };
    let binds = [y, x_hat_levels, dy_levels];
    launch(gpu, enc, &MATRYOSHKA_RESIDUALS, p, &binds, rows * d)
}

/// g[s] = dy_levels[level(idx[s]), row(s), :] . w_dec[idx[s], :]; 0 past the codes.
/// row_ptr: (rows + 1) u32, idx: (cap) u32, dy_levels: (M, rows, d), w_dec: (n, d),
/// widths: (M) u32 -> g: (cap)
#[allow(clippy::too_many_arguments)]
pub fn sparse_dot_levels(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    dy_levels: &GpuTensor,
    w_dec: &GpuTensor,
    widths: &GpuTensor,
    rows: usize,
    n: usize,
    d: usize,
    g: &GpuTensor,
) -> Result<()> {
    let cap = idx.len();
    let p = params("sparse_dot_levels", rows, n, d, widths, cap)?;
    let binds = [row_ptr, idx, dy_levels, w_dec, widths, g];
    launch(gpu, enc, &SPARSE_DOT_LEVELS, p, &binds, cap)
}

/// dw_dec[i, :] = sum over latent i's entries of val * dy_levels[level(i), row, :]
/// (with `accumulate`: added, for the latents with entries).
/// lat_ptr: (n + 1) u32, lat_row, lat_slot: (cap) u32, val: (cap), dy_levels: (M, rows, d),
/// widths: (M) u32 -> dw_dec: (n, d)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_dec_levels(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    lat: (&GpuTensor, &GpuTensor, &GpuTensor),
    val: &GpuTensor,
    dy_levels: &GpuTensor,
    widths: &GpuTensor,
    (rows, n, d): (usize, usize, usize),
    accumulate: bool,
    dw_dec: &GpuTensor,
) -> Result<()> {
    let cap = val.len();
    let p = Params {
        flag: accumulate as u32,
        ..params("gather_dw_dec_levels", rows, n, d, widths, cap)?
    };
    let binds = [lat.0, lat.1, lat.2, val, dy_levels, widths, dw_dec];
    launch(gpu, enc, &GATHER_DW_DEC_LEVELS, p, &binds, n * d)
}
