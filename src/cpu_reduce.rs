//! The CPU engine's twins of [`crate::reference::reduce`]: `row_norms`, `col_sum`,
//! `dense_stats` and `l1_backward`, with the same contracts and bitwise the same results,
//! over rayon's pool.
//!
//! `row_norms`: each row's sum of squares is the reference's sequential sum, `s += v * v`
//! over the row in order, then one square root. Why: the CPU step starts with the
//! decoder's row norms (for the L1 metric and penalty), and the reference's one chain of
//! dependent additions per row, on one thread, waited on each addition: `perf record
//! saeforge train --device cpu` at 512 -> 16384 latents, batch 256, put 6 % of the run in
//! it. Here eight rows' chains run side by side (with AVX2, in the lanes of one register,
//! the rows transposed in registers as `sparse_dot`'s are), so the additions overlap; each
//! row still gets the same operations in the same order.
//!
//! The others serve the dense path of relu / jumprelu (codes past `code_capacity`), where
//! the reference's loops ran over every (row, latent) entry on one thread, and `col_sum`
//! down each column, a stride of a whole row per element: `train --device cpu --profile`
//! at 512 -> 16384, batch 4096, relu, gave them most of a 2.6 s backward. `col_sum` and
//! `dense_stats`' firing counts take blocks of columns per task, each task walking the rows
//! in order along its columns (every column's sum is still the reference's: `col_sum`'s in
//! its blocks of 32 rows, then the blocks in order); `dense_stats`' L1 is the reference's
//! one f64 chain (any other order would round differently), on one thread while the other
//! counts; `l1_backward` is elementwise, rows in parallel.
//!
//! `src/reference/reduce.rs` stays the plain loops that judge the GPU kernels; this module
//! is tested against it bit for bit (below).

use rayon::prelude::*;

use crate::reference::check;
use crate::reference::reduce as reference;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 64;

/// Rows whose sums run side by side.
const LANES: usize = 8;

/// [`crate::reference::reduce::row_norms`], rows in parallel, eight side by side.
/// w: (n, d) -> norms: (n)
pub fn row_norms(w: &[f32], n: usize, d: usize, norms: &mut [f32]) {
    check("row_norms", "w", w.len(), n * d);
    check("row_norms", "norms", norms.len(), n);
    if d == 0 {
        norms.fill(0.0);
        return;
    }
    norms
        .par_chunks_mut(ROWS_PER_TASK)
        .zip(w.par_chunks(ROWS_PER_TASK * d))
        .for_each(|(out, rows)| norms_of(rows, d, out));
}

/// Columns per rayon task of the column reductions ([`col_sum`], [`dense_stats`]).
pub(crate) const COLS_PER_TASK: usize = 256;

/// [`crate::reference::reduce::col_sum`], blocks of columns in parallel: out[j] =
/// (accumulate ? out[j] : 0) + column j's sum in blocks of `COL_SUM_BLOCK` rows (each
/// block's rows in order, then the blocks in order; f32, from 0).
/// a: (rows, cols) -> out: (cols)
pub fn col_sum(a: &[f32], rows: usize, cols: usize, out: &mut [f32], accumulate: bool) {
    check("col_sum", "a", a.len(), rows * cols);
    check("col_sum", "out", out.len(), cols);
    out.par_chunks_mut(COLS_PER_TASK)
        .enumerate()
        .for_each(|(t, out)| {
            let j0 = t * COLS_PER_TASK;
            let (mut s, mut block) = ([0.0f32; COLS_PER_TASK], [0.0f32; COLS_PER_TASK]);
            let (s, block) = (&mut s[..out.len()], &mut block[..out.len()]);
            for r0 in (0..rows).step_by(reference::COL_SUM_BLOCK) {
                block.fill(0.0);
                for r in r0..(r0 + reference::COL_SUM_BLOCK).min(rows) {
                    for (b, &v) in block.iter_mut().zip(&a[r * cols + j0..][..out.len()]) {
                        *b += v;
                    }
                }
                for (s, &b) in s.iter_mut().zip(block.iter()) {
                    *s += b;
                }
            }
            for (o, &s) in out.iter_mut().zip(s.iter()) {
                *o = if accumulate { *o + s } else { s };
            }
        });
}

/// [`crate::reference::reduce::dense_stats`]: L0 (the count of z > 0) and the firing
/// counts by blocks of columns in parallel (integers: any order gives the same), L1 (the
/// sum of z * norms over z > 0) as the reference's f64 chain over (row, latent) in order,
/// on one thread beside them. Adding 0.0 for the others leaves the chain's bits as they
/// are: it starts at +0.0 and never becomes -0.0.
/// z: (rows, n), norms: (n) -> fired: (n) u32, metrics: (METRIC_SLOTS)
pub fn dense_stats(
    z: &[f32],
    rows: usize,
    n: usize,
    norms: &[f32],
    fired: &mut [u32],
    metrics: &mut [f32],
) {
    check("dense_stats", "z", z.len(), rows * n);
    check("dense_stats", "norms", norms.len(), n);
    check("dense_stats", "fired", fired.len(), n);
    let l1_chain = || {
        let mut l1 = 0.0f64;
        // Each block's terms first (+0.0 where z <= 0), in a pass without branches (as
        // one loop, the compiler branched per entry, and half the entries mispredicted),
        // then the chain over them.
        let mut terms = [0.0f64; TERMS];
        for row in z.chunks_exact(n.max(1)) {
            let (v_blocks, w_blocks) = (row.chunks_exact(TERMS), norms.chunks_exact(TERMS));
            let (v_tail, w_tail) = (v_blocks.remainder(), w_blocks.remainder());
            for (v, w) in v_blocks.zip(w_blocks) {
                l1_terms(v, w, &mut terms);
                for &t in &terms {
                    l1 += t;
                }
            }
            for (&v, &w) in v_tail.iter().zip(w_tail) {
                l1 += l1_term(v, w);
            }
        }
        l1
    };
    let counts = || {
        fired
            .par_chunks_mut(COLS_PER_TASK)
            .enumerate()
            .map(|(t, fired)| {
                let j0 = t * COLS_PER_TASK;
                let (mut count, width) = (0u64, fired.len());
                for r in 0..rows {
                    for (f, &v) in fired.iter_mut().zip(&z[r * n + j0..][..width]) {
                        let on = (v > 0.0) as u32;
                        *f = f.wrapping_add(on);
                        count += on as u64;
                    }
                }
                count
            })
            .sum::<u64>()
    };
    let (l1, count) = rayon::join(l1_chain, counts);
    metrics[reference::slot::L0 as usize] += count as f32;
    metrics[reference::slot::L1 as usize] += l1 as f32;
}

/// Entries per block of [`dense_stats`]' L1 terms.
const TERMS: usize = 64;

/// The reference's L1 term of an entry: (z * norm) as f64 where z > 0, else +0.0 (which
/// leaves the chain's sum as it is).
fn l1_term(v: f32, w: f32) -> f64 {
    if v > 0.0 { (v * w) as f64 } else { 0.0 }
}

/// [`l1_term`] of TERMS entries: the AVX2 kernel where the CPU has it, else one by one.
fn l1_terms(v: &[f32], w: &[f32], out: &mut [f64; TERMS]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        return unsafe { l1_terms_avx2(v, w, out) };
    }
    l1_terms_scalar(v, w, out)
}

/// [`l1_terms`] without AVX2.
fn l1_terms_scalar(v: &[f32], w: &[f32], out: &mut [f64; TERMS]) {
    for ((t, &v), &w) in out.iter_mut().zip(v).zip(w) {
        *t = l1_term(v, w);
    }
}

/// [`l1_terms`] on AVX2: 8 entries at a time, z * norm (no fused multiply-add: the same
/// product) masked by z > 0 (ordered: NaN gives 0, as the reference skips it), widened
/// to f64 exactly as `as f64` does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn l1_terms_avx2(v: &[f32], w: &[f32], out: &mut [f64; TERMS]) {
    use std::arch::x86_64::*;
    assert!(
        v.len() >= TERMS && w.len() >= TERMS,
        "l1_terms: a block of {TERMS}"
    );
    for k in (0..TERMS).step_by(8) {
        // SAFETY: v, w hold TERMS floats (checked above), out TERMS doubles; k + 8 <= TERMS.
        unsafe {
            let (z, norm) = (
                _mm256_loadu_ps(v[k..].as_ptr()),
                _mm256_loadu_ps(w[k..].as_ptr()),
            );
            let on = _mm256_cmp_ps::<_CMP_GT_OQ>(z, _mm256_setzero_ps());
            let t = _mm256_and_ps(_mm256_mul_ps(z, norm), on);
            let (lo, hi) = (_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
            _mm256_storeu_pd(out[k..].as_mut_ptr(), _mm256_cvtps_pd(lo));
            _mm256_storeu_pd(out[k + 4..].as_mut_ptr(), _mm256_cvtps_pd(hi));
        }
    }
}

/// [`crate::reference::reduce::l1_backward`] (dz[r, i] += scale * norms[i] where
/// z[r, i] > 0), rows in parallel.
/// z: (rows, n), norms: (n) -> dz: (rows, n), accumulated
pub fn l1_backward(z: &[f32], rows: usize, n: usize, norms: &[f32], scale: f32, dz: &mut [f32]) {
    check("l1_backward", "z", z.len(), rows * n);
    check("l1_backward", "dz", dz.len(), rows * n);
    check("l1_backward", "norms", norms.len(), n);
    let task = DENSE_ROWS_PER_TASK * n.max(1);
    dz.par_chunks_mut(task)
        .zip(z.par_chunks(task))
        .for_each(|(dz, z)| {
            for (dz, z) in dz.chunks_exact_mut(n).zip(z.chunks_exact(n)) {
                for ((d, &z), &w) in dz.iter_mut().zip(z).zip(norms) {
                    // A select, not a branch, so that it vectorizes: the same sum where
                    // z > 0, dz as it was elsewhere.
                    let add = *d + scale * w;
                    *d = if z > 0.0 { add } else { *d };
                }
            }
        });
}

/// Rows per rayon task of the elementwise passes over (rows, n).
const DENSE_ROWS_PER_TASK: usize = 16;

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

    use crate::cpu_sparse::tests::bits;

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

    #[test]
    fn dense_reductions_are_the_reference_bit_for_bit() {
        use crate::reference::reduce::{self as reference, METRIC_SLOTS};
        let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
        // Columns below, at and past a block of columns (and a tail), rows past a task of
        // rows, and empty shapes.
        for (rows, n) in [
            (0, 5),
            (4, 0),
            (1, 1),
            (9, 255),
            (33, 256),
            (20, 700),
            (3, 5000),
            // col_sum's row blocks of 32: several whole ones and a ragged one.
            (100, 300),
        ] {
            let what = format!("({rows}, {n})");
            // About a third of z positive, zeros of both signs among the rest.
            let z: Vec<f32> = (0..rows * n)
                .map(|_| match rng.random_range(0..6) {
                    0 => 0.0,
                    1 => -0.0,
                    2 | 3 => -rng.random_range(0.0..3.0f32),
                    _ => rng.random_range(0.0..3.0f32),
                })
                .collect();
            let norms: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..2.0)).collect();
            for accumulate in [false, true] {
                let start: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let (mut want, mut got) = (start.clone(), start);
                reference::col_sum(&z, rows, n, &mut want, accumulate);
                super::col_sum(&z, rows, n, &mut got, accumulate);
                assert_eq!(bits(&got), bits(&want), "col_sum {what}, {accumulate}");
            }
            let fired: Vec<u32> = (0..n).map(|_| rng.random_range(0..4)).collect();
            let metrics: Vec<f32> = (0..METRIC_SLOTS).map(|i| i as f32 * 0.5).collect();
            let (mut fired_want, mut metrics_want) = (fired.clone(), metrics.clone());
            let (mut fired_got, mut metrics_got) = (fired, metrics);
            reference::dense_stats(&z, rows, n, &norms, &mut fired_want, &mut metrics_want);
            super::dense_stats(&z, rows, n, &norms, &mut fired_got, &mut metrics_got);
            assert_eq!(fired_got, fired_want, "dense_stats fired {what}");
            assert_eq!(
                bits(&metrics_got),
                bits(&metrics_want),
                "dense_stats {what}"
            );
            // The path a CPU without AVX2 takes for the L1 terms (this machine takes AVX2's).
            let w: Vec<f32> = (0..super::TERMS)
                .map(|_| rng.random_range(0.0..2.0))
                .collect();
            for v in z.chunks_exact(super::TERMS) {
                let (mut want, mut got) = ([f64::NAN; super::TERMS], [f64::NAN; super::TERMS]);
                super::l1_terms_scalar(v, &w, &mut want);
                super::l1_terms(v, &w, &mut got);
                let bits = |t: &[f64]| t.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "l1_terms {what}");
            }
            let dz: Vec<f32> = (0..rows * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (mut want, mut got) = (dz.clone(), dz);
            reference::l1_backward(&z, rows, n, &norms, 0.37, &mut want);
            super::l1_backward(&z, rows, n, &norms, 0.37, &mut got);
            assert_eq!(bits(&got), bits(&want), "l1_backward {what}");
        }
    }

    /// The dense path's passes at 512 -> 16384 latents, batch 4096, against the reference:
    /// `cargo test --release --lib cpu_reduce::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check: run by hand"]
    fn timing() {
        use crate::reference::reduce::{self as reference, METRIC_SLOTS};
        let (rows, n) = (4096, 16384);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let z: Vec<f32> = (0..rows * n).map(|_| rng.random::<f32>() - 0.5).collect();
        let norms = vec![1.0f32; n];
        let (mut fired, mut metrics) = (vec![0u32; n], vec![0.0f32; METRIC_SLOTS]);
        let mut dz = vec![0.0f32; rows * n];
        let mut out = vec![0.0f32; n];
        let time = |f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        };
        for _ in 0..2 {
            let r = time(&mut || reference::col_sum(&z, rows, n, &mut out, false));
            let f = time(&mut || super::col_sum(&z, rows, n, &mut out, false));
            println!("col_sum: reference {r:.1} ms, cpu_reduce {f:.1} ms");
            let (fi, m) = (&mut fired, &mut metrics);
            let r = time(&mut || reference::dense_stats(&z, rows, n, &norms, fi, m));
            let f = time(&mut || super::dense_stats(&z, rows, n, &norms, fi, m));
            println!("dense_stats: reference {r:.1} ms, cpu_reduce {f:.1} ms");
            let r = time(&mut || reference::l1_backward(&z, rows, n, &norms, 0.1, &mut dz));
            let f = time(&mut || super::l1_backward(&z, rows, n, &norms, 0.1, &mut dz));
            println!("l1_backward: reference {r:.1} ms, cpu_reduce {f:.1} ms");
        }
    }
}
