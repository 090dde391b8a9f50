//! CPU twins of the Matryoshka BatchTopK step's level-aware sparse stages.
//!
//! A Matryoshka SAE (Bussmann et al. 2025; SAELens `matryoshka_batchtopk`) has nested
//! prefixes of its dictionary, widths w_0 < ... < w_{M-1} = n. Level m decodes only the
//! latents i < w_m: x_hat_m = b_dec + sum over entries with idx < w_m of val * W_dec[idx].
//! The loss is sum_m ||x_hat_m - x||^2 / B (SAELens: the full MSE plus one "inner" MSE per
//! level below the full one, unweighted). With r_m = x_hat_m - x, a latent of group g
//! (w_{g-1} <= i < w_g, w_{-1} = 0) enters every level m >= g, so its gradient is a plain
//! SAE's with the residual R_g = sum_{m >= g} r_m: the sparse backward needs one dy per
//! group (`dy_levels`, (M, rows, d)), not a new algorithm. b_dec enters every level: its
//! gradient is the column sum of dy_levels[0] = scale * sum_m r_m.
//!
//! Codes are CSR over rows as in `sparse.rs`; `widths` is strictly increasing with the
//! last = n. Every sum runs in the order written here.

use super::reduce::slot;
use super::sparse::{add_scaled, dot, gather_latent_rows};

/// The group of latent i: the first m with i < widths[m].
pub fn level_of(widths: &[u32], i: u32) -> usize {
    widths.partition_point(|&w| w <= i)
}

fn check_widths(what: &str, widths: &[u32], n: usize) {
    assert!(!widths.is_empty(), "{what}: no widths");
    assert!(
        widths.windows(2).all(|p| p[0] < p[1]),
        "{what}: widths must increase"
    );
    assert_eq!(
        *widths.last().unwrap() as usize,
        n,
        "{what}: last width != n"
    );
    assert!(
        widths.len() <= slot::MAX_LEVELS,
        "{what}: more than {} levels",
        slot::MAX_LEVELS
    );
}

// The argument checks of the stages below, which their CPU engine twins
// (`crate::cpu_matryoshka`) make too.

#[allow(clippy::too_many_arguments)]
pub(crate) fn check_decode(
    row_ptr: &[u32],
    w_dec: &[f32],
    b_dec: &[f32],
    widths: &[u32],
    rows: usize,
    n: usize,
    d: usize,
    x_hat_levels: &[f32],
) {
    check_widths("matryoshka_decode", widths, n);
    assert_eq!(row_ptr.len(), rows + 1, "matryoshka_decode: row_ptr length");
    assert_eq!(w_dec.len(), n * d, "matryoshka_decode: w_dec length");
    assert_eq!(b_dec.len(), d, "matryoshka_decode: b_dec length");
    assert_eq!(
        x_hat_levels.len(),
        widths.len() * rows * d,
        "matryoshka_decode: x_hat_levels length"
    );
}

pub(crate) fn check_residuals(
    x: &[f32],
    x_hat_levels: &[f32],
    levels: usize,
    len: usize,
    dy_levels: &[f32],
) {
    assert!(levels <= slot::MAX_LEVELS, "matryoshka_residuals: levels");
    assert_eq!(x.len(), len, "matryoshka_residuals: x length");
    assert_eq!(
        x_hat_levels.len(),
        levels * len,
        "matryoshka_residuals: x_hat_levels"
    );
    assert_eq!(
        dy_levels.len(),
        levels * len,
        "matryoshka_residuals: dy_levels"
    );
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn check_dot_levels(
    row_ptr: &[u32],
    idx: &[u32],
    dy_levels: &[f32],
    w_dec: &[f32],
    widths: &[u32],
    rows: usize,
    n: usize,
    d: usize,
    g: &[f32],
) {
    check_widths("sparse_dot_levels", widths, n);
    assert_eq!(row_ptr.len(), rows + 1, "sparse_dot_levels: row_ptr length");
    assert_eq!(g.len(), idx.len(), "sparse_dot_levels: g length");
    assert_eq!(
        dy_levels.len(),
        widths.len() * rows * d,
        "sparse_dot_levels: dy"
    );
    assert_eq!(w_dec.len(), n * d, "sparse_dot_levels: w_dec length");
}

pub(crate) fn check_gather_levels(
    lat_ptr: &[u32],
    dy_levels: &[f32],
    widths: &[u32],
    rows: usize,
    n: usize,
    d: usize,
    dw_dec: &[f32],
) {
    check_widths("gather_dw_dec_levels", widths, n);
    assert_eq!(lat_ptr.len(), n + 1, "gather_dw_dec_levels: lat_ptr length");
    assert_eq!(dw_dec.len(), n * d, "gather_dw_dec_levels: dw_dec length");
    assert_eq!(
        dy_levels.len(),
        widths.len() * rows * d,
        "gather_dw_dec_levels: dy"
    );
}

/// x_hat_levels[m, b, :] = b_dec + sum over s in row_ptr[b]..row_ptr[b+1] (ascending) with
/// idx[s] < widths[m] of val[s] * w_dec[idx[s], :], accumulated starting from the bias.
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
    for (m, &w) in widths.iter().enumerate() {
        for b in 0..rows {
            let out = &mut x_hat_levels[(m * rows + b) * d..(m * rows + b + 1) * d];
            out.copy_from_slice(b_dec);
            for s in row_ptr[b] as usize..row_ptr[b + 1] as usize {
                let i = idx[s] as usize;
                if i >= w as usize {
                    continue;
                }
                add_scaled(out, val[s], &w_dec[i * d..(i + 1) * d]);
            }
        }
    }
}

/// Per level m: metrics[LEVEL_SSE + m] += sum (x - x_hat_levels[m])^2; per group g:
/// dy_levels[g] = scale * sum over m >= g (ascending) of (x_hat_levels[m] - x).
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
    for m in 0..levels {
        let mut sse = 0.0f64;
        for e in 0..len {
            let r = x[e] - x_hat_levels[m * len + e];
            sse += (r * r) as f64;
        }
        metrics[(slot::LEVEL_SSE as usize) + m] += sse as f32;
    }
    for g in 0..levels {
        for e in 0..len {
            dy_levels[g * len + e] = group_dy(x, x_hat_levels, levels, g, e, scale);
        }
    }
}

/// Element e of group g's dy in [`matryoshka_residuals`]: scale * the sum over m >= g
/// (ascending, f32 from 0) of (x_hat_levels[m, e] - x[e]), x: (len), x_hat_levels: (M, len).
pub fn group_dy(
    x: &[f32],
    x_hat_levels: &[f32],
    levels: usize,
    g: usize,
    e: usize,
    scale: f32,
) -> f32 {
    let len = x.len();
    let mut acc = 0.0f32;
    for m in g..levels {
        acc += x_hat_levels[m * len + e] - x[e];
    }
    scale * acc
}

/// g[s] = dy_levels[level(idx[s]), row(s), :] . w_dec[idx[s], :] (ascending columns) for
/// s < nnz; 0 for nnz <= s < cap (`sparse_dot` with the latent's group's dy).
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
    g.fill(0.0);
    for b in 0..rows {
        for s in row_ptr[b] as usize..row_ptr[b + 1] as usize {
            let i = idx[s] as usize;
            let m = level_of(widths, i as u32);
            let y = &dy_levels[(m * rows + b) * d..(m * rows + b + 1) * d];
            g[s] = dot(y, &w_dec[i * d..(i + 1) * d]);
        }
    }
}

/// dw_dec[i, :] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of
/// val[lat_slot[e]] * dy_levels[level(i), lat_row[e], :]; latents with no entries get 0.
/// With `accumulate`, dw_dec[i, :] + that sum instead, for the latents with entries
/// (`gather_dw_dec` with the latent's group's dy).
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
    // Latent i's group's dy: (rows, d).
    let dy_of = |i: usize| {
        let m = level_of(widths, i as u32);
        &dy_levels[m * rows * d..(m + 1) * rows * d]
    };
    gather_latent_rows(
        lat_ptr, lat_row, lat_slot, val, dy_of, d, accumulate, dw_dec,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_latents() {
        let w = [2u32, 5, 8];
        let got: Vec<usize> = (0..8).map(|i| level_of(&w, i)).collect();
        assert_eq!(got, [0, 0, 1, 1, 1, 2, 2, 2]);
    }

    /// One level (widths = [n]) is the plain decode and the plain residual.
    #[test]
    fn one_level_is_plain() {
        let (rows, n, d) = (2, 3, 2);
        let row_ptr = [0u32, 2, 3];
        let idx = [0u32, 2, 1];
        let val = [1.0f32, 2.0, 3.0];
        let w_dec = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let b_dec = [0.5f32, -0.5];
        let mut lv = vec![0.0f32; rows * d];
        matryoshka_decode(
            &row_ptr,
            &idx,
            &val,
            &w_dec,
            &b_dec,
            &[3],
            rows,
            n,
            d,
            &mut lv,
        );
        assert_eq!(lv, [3.5, 1.5, 0.5, 2.5]);
        // Two levels: level 0 keeps latent 0 only.
        let mut lv2 = vec![0.0f32; 2 * rows * d];
        #[rustfmt::skip]
        matryoshka_decode(&row_ptr, &idx, &val, &w_dec, &b_dec, &[1, 3], rows, n, d, &mut lv2);
        assert_eq!(&lv2[..4], [1.5, -0.5, 0.5, -0.5]);
        let x = [0.0f32; 4];
        let mut dy = vec![0.0f32; 8];
        let mut metrics = vec![0.0f32; crate::reference::reduce::METRIC_SLOTS];
        matryoshka_residuals(&x, &lv2, 2, rows, d, 1.0, &mut dy, &mut metrics);
        // Group 0 sees both levels' residuals, group 1 only the full one.
        assert_eq!(&dy[..4], [5.0, 1.0, 1.0, 2.0]);
        assert_eq!(&dy[4..], [3.5, 1.5, 0.5, 2.5]);
        assert_eq!(metrics[slot::LEVEL_SSE as usize], 2.25 + 0.25 + 0.25 + 0.25);
    }
}
