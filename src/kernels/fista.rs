//! FISTA launchers (shaders/fista.wgsl): the elementwise proximal-gradient and momentum
//! update of one iteration, and the per-row change used as the stopping test. The matrix
//! products of an iteration are `gemm` calls and the residual is `reduce::sub`; the driver
//! that strings them together is `crate::eval::fista`.
//!
//! `fista_step` is elementwise: one element (or one vec4 when rows * n % 4 == 0) per
//! invocation on a folded 1-D grid. `fista_row_change` runs one invocation per row over its
//! columns in order; it is recorded only every few iterations, when the driver checks for
//! convergence.

use crate::gpu::{Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Entry, Layout, Slot, Uniform, elements, rf, vec4_if, vec4_split, wf};

pub static SHADER: Shader = crate::shader!("fista");

/// Invocations per workgroup (WGSL override `WG`).
const WG: usize = 256;

crate::uniform! {
    struct StepParams {
        len: u32, _pad0: [u32; 3], step: f32, threshold: f32,
        momentum: f32, _pad1: f32,
    }
}

crate::uniform! {
    struct ChangeParams {
        rows: u32,
        n: u32,
        _pad: [u32; 2],
    }
}

const fn fista(name: &'static str, params: Layout, binds: &'static [Slot]) -> Entry {
    Entry::one_d::<{ WG as u32 }>(&SHADER, name, params, binds)
}

const STEP: &[Slot] = &[
    rf("g", "rows, n"),
    rf("z_old", "rows, n"),
    wf("y", "rows, n"),
    wf("z_new", "rows, n"),
];
const CHANGE: &[Slot] = &[
    rf("z_new", "rows, n"),
    rf("z_old", "rows, n"),
    wf("out", "rows, 2"),
];

pub static FISTA_STEP: Entry = fista("fista_step", StepParams::LAYOUT, STEP);
pub static FISTA_STEP_VEC4: Entry = fista("fista_step_vec4", StepParams::LAYOUT, STEP);
pub static FISTA_ROW_CHANGE: Entry = fista("fista_row_change", ChangeParams::LAYOUT, CHANGE);
pub static FISTA_ROW_CHANGE_VEC4: Entry =
    fista("fista_row_change_vec4", ChangeParams::LAYOUT, CHANGE);

/// Every entry point of shaders/fista.wgsl.
pub static ENTRIES: &[&Entry] = &[
    &FISTA_STEP,
    &FISTA_STEP_VEC4,
    &FISTA_ROW_CHANGE,
    &FISTA_ROW_CHANGE_VEC4,
];

/// One FISTA update, elementwise over (rows, n):
///   v = y - step * g;  z_new = max(v - threshold, 0);  y = z_new + momentum * (z_new - z_old)
/// (step = 1 / L, threshold = lambda / L, momentum = (t_k - 1) / t_{k+1}). z_old and z_new
/// must be different buffers; y is updated in place.
/// g: (rows, n), z_old: (rows, n), y: (rows, n) -> y: (rows, n), z_new: (rows, n)
#[allow(clippy::too_many_arguments)]
pub fn fista_step(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    g: &GpuTensor,
    z_old: &GpuTensor,
    rows: usize,
    n: usize,
    step: f32,
    threshold: f32,
    momentum: f32,
    y: &GpuTensor,
    z_new: &GpuTensor,
) -> Result<()> {
    let len = elements("fista_step", rows, n)?;
    if z_old.buf == z_new.buf {
        return Err(Error::Internal(
            "fista_step: z_old and z_new must be different buffers".into(),
        ));
    }
    let p = StepParams {
        len,
        step,
        threshold,
        momentum,
        ..Default::default()
    };
    let (e, items) = vec4_split(len as usize, &FISTA_STEP, &FISTA_STEP_VEC4);
    e.call(p)
        .dims(&[("rows", rows), ("n", n)])
        .binds(&[g, z_old, y, z_new])
        .items_or_skip(items)
        .record(gpu, enc)
}

/// Per row: out[r, 0] = sum_j (z_new[r, j] - z_old[r, j])^2, out[r, 1] = sum_j z_new[r, j]^2,
/// each an f32 sum over the columns in order (when n % 4 == 0: four interleaved partial
/// sums over j % 4, added as (s0 + s1) + (s2 + s3)). One invocation per row.
/// z_new: (rows, n), z_old: (rows, n) -> out: (rows, 2)
pub fn fista_row_change(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    z_new: &GpuTensor,
    z_old: &GpuTensor,
    rows: usize,
    n: usize,
    out: &GpuTensor,
) -> Result<()> {
    elements("fista_row_change", rows, n)?;
    let p = ChangeParams {
        rows: rows as u32,
        n: n as u32,
        _pad: [0; 2],
    };
    let e = vec4_if(
        n.is_multiple_of(4),
        &FISTA_ROW_CHANGE,
        &FISTA_ROW_CHANGE_VEC4,
    );
    e.call(p)
        .dims(&[("rows", rows), ("n", n)])
        .binds(&[z_new, z_old, out])
        .items_or_skip(rows)
        .record(gpu, enc)
}
