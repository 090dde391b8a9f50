//! CPU twins of shaders/fista.wgsl: the elementwise FISTA update and the per-row change
//! (Beck & Teboulle 2009, with the non-negative soft threshold as the proximal map).

/// One FISTA update, elementwise over (rows, n):
///   v = y - step * g;  z_new = max(v - threshold, 0);  y = z_new + momentum * (z_new - z_old)
/// g: (rows, n), z_old: (rows, n), y: (rows, n) -> y: (rows, n), z_new: (rows, n)
#[allow(clippy::too_many_arguments)]
pub fn fista_step(
    g: &[f32],
    z_old: &[f32],
    rows: usize,
    n: usize,
    step: f32,
    threshold: f32,
    momentum: f32,
    y: &mut [f32],
    z_new: &mut [f32],
) {
    let len = rows * n;
    assert_eq!(g.len(), len, "fista_step: g");
    assert_eq!(z_old.len(), len, "fista_step: z_old");
    assert_eq!(y.len(), len, "fista_step: y");
    assert_eq!(z_new.len(), len, "fista_step: z_new");
    for i in 0..len {
        let v = y[i] - step * g[i];
        let z = (v - threshold).max(0.0);
        z_new[i] = z;
        y[i] = z + momentum * (z - z_old[i]);
    }
}

/// Per row: out[r, 0] = sum_j (z_new[r, j] - z_old[r, j])^2, out[r, 1] = sum_j z_new[r, j]^2,
/// f32 sums over the columns in order; when n % 4 == 0, four partial sums s_c over the
/// columns j with j % 4 == c, added as (s0 + s1) + (s2 + s3) (the kernel's vec4 order).
/// z_new: (rows, n), z_old: (rows, n) -> out: (rows, 2)
pub fn fista_row_change(z_new: &[f32], z_old: &[f32], rows: usize, n: usize, out: &mut [f32]) {
    assert_eq!(z_new.len(), rows * n, "fista_row_change: z_new");
    assert_eq!(z_old.len(), rows * n, "fista_row_change: z_old");
    assert_eq!(out.len(), rows * 2, "fista_row_change: out");
    let lanes = if n.is_multiple_of(4) { 4 } else { 1 };
    for r in 0..rows {
        let mut dd = [0.0f32; 4];
        let mut zz = [0.0f32; 4];
        for j in 0..n {
            let a = z_new[r * n + j];
            let e = a - z_old[r * n + j];
            dd[j % lanes] += e * e;
            zz[j % lanes] += a * a;
        }
        out[2 * r] = (dd[0] + dd[1]) + (dd[2] + dd[3]);
        out[2 * r + 1] = (zz[0] + zz[1]) + (zz[2] + zz[3]);
    }
}
