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

/// topk / batchtopk values and thresholds: the kernels copy input values (or rebuild the
/// threshold from its exact bit pattern), so they must equal the CPU's; the tests also
/// compare the bit patterns, which tells -0.0 from +0.0.
pub const TOPK: Tol = Tol {
    name: "TOPK",
    atol: 0.0,
    rtol: 0.0,
};

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

// Measured on lavapipe over many seeds (tests/kernels/optim.rs): adam bit-identical, sumsq
// and clip_scale within 1 ulp, normalize_rows within 2 ulp, remove_parallel within 5e-7
// absolute at production size. The margins below are for hardware GPUs, where WGSL allows
// division and sqrt a few ulp and the compiler may fuse a * b + c.

/// adam (one step; m, v, param). The CPU does the same f32 operations in the same order;
/// left are division and sqrt precision and FMA contraction, ~10 ulp of the update term
/// (rtol 2e-6). atol 1e-7 covers results that cancel (beta1 m against (1 - beta1) g) down
/// to below their terms, whose error is an ulp of terms of size O(0.1 .. 1).
pub const OPTIM_ADAM: Tol = Tol {
    name: "OPTIM_ADAM",
    atol: 1e-7,
    rtol: 2e-6,
};

/// sumsq vs an f64 sum: a sum of positive terms, each partial a chain of at most ~520 f32
/// additions at the largest supported tensor (512 x 131072: 256 vec4s per invocation, 256
/// partials per invocation of the finish, an 8-level tree), ~sqrt(520) * 6e-8 = 1.4e-6
/// relative when errors random-walk. Measured <= 1.2e-7 at 512 x 16384.
pub const OPTIM_SUMSQ: Tol = Tol {
    name: "OPTIM_SUMSQ",
    atol: 0.0,
    rtol: 4e-6,
};

/// clip_scale [scale, norm]: a few f32 additions (f64 on the CPU), one sqrt, one division:
/// ~8 ulp with hardware division and sqrt.
pub const OPTIM_CLIP: Tol = Tol {
    name: "OPTIM_CLIP",
    atol: 0.0,
    rtol: 1e-6,
};

/// normalize_rows: x / ||row|| is relative to x; the norm's own error (a d-term sum in
/// another order, then sqrt) and the division add up to ~2 ulp measured, allowed ~16.
pub const OPTIM_NORMALIZE: Tol = Tol {
    name: "OPTIM_NORMALIZE",
    atol: 0.0,
    rtol: 2e-6,
};

/// remove_parallel: g - c w cancels by design (the result is orthogonal to w), so its error
/// is absolute: the coefficient c = (g . w) / (w . w) carries ~sqrt(d) ulp of sum |g w| / w . w
/// times |w| ~ O(1) inputs, i.e. ~1e-6 at d = 512 in the worst rows (measured 5e-7).
pub const OPTIM_REMOVE_PARALLEL: Tol = Tol {
    name: "OPTIM_REMOVE_PARALLEL",
    atol: 2e-6,
    rtol: 1e-6,
};

/// Four chained optimizer steps (remove_parallel, sumsq, clip_scale, adam, normalize_rows)
/// on O(1) data: the per-kernel errors above feed the next step through the clip factor and
/// the moments, so allow them twice over (sums of squares ~2000 compare by rtol).
pub const OPTIM_STEPS: Tol = Tol {
    name: "OPTIM_STEPS",
    atol: 4e-6,
    rtol: 4e-6,
};

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
/// Parameters after 10 GPU steps vs 10 CPU steps. Each step's gradients agree to f32
/// rounding (the kernels' own tolerances above), but Adam divides by sqrt(v): where a
/// gradient is tiny, rounding flips m / sqrt(v) by up to a full step of size lr (1e-3 in
/// the test). atol 2e-4 allows a few such coordinates' drift over 10 steps (measured worst:
/// see the test output when tightening); rtol 1e-4 covers the rest.
pub const TRAIN_PARAMS: Tol = Tol {
    name: "TRAIN_PARAMS",
    atol: 2e-4,
    rtol: 1e-4,
};
/// Adam's second moments: sums of squared gradients, relative agreement of f32 gradients.
pub const TRAIN_MOMENTS: Tol = Tol {
    name: "TRAIN_MOMENTS",
    atol: 1e-9,
    rtol: 1e-3,
};
/// Metric sums over 10 steps (SSE, SST, L0, L1, AUX): f32 sums of O(1e3) terms each.
pub const TRAIN_METRICS: Tol = Tol {
    name: "TRAIN_METRICS",
    atol: 1e-3,
    rtol: 1e-4,
};

// ---------------------------------------------------------------- codes (sparse step)

/// threshold_offsets: exp(log_thr) - eps, with WGSL's exp allowed 3 + 2|x| ulp against
/// Rust's correctly rounded one; |log_thr| <= 2 in the tests, so 7 ulp of exp (<= 7.4) plus
/// the subtraction's rounding: rtol 1e-6 (about 8 ulp) and atol 1e-6 for results near 0.
/// Measured on lavapipe: within 1 ulp. (The offsets only steer which blocks are read; the
/// kept entries themselves are compared exactly.)
pub const CODES_OFFSETS: Tol = Tol {
    name: "CODES_OFFSETS",
    atol: 1e-6,
    rtol: 1e-6,
};

/// decoder_grad_prep: coef = g.w / w.w and part = max(g.g - 2 coef g.w + coef^2 w.w, 0)
/// from lane-strided f32 sums in a tree (d <= 512 terms) against f64 sums rounded once:
/// each dot is off by ~sqrt(d) ulp of its terms' magnitude, i.e. ~2e-6 relative at d = 512
/// for the O(1) random rows of the tests; coef inherits that (rtol 2e-5). part cancels
/// g.g against coef terms; with random (not parallel) g and w it keeps ~(1 - 1/d) of g.g,
/// so its error stays ~1e-6 of g.g (rtol 2e-5, atol 1e-4 for the d = 512 rows whose g.g is
/// ~500). A wrong row or a missed term is off by O(1). Measured on lavapipe: worst 3e-7
/// relative (coef), 5e-7 (part).
pub const OPTIM_DECODER_PREP: Tol = Tol {
    name: "OPTIM_DECODER_PREP",
    atol: 1e-4,
    rtol: 2e-5,
};
