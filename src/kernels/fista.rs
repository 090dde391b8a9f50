//! FISTA launchers (shaders/fista.wgsl): the elementwise proximal-gradient and momentum
//! update of one iteration, and the per-row change used as the stopping test. The matrix
//! products of an iteration are `gemm` calls and the residual is `reduce::sub`; the driver
//! that strings them together is `crate::eval::fista`.
//!
//! `fista_step` is elementwise: one element (or one vec4 when rows * n % 4 == 0) per
//! invocation on a folded 1-D grid. `fista_row_change` runs one invocation per row over its
//! columns in order; it is recorded only every few iterations, when the driver checks for
//! convergence.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Bind, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

use super::expect_len;

pub static SHADER: Shader = Shader {
    name: "fista",
    source: include_str!("../../shaders/fista.wgsl"),
};

/// Invocations per workgroup (WGSL override `WG`).
const WG: usize = 256;

const CONSTANTS: &[(&str, f64)] = &[("WG", WG as f64)];

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StepParams {
    len: u32,
    _pad0: [u32; 3],
    step: f32,
    threshold: f32,
    momentum: f32,
    _pad1: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ChangeParams {
    rows: u32,
    n: u32,
    _pad: [u32; 2],
}

fn kernel(entry: &'static str) -> Kernel<'static> {
    Kernel {
        shader: &SHADER,
        entry,
        constants: CONSTANTS,
    }
}

fn elements(kernel: &str, rows: usize, n: usize) -> Result<u32> {
    match rows.checked_mul(n) {
        Some(len) if len <= u32::MAX as usize => Ok(len as u32),
        _ => Err(Error::Internal(format!(
            "{kernel}: {rows} x {n} elements do not fit 32-bit indices"
        ))),
    }
}

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
    let k = "fista_step";
    let len = elements(k, rows, n)?;
    expect_len(k, "g", g, rows * n)?;
    expect_len(k, "z_old", z_old, rows * n)?;
    expect_len(k, "y", y, rows * n)?;
    expect_len(k, "z_new", z_new, rows * n)?;
    if z_old.buf == z_new.buf {
        return Err(Error::Internal(
            "fista_step: z_old and z_new must be different buffers".into(),
        ));
    }
    if len == 0 {
        return Ok(());
    }
    let p = StepParams {
        len,
        _pad0: [0; 3],
        step,
        threshold,
        momentum,
        _pad1: 0.0,
    };
    let (entry, per) = if len.is_multiple_of(4) {
        ("fista_step_vec4", 4)
    } else {
        (k, 1)
    };
    gpu.dispatch(
        enc,
        &kernel(entry),
        &p,
        &[
            Bind::Read(g),
            Bind::Read(z_old),
            Bind::Write(y),
            Bind::Write(z_new),
        ],
        gpu.groups_for(len as usize / per, WG),
    )
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
    let k = "fista_row_change";
    elements(k, rows, n)?;
    expect_len(k, "z_new", z_new, rows * n)?;
    expect_len(k, "z_old", z_old, rows * n)?;
    expect_len(k, "out", out, rows * 2)?;
    if rows == 0 {
        return Ok(());
    }
    let p = ChangeParams {
        rows: rows as u32,
        n: n as u32,
        _pad: [0; 2],
    };
    let entry = if n.is_multiple_of(4) {
        "fista_row_change_vec4"
    } else {
        k
    };
    gpu.dispatch(
        enc,
        &kernel(entry),
        &p,
        &[Bind::Read(z_new), Bind::Read(z_old), Bind::Write(out)],
        gpu.groups_for(rows, WG),
    )
}
