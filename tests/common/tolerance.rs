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

// ---------------------------------------------------------------- topk

/// topk / batchtopk values and thresholds: the kernels copy input values (or rebuild the
/// threshold from its exact bit pattern), so they must equal the CPU's; the tests also
/// compare the bit patterns, which tells -0.0 from +0.0.
pub const TOPK: Tol = Tol {
    name: "TOPK",
    atol: 0.0,
    rtol: 0.0,
};

// ---------------------------------------------------------------- sparse

// ---------------------------------------------------------------- reduce

// ---------------------------------------------------------------- optim

// ---------------------------------------------------------------- activations (jumprelu)

// ---------------------------------------------------------------- training step
