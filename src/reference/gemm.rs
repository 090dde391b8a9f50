//! CPU twin of shaders/gemm.wgsl, and the CPU engine's matrix product.
//!
//! C (m, n) = alpha * op(A) op(B) + bias (n, broadcast over rows) + beta * C, with op(A) of
//! shape (m, k) and op(B) of shape (k, n). The loops are plain but ordered so that the
//! compiler vectorises the innermost one: i-k-j (a row of C accumulates scaled rows of B)
//! when B is not transposed, a dot product of two contiguous rows when it is. Rows of C are
//! spread over rayon's threads; nothing else is parallel.

use rayon::prelude::*;

/// The shape and scalars of one GEMM. `trans_a`: A is stored (k, m) instead of (m, k);
/// `trans_b`: B is stored (n, k) instead of (k, n). `beta == 0` means C is not read (it may
/// hold NaN): its old value is dropped, not multiplied by zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl GemmSpec {
    /// C = op(A) op(B) (alpha 1, beta 0, no transposes).
    pub fn nn(m: usize, n: usize, k: usize) -> GemmSpec {
        GemmSpec {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// C = op(A) B^T: B stored (n, k).
    pub fn nt(m: usize, n: usize, k: usize) -> GemmSpec {
        GemmSpec {
            trans_b: true,
            ..GemmSpec::nn(m, n, k)
        }
    }

    /// C = A^T op(B): A stored (k, m).
    pub fn tn(m: usize, n: usize, k: usize) -> GemmSpec {
        GemmSpec {
            trans_a: true,
            ..GemmSpec::nn(m, n, k)
        }
    }

    /// The same product scaled by `alpha`.
    pub fn alpha(self, alpha: f32) -> GemmSpec {
        GemmSpec { alpha, ..self }
    }

    /// The same product added to C (beta 1) when `accumulate`, else written (beta 0).
    pub fn accumulate(self, accumulate: bool) -> GemmSpec {
        let beta = if accumulate { 1.0 } else { 0.0 };
        GemmSpec { beta, ..self }
    }

    /// Stored shape of A: (m, k), or (k, m) when `trans_a`.
    pub fn a_shape(&self) -> [usize; 2] {
        if self.trans_a {
            [self.k, self.m]
        } else {
            [self.m, self.k]
        }
    }

    /// Stored shape of B: (k, n), or (n, k) when `trans_b`.
    pub fn b_shape(&self) -> [usize; 2] {
        if self.trans_b {
            [self.n, self.k]
        } else {
            [self.k, self.n]
        }
    }

    /// Multiply-adds times two: the FLOP count benchmarks divide by.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Short name of the transpose combination: "NN", "NT", "TN" or "TT".
    pub fn op_name(&self) -> &'static str {
        match (self.trans_a, self.trans_b) {
            (false, false) => "NN",
            (false, true) => "NT",
            (true, false) => "TN",
            (true, true) => "TT",
        }
    }
}

/// Below this many multiply-adds one thread is faster than waking rayon's pool.
pub const PARALLEL_MIN_MACS: usize = 1 << 18;

/// C = alpha * op(A) op(B) + bias + beta * C.
/// a: (m, k) or (k, m) when trans_a, b: (k, n) or (n, k) when trans_b, bias: (n) -> c: (m, n)
pub fn gemm(spec: &GemmSpec, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32]) {
    let &GemmSpec { m, n, k, .. } = spec;
    assert_eq!(
        a.len(),
        m * k,
        "gemm: A has {} elements, expected {m} * {k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "gemm: B has {} elements, expected {k} * {n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "gemm: C has {} elements, expected {m} * {n}",
        c.len()
    );
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            n,
            "gemm: bias has {} elements, expected {n}",
            bias.len()
        );
    }
    if n == 0 {
        return;
    }
    let row = |(i, c_row): (usize, &mut [f32])| gemm_row(spec, a, b, bias, i, c_row);
    if m * n * k >= PARALLEL_MIN_MACS {
        c.par_chunks_mut(n).enumerate().for_each(row);
    } else {
        c.chunks_mut(n).enumerate().for_each(row);
    }
}

/// One row i of C.
fn gemm_row(
    spec: &GemmSpec,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    i: usize,
    c_row: &mut [f32],
) {
    let &GemmSpec { m, n, k, .. } = spec;
    // Row i of op(A), contiguous.
    let a_row: Vec<f32> = if spec.trans_a {
        (0..k).map(|p| a[p * m + i]).collect()
    } else {
        a[i * k..(i + 1) * k].to_vec()
    };
    let mut acc = vec![0.0f32; n];
    if spec.trans_b {
        // B stored (n, k): acc[j] = dot(a_row, B[j, :]).
        for (j, acc_j) in acc.iter_mut().enumerate() {
            *acc_j = dot(&a_row, &b[j * k..(j + 1) * k]);
        }
    } else {
        // B stored (k, n): acc += a_row[p] * B[p, :], the i-k-j order.
        for (p, &a_ip) in a_row.iter().enumerate() {
            for (acc_j, &b_pj) in acc.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *acc_j += a_ip * b_pj;
            }
        }
    }
    for (j, (c_ij, &acc_j)) in c_row.iter_mut().zip(&acc).enumerate() {
        let mut v = spec.alpha * acc_j;
        if let Some(bias) = bias {
            v += bias[j];
        }
        if spec.beta != 0.0 {
            v += spec.beta * *c_ij;
        }
        *c_ij = v;
    }
}

/// Dot product with eight partial sums (so that it vectorises), added pairwise at the end.
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut s = [0.0f32; 8];
    let xc = x.chunks_exact(8);
    let yc = y.chunks_exact(8);
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, ys) in xc.zip(yc) {
        for l in 0..8 {
            s[l] += xs[l] * ys[l];
        }
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every transpose combination against the textbook triple loop.
    #[test]
    fn matches_the_definition() {
        let (m, n, k) = (5, 7, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5).collect();
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                let spec = GemmSpec {
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    alpha: 0.5,
                    beta: 2.0,
                };
                let c0: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
                let mut c = c0.clone();
                gemm(&spec, &a, &b, Some(&bias), &mut c);
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0.0f64;
                        for p in 0..k {
                            let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                            let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                            s += av as f64 * bv as f64;
                        }
                        let want = 0.5 * s + bias[j] as f64 + 2.0 * c0[i * n + j] as f64;
                        let got = c[i * n + j] as f64;
                        assert!((got - want).abs() < 1e-4, "{trans_a} {trans_b} ({i},{j})");
                    }
                }
            }
        }
    }

    /// beta == 0 drops C even when it holds NaN.
    #[test]
    fn beta_zero_ignores_c() {
        let spec = GemmSpec::nn(2, 3, 4);
        let mut c = vec![f32::NAN; 6];
        gemm(&spec, &[1.0; 8], &[1.0; 12], None, &mut c);
        assert_eq!(c, vec![4.0; 6]);
    }
}
