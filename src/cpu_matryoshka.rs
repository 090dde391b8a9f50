//! The CPU engine's Matryoshka stages: [`crate::reference::matryoshka`]'s
//! `matryoshka_decode`, `matryoshka_residuals`, `sparse_dot_levels` and
//! `gather_dw_dec_levels`, with the same contracts and bitwise the same results, over
//! rayon's pool, through `cpu_sparse`'s blocked row sums and side-by-side dot products (its
//! AVX2 paths included).
//!
//! Why: the CPU step ran the reference's loops for these, on one thread, and the decode
//! once per level: at 512 -> 16384 latents, batch 4096, k 32, widths 1024, 4096, 16384
//! (`saeforge train --device cpu --profile`), decode took 37 ms, loss 28 and backward 117
//! of a 543 ms step; with this module 12, 16 and 51 (README, *Matryoshka on the CPU
//! engine*). A row's codes are latents ascending, so the entries of level m (those below
//! widths[m]) are a prefix of the row's, and level m's sum is level m - 1's continued with
//! the next entries: the reference adds, from the bias, the row's entries below the level's
//! width in order, and so does this, one decode with a copy per level instead of one
//! decode per level. A row whose latents are not ascending (never the engine's) is decoded
//! level by level from the bias, as the reference does.
//!
//! `src/reference/matryoshka.rs` stays the plain loops that judge the GPU kernels; this
//! module is tested against it bit for bit (below), on both of `cpu_sparse`'s paths.

use rayon::prelude::*;

use crate::cpu_sparse::{
    Lists, ROWS_PER_TASK, dot_row, gather_latent_rows, slots_per_row, sum_rows,
};
use crate::reference::matryoshka::{
    check_decode, check_dot_levels, check_gather_levels, check_residuals, group_dy, level_of,
};
use crate::reference::reduce::slot;

/// [`crate::reference::matryoshka::matryoshka_decode`], rows in parallel, each row's
/// levels one continued sum.
/// row_ptr: (rows + 1), idx: (cap), val: (cap), w_dec: (n, d), b_dec: (d)
/// -> x_hat_levels: (M, rows, d)
#[allow(clippy::too_many_arguments)]
pub fn matryoshka_decode(
    row_ptr: &[u32],
    idx: &[u32],
    val: &[f32],
    w_dec: &[f32],
    b_dec: &[f32],
    widths: &[u32],
    rows: usize,
    n: usize,
    d: usize,
    x_hat_levels: &mut [f32],
) {
    check_decode(row_ptr, w_dec, b_dec, widths, rows, n, d, x_hat_levels);
    let len = rows * d;
    if d == 0 {
        return;
    }
    let term = |s: usize| {
        let i = idx[s] as usize;
        (val[s], &w_dec[i * d..(i + 1) * d])
    };
    // Level by level; a row of level m starts from its sum at level m - 1.
    for m in 0..widths.len() {
        let (below, here) = x_hat_levels.split_at_mut(m * len);
        let prev = m.checked_sub(1).map(|p| &below[p * len..]);
        here[..len]
            .par_chunks_mut(d)
            .with_min_len(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(b, out)| {
                let (s0, s1) = (row_ptr[b] as usize, row_ptr[b + 1] as usize);
                let slots = &idx[s0..s1];
                if !slots.is_sorted() {
                    // The reference's way: this level's entries, in order, from the bias.
                    out.copy_from_slice(b_dec);
                    let mine: Vec<usize> = (s0..s1).filter(|&s| idx[s] < widths[m]).collect();
                    sum_rows(out, mine.len(), |t| term(mine[t]));
                    return;
                }
                // This level's entries past the previous level's: the slots from `lo`.
                let lo = match prev {
                    None => {
                        out.copy_from_slice(b_dec);
                        0
                    }
                    Some(p) => {
                        out.copy_from_slice(&p[b * d..(b + 1) * d]);
                        slots.partition_point(|&i| i < widths[m - 1])
                    }
                };
                let hi = slots.partition_point(|&i| i < widths[m]);
                sum_rows(out, hi - lo, |t| term(s0 + lo + t));
            });
    }
}

/// [`crate::reference::matryoshka::matryoshka_residuals`]: each level's squared error the
/// reference's sequential f64 sum over the elements, the levels' sums side by side in one
/// pass (each waited on its additions one level at a time); the groups' dy, elementwise
/// (the reference's `group_dy`), over rayon.
/// x: (rows, d), x_hat_levels: (M, rows, d) -> dy_levels: (M, rows, d), metrics
#[allow(clippy::too_many_arguments)]
pub fn matryoshka_residuals(
    x: &[f32],
    x_hat_levels: &[f32],
    levels: usize,
    rows: usize,
    d: usize,
    scale: f32,
    dy_levels: &mut [f32],
    metrics: &mut [f32],
) {
    let len = rows * d;
    check_residuals(x, x_hat_levels, levels, len, dy_levels);
    let mut sse = [0.0f64; slot::MAX_LEVELS];
    for (e, &xe) in x.iter().enumerate() {
        for (m, s) in sse[..levels].iter_mut().enumerate() {
            let r = xe - x_hat_levels[m * len + e];
            *s += (r * r) as f64;
        }
    }
    for (m, s) in sse[..levels].iter().enumerate() {
        metrics[slot::LEVEL_SSE as usize + m] += *s as f32;
    }
    if len == 0 {
        return;
    }
    for (g, dy) in dy_levels.chunks_exact_mut(len).enumerate() {
        dy.par_chunks_mut(ROWS_PER_TASK * d.max(1))
            .enumerate()
            .for_each(|(c, out)| {
                let e0 = c * ROWS_PER_TASK * d.max(1);
                for (j, o) in out.iter_mut().enumerate() {
                    *o = group_dy(x, x_hat_levels, levels, g, e0 + j, scale);
                }
            });
    }
}

/// [`crate::reference::matryoshka::sparse_dot_levels`], rows in parallel: each run of a
/// row's slots in one group takes `cpu_sparse`'s dot products with that group's dy row.
/// row_ptr: (rows + 1), idx: (cap), dy_levels: (M, rows, d), w_dec: (n, d) -> g: (cap)
#[allow(clippy::too_many_arguments)]
pub fn sparse_dot_levels(
    row_ptr: &[u32],
    idx: &[u32],
    dy_levels: &[f32],
    w_dec: &[f32],
    widths: &[u32],
    rows: usize,
    n: usize,
    d: usize,
    g: &mut [f32],
) {
    check_dot_levels(row_ptr, idx, dy_levels, w_dec, widths, rows, n, d, g);
    slots_per_row("sparse_dot_levels", row_ptr, g)
        .into_par_iter()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(b, out)| {
            let slots = &idx[row_ptr[b] as usize..row_ptr[b + 1] as usize];
            let mut at = 0;
            while at < slots.len() {
                let m = level_of(widths, slots[at]);
                let run = slots[at..]
                    .iter()
                    .take_while(|&&i| level_of(widths, i) == m)
                    .count();
                let y = &dy_levels[(m * rows + b) * d..(m * rows + b + 1) * d];
                dot_row(&slots[at..at + run], y, w_dec, &mut out[at..at + run]);
                at += run;
            }
        });
}

/// [`crate::reference::matryoshka::gather_dw_dec_levels`], latents in parallel: each
/// latent's row the reference's `latent_column` sum over its group's dy, as
/// `cpu_sparse::gather_dw_dec`'s.
/// lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap), val: (cap), dy_levels: (M, rows, d)
/// -> dw_dec: (n, d)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_dec_levels(
    lat_ptr: &[u32],
    lat_row: &[u32],
    lat_slot: &[u32],
    val: &[f32],
    dy_levels: &[f32],
    widths: &[u32],
    rows: usize,
    n: usize,
    d: usize,
    accumulate: bool,
    dw_dec: &mut [f32],
) {
    check_gather_levels(lat_ptr, dy_levels, widths, rows, n, d, dw_dec);
    if d == 0 {
        return;
    }
    let (lists, level_rows) = (Lists(lat_ptr, lat_row, lat_slot), rows * d);
    // Latent i's group's dy: (rows, d).
    let dy_of = |i: usize| {
        let m = level_of(widths, i as u32);
        &dy_levels[m * level_rows..(m + 1) * level_rows]
    };
    gather_latent_rows(lists, val, dy_of, d, accumulate, dw_dec);
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use crate::cpu_sparse::tests::{bits, code, on_each_path, random, transpose};
    use crate::reference::matryoshka as reference;

    /// (rows, d, n, k, widths): one level, several, widths past and below a row's latents,
    /// d below, at and past `sum_rows`' blocks.
    fn cases() -> Vec<(usize, usize, usize, usize, Vec<u32>)> {
        vec![
            (1, 1, 1, 1, vec![1]),
            (7, 5, 33, 4, vec![3, 10, 33]),
            (40, 17, 1500, 12, vec![64, 256, 1500]),
            (64, 64, 2100, 40, vec![100, 700, 1400, 2100]),
            (12, 512, 700, 30, vec![1, 2, 699, 700]),
        ]
    }

    /// A code with its rows' latents shuffled: the decode's path for rows that are not
    /// ascending.
    fn shuffled(rng: &mut ChaCha8Rng, row_ptr: &[u32], idx: &mut [u32]) {
        for w in row_ptr.windows(2) {
            let row = &mut idx[w[0] as usize..w[1] as usize];
            for j in (1..row.len()).rev() {
                row.swap(j, rng.random_range(0..=j));
            }
        }
    }

    #[test]
    fn matryoshka_stages_are_the_reference_bit_for_bit() {
        on_each_path(|path| {
            let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
            for (rows, d, n, k, widths) in cases() {
                let m = widths.len();
                for ascending in [true, false] {
                    let (rp, mut idx, val) = code(&mut rng, rows, n, k);
                    if !ascending {
                        shuffled(&mut rng, &rp, &mut idx);
                    }
                    let what = format!("({rows}, {d}, {n}), widths {widths:?}, {path}");
                    let w_dec = random(&mut rng, n * d);
                    let b_dec = random(&mut rng, d);
                    let (mut want, mut got) = (vec![f32::NAN; m * rows * d], vec![0.0; 0]);
                    got.resize(m * rows * d, f32::NAN);
                    #[rustfmt::skip]
                    reference::matryoshka_decode(&rp, &idx, &val, &w_dec, &b_dec, &widths, rows, n, d, &mut want);
                    #[rustfmt::skip]
                    super::matryoshka_decode(&rp, &idx, &val, &w_dec, &b_dec, &widths, rows, n, d, &mut got);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "matryoshka_decode {what}, ascending {ascending}"
                    );

                    // The residuals of these levels against a random target.
                    let x = random(&mut rng, rows * d);
                    let (mut want_dy, mut got_dy) =
                        (vec![f32::NAN; m * rows * d], vec![f32::NAN; m * rows * d]);
                    let slots = crate::reference::reduce::METRIC_SLOTS;
                    let (mut want_m, mut got_m) = (vec![0.5f32; slots], vec![0.5f32; slots]);
                    #[rustfmt::skip]
                    reference::matryoshka_residuals(&x, &want, m, rows, d, 0.75, &mut want_dy, &mut want_m);
                    #[rustfmt::skip]
                    super::matryoshka_residuals(&x, &want, m, rows, d, 0.75, &mut got_dy, &mut got_m);
                    assert_eq!(
                        bits(&got_dy),
                        bits(&want_dy),
                        "matryoshka_residuals dy {what}"
                    );
                    assert_eq!(
                        bits(&got_m),
                        bits(&want_m),
                        "matryoshka_residuals metrics {what}"
                    );

                    let dy = random(&mut rng, m * rows * d);
                    let (mut want, mut got) =
                        (vec![f32::NAN; idx.len()], vec![f32::NAN; idx.len()]);
                    #[rustfmt::skip]
                    reference::sparse_dot_levels(&rp, &idx, &dy, &w_dec, &widths, rows, n, d, &mut want);
                    #[rustfmt::skip]
                    super::sparse_dot_levels(&rp, &idx, &dy, &w_dec, &widths, rows, n, d, &mut got);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "sparse_dot_levels {what}, ascending {ascending}"
                    );

                    let [lp, lr, ls] = transpose(&rp, &idx, rows, n);
                    for accumulate in [false, true] {
                        let mut start = random(&mut rng, n * d);
                        start.iter_mut().step_by(7).for_each(|v| *v = -0.0);
                        let (mut want, mut got) = (start.clone(), start);
                        #[rustfmt::skip]
                        reference::gather_dw_dec_levels(&lp, &lr, &ls, &val, &dy, &widths, rows, n, d, accumulate, &mut want);
                        #[rustfmt::skip]
                        super::gather_dw_dec_levels(&lp, &lr, &ls, &val, &dy, &widths, rows, n, d, accumulate, &mut got);
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "gather_dw_dec_levels {what}, accumulate {accumulate}"
                        );
                    }
                }
            }
        });
    }
}
