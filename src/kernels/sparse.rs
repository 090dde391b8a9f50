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

use crate::gpu::{Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Entry, Grid, Slot, Uniform, Wg, rf, ru, wf, wu};

pub static SHADER: Shader = crate::shader!("sparse");

/// Invocations per workgroup of the 1-D kernels (`WG` in the shader).
const WG: usize = 64;
/// Widest workgroup of the kernels with one workgroup per (row or latent, chunk of d);
/// narrower (down to 8) when d is small, so few lanes idle.
const WG_COLS: usize = 64;
/// The single workgroup of the prefix sum (`WG_SCAN`).
const WG_SCAN: usize = 256;

crate::uniform! {
    struct Params {
        rows: u32, n: u32, d: u32, dv: u32,
        cap: u32, k: u32, flag: u32, _pad: u32,
        scale: f32, eps: f32, _pad1: [u32; 2],
    }
}

/// A 1-D kernel: `WG` invocations per workgroup, one per item.
const fn one_d(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .consts(&[("WG", WG as f64)])
        .wg(Wg::Fixed(WG as u32))
        .grid(Grid::Items)
}

/// One workgroup per (row or latent, chunk of columns), its width set per launch.
const fn per_cols(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .wg(Wg::Var("WG"))
        .grid(Grid::Groups)
}

const DECODE: &[Slot] = &[
    ru("row_ptr", "rows + 1"),
    ru("idx", "cap"),
    rf("val", "cap"),
    rf("w_dec", "n, d"),
    rf("b_dec", "d"),
    wf("x_hat", "rows, d"),
];
const DECODE_TEX: &[Slot] = &[
    ru("row_ptr", "rows + 1"),
    ru("idx", "cap"),
    rf("val", "cap"),
    Slot::texture("w_dec", "n, d / 4"),
    rf("b_dec", "d"),
    wf("x_hat", "rows, d"),
];
const DOT: &[Slot] = &[
    ru("row_ptr", "rows + 1"),
    ru("idx", "cap"),
    rf("dy", "rows, d"),
    rf("w_dec", "n, d"),
    wf("g", "cap"),
];
const DOT_TEX: &[Slot] = &[
    ru("row_ptr", "rows + 1"),
    ru("idx", "cap"),
    Slot::texture("dy", "rows, d / 4"),
    Slot::texture("w_dec", "n, d / 4"),
    wf("g", "cap"),
];
const GATHER_DW_DEC: &[Slot] = &[
    ru("lat_ptr", "n + 1"),
    ru("lat_row", "cap"),
    ru("lat_slot", "cap"),
    rf("val", "cap"),
    rf("dy", "any"),
    wf("dw_dec", "n, d"),
];
const GATHER_DW_DEC_TEX: &[Slot] = &[
    ru("lat_ptr", "n + 1"),
    ru("lat_row", "cap"),
    ru("lat_slot", "cap"),
    rf("val", "cap"),
    Slot::texture("dy", "rows, d / 4"),
    wf("dw_dec", "n, d"),
];
const GATHER_DW_ENC: &[Slot] = &[
    ru("lat_ptr", "n + 1"),
    ru("lat_row", "cap"),
    ru("lat_slot", "cap"),
    rf("dval", "cap"),
    rf("xc", "any"),
    wf("dw_enc", "d, n"),
];
const GATHER_DW_ENC_TEX: &[Slot] = &[
    ru("lat_ptr", "n + 1"),
    ru("lat_row", "cap"),
    ru("lat_slot", "cap"),
    rf("dval", "cap"),
    Slot::texture("xc", "rows, d / 4"),
    wf("dw_enc", "d, n"),
];

pub static SPARSE_DECODE: Entry = per_cols("sparse_decode", DECODE);
pub static SPARSE_DECODE_VEC4: Entry = per_cols("sparse_decode_vec4", DECODE);
pub static SPARSE_DECODE_TEX: Entry = one_d("sparse_decode_tex", DECODE_TEX);
pub static SPARSE_DOT: Entry = one_d("sparse_dot", DOT);
pub static SPARSE_DOT_VEC4: Entry = one_d("sparse_dot_vec4", DOT);
pub static SPARSE_DOT_TEX: Entry = one_d("sparse_dot_tex", DOT_TEX);
pub static ROW_PTR_FIXED: Entry = one_d("row_ptr_fixed", &[wu("row_ptr", "rows + 1")]);
pub static BUILD_TRANSPOSE_ZERO: Entry = one_d("build_transpose_zero", &[wu("lat_ptr", "n + 1")]);
pub static BUILD_TRANSPOSE_COUNT: Entry = one_d(
    "build_transpose_count",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        wu("lat_ptr", "n + 1"),
    ],
);
pub static BUILD_TRANSPOSE_SCAN: Entry = Entry {
    consts: &[("WG_SCAN", WG_SCAN as f64)],
    workgroup: [Wg::Fixed(WG_SCAN as u32), Wg::Fixed(1), Wg::Fixed(1)],
    grid: Grid::Single,
    ..one_d("build_transpose_scan", &[wu("lat_ptr", "n + 1")])
};
pub static BUILD_TRANSPOSE_SCATTER: Entry = one_d(
    "build_transpose_scatter",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        wu("lat_ptr", "n + 1"),
        wu("lat_row", "cap"),
    ],
);
pub static BUILD_TRANSPOSE_RANK: Entry = one_d(
    "build_transpose_rank",
    &[
        ru("idx", "cap"),
        ru("lat_ptr", "n + 1"),
        ru("lat_row", "cap"),
        wu("lat_slot", "cap"),
    ],
);
pub static BUILD_TRANSPOSE_ROWS: Entry = one_d(
    "build_transpose_rows",
    &[
        ru("row_ptr", "rows + 1"),
        ru("lat_ptr", "n + 1"),
        wu("lat_row", "cap"),
        wu("lat_slot", "cap"),
    ],
);
pub static GATHER_DW_DEC_E: Entry = per_cols("gather_dw_dec", GATHER_DW_DEC);
pub static GATHER_DW_DEC_VEC4: Entry = per_cols("gather_dw_dec_vec4", GATHER_DW_DEC);
pub static GATHER_DW_DEC_TEX_E: Entry = one_d("gather_dw_dec_tex", GATHER_DW_DEC_TEX);
pub static GATHER_DW_ENC_E: Entry = one_d("gather_dw_enc", GATHER_DW_ENC);
pub static GATHER_DW_ENC_VEC4: Entry = one_d("gather_dw_enc_vec4", GATHER_DW_ENC);
pub static GATHER_DW_ENC_TEX_E: Entry = one_d("gather_dw_enc_tex", GATHER_DW_ENC_TEX);
pub static GATHER_DW_ENC_TEX4: Entry = one_d("gather_dw_enc_tex4", GATHER_DW_ENC_TEX);
pub static GATHER_DB_ENC: Entry = one_d(
    "gather_db_enc",
    &[
        ru("lat_ptr", "n + 1"),
        ru("lat_slot", "cap"),
        rf("dval", "cap"),
        wf("db_enc", "n"),
    ],
);
pub static SPARSE_L1_BACKWARD: Entry = one_d(
    "sparse_l1_backward",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        rf("val", "cap"),
        rf("norms", "n"),
        wf("g", "cap"),
    ],
);
pub static SPARSE_JUMPRELU_BACKWARD: Entry = one_d(
    "sparse_jumprelu_backward",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        rf("pre", "cap"),
        rf("g", "cap"),
        rf("log_theta", "n"),
        wf("dval", "cap"),
    ],
);
pub static GATHER_JUMPRELU_THRESHOLD: Entry = one_d(
    "gather_jumprelu_threshold",
    &[
        ru("lat_ptr", "n + 1"),
        ru("lat_slot", "cap"),
        rf("pre", "cap"),
        rf("g", "cap"),
        rf("log_theta", "n"),
        wf("dlog_theta", "n"),
    ],
);

/// Every entry point of shaders/sparse.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &SPARSE_DECODE,
    &SPARSE_DECODE_VEC4,
    &SPARSE_DECODE_TEX,
    &SPARSE_DOT,
    &SPARSE_DOT_VEC4,
    &SPARSE_DOT_TEX,
    &ROW_PTR_FIXED,
    &BUILD_TRANSPOSE_ZERO,
    &BUILD_TRANSPOSE_COUNT,
    &BUILD_TRANSPOSE_SCAN,
    &BUILD_TRANSPOSE_SCATTER,
    &BUILD_TRANSPOSE_RANK,
    &BUILD_TRANSPOSE_ROWS,
    &GATHER_DW_DEC_E,
    &GATHER_DW_DEC_VEC4,
    &GATHER_DW_DEC_TEX_E,
    &GATHER_DW_ENC_E,
    &GATHER_DW_ENC_VEC4,
    &GATHER_DW_ENC_TEX_E,
    &GATHER_DW_ENC_TEX4,
    &GATHER_DB_ENC,
    &SPARSE_L1_BACKWARD,
    &SPARSE_JUMPRELU_BACKWARD,
    &GATHER_JUMPRELU_THRESHOLD,
];

/// The workgroup width of a [`per_cols`] kernel with `per` columns per row, and the
/// workgroups for `outer` rows; None when there is nothing to do.
fn cols_launch(outer: usize, per: usize) -> Option<(f64, usize)> {
    if outer == 0 || per == 0 {
        return None;
    }
    let wg = per.next_power_of_two().clamp(8, WG_COLS);
    Some((wg as f64, outer * per.div_ceil(wg)))
}

/// Columns per row as the kernels see them: vec4s when d % 4 == 0, else scalars.
fn per_row(d: usize) -> usize {
    if d.is_multiple_of(4) { d / 4 } else { d }
}

/// The vec4 entry point when the rows (of length d) hold whole vec4s.
fn pick(d: usize, scalar: &'static Entry, vec4: &'static Entry) -> &'static Entry {
    if d.is_multiple_of(4) { vec4 } else { scalar }
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

/// The parameters every kernel of this family takes; `cap` from `idx` / `lat_slot`.
fn params(rows: usize, n: usize, d: usize, cap: usize) -> Result<Params> {
    let u = |what, v| super::decl::to_u32("sparse", what, v);
    Ok(Params {
        rows: u("rows", rows)?,
        n: u("n", n)?,
        d: u("d", d)?,
        dv: u("d", d / 4)?,
        cap: u("cap", cap)?,
        ..Default::default()
    })
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
    let p = Params {
        flag: b_dec.is_some() as u32,
        ..params(rows, n, d, idx.len())?
    };
    let dims = [("rows", rows), ("n", n), ("d", d)];
    if texture_path(gpu, &[n], d) {
        let w = tex(gpu, enc, w_dec, d)?;
        return SPARSE_DECODE_TEX
            .call(p)
            .dims(&dims)
            .bind(row_ptr)
            .bind(idx)
            .bind(val)
            .texture(&w)
            .bind_opt(b_dec, w_dec)
            .bind(x_hat)
            .items(rows * (d / 16))
            .record(gpu, enc);
    }
    let call = pick(d, &SPARSE_DECODE, &SPARSE_DECODE_VEC4)
        .call(p)
        .dims(&dims)
        .bind(row_ptr)
        .bind(idx)
        .bind(val)
        .bind(w_dec)
        // Without a bias the kernel never reads binding 5; w_dec stands in.
        .bind_opt(b_dec, w_dec)
        .bind(x_hat);
    match cols_launch(rows, per_row(d)) {
        Some((wg, groups)) => call.set("WG", wg).items(groups).record(gpu, enc),
        None => Ok(()),
    }
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
    let cap = idx.len();
    let p = params(rows, n, d, cap)?;
    let dims = [("rows", rows), ("n", n), ("d", d)];
    if texture_path(gpu, &[n, rows], d) {
        let (y, w) = (tex(gpu, enc, dy, d)?, tex(gpu, enc, w_dec, d)?);
        return SPARSE_DOT_TEX
            .call(p)
            .dims(&dims)
            .bind(row_ptr)
            .bind(idx)
            .texture(&y)
            .texture(&w)
            .bind(g)
            .items(cap)
            .record(gpu, enc);
    }
    pick(d, &SPARSE_DOT, &SPARSE_DOT_VEC4)
        .call(p)
        .dims(&dims)
        .bind(row_ptr)
        .bind(idx)
        .bind(dy)
        .bind(w_dec)
        .bind(g)
        .items(cap)
        .record(gpu, enc)
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
    let p = Params {
        k: super::decl::to_u32("row_ptr_fixed", "k", k)?,
        ..params(rows, 0, 0, 0)?
    };
    ROW_PTR_FIXED
        .call(p)
        .dim("rows", rows)
        .bind(row_ptr)
        .items(rows + 1)
        .record(gpu, enc)
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
    let cap = idx.len();
    let p = params(rows, n, 0, cap)?;
    let dims = [("rows", rows), ("n", n), ("cap", cap)];
    #[rustfmt::skip]
    let passes = [
        BUILD_TRANSPOSE_ZERO.call(p).bind(lat_ptr).items(n + 1),
        BUILD_TRANSPOSE_COUNT.call(p).bind(row_ptr).bind(idx).bind(lat_ptr).items(cap),
        BUILD_TRANSPOSE_SCAN.call(p).bind(lat_ptr),
        BUILD_TRANSPOSE_SCATTER.call(p).bind(row_ptr).bind(idx).bind(lat_ptr).bind(lat_row).items(cap),
        BUILD_TRANSPOSE_RANK.call(p).bind(idx).bind(lat_ptr).bind(lat_row).bind(lat_slot).items(cap),
        BUILD_TRANSPOSE_ROWS.call(p).bind(row_ptr).bind(lat_ptr).bind(lat_row).bind(lat_slot).items(cap),
    ];
    for pass in passes {
        pass.dims(&dims).record(gpu, enc)?;
    }
    Ok(())
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
    let t = [lat_ptr, lat_row, lat_slot, val, dy, dw_dec];
    let g = gather("gather_dw_dec", t, n, d, accumulate)?;
    if texture_path(gpu, &[dy.shape[0]], d) {
        let v = tex(gpu, enc, dy, d)?;
        return g.texture(&GATHER_DW_DEC_TEX_E, &v, n * (d / 16), gpu, enc);
    }
    let e = pick(d, &GATHER_DW_DEC_E, &GATHER_DW_DEC_VEC4);
    match cols_launch(n, per_row(d)) {
        Some((wg, groups)) => g.buffer(e).set("WG", wg).items(groups).record(gpu, enc),
        None => Ok(()),
    }
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
    if texture_path(gpu, &[xc.shape[0]], d) {
        let v = tex(gpu, enc, xc, d)?;
        // dW_enc (d, n): four latents per invocation, stored as vec4s along them.
        if n.is_multiple_of(4) {
            return g.texture(&GATHER_DW_ENC_TEX4, &v, n / 4 * (d / 16), gpu, enc);
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
    fn buffer(&self, e: &'static Entry) -> super::decl::Call<'a, Params> {
        let [lp, lr, ls, v, src, out] = self.t;
        e.call(self.p)
            .dims(&self.dims)
            .bind(lp)
            .bind(lr)
            .bind(ls)
            .bind(v)
            .bind(src)
            .bind(out)
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
            .bind(lp)
            .bind(lr)
            .bind(ls)
            .bind(vals)
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
        .bind(lat_ptr)
        .bind(lat_slot)
        .bind(dval)
        .bind(db_enc)
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
        .bind(row_ptr)
        .bind(idx)
        .bind(val)
        .bind(norms)
        .bind(g)
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
        .bind(row_ptr)
        .bind(idx)
        .bind(pre)
        .bind(g)
        .bind(log_theta)
        .bind(dval)
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
        .bind(lat_ptr)
        .bind(lat_slot)
        .bind(pre)
        .bind(g)
        .bind(log_theta)
        .bind(dlog_theta)
        .items(n)
        .record(gpu, enc)
}
