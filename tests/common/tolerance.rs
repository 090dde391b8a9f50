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

// ---------------------------------------------------------------- sparse

// Every sparse kernel sums in its CPU twin's order (ascending slot; ascending column for the
// dot products), so on lavapipe the results are bit-identical: all sparse tests pass with
// atol = rtol = 0 (measured, several seeds). The margins below are for drivers that contract
// a * b + c into one FMA (SPIR-V allows it): a contracted step skips one product rounding and
// can move the partial sum's rounding by one ulp, so K steps differ by about
// sqrt(K) * 2^-23 * max|partial sum| (K * 2^-23 * max|partial sum| at worst). Test inputs:
// values and dy, xc ~ N(0, 1), w_dec ~ N(0, 1/d), b_dec ~ N(0, 1).

/// sparse_decode: K <= 32 slots per row, partial sums |.| <~ 4 (bias plus k terms of
/// size ~1/sqrt(d)): worst case 32 * 1.2e-7 * 4 = 1.5e-5.
pub const SPARSE_DECODE: Tol = Tol {
    name: "SPARSE_DECODE",
    atol: 1e-5,
    rtol: 1e-5,
};

/// sparse_dot: K = d <= 512 products of size ~1/sqrt(d), partial sums |.| <~ 3: typical
/// sqrt(512) * 1.2e-7 * 3 = 8e-6, worst 512 * 1.2e-7 * 3 = 1.8e-4; atol 5e-5 is six times
/// the typical figure.
pub const SPARSE_DOT: Tol = Tol {
    name: "SPARSE_DOT",
    atol: 5e-5,
    rtol: 1e-5,
};

/// gather_dw_dec / gather_dw_enc / gather_db_enc: K = a latent's entries, up to rows = 512
/// for the hot latents of the production case, terms O(1), so partial sums and results reach
/// |.| ~ 3 sqrt(K) = 70: typical difference sqrt(512) * 1.2e-7 * 70 = 1.9e-4, against an
/// allowance of 2e-4 + 2e-5 * |result| (up to 1.6e-3 there); latents with one or two entries
/// differ by a few 1e-7 at most, far below what a wrong entry would cost (O(1)).
pub const SPARSE_GATHER: Tol = Tol {
    name: "SPARSE_GATHER",
    atol: 2e-4,
    rtol: 2e-5,
};

// ---------------------------------------------------------------- reduce

// ---------------------------------------------------------------- optim

// ---------------------------------------------------------------- activations (jumprelu)

// ---------------------------------------------------------------- training step
