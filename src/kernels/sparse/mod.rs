//! Sparse-code launchers (shaders/sparse.wgsl and sparse_texture.wgsl): decode, the latent
//! gradient's dot products, the per-latent (transposed) index and the three gradient gathers
//! of a sparse SAE step.
//!
//! Why gathers: the decoder and encoder gradients are sums over the active (row, latent)
//! pairs, grouped by latent. Scattering them with float atomics would make every step
//! nondeterministic; instead [`build_transpose`] lists each latent's pairs in ascending slot
//! order (u32 atomics only to set bits in row masks, from which each pair's position is
//! counted), and each gather sums its latent's list in that order, which is also the CPU
//! twin's order. Results are identical run to run.
//!
//! Codes are CSR over rows: row_ptr (rows + 1, row_ptr[0] == 0), idx (cap) u32, val (cap)
//! f32; kernels read nnz = row_ptr[rows] <= cap on the device, and buffers are sized to cap.
//! Kernels with a d axis have a vec4 entry point (`*_vec4`) used when d % 4 == 0, and on
//! software adapters a texture entry point (`*_tex`, see [`texture_path`]) that reads the
//! gathered rows (w_dec, dy, xc) from cached rgba32float textures and takes 16 columns per
//! invocation: on lavapipe a storage-buffer load is a per-lane loop (~300 instructions per
//! vec4 for 8 lanes), a texture load a branch-free gather (~50).

use crate::Result;
use crate::gpu::{Gpu, GpuTensor, Shader};

mod gather;
pub use gather::{
    gather_db_enc, gather_dw_dec, gather_dw_enc, gather_jumprelu_threshold,
    sparse_jumprelu_backward, sparse_l1_backward,
};

use super::decl::{Call, Entry, Grid, Slot, Uniform, Wg, rf, ru, wf, wu};

pub static SHADER: Shader = crate::shader!("sparse", "sparse_texture");

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
        cap: u32, flag: u32, _pad: u32, _pad3: u32,
        scale: f32, eps: f32, _pad1: [u32; 2],
    }
}

/// A 1-D kernel: `WG` invocations per workgroup, one per item.
const fn one_d(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::one_d::<{ WG as u32 }>(&SHADER, name, Params::LAYOUT, binds)
}

/// One workgroup per (row or latent, chunk of columns), its width set per launch.
const fn per_cols(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .wg(Wg::Var("WG"))
        .grid(Grid::Groups)
}

const DECODE: [Slot; 6] = [
    ru("row_ptr", "rows + 1"),
    ru("idx", "cap"),
    rf("val", "cap"),
    rf("w_dec", "n, d"),
    rf("b_dec", "d"),
    wf("x_hat", "rows, d"),
];
const DOT: [Slot; 5] = [
    ru("row_ptr", "rows + 1"),
    ru("idx", "cap"),
    rf("dy", "rows, d"),
    rf("w_dec", "n, d"),
    wf("g", "cap"),
];
const GATHER_DW_DEC: [Slot; 6] = [
    ru("lat_ptr", "n + 1"),
    ru("lat_row", "cap"),
    ru("lat_slot", "cap"),
    rf("val", "cap"),
    rf("dy", "any"),
    wf("dw_dec", "n, d"),
];
const GATHER_DW_ENC: [Slot; 6] = [
    ru("lat_ptr", "n + 1"),
    ru("lat_row", "cap"),
    ru("lat_slot", "cap"),
    rf("dval", "cap"),
    rf("xc", "any"),
    wf("dw_enc", "d, n"),
];

/// The bindings of a texture entry point (`*_tex`): those of its buffer entry point, with
/// the gathered rows at the positions in `at` read instead from rgba32float textures of the
/// shapes given there.
const fn textures<const N: usize>(mut slots: [Slot; N], at: &[(usize, &'static str)]) -> [Slot; N] {
    let mut i = 0;
    while i < at.len() {
        let (pos, shape) = at[i];
        slots[pos] = Slot::texture(slots[pos].name, shape);
        i += 1;
    }
    slots
}

const DECODE_TEX: [Slot; 6] = textures(DECODE, &[(3, "n, d / 4")]);
const DOT_TEX: [Slot; 5] = textures(DOT, &[(2, "rows, d / 4"), (3, "n, d / 4")]);
const GATHER_DW_DEC_TEX: [Slot; 6] = textures(GATHER_DW_DEC, &[(4, "rows, d / 4")]);
const GATHER_DW_ENC_TEX: [Slot; 6] = textures(GATHER_DW_ENC, &[(4, "rows, d / 4")]);

pub static SPARSE_DECODE: Entry = per_cols("sparse_decode", &DECODE);
pub static SPARSE_DECODE_VEC4: Entry = per_cols("sparse_decode_vec4", &DECODE);
pub static SPARSE_DECODE_TEX: Entry = one_d("sparse_decode_tex", &DECODE_TEX);
pub static SPARSE_DOT: Entry = one_d("sparse_dot", &DOT);
pub static SPARSE_DOT_VEC4: Entry = one_d("sparse_dot_vec4", &DOT);
pub static SPARSE_DOT_TEX: Entry = one_d("sparse_dot_tex", &DOT_TEX);
pub static BUILD_TRANSPOSE_MARK: Entry = one_d(
    "build_transpose_mark",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        wu("marks", ">= 2 * G * n + cap"),
    ],
);
const TRANSPOSE_PREFIX: &[Slot] = &[wu("marks", ">= 2 * G * n + cap"), wu("lat_ptr", "n + 1")];
pub static BUILD_TRANSPOSE_PREFIX: Entry = one_d("build_transpose_prefix", TRANSPOSE_PREFIX);
pub static BUILD_TRANSPOSE_PREFIX_VEC4: Entry =
    one_d("build_transpose_prefix_vec4", TRANSPOSE_PREFIX);
pub static BUILD_TRANSPOSE_SCAN: Entry = Entry {
    consts: &[("WG_SCAN", WG_SCAN as f64)],
    workgroup: [Wg::Fixed(WG_SCAN as u32), Wg::Fixed(1), Wg::Fixed(1)],
    grid: Grid::Single,
    ..one_d("build_transpose_scan", &[wu("lat_ptr", "n + 1")])
};
pub static BUILD_TRANSPOSE_PLACE: Entry = one_d(
    "build_transpose_place",
    &[
        ru("row_ptr", "rows + 1"),
        ru("idx", "cap"),
        ru("marks", ">= 2 * G * n + cap"),
        ru("lat_ptr", "n + 1"),
        wu("lat_row", "cap"),
        wu("lat_slot", "cap"),
    ],
);
pub static GATHER_DW_DEC_E: Entry = per_cols("gather_dw_dec", &GATHER_DW_DEC);
pub static GATHER_DW_DEC_VEC4: Entry = per_cols("gather_dw_dec_vec4", &GATHER_DW_DEC);
pub static GATHER_DW_DEC_TEX_E: Entry = one_d("gather_dw_dec_tex", &GATHER_DW_DEC_TEX);
pub static GATHER_DW_ENC_E: Entry = one_d("gather_dw_enc", &GATHER_DW_ENC);
pub static GATHER_DW_ENC_VEC4: Entry = one_d("gather_dw_enc_vec4", &GATHER_DW_ENC);
pub static GATHER_DW_ENC_TEX_E: Entry = one_d("gather_dw_enc_tex", &GATHER_DW_ENC_TEX);
pub static GATHER_DW_ENC_TEX4: Entry = one_d("gather_dw_enc_tex4", &GATHER_DW_ENC_TEX);
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

/// Every entry point of the sparse module (shaders/sparse*.wgsl).
pub static ENTRIES: &[&Entry] = &[
    &SPARSE_DECODE,
    &SPARSE_DECODE_VEC4,
    &SPARSE_DECODE_TEX,
    &SPARSE_DOT,
    &SPARSE_DOT_VEC4,
    &SPARSE_DOT_TEX,
    &BUILD_TRANSPOSE_MARK,
    &BUILD_TRANSPOSE_PREFIX,
    &BUILD_TRANSPOSE_PREFIX_VEC4,
    &BUILD_TRANSPOSE_SCAN,
    &BUILD_TRANSPOSE_PLACE,
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

/// Record `call` of a [`per_cols`] kernel over `outer` rows of d columns ([`per_row`] of
/// them per row as the kernel sees them): the workgroup width those columns rounded up to
/// a power of two in 8..=WG_COLS, a workgroup per (row, chunk of that width); nothing when
/// there is nothing to do.
fn record_cols(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    call: Call<'_, Params>,
    outer: usize,
    d: usize,
) -> Result<()> {
    let per = per_row(d);
    if outer == 0 || per == 0 {
        return Ok(());
    }
    let wg = per.next_power_of_two().clamp(8, WG_COLS);
    call.set("WG", wg as f64)
        .items(outer * per.div_ceil(wg))
        .record(gpu, enc)
}

/// Columns per row as the kernels see them: vec4s when d % 4 == 0, else scalars.
fn per_row(d: usize) -> usize {
    if d.is_multiple_of(4) { d / 4 } else { d }
}

/// The vec4 entry point when the rows (of length d) hold whole vec4s.
fn pick(d: usize, scalar: &'static Entry, vec4: &'static Entry) -> &'static Entry {
    crate::kernels::decl::vec4_if(d.is_multiple_of(4), scalar, vec4)
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
    crate::kernels::gemm::texture_of(gpu, enc, t, [t.len() / d.max(1), d])
}

/// The parameters every kernel of this family takes; `cap` from `idx` / `lat_slot`.
fn params(rows: usize, n: usize, d: usize, cap: usize) -> Result<Params> {
    let u = |what, v| crate::kernels::decl::to_u32("sparse", what, v);
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
            .binds(&[row_ptr, idx, val])
            .texture(&w)
            .bind_opt(b_dec, w_dec)
            .bind(x_hat)
            .items(rows * (d / 16))
            .record(gpu, enc);
    }
    let call = pick(d, &SPARSE_DECODE, &SPARSE_DECODE_VEC4)
        .call(p)
        .dims(&dims)
        .binds(&[row_ptr, idx, val, w_dec])
        // Without a bias the kernel never reads binding 5; w_dec stands in.
        .bind_opt(b_dec, w_dec)
        .bind(x_hat);
    record_cols(gpu, enc, call, rows, d)
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
            .binds(&[row_ptr, idx])
            .texture(&y)
            .texture(&w)
            .bind(g)
            // 4 slots per invocation (see the shader).
            .items(cap.div_ceil(4))
            .record(gpu, enc);
    }
    pick(d, &SPARSE_DOT, &SPARSE_DOT_VEC4)
        .call(p)
        .dims(&dims)
        .binds(&[row_ptr, idx, dy, w_dec, g])
        .items(cap)
        .record(gpu, enc)
}

/// u32 elements of [`build_transpose`]'s scratch for `rows` rows of codes over `n` latents
/// in up to `cap` slots: a row mask and a running count per (group of 32 rows, latent),
/// then each slot's row, 2 G n + cap with G = ceil(rows / 32); about rows * n / 4 bytes
/// (1/16 of the pre-activations) plus the slots.
pub fn transpose_marks_len(rows: usize, n: usize, cap: usize) -> usize {
    2 * rows.div_ceil(32) * n + cap
}

/// The per-latent (transposed) index: lat_ptr = exclusive prefix sums of per-latent counts
/// (lat_ptr[n] = nnz); for latent i, lat_row / lat_slot[lat_ptr[i]..lat_ptr[i+1]] list the
/// (row, slot) pairs with idx[slot] == i in ascending slot order; entries nnz..cap are 0.
/// Each row must list a latent at most once (every code the step makes does). A clear of
/// the scratch `marks` (at least [`transpose_marks_len`] u32) and four dispatches (mark,
/// prefix, scan, place; see the shader), each linear in its items.
/// row_ptr: (rows + 1), idx: (cap), marks: (>= 2 ceil(rows / 32) n + cap) u32 scratch
///   -> lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap)
#[allow(clippy::too_many_arguments)]
pub fn build_transpose(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    row_ptr: &GpuTensor,
    idx: &GpuTensor,
    rows: usize,
    n: usize,
    marks: &GpuTensor,
    lat_ptr: &GpuTensor,
    lat_row: &GpuTensor,
    lat_slot: &GpuTensor,
) -> Result<()> {
    let cap = idx.len();
    let p = params(rows, n, 0, cap)?;
    let need = transpose_marks_len(rows, n, cap);
    let cells = (need - cap) / 2;
    crate::kernels::decl::to_u32("build_transpose", "marks", need)?;
    let groups = rows.div_ceil(32);
    let dims = [("rows", rows), ("n", n), ("cap", cap), ("G", groups)];
    if marks.len() < need {
        return Err(crate::Error::Internal(format!(
            "build_transpose: marks has {} elements, expected at least {need}",
            marks.len()
        )));
    }
    // Checked here, not only by the declarations' shapes: the clear comes first. The masks
    // (the first G n) start at 0; the counts and the slots' rows after them are written
    // whole by the prefix and mark passes.
    enc.clear_buffer(&marks.buf, marks.offset, Some(4 * cells as u64));
    let prefix = crate::kernels::decl::vec4_if(
        n.is_multiple_of(4),
        &BUILD_TRANSPOSE_PREFIX,
        &BUILD_TRANSPOSE_PREFIX_VEC4,
    );
    #[rustfmt::skip]
    let passes = [
        BUILD_TRANSPOSE_MARK.call(p).bind(row_ptr).bind(idx).bind(marks).items(cap),
        prefix.call(p).bind(marks).bind(lat_ptr).items(n),
        BUILD_TRANSPOSE_SCAN.call(p).bind(lat_ptr),
        BUILD_TRANSPOSE_PLACE.call(p).bind(row_ptr).bind(idx).bind(marks).bind(lat_ptr)
            .bind(lat_row).bind(lat_slot).items(cap),
    ];
    for pass in passes {
        pass.dims(&dims).record(gpu, enc)?;
    }
    Ok(())
}
