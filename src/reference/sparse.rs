//! CPU twins of shaders/sparse*.wgsl: sparse codes (CSR over rows) decoded, dotted with the
//! output gradient, transposed into per-latent lists, and the three gradient gathers.
//!
//! A code is `row_ptr` (rows + 1, `row_ptr[0] == 0`), `idx` (cap) and `val` (cap) with
//! nnz = `row_ptr[rows]` <= cap; slots nnz..cap are ignored; `idx[s] < n`. TopK codes are the
//! case `row_ptr[b] = b * k`. Every sum runs in the order written here (ascending slot, or
//! ascending column for the dot products), and the GPU gathers use the same order.

/// row_ptr[b] = b * k for b in 0..=rows (TopK codes' row pointers; tests build codes with
/// it, no kernel has it as its twin).
pub fn row_ptr_fixed(rows: usize, k: usize, row_ptr: &mut [u32]) {
    assert_eq!(row_ptr.len(), rows + 1, "row_ptr_fixed: row_ptr length");
    for (b, r) in row_ptr.iter_mut().enumerate() {
        *r = (b * k) as u32;
    }
}

fn check_csr(what: &str, row_ptr: &[u32], cap: usize, rows: usize) -> usize {
    assert_eq!(row_ptr.len(), rows + 1, "{what}: row_ptr length");
    assert_eq!(row_ptr[0], 0, "{what}: row_ptr[0] must be 0");
    let nnz = row_ptr[rows] as usize;
    assert!(nnz <= cap, "{what}: nnz {nnz} > cap {cap}");
    nnz
}

/// The argument checks of the gathers below, which their CPU engine twins
/// (`crate::cpu_sparse`) make too: the per-latent pointers, n + 1 of them, and the length
/// `len` of the output `out`, which must be `want`.
pub(crate) fn check_gather(
    what: &str,
    lat_ptr: &[u32],
    n: usize,
    out: &str,
    len: usize,
    want: usize,
) {
    super::check(what, "lat_ptr", lat_ptr.len(), n + 1);
    super::check(what, out, len, want);
}

/// x_hat[b, :] = (b_dec or 0) + sum over s in row_ptr[b]..row_ptr[b+1] (ascending) of
/// val[s] * w_dec[idx[s], :], accumulated starting from the bias.
/// row_ptr: (rows + 1), idx: (cap), val: (cap), w_dec: (n, d), b_dec: (d) -> x_hat: (rows, d)
#[allow(clippy::too_many_arguments)]
pub fn sparse_decode(
    row_ptr: &[u32],
    idx: &[u32],
    val: &[f32],
    w_dec: &[f32],
    b_dec: Option<&[f32]>,
    rows: usize,
    n: usize,
    d: usize,
    x_hat: &mut [f32],
) {
    check_csr("sparse_decode", row_ptr, idx.len(), rows);
    assert_eq!(val.len(), idx.len(), "sparse_decode: val length");
    assert_eq!(w_dec.len(), n * d, "sparse_decode: w_dec length");
    assert_eq!(x_hat.len(), rows * d, "sparse_decode: x_hat length");
    for b in 0..rows {
        decode_row(
            row_ptr,
            idx,
            val,
            w_dec,
            b_dec,
            b,
            &mut x_hat[b * d..(b + 1) * d],
        );
    }
}

/// Row `b` of [`sparse_decode`] into `out` (d).
pub fn decode_row(
    row_ptr: &[u32],
    idx: &[u32],
    val: &[f32],
    w_dec: &[f32],
    b_dec: Option<&[f32]>,
    b: usize,
    out: &mut [f32],
) {
    let d = out.len();
    match b_dec {
        Some(bias) => out.copy_from_slice(&bias[..d]),
        None => out.fill(0.0),
    }
    for s in row_ptr[b] as usize..row_ptr[b + 1] as usize {
        let i = idx[s] as usize;
        add_scaled(out, val[s], &w_dec[i * d..(i + 1) * d]);
    }
}

/// out[j] += a * x[j] for every j (a multiply, then an add): the term of a sum of scaled
/// rows, as the decodes and the gathers add them.
pub fn add_scaled(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, &xj) in out.iter_mut().zip(x) {
        *o += a * xj;
    }
}

/// y . w summed over ascending j in f32, from 0 (the dot products' order).
pub fn dot(y: &[f32], w: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (&yj, &wj) in y.iter().zip(w) {
        acc += yj * wj;
    }
    acc
}

/// out[j] = out[j] + s[j] with `accumulate`, else s[j]: a gathered gradient row written.
pub fn store(out: &mut [f32], s: &[f32], accumulate: bool) {
    for (o, &sj) in out.iter_mut().zip(s) {
        *o = if accumulate { *o + sj } else { sj };
    }
}

/// g[s] = dy[row(s), :] . w_dec[idx[s], :] (summed over ascending columns) for s < nnz;
/// g[s] = 0 for nnz <= s < cap.
/// row_ptr: (rows + 1), idx: (cap), dy: (rows, d), w_dec: (n, d) -> g: (cap)
#[allow(clippy::too_many_arguments)]
pub fn sparse_dot(
    row_ptr: &[u32],
    idx: &[u32],
    dy: &[f32],
    w_dec: &[f32],
    rows: usize,
    n: usize,
    d: usize,
    g: &mut [f32],
) {
    check_csr("sparse_dot", row_ptr, idx.len(), rows);
    assert_eq!(g.len(), idx.len(), "sparse_dot: g length");
    assert_eq!(dy.len(), rows * d, "sparse_dot: dy length");
    assert_eq!(w_dec.len(), n * d, "sparse_dot: w_dec length");
    g.fill(0.0);
    for b in 0..rows {
        let slots = row_ptr[b] as usize..row_ptr[b + 1] as usize;
        dot_row(
            &idx[slots.clone()],
            &dy[b * d..(b + 1) * d],
            w_dec,
            &mut g[slots],
        );
    }
}

/// One row of [`sparse_dot`]: g[t] = y . w_dec[idx[t], :] for the row's slots.
/// idx: (slots), y: (d), w_dec: (n, d) -> g: (slots)
pub fn dot_row(idx: &[u32], y: &[f32], w_dec: &[f32], g: &mut [f32]) {
    let d = y.len();
    for (o, &i) in g.iter_mut().zip(idx) {
        *o = dot(y, &w_dec[i as usize * d..(i as usize + 1) * d]);
    }
}

/// The per-latent (transposed) index of a CSR code: lat_ptr[i]..lat_ptr[i+1] are the
/// entries of latent i, and lat_row / lat_slot there list the (row, slot) pairs with
/// idx[slot] == i in ascending slot order. Entries nnz..cap are 0.
/// row_ptr: (rows + 1), idx: (cap) -> lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap)
#[allow(clippy::needless_range_loop)] // s is both an index and a value stored
pub fn build_transpose(
    row_ptr: &[u32],
    idx: &[u32],
    rows: usize,
    n: usize,
    lat_ptr: &mut [u32],
    lat_row: &mut [u32],
    lat_slot: &mut [u32],
) {
    let nnz = check_csr("build_transpose", row_ptr, idx.len(), rows);
    assert_eq!(lat_ptr.len(), n + 1, "build_transpose: lat_ptr length");
    assert_eq!(lat_row.len(), idx.len(), "build_transpose: lat_row length");
    assert_eq!(
        lat_slot.len(),
        idx.len(),
        "build_transpose: lat_slot length"
    );
    // Counts, then exclusive prefix sums.
    lat_ptr.fill(0);
    for &i in &idx[..nnz] {
        lat_ptr[i as usize + 1] += 1;
    }
    for i in 0..n {
        lat_ptr[i + 1] += lat_ptr[i];
    }
    // Scatter in ascending slot order: each latent's list comes out sorted by slot.
    let mut fill = lat_ptr[..n].to_vec();
    lat_row.fill(0);
    lat_slot.fill(0);
    for b in 0..rows {
        for s in row_ptr[b] as usize..row_ptr[b + 1] as usize {
            let i = idx[s] as usize;
            let pos = fill[i] as usize;
            fill[i] += 1;
            lat_row[pos] = b as u32;
            lat_slot[pos] = s as u32;
        }
    }
}

/// dw_dec[i, :] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of
/// val[lat_slot[e]] * dy[lat_row[e], :]; latents with no entries get 0. With `accumulate`,
/// dw_dec[i, :] + that sum instead, for the latents with entries (the others unchanged).
/// lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap), val: (cap), dy: (rows, d)
/// -> dw_dec: (n, d)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_dec(
    lat_ptr: &[u32],
    lat_row: &[u32],
    lat_slot: &[u32],
    val: &[f32],
    dy: &[f32],
    n: usize,
    d: usize,
    accumulate: bool,
    dw_dec: &mut [f32],
) {
    check_gather("gather_dw_dec", lat_ptr, n, "dw_dec", dw_dec.len(), n * d);
    let dy_of = |_: usize| dy;
    gather_latent_rows(
        lat_ptr, lat_row, lat_slot, val, dy_of, d, accumulate, dw_dec,
    );
}

/// The loop of [`gather_dw_dec`] with latent i's dy `dy_of(i)` (rows, d), for the n =
/// lat_ptr.len() - 1 latents: dw_dec[i, :] = latent i's [`latent_column`] sum, written by
/// [`store`] (with `accumulate`, only for the latents with entries). Also the loop of
/// `matryoshka::gather_dw_dec_levels`, whose dy is the latent's group's.
#[allow(clippy::too_many_arguments)]
pub fn gather_latent_rows<'y>(
    lat_ptr: &[u32],
    lat_row: &[u32],
    lat_slot: &[u32],
    val: &[f32],
    dy_of: impl Fn(usize) -> &'y [f32],
    d: usize,
    accumulate: bool,
    dw_dec: &mut [f32],
) {
    let mut acc = vec![0.0f32; d];
    for i in 0..lat_ptr.len() - 1 {
        if accumulate && lat_ptr[i] == lat_ptr[i + 1] {
            continue;
        }
        latent_column(lat_ptr, lat_row, lat_slot, val, dy_of(i), i, &mut acc);
        store(&mut dw_dec[i * d..(i + 1) * d], &acc, accumulate);
    }
}

/// dw_enc[:, i] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of
/// dval[lat_slot[e]] * xc[lat_row[e], :]; latents with no entries get 0. With
/// `accumulate`, dw_enc[:, i] + that sum instead, for the latents with entries.
/// lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap), dval: (cap), xc: (rows, d)
/// -> dw_enc: (d, n)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_enc(
    lat_ptr: &[u32],
    lat_row: &[u32],
    lat_slot: &[u32],
    dval: &[f32],
    xc: &[f32],
    n: usize,
    d: usize,
    accumulate: bool,
    dw_enc: &mut [f32],
) {
    check_gather("gather_dw_enc", lat_ptr, n, "dw_enc", dw_enc.len(), d * n);
    let mut acc = vec![0.0f32; d];
    for i in 0..n {
        if accumulate && lat_ptr[i] == lat_ptr[i + 1] {
            continue;
        }
        latent_column(lat_ptr, lat_row, lat_slot, dval, xc, i, &mut acc);
        for (j, &s) in acc.iter().enumerate() {
            let o = &mut dw_enc[j * n + i];
            *o = if accumulate { *o + s } else { s };
        }
    }
}

/// Latent i's sum over its entries, ascending, of coef[slot] * rows[row, :] into `acc` (d):
/// its column of [`gather_dw_enc`] (coef = dval, rows = xc) or its row of
/// [`gather_dw_dec`] (coef = val, rows = dy), before accumulation.
pub fn latent_column(
    lat_ptr: &[u32],
    lat_row: &[u32],
    lat_slot: &[u32],
    coef: &[f32],
    rows: &[f32],
    i: usize,
    acc: &mut [f32],
) {
    let d = acc.len();
    acc.fill(0.0);
    for e in lat_ptr[i] as usize..lat_ptr[i + 1] as usize {
        let g = coef[lat_slot[e] as usize];
        let r = lat_row[e] as usize;
        add_scaled(acc, g, &rows[r * d..(r + 1) * d]);
    }
}

/// db_enc[i] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of dval[lat_slot[e]].
/// With `accumulate`, db_enc[i] + that sum instead, for the latents with entries.
/// lat_ptr: (n + 1), lat_slot: (cap), dval: (cap) -> db_enc: (n)
pub fn gather_db_enc(
    lat_ptr: &[u32],
    lat_slot: &[u32],
    dval: &[f32],
    n: usize,
    accumulate: bool,
    db_enc: &mut [f32],
) {
    check_gather("gather_db_enc", lat_ptr, n, "db_enc", db_enc.len(), n);
    for i in 0..n {
        let (a, z) = (lat_ptr[i] as usize, lat_ptr[i + 1] as usize);
        if accumulate && a == z {
            continue;
        }
        let mut acc = 0.0f32;
        for e in a..z {
            acc += dval[lat_slot[e] as usize];
        }
        db_enc[i] = if accumulate { db_enc[i] + acc } else { acc };
    }
}

/// g[s] += scale * norms[idx[s]] for s < nnz with val[s] > 0.
/// row_ptr: (rows + 1), idx: (cap), val: (cap), norms: (n) -> g: (cap), accumulated
#[allow(clippy::too_many_arguments)]
pub fn sparse_l1_backward(
    row_ptr: &[u32],
    idx: &[u32],
    val: &[f32],
    rows: usize,
    n: usize,
    norms: &[f32],
    scale: f32,
    g: &mut [f32],
) {
    let nnz = check_csr("sparse_l1_backward", row_ptr, idx.len(), rows);
    assert_eq!(norms.len(), n, "sparse_l1_backward: norms length");
    for s in 0..nnz {
        if val[s] > 0.0 {
            g[s] += scale * norms[idx[s] as usize];
        }
    }
}

/// dval[s] = g[s] * [pre[s] > exp(log_theta[idx[s]])] for s < nnz; 0 for nnz <= s < cap.
/// row_ptr: (rows + 1), idx: (cap), pre: (cap), g: (cap), log_theta: (n) -> dval: (cap)
#[allow(clippy::too_many_arguments)]
pub fn sparse_jumprelu_backward(
    row_ptr: &[u32],
    idx: &[u32],
    pre: &[f32],
    g: &[f32],
    rows: usize,
    n: usize,
    log_theta: &[f32],
    dval: &mut [f32],
) {
    let nnz = check_csr("sparse_jumprelu_backward", row_ptr, idx.len(), rows);
    assert_eq!(
        log_theta.len(),
        n,
        "sparse_jumprelu_backward: log_theta length"
    );
    dval.fill(0.0);
    for s in 0..nnz {
        let theta = log_theta[idx[s] as usize].exp();
        dval[s] = if pre[s] > theta { g[s] } else { 0.0 };
    }
}

/// dlog_theta[i] = theta * (sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending, f32 from 0)
/// with |pre - theta| <= eps / 2 of g * (-theta / eps) + l0_scale * (-1 / eps)), where
/// pre = pre[lat_slot[e]], g = g[lat_slot[e]], theta = exp(log_theta[i]): the threshold
/// gradient of `reference::activations::jumprelu_backward`, from a code that holds every
/// entry of the window.
/// lat_ptr: (n + 1), lat_slot: (cap), pre: (cap), g: (cap), log_theta: (n)
///   -> dlog_theta: (n)
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // plain loops: the judge
pub fn gather_jumprelu_threshold(
    lat_ptr: &[u32],
    lat_slot: &[u32],
    pre: &[f32],
    g: &[f32],
    n: usize,
    log_theta: &[f32],
    eps: f32,
    l0_scale: f32,
    dlog_theta: &mut [f32],
) {
    check_gather(
        "gather_jumprelu_threshold",
        lat_ptr,
        n,
        "dlog_theta",
        dlog_theta.len(),
        n,
    );
    for i in 0..n {
        let w = super::activations::ThresholdWindow::new(log_theta[i], eps, l0_scale);
        let mut acc = 0.0f32;
        for e in lat_ptr[i] as usize..lat_ptr[i + 1] as usize {
            let s = lat_slot[e] as usize;
            acc = w.add(acc, pre[s], g[s]);
        }
        dlog_theta[i] = w.theta * acc;
    }
}
