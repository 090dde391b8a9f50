//! CPU twins of shaders/activations.wgsl.

use super::check;

/// z = max(pre, 0).
pub fn relu_forward(pre: &[f32], z: &mut [f32]) {
    for (z, &p) in z.iter_mut().zip(pre) {
        *z = p.max(0.0);
    }
}

/// dpre = dz * [pre > 0].
pub fn relu_backward(pre: &[f32], dz: &[f32], dpre: &mut [f32]) {
    for ((d, &p), &g) in dpre.iter_mut().zip(pre).zip(dz) {
        *d = if p > 0.0 { g } else { 0.0 };
    }
}

/// JumpReLU: z[r, i] = pre[r, i] * [pre[r, i] > theta_i], theta = exp(log_theta).
/// pre: (rows, n), log_theta: (n) -> z: (rows, n)
pub fn jumprelu_forward(pre: &[f32], rows: usize, n: usize, log_theta: &[f32], z: &mut [f32]) {
    check("jumprelu_forward", "pre", pre.len(), rows * n);
    check("jumprelu_forward", "log_theta", log_theta.len(), n);
    check("jumprelu_forward", "z", z.len(), rows * n);
    let theta: Vec<f32> = log_theta.iter().map(|l| l.exp()).collect();
    for r in 0..rows {
        jumprelu_row(&pre[r * n..(r + 1) * n], &theta, &mut z[r * n..(r + 1) * n]);
    }
}

/// One row of [`jumprelu_forward`], given the thresholds: z[i] = pre[i] * [pre[i] > theta[i]].
/// pre: (n), theta: (n) -> z: (n)
pub fn jumprelu_row(pre: &[f32], theta: &[f32], z: &mut [f32]) {
    for ((z, &v), &t) in z.iter_mut().zip(pre).zip(theta) {
        *z = if v > t { v } else { 0.0 };
    }
}

/// JumpReLU backward with the straight-through estimator (Rajamanoharan et al. 2024),
/// theta = exp(log_theta), rectangle kernel R(u) = [|u| <= 1/2] of u = (pre - theta_i) / eps,
/// evaluated without the division as R = [|pre - theta_i| <= eps / 2] (so that both engines
/// agree on it exactly, given theta):
///   dpre[r, i] = dz[r, i] * [pre[r, i] > theta_i]
///   dlog_theta[i] = theta_i * sum over rows in order (f32, from 0) of the rows with
///                   R = 1 of ( dz[r, i] * (-theta_i / eps) + l0_scale * (-1 / eps) )
/// (the activation's and the L0 penalty's pseudo-derivatives; l0_scale = L0 coefficient
/// / rows; the chain rule through theta = exp(log_theta) gives the leading theta_i).
/// pre: (rows, n), dz: (rows, n), log_theta: (n) -> dpre: (rows, n), dlog_theta: (n)
#[allow(clippy::too_many_arguments)]
pub fn jumprelu_backward(
    pre: &[f32],
    dz: &[f32],
    rows: usize,
    n: usize,
    log_theta: &[f32],
    eps: f32,
    l0_scale: f32,
    dpre: &mut [f32],
    dlog_theta: &mut [f32],
) {
    check_jumprelu_backward(pre, dz, rows, n, log_theta, dpre, dlog_theta);
    for i in 0..n {
        let w = ThresholdWindow::new(log_theta[i], eps, l0_scale);
        let mut acc = 0.0f32;
        for r in 0..rows {
            let v = pre[r * n + i];
            let g = dz[r * n + i];
            dpre[r * n + i] = if v > w.theta { g } else { 0.0 };
            acc = w.add(acc, v, g);
        }
        dlog_theta[i] = w.theta * acc;
    }
}

/// The argument checks of [`jumprelu_backward`], which its CPU engine twin makes too.
pub(crate) fn check_jumprelu_backward(
    pre: &[f32],
    dz: &[f32],
    rows: usize,
    n: usize,
    log_theta: &[f32],
    dpre: &[f32],
    dlog_theta: &[f32],
) {
    let k = "jumprelu_backward";
    check(k, "pre", pre.len(), rows * n);
    check(k, "dz", dz.len(), rows * n);
    check(k, "log_theta", log_theta.len(), n);
    check(k, "dpre", dpre.len(), rows * n);
    check(k, "dlog_theta", dlog_theta.len(), n);
}

/// One latent's JumpReLU threshold pseudo-gradient (the dense [`jumprelu_backward`] and
/// the sparse `gather_jumprelu_threshold` sum the same terms over the rows they see):
/// an entry pre within eps / 2 of theta adds dz * (-theta / eps) + l0_scale * (-1 / eps).
pub struct ThresholdWindow {
    pub theta: f32,
    a: f32,
    b: f32,
    half: f32,
}

impl ThresholdWindow {
    pub fn new(log_theta: f32, eps: f32, l0_scale: f32) -> ThresholdWindow {
        let theta = log_theta.exp();
        ThresholdWindow {
            theta,
            a: -theta / eps,
            b: l0_scale * (-1.0 / eps),
            half: 0.5 * eps,
        }
    }

    /// `acc` plus the term of an entry with pre-activation `pre` and gradient `dz`.
    pub fn add(&self, acc: f32, pre: f32, dz: f32) -> f32 {
        if (pre - self.theta).abs() <= self.half {
            acc + (dz * self.a + self.b)
        } else {
            acc
        }
    }
}
