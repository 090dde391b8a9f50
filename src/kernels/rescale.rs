//! Launchers for shaders/rescale.wgsl: the unit-row view of a decoder whose norms are
//! folded into the codes (`--decoder-norm rescale`, SAELens's TopK
//! `rescale_acts_by_decoder_norm`) and the map of its gradients back. CPU twins:
//! `reference::optim::rescale_view` / `rescale_grads` (same names, same arguments).

use crate::Result;
use crate::gpu::{Gpu, GpuTensor, Shader};

use super::decl::{Entry, Slot, Uniform, fits, rf, wf};
use super::expect_shape;

pub static SHADER: Shader = crate::shader!("rescale");

const WG: usize = 256;

crate::uniform! {
    struct Params {
        len: u32, d: u32, n: u32, _pad: u32,
    }
}

const fn rescale(name: &'static str, binds: &'static [Slot]) -> Entry {
    Entry::one_d::<{ WG as u32 }>(&SHADER, name, Params::LAYOUT, binds)
}

pub static RESCALE_ROWS: Entry = rescale(
    "rescale_rows",
    &[
        rf("w_dec", "n, d"),
        rf("b_enc", "n"),
        wf("u", "n, d"),
        wf("b_enc_e", "n"),
        wf("norms", "n"),
    ],
);
pub static SCALE_COLS: Entry = rescale("scale_cols", &[wf("x", "rows, n"), rf("norms", "n")]);
pub static RESCALE_GRAD_ROWS: Entry = rescale(
    "rescale_grad_rows",
    &[
        rf("w_enc", "d, n"),
        rf("b_enc", "n"),
        rf("u", "n, d"),
        rf("norms", "n"),
        rf("g_enc", "d, n"),
        wf("g_benc", "n"),
        wf("g_dec", "n, d"),
    ],
);

/// Every entry point of shaders/rescale.wgsl.
pub static ENTRIES: &[&Entry] = &[&RESCALE_ROWS, &SCALE_COLS, &RESCALE_GRAD_ROWS];

fn params(len: usize, n: usize, d: usize) -> Params {
    Params {
        len: len as u32,
        d: d as u32,
        n: n as u32,
        _pad: 0,
    }
}

/// x[j, i] *= norms[i], in place. x: (rows, n), norms: (n)
fn scale_cols(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    norms: &GpuTensor,
    n: usize,
) -> Result<()> {
    let len = x.len();
    SCALE_COLS
        .call(params(len, n, 0))
        .dim("rows", len / n.max(1))
        .dim("n", n)
        .binds(&[x, norms])
        .items_or_skip(len)
        .record(gpu, enc)
}

/// Check two (w_enc: (d, n), b_enc: (n), w_dec / u: (n, d)) triples and norms: (n), then
/// record `e`, one invocation per row of the decoder, with bindings `binds`.
#[allow(clippy::too_many_arguments)]
fn rows_launch(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    e: &'static Entry,
    kernel: &str,
    triples: [[&GpuTensor; 3]; 2],
    norms: &GpuTensor,
    (n, d): (usize, usize),
    binds: &[&GpuTensor],
) -> Result<()> {
    for [w_enc, b_enc, w_dec] in triples {
        fits(kernel, "d * n", d.saturating_mul(n), u32::MAX as usize)?;
        expect_shape(kernel, "w_enc", w_enc, &[d, n])?;
        expect_shape(kernel, "b_enc", b_enc, &[n])?;
        expect_shape(kernel, "w_dec / u", w_dec, &[n, d])?;
    }
    expect_shape(kernel, "norms", norms, &[n])?;
    e.call(params(n, n, d))
        .dims(&[("n", n), ("d", d)])
        .binds(binds)
        .items_or_skip(n)
        .record(gpu, enc)
}

/// norms[i] = max(||W_dec[i]||, 1e-8), W_enc'[:, i] = norms[i] W_enc[:, i],
/// b_enc'[i] = norms[i] b_enc[i], U[i] = W_dec[i] / norms[i] (three dispatches and a copy).
/// w_enc: (d, n), b_enc: (n), w_dec: (n, d) -> w_enc_e: (d, n), b_enc_e: (n), u: (n, d),
/// norms: (n)
#[allow(clippy::too_many_arguments)]
pub fn rescale_view(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    w_enc: &GpuTensor,
    b_enc: &GpuTensor,
    w_dec: &GpuTensor,
    n: usize,
    d: usize,
    w_enc_e: &GpuTensor,
    b_enc_e: &GpuTensor,
    u: &GpuTensor,
    norms: &GpuTensor,
) -> Result<()> {
    let triples = [[w_enc, b_enc, w_dec], [w_enc_e, b_enc_e, u]];
    let binds = [w_dec, b_enc, u, b_enc_e, norms];
    let k = "rescale_view";
    rows_launch(gpu, enc, &RESCALE_ROWS, k, triples, norms, (n, d), &binds)?;
    enc.copy_buffer_to_buffer(
        &w_enc.buf,
        w_enc.offset,
        &w_enc_e.buf,
        w_enc_e.offset,
        Some(w_enc.bytes()),
    );
    gpu.stale(&w_enc_e.buf);
    scale_cols(gpu, enc, w_enc_e, norms, n)
}

/// The view's gradients mapped back, in place: with s_i = sum_j W_enc[j, i] gW_enc'[j, i] +
/// b_enc[i] gb_enc'[i] and c_i = gU[i] . U[i], gW_dec[i] = (gU[i] - c_i U[i]) / norms[i] +
/// s_i U[i], gb_enc[i] = norms[i] gb_enc'[i], gW_enc[:, i] = norms[i] gW_enc'[:, i].
/// w_enc: (d, n), b_enc: (n), u: (n, d), norms: (n); g_enc: (d, n), g_benc: (n),
/// g_dec: (n, d)
#[allow(clippy::too_many_arguments)]
pub fn rescale_grads(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    w_enc: &GpuTensor,
    b_enc: &GpuTensor,
    u: &GpuTensor,
    norms: &GpuTensor,
    n: usize,
    d: usize,
    g_enc: &GpuTensor,
    g_benc: &GpuTensor,
    g_dec: &GpuTensor,
) -> Result<()> {
    let triples = [[w_enc, b_enc, u], [g_enc, g_benc, g_dec]];
    let binds = [w_enc, b_enc, u, norms, g_enc, g_benc, g_dec];
    let k = "rescale_grads";
    rows_launch(
        gpu,
        enc,
        &RESCALE_GRAD_ROWS,
        k,
        triples,
        norms,
        (n, d),
        &binds,
    )?;
    scale_cols(gpu, enc, g_enc, norms, n)
}
