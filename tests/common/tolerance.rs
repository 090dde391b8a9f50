//! Every tolerance the tests use, in one table, each with how it was chosen.
//! A check passes when |gpu - cpu| <= atol + rtol * |cpu| (see `assert_close`).
//!
//! Scale of f32 rounding: one ulp is 2^-23 ~ 1.2e-7 relative. A sum of K terms computed in a
//! different order differs by up to ~K * 1.2e-7 * sum|terms| in the worst case and by
//! ~sqrt(K) * 1.2e-7 * sum|terms| typically; our inputs are O(1), so the tables below scale
//! with the reduction length where there is one.

#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub name: &'static str,
    pub atol: f32,
    pub rtol: f32,
}

/// Elementwise kernels that do the same single f32 operation as the CPU (max, select,
/// multiply): bit-identical results are expected.
pub const EXACT: Tol = Tol {
    name: "EXACT",
    atol: 0.0,
    rtol: 0.0,
};

// ---------------------------------------------------------------- gemm

/// GEMM with inputs ~N(0, 1), alpha and beta <= 1 in size, reduction length k.
/// Each output is a sum of k products of size ~1 whose partial sums grow like sqrt(i); a
/// different summation order (the reference's 8-way dot for transposed B, fused multiply-add
/// on hardware GPUs, other tilings) moves each rounding of a partial sum by up to
/// 2^-24 * sqrt(i), so the difference is a random walk with sigma ~ 1.2e-7 * k / sqrt(6)
/// (2.5e-5 at k = 512). The largest of 8M outputs (the production case) sits near 5.5
/// sigma, so atol = 1e-6 * k (about 20 sigma, 5e-4 at k = 512) has room and still catches
/// any wrong term (|a * b| ~ 1). rtol covers the epilogue (bias + beta * C, values ~1,
/// a few roundings) and the rare large output.
pub fn gemm(k: usize) -> Tol {
    Tol {
        name: "gemm(k)",
        atol: 1e-6 * k.max(1) as f32,
        rtol: 1e-5,
    }
}

// ---------------------------------------------------------------- topk

// ---------------------------------------------------------------- sparse

// ---------------------------------------------------------------- reduce

// ---------------------------------------------------------------- optim

// ---------------------------------------------------------------- activations (jumprelu)

// ---------------------------------------------------------------- training step
