//! The CPU engine's [`crate::reference::reduce::row_norms`]: the same contract and bitwise
//! the same results (each row's sum of squares the reference's sequential sum, `s += v * v`
//! over the row in order, then one square root), over rayon's pool.
//!
//! Why: the CPU step starts with the decoder's row norms (for the L1 metric and penalty),
//! and the reference's one chain of dependent additions per row, on one thread, waited on
//! each addition: `perf record saeforge train --device cpu` at 512 -> 16384 latents,
//! batch 256, put 6 % of the run in it. Here eight rows' chains run side by side (with
//! AVX2, in the lanes of one register, the rows transposed in registers as `sparse_dot`'s
//! are), so the additions overlap; each row still gets the same operations in the same
//! order. `src/reference/reduce.rs` stays the plain loop that judges the GPU kernel; this
//! module is tested against it bit for bit (below).

use rayon::prelude::*;

use crate::reference::reduce as reference;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 64;

/// Rows whose sums run side by side.
const LANES: usize = 8;

/// [`crate::reference::reduce::row_norms`], rows in parallel, eight side by side.
/// w: (n, d) -> norms: (n)
pub fn row_norms(w: &[f32], n: usize, d: usize, norms: &mut [f32]) {
    assert_eq!(w.len(), n * d, "row_norms: w length");
    assert_eq!(norms.len(), n, "row_norms: norms length");
    if d == 0 {
        norms.fill(0.0);
        return;
    }
    norms
        .par_chunks_mut(ROWS_PER_TASK)
        .zip(w.par_chunks(ROWS_PER_TASK * d))
        .for_each(|(out, rows)| norms_of(rows, d, out));
}

/// The norms of `rows` (out.len() rows of d), LANES at a time, then the rest by the
/// reference.
fn norms_of(rows: &[f32], d: usize, out: &mut [f32]) {
    let done = out.len() - out.len() % LANES;
    for (b, o) in out[..done].chunks_exact_mut(LANES).enumerate() {
        let w: [&[f32]; LANES] = std::array::from_fn(|l| &rows[(b * LANES + l) * d..][..d]);
        lanes(&w, o);
    }
    reference::row_norms(&rows[done * d..], out.len() - done, d, &mut out[done..]);
}

/// The norms of the LANES rows `w` into `out`: the AVX2 kernel where the CPU has it (checked
/// once, then cached by std), else LANES scalar chains.
fn lanes(w: &[&[f32]; LANES], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        return unsafe { lanes_avx2(w, out) };
    }
    lanes_scalar(w, out)
}

/// [`lanes`] without AVX2: LANES scalar chains side by side.
fn lanes_scalar(w: &[&[f32]; LANES], out: &mut [f32]) {
    let mut acc = [0.0f32; LANES];
    for j in 0..w[0].len() {
        for (a, row) in acc.iter_mut().zip(w) {
            *a += row[j] * row[j];
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a.sqrt();
    }
}

/// [`lanes`] on AVX2: per block of 8 columns the rows are transposed in registers
/// (`cpu_sparse::transpose8`), so that one ymm holds column j of the 8 rows, and one
/// accumulator of 8 lanes takes the block's columns in turn: a multiply, then an add, in
/// column order, as the reference (no fused multiply-add: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn lanes_avx2(w: &[&[f32]; LANES], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = w[0].len();
    let full = d - d % 8;
    let mut acc = _mm256_setzero_ps();
    for j in (0..full).step_by(8) {
        let r: [__m256; 8] = std::array::from_fn(|l| {
            let cols = &w[l][j..j + 8];
            // SAFETY: `cols` holds the 8 floats loaded.
            unsafe { _mm256_loadu_ps(cols.as_ptr()) }
        });
        for c in crate::cpu_sparse::transpose8(r) {
            acc = _mm256_add_ps(acc, _mm256_mul_ps(c, c));
        }
    }
    let mut sums = [0.0f32; 8];
    // SAFETY: `sums` has room for the 8 floats stored.
    unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), acc) };
    for ((o, mut s), row) in out.iter_mut().zip(sums).zip(w) {
        for &v in &row[full..] {
            s += v * v;
        }
        *o = s.sqrt();
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn row_norms_is_the_reference_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
        // Rows below, at and past a task and the 8 lanes; d with and without an 8-column
        // tail, and none.
        for (n, d) in [
            (1, 1),
            (7, 5),
            (8, 8),
            (9, 17),
            (70, 64),
            (200, 129),
            (130, 0),
        ] {
            let w: Vec<f32> = (0..n * d).map(|_| rng.random_range(-3.0..3.0)).collect();
            let (mut want, mut got) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            crate::reference::reduce::row_norms(&w, n, d, &mut want);
            super::row_norms(&w, n, d, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "row_norms ({n}, {d})");
            // The path a CPU without AVX2 takes (this machine takes the AVX2 one above).
            for (b, want) in want.chunks_exact(super::LANES).enumerate() {
                let rows: [&[f32]; super::LANES] =
                    std::array::from_fn(|l| &w[(b * super::LANES + l) * d..][..d]);
                let mut got = [f32::NAN; super::LANES];
                super::lanes_scalar(&rows, &mut got);
                assert_eq!(bits(&got), bits(want), "lanes_scalar ({n}, {d}), block {b}");
            }
        }
    }
}
