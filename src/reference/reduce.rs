//! CPU twins of shaders/reduce.wgsl: the elementwise parts of the loss, the reductions of
//! the backward pass, and the training-step metrics.
//!
//! Metrics live in one f32 buffer of [`METRIC_SLOTS`] values (slots in [`slot`]). Every
//! call adds its own total to a slot once (`metrics[s] += total`); DEAD is overwritten.
//! Metric totals are summed in f64 here and counts in integers, so the judge's own rounding
//! is negligible next to the device's blocked f32 sums; the device adds the f32 total once,
//! as this does. Gradient sums are f32 sums in the order the kernels use too: `row_norms`
//! in order, `col_sum` in blocks of 32 rows, then the blocks in order.
//!
//! Dimensions are passed explicitly; slices must have exactly the lengths the shapes give.

use super::check;

/// Number of f32 values in the metrics buffer.
pub const METRIC_SLOTS: usize = 16;

/// Where each metric lives in the metrics buffer.
pub mod slot {
    /// Sum over rows and d of (x - x_hat)^2.
    pub const SSE: u32 = 0;
    /// Sum over rows of ||x_b - mean over the batch of x||^2 (for explained variance).
    pub const SST: u32 = 1;
    /// Number of active latents, summed over rows.
    pub const L0: u32 = 2;
    /// Sum over rows and latents of z_i * ||W_dec[i]||.
    pub const L1: u32 = 3;
    /// Sum of the AuxK squared error.
    pub const AUX: u32 = 4;
    /// Number of dead latents (overwritten by `update_dead`, not accumulated).
    pub const DEAD: u32 = 5;
    /// matryoshka: the squared error of level m's reconstruction at LEVEL_SSE + m.
    pub const LEVEL_SSE: u32 = 8;
    /// Levels the metrics hold (slots LEVEL_SSE..LEVEL_SSE + MAX_LEVELS).
    pub const MAX_LEVELS: usize = 8;
}

/// out[r, j] = x[r, j] - b[j].
/// x: (rows, d), b: (d) -> out: (rows, d)
pub fn sub_row(x: &[f32], b: &[f32], rows: usize, d: usize, out: &mut [f32]) {
    check("sub_row", "x", x.len(), rows * d);
    check("sub_row", "b", b.len(), d);
    check("sub_row", "out", out.len(), rows * d);
    for r in 0..rows {
        for j in 0..d {
            out[r * d + j] = x[r * d + j] - b[j];
        }
    }
}

/// out = a - b, elementwise.
/// a: (len), b: (len) -> out: (len)
pub fn sub(a: &[f32], b: &[f32], out: &mut [f32]) {
    check("sub", "b", b.len(), a.len());
    check("sub", "out", out.len(), a.len());
    for i in 0..a.len() {
        out[i] = a[i] - b[i];
    }
}

/// grad = scale * (pred - target);
/// metrics[sse_slot] += sum (target - pred)^2;
/// if sst_slot: metrics[sst_slot] += sum_b ||target_b - mean_b(target)||^2, the mean taken
/// over the rows of this call (mean[j] = (sum over rows in order of target[r, j]) / rows).
/// With rows == 0 or d == 0 nothing is written.
/// target: (rows, d), pred: (rows, d) -> grad: (rows, d), metrics: (METRIC_SLOTS)
#[allow(clippy::too_many_arguments)]
pub fn mse_backward(
    target: &[f32],
    pred: &[f32],
    rows: usize,
    d: usize,
    scale: f32,
    grad: &mut [f32],
    metrics: &mut [f32],
    sse_slot: u32,
    sst_slot: Option<u32>,
) {
    check("mse_backward", "target", target.len(), rows * d);
    check("mse_backward", "pred", pred.len(), rows * d);
    check("mse_backward", "grad", grad.len(), rows * d);
    if rows == 0 || d == 0 {
        return;
    }
    let mut sse = 0.0f64;
    for i in 0..rows * d {
        let e = target[i] - pred[i];
        sse += (e * e) as f64;
        grad[i] = scale * (pred[i] - target[i]);
    }
    metrics[sse_slot as usize] += sse as f32;
    if let Some(s) = sst_slot {
        sum_sq_centred(target, rows, d, metrics, s);
    }
}

/// metrics[slot] += sum_b ||target_b - mean(target)||^2, the mean over the rows
/// (mean[j] = (sum over rows in order of target[r, j]) / rows): the explained-variance
/// total of `mse_backward`, alone (the GPU engine's chunked steps take it over the whole
/// batch). With rows == 0 or d == 0 nothing is written.
/// target: (rows, d) -> metrics: (METRIC_SLOTS)
pub fn sum_sq_centred(target: &[f32], rows: usize, d: usize, metrics: &mut [f32], slot: u32) {
    check("sum_sq_centred", "target", target.len(), rows * d);
    if rows == 0 || d == 0 {
        return;
    }
    let mut mean = vec![0.0f32; d];
    for r in 0..rows {
        for j in 0..d {
            mean[j] += target[r * d + j];
        }
    }
    for m in &mut mean {
        *m /= rows as f32;
    }
    let mut sst = 0.0f64;
    for r in 0..rows {
        for j in 0..d {
            let c = target[r * d + j] as f64 - mean[j] as f64;
            sst += c * c;
        }
    }
    metrics[slot as usize] += sst as f32;
}

/// norms[i] = ||w[i, :]|| (sum of squares in order over the row, then sqrt).
/// w: (n, d) -> norms: (n)
pub fn row_norms(w: &[f32], n: usize, d: usize, norms: &mut [f32]) {
    check("row_norms", "w", w.len(), n * d);
    check("row_norms", "norms", norms.len(), n);
    for i in 0..n {
        let mut s = 0.0f32;
        for k in 0..d {
            let v = w[i * d + k];
            s += v * v;
        }
        norms[i] = s.sqrt();
    }
}

/// CSR codes: nnz = min(row_ptr[rows], cap). For every slot s < nnz with val[s] > 0 and
/// idx[s] < n: metrics[L0] += 1, metrics[L1] += val[s] * norms[idx[s]], fired[idx[s]] += 1
/// (per-step fire counts, wrapping). Slots with idx >= n are ignored.
/// row_ptr: (rows + 1) u32, idx: (cap) u32, val: (cap), norms: (n)
///   -> fired: (n) u32, metrics: (METRIC_SLOTS)
#[allow(clippy::too_many_arguments)]
pub fn sparse_stats(
    row_ptr: &[u32],
    idx: &[u32],
    val: &[f32],
    rows: usize,
    n: usize,
    norms: &[f32],
    fired: &mut [u32],
    metrics: &mut [f32],
) {
    check("sparse_stats", "row_ptr", row_ptr.len(), rows + 1);
    check("sparse_stats", "val", val.len(), idx.len());
    check("sparse_stats", "norms", norms.len(), n);
    check("sparse_stats", "fired", fired.len(), n);
    let nnz = (row_ptr[rows] as usize).min(idx.len());
    let mut count = 0u64;
    let mut l1 = 0.0f64;
    for s in 0..nnz {
        let i = idx[s] as usize;
        if val[s] > 0.0 && i < n {
            count += 1;
            l1 += (val[s] * norms[i]) as f64;
            fired[i] = fired[i].wrapping_add(1);
        }
    }
    metrics[slot::L0 as usize] += count as f32;
    metrics[slot::L1 as usize] += l1 as f32;
}

/// The same as [`sparse_stats`] for a dense z: every z[r, i] > 0 is active.
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
    let mut count = 0u64;
    let mut l1 = 0.0f64;
    for r in 0..rows {
        for i in 0..n {
            let v = z[r * n + i];
            if v > 0.0 {
                count += 1;
                l1 += (v * norms[i]) as f64;
                fired[i] = fired[i].wrapping_add(1);
            }
        }
    }
    metrics[slot::L0 as usize] += count as f32;
    metrics[slot::L1 as usize] += l1 as f32;
}

/// Rows per block of [`col_sum`]'s order (the GPU sums the blocks in parallel).
pub const COL_SUM_BLOCK: usize = 32;

/// out[j] = (accumulate ? out[j] : 0) + s_j, where s_j adds column j in blocks of
/// [`COL_SUM_BLOCK`] rows: each block's rows in order (f32, from 0), then the blocks' sums
/// in order (f32, from 0). Up to 32 rows that is the plain sum over rows in order.
/// a: (rows, cols) -> out: (cols)
pub fn col_sum(a: &[f32], rows: usize, cols: usize, out: &mut [f32], accumulate: bool) {
    check("col_sum", "a", a.len(), rows * cols);
    check("col_sum", "out", out.len(), cols);
    for j in 0..cols {
        let mut s = 0.0f32;
        for r0 in (0..rows).step_by(COL_SUM_BLOCK) {
            let mut block = 0.0f32;
            for r in r0..(r0 + COL_SUM_BLOCK).min(rows) {
                block += a[r * cols + j];
            }
            s += block;
        }
        out[j] = if accumulate { out[j] + s } else { s };
    }
}

/// After a step of `rows` tokens, for each latent i:
/// total[i] += fired[i] (saturating); since[i] = 0 if fired[i] > 0 else since[i] + rows
/// (saturating); fired[i] = 0. Then metrics[DEAD] = number of i with since[i] >= dead_after
/// (overwritten).
/// fired, since, total: (n) u32 -> the same, metrics: (METRIC_SLOTS)
pub fn update_dead(
    fired: &mut [u32],
    since: &mut [u32],
    total: &mut [u32],
    rows: usize,
    dead_after: u32,
    metrics: &mut [f32],
) {
    let n = fired.len();
    check("update_dead", "since", since.len(), n);
    check("update_dead", "total", total.len(), n);
    let rows = u32::try_from(rows).unwrap_or(u32::MAX);
    let mut dead = 0u32;
    for i in 0..n {
        total[i] = total[i].saturating_add(fired[i]);
        since[i] = if fired[i] > 0 {
            0
        } else {
            since[i].saturating_add(rows)
        };
        fired[i] = 0;
        if since[i] >= dead_after {
            dead += 1;
        }
    }
    metrics[slot::DEAD as usize] = dead as f32;
}

/// mask[i] = (since[i] >= dead_after) as u32: the latents AuxK may use.
/// since: (n) u32 -> mask: (n) u32
pub fn dead_mask(since: &[u32], dead_after: u32, mask: &mut [u32]) {
    check("dead_mask", "mask", mask.len(), since.len());
    for (m, &s) in mask.iter_mut().zip(since) {
        *m = (s >= dead_after) as u32;
    }
}

/// Gradient of scale * sum_{r,i} z[r, i] * norms[i] with respect to z (z >= 0):
/// dz[r, i] += scale * norms[i] where z[r, i] > 0.
/// z: (rows, n), norms: (n) -> dz: (rows, n), accumulated
pub fn l1_backward(z: &[f32], rows: usize, n: usize, norms: &[f32], scale: f32, dz: &mut [f32]) {
    check("l1_backward", "z", z.len(), rows * n);
    check("l1_backward", "norms", norms.len(), n);
    check("l1_backward", "dz", dz.len(), rows * n);
    for r in 0..rows {
        for i in 0..n {
            if z[r * n + i] > 0.0 {
                dz[r * n + i] += scale * norms[i];
            }
        }
    }
}

/// Gradient of scale * sum_i zsum[i] * ||W_dec[i]|| with respect to W_dec:
/// c = scale * zsum[i] / norms[i]; dw_dec[i, k] += c * w_dec[i, k]; rows with
/// norms[i] == 0 are skipped.
/// zsum: (n), w_dec: (n, d), norms: (n) -> dw_dec: (n, d), accumulated
pub fn l1_decoder_grad(
    zsum: &[f32],
    w_dec: &[f32],
    norms: &[f32],
    n: usize,
    d: usize,
    scale: f32,
    dw_dec: &mut [f32],
) {
    check("l1_decoder_grad", "zsum", zsum.len(), n);
    check("l1_decoder_grad", "w_dec", w_dec.len(), n * d);
    check("l1_decoder_grad", "norms", norms.len(), n);
    check("l1_decoder_grad", "dw_dec", dw_dec.len(), n * d);
    for i in 0..n {
        if norms[i] == 0.0 {
            continue;
        }
        let c = scale * zsum[i] / norms[i];
        for k in 0..d {
            dw_dec[i * d + k] += c * w_dec[i * d + k];
        }
    }
}
