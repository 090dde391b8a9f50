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

// ---------------------------------------------------------------- reduce

// sub_row, sub, the mse_backward gradient, col_sum, dead_mask and all counts (L0, DEAD,
// fire counts) are checked with EXACT / assert_same: the same f32 operations in the same
// order as the CPU twin (col_sum sums each column over rows in order in one invocation).

/// Metric totals (SSE, SST, L1, AUX): the device sums positive terms in a fixed blocked
/// order (32-row blocks, then up to ~1k partials per invocation, then two 16-wide levels);
/// the twin sums in f64, so this is the device's own rounding. Its longest sequential chain
/// (1024 partials in dense_stats at 512 x 16384) gives a random-walk estimate of ~6e-7
/// relative; measured on lavapipe over 25 seeds at production size: max 1.7e-7 (1-2 ulp).
/// 2e-6 leaves 10x headroom; dropping a single term of the small odd shapes (<= 5k terms)
/// moves the total by > 1e-4 and is caught.
pub const METRIC_SUM: Tol = Tol {
    name: "METRIC_SUM",
    atol: 0.0,
    rtol: 2e-6,
};

/// row_norms: same sequential order as the twin, so only a fused multiply-add in the
/// running sum (<= 0.5 ulp of v^2 per step, a random walk of sqrt(d) of them) and WGSL's
/// sqrt (derived from inverseSqrt, a few ulp) can differ: ~1e-6 at d = 512. Measured on
/// lavapipe: bit-identical. 2e-6 (~17 ulp).
pub const ROW_NORM: Tol = Tol {
    name: "ROW_NORM",
    atol: 0.0,
    rtol: 2e-6,
};

/// l1_backward (dz + scale * norm) and l1_decoder_grad (dw + (scale * zsum / norm) * w) at
/// the tests' O(1) inputs (|scale * norm| <= 0.75, |c * w| <= ~10): a fused multiply-add
/// moves a result by <= 0.5 ulp of the product (<= 5e-7) and WGSL's division is allowed
/// 2.5 ulp (<= 3e-6 after multiplying by w). Measured on lavapipe: bit-identical.
/// atol 1e-5 covers the bound 3x; a wrong latent's norm or a missed row is O(0.1) off.
pub const ELEMENTWISE_MULADD: Tol = Tol {
    name: "ELEMENTWISE_MULADD",
    atol: 1e-5,
    rtol: 1e-6,
};

// ---------------------------------------------------------------- optim

// ---------------------------------------------------------------- activations (jumprelu)

// jumprelu_forward z and jumprelu_backward dpre are EXACT (a select); the tests keep every
// pre-activation >= 1e-3 eps away from the threshold and the window edges, where theta's
// few-ulp difference between WGSL's exp and Rust's could flip a comparison.

/// dlog_theta[i] = theta_i * sum over rows in order of (dz * (-theta_i / eps) + b): same
/// order as the twin, but theta comes from WGSL's exp (3 + 2|x| ulp allowed) and -theta/eps
/// from its division (2.5 ulp), and the multiply-add may be fused, so each term is a few
/// ulp off. At the test's inputs (theta in [0.2, 1], eps 0.05, dz ~ N(0, 1), ~70 of 512
/// rows in the window) theta * sum |terms| is ~1e3 and results reach ~700, so a few ulp of
/// that is ~1e-4 absolute. Measured on lavapipe over 25 seeds at 512 x 16384: max 3.1e-4
/// absolute. atol 1e-3 (3x) plus rtol 4e-6; a dropped or extra window row moves a result
/// by ~|dz| theta^2 / eps ~ 1-20.
pub const JUMPRELU_DLOG_THETA: Tol = Tol {
    name: "JUMPRELU_DLOG_THETA",
    atol: 1e-3,
    rtol: 4e-6,
};

// ---------------------------------------------------------------- training step
