//! The CPU engine's dense matrix products, through the `gemm` crate (the f32 kernels candle
//! and faer use: packed, cache-blocked, register-tiled micro-kernels for AVX2 / AVX-512 /
//! NEON, threads over rayon's pool).
//!
//! `src/reference/gemm.rs` stays the plain loops that judge the GPU kernels; this module is
//! the fast path the CPU engine takes, with the same [`GemmSpec`] contract, and is itself
//! tested against the reference (tests/kernels/blas.rs). Results differ from the reference by
//! summation order only (the crate blocks k and uses fused multiply-adds); on one machine they
//! are the same run to run, so bitwise resume on the CPU engine holds.

use crate::reference::gemm::{GemmSpec, PARALLEL_MIN_MACS};
use gemm::Parallelism;
use rayon::prelude::*;

/// C = alpha * op(A) op(B) + bias + beta * C, as [`crate::reference::gemm::gemm`].
/// a: (m, k) or (k, m) when trans_a, b: (k, n) or (n, k) when trans_b, bias: (n) -> c: (m, n)
pub fn gemm(spec: &GemmSpec, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32]) {
    let &GemmSpec { m, n, k, .. } = spec;
    assert_eq!(
        a.len(),
        m * k,
        "blas::gemm: A has {} elements, expected {m} * {k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "blas::gemm: B has {} elements, expected {k} * {n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "blas::gemm: C has {} elements, expected {m} * {n}",
        c.len()
    );
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            n,
            "blas::gemm: bias has {} elements, expected {n}",
            bias.len()
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty product: C = beta * C (beta 0: C is not read), then the bias below.
        for v in c.iter_mut() {
            *v = if spec.beta == 0.0 {
                0.0
            } else {
                spec.beta * *v
            };
        }
    } else {
        product(spec, a, b, c);
    }
    if let Some(bias) = bias {
        let add = |rows: &mut [f32]| {
            for row in rows.chunks_mut(n) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        };
        // A pass over C as large as the product's output: over the pool too when the
        // product was (the encoder's 4096 x 16384: ~30 ms on one core of this 2-core VM).
        if m * n * k >= PARALLEL_MIN_MACS {
            c.par_chunks_mut(n * BIAS_ROWS).for_each(add);
        } else {
            add(c);
        }
    }
}

/// Rows of C per task of the bias pass.
const BIAS_ROWS: usize = 16;

/// C = alpha * op(A) op(B) + beta * C through the crate (k > 0, shapes checked).
fn product(spec: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32]) {
    let &GemmSpec { m, n, k, .. } = spec;
    // Strides (in elements) of the row-major operands: row stride, column stride.
    let (a_rs, a_cs) = if spec.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if spec.trans_b { (1, k) } else { (n, 1) };
    let parallelism = if m * n * k >= PARALLEL_MIN_MACS {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let read_dst = spec.beta != 0.0;
    // SAFETY: `gemm` checked the lengths against the shapes the strides describe: every
    // index the crate forms, i * rs + j * cs with i, j inside (m, k), (k, n) and (m, n), is
    // in bounds of a, b and c; c is borrowed mutably, so it aliases neither a nor b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            // dst = alpha' * dst + beta' * lhs * rhs in the crate's naming.
            spec.beta,
            spec.alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}
