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
use std::ops::Not;

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
        // A pass over all of C (256 MiB read and written at 4096 x 16384): over the pool
        // too when the product was.
        bias_pass(c, bias, m * n * k >= PARALLEL_MIN_MACS);
    }
}

/// Rows of C per task of the bias pass.
const BIAS_ROWS: usize = 16;

/// c[r, j] += bias[j] for every row of c (rows of n), over the pool; whether every result
/// is finite; and the maxima of each row's blocks of `block` entries (the last block of a
/// row may be shorter) after the bias. The encoder's bias, the step's check on its
/// pre-activations and the bounds its top-k selections start from
/// (`cpu_codes::topk_codes_from_bmax`, `cpu_codes::batchtopk_from_bmax`) in one pass over
/// them instead of three (each a read of 256 MiB at 4096 x 16384), as the GPU's encoder
/// GEMM writes its block maxima in its epilogue (`gemm::gemm_block_max`). The sums are
/// [`gemm`]'s with `Some(bias)`, bit for bit. A NaN never becomes a maximum (a block of
/// NaN has -inf); the caller refuses non-finite pre-activations anyway.
/// c: (rows, n), bias: (n) -> c, bmax: (rows, ceil(n / block)), all finite
pub fn add_bias_block_max(c: &mut [f32], bias: &[f32], block: usize, bmax: &mut [f32]) -> bool {
    let n = bias.len();
    assert!(
        n > 0 && c.len().is_multiple_of(n),
        "blas::add_bias_block_max: C has {} elements, not rows of {n}",
        c.len()
    );
    let nb = n.div_ceil(block);
    assert_eq!(
        bmax.len(),
        c.len() / n * nb,
        "blas::add_bias_block_max: bmax, expected ({} rows, {nb} blocks)",
        c.len() / n
    );
    // `v > m` is false for NaN, so NaN never becomes a maximum.
    let max = |a: f32, v: f32| if v > a { v } else { a };
    let add = |(rows, bm): (&mut [f32], &mut [f32])| {
        let mut bad = false;
        for (row, bm) in rows.chunks_mut(n).zip(bm.chunks_mut(nb)) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
                bad |= !v.is_finite();
            }
            // Then the block maxima, while the row is still in cache: eight running
            // maxima per block (a vector register's worth), then their maximum.
            for (blk, m) in row.chunks(block).zip(bm) {
                let mut lanes = [f32::NEG_INFINITY; 8];
                let mut v8s = blk.chunks_exact(8);
                for v8 in &mut v8s {
                    for (l, &v) in lanes.iter_mut().zip(v8) {
                        *l = max(*l, v);
                    }
                }
                *m = lanes
                    .iter()
                    .chain(v8s.remainder())
                    .fold(f32::NEG_INFINITY, |a, &v| max(a, v));
            }
        }
        bad
    };
    let bad = c
        .par_chunks_mut(n * BIAS_ROWS)
        .zip(bmax.par_chunks_mut(nb * BIAS_ROWS))
        .map(add)
        .reduce(|| false, |a, b| a | b);
    bad.not()
}

/// c's rows (of bias.len()) += bias, over the pool when `parallel`; whether every sum is
/// finite (the comparison costs nothing next to the pass's memory traffic).
fn bias_pass(c: &mut [f32], bias: &[f32], parallel: bool) -> bool {
    let n = bias.len();
    let add = |rows: &mut [f32]| {
        let mut bad = false;
        for row in rows.chunks_mut(n) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
                bad |= !v.is_finite();
            }
        }
        bad
    };
    let bad = if parallel {
        c.par_chunks_mut(n * BIAS_ROWS)
            .map(add)
            .reduce(|| false, |a, b| a | b)
    } else {
        add(c)
    };
    bad.not()
}

/// Below this many rows of C the crate's threads barely split the product (it shares out
/// rows): at 64 x 16384 x 512 it ran at ~90 GFLOP/s on 2 threads, against ~170 with the
/// columns split between rayon's threads, one single-threaded product each (`cargo bench
/// --bench blas`, the `b64` rows). From 128 rows on the two were level.
const SPLIT_COLUMNS_BELOW_M: usize = 128;

/// C = alpha * op(A) op(B) + beta * C through the crate (k > 0, shapes checked): one
/// threaded product, or for few rows one single-threaded product per slice of columns.
fn product(spec: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32]) {
    let &GemmSpec { m, n, k, .. } = spec;
    let threads = rayon::current_num_threads();
    if m * n * k < PARALLEL_MIN_MACS {
        columns(spec, a, b, c.as_mut_ptr(), 0..n, Parallelism::None);
    } else if m >= SPLIT_COLUMNS_BELOW_M || threads == 1 {
        columns(spec, a, b, c.as_mut_ptr(), 0..n, Parallelism::Rayon(0));
    } else {
        // Column slices of a multiple of 16 (whole vector registers), one per thread.
        let width = n.div_ceil(threads).next_multiple_of(16);
        let c_addr = c.as_mut_ptr() as usize;
        (0..n.div_ceil(width)).into_par_iter().for_each(|t| {
            let cols = t * width..((t + 1) * width).min(n);
            columns(spec, a, b, c_addr as *mut f32, cols, Parallelism::None);
        });
    }
}

/// The columns `cols` of C = alpha * op(A) op(B) + beta * C, with C at `c` (row-major,
/// (m, n)), through the crate.
fn columns(
    spec: &GemmSpec,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    cols: std::ops::Range<usize>,
    parallelism: Parallelism,
) {
    let &GemmSpec { m, n, k, .. } = spec;
    // Strides (in elements) of the row-major operands: row stride, column stride.
    let (a_rs, a_cs) = if spec.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if spec.trans_b { (1, k) } else { (n, 1) };
    let read_dst = spec.beta != 0.0;
    // SAFETY: `gemm` checked the lengths of a, b and c against the shapes the strides
    // describe, and cols lies within 0..n: every index the crate forms, from the column
    // slice's start cols.start * cs plus i * rs + j * cs with i, j inside (m, k),
    // (k, cols.len()) and (m, cols.len()), is in bounds of a, b and c. c comes from a
    // mutable borrow, so it aliases neither a nor b, and the callers' column slices are
    // disjoint, so no two products write (or, with beta, read) the same element.
    unsafe {
        gemm::gemm(
            m,
            cols.len(),
            k,
            c.add(cols.start),
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr().add(cols.start * b_cs),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused pass gives gemm's own sums with the bias (bit for bit) and the maxima of
    /// each row's blocks (the last one short, or the whole row), and finds a NaN or an
    /// infinity wherever it is, including one the bias makes.
    #[test]
    fn add_bias_block_max_is_gemms_bias_with_block_maxima_and_finds_non_finite() {
        let (m, n, k) = (37, 53, 11);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.37 - 2.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5) % 17) as f32 * 0.21 - 1.5)
            .collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.013 - 0.3).collect();
        let spec = GemmSpec::nn(m, n, k);
        let mut want = vec![f32::NAN; m * n];
        gemm(&spec, &a, &b, Some(&bias), &mut want);
        let mut product = vec![f32::NAN; m * n];
        gemm(&spec, &a, &b, None, &mut product);
        let pass = |c: &mut [f32], bias: &[f32], block: usize| {
            let mut bmax = vec![f32::NAN; m * n.div_ceil(block)];
            (add_bias_block_max(c, bias, block, &mut bmax), bmax)
        };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for block in [32, 8, 7, 53, 64] {
            let mut got = product.clone();
            let (finite, bmax) = pass(&mut got, &bias, block);
            assert!(finite);
            assert_eq!(bits(&got), bits(&want), "block {block}");
            let nb = n.div_ceil(block);
            for r in 0..m {
                for j in 0..nb {
                    let mut top = f32::NEG_INFINITY;
                    for &v in &want[r * n + j * block..r * n + ((j + 1) * block).min(n)] {
                        top = top.max(v);
                    }
                    assert_eq!(bmax[r * nb + j], top, "block {block}, row {r}, block {j}");
                }
            }
        }
        for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, n - 1, 17 * n + 5, m * n - 1] {
                let mut c = product.clone();
                c[at] = special;
                assert!(!pass(&mut c, &bias, 32).0, "{special} at {at}");
            }
        }
        // Finite before the bias, infinite after it.
        let mut c = product.clone();
        c[3] = f32::MAX;
        let mut big = bias.clone();
        big[3] = f32::MAX;
        assert!(!pass(&mut c, &big, 32).0, "f32::MAX + f32::MAX overflows");
    }
}
