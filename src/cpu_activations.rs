//! The CPU engine's twins of [`crate::reference::activations`]: `relu_forward`,
//! `relu_backward`, `jumprelu_forward` and `jumprelu_backward`, with the same contracts and
//! bitwise the same results, over rayon's pool.
//!
//! Why: they are the dense path of relu / jumprelu (codes past `code_capacity`), one pass
//! each over every (row, latent) entry, which the reference makes on one thread, and
//! `jumprelu_backward` down each column (a stride of a whole row per element, for its
//! threshold gradient's sums over the rows in order). Here the elementwise parts run by
//! blocks of rows, and the threshold gradient by blocks of columns, each task walking the
//! rows in order along its columns (each latent's sum is the reference's, rows in order).
//! Each threshold's exp is taken once, as the reference does.
//!
//! `src/reference/activations.rs` stays the plain loops that judge the GPU kernels; this
//! module is tested against it bit for bit (below).

use rayon::prelude::*;

use crate::cpu_reduce::COLS_PER_TASK;
use crate::reference::activations::{self as reference, ThresholdWindow};
use crate::reference::check;

/// Entries per rayon task of the elementwise passes.
const ENTRIES_PER_TASK: usize = 1 << 15;

/// [`crate::reference::activations::relu_forward`]: z = max(pre, 0).
pub fn relu_forward(pre: &[f32], z: &mut [f32]) {
    assert_eq!(pre.len(), z.len(), "relu_forward: pre and z lengths");
    z.par_chunks_mut(ENTRIES_PER_TASK)
        .zip(pre.par_chunks(ENTRIES_PER_TASK))
        .for_each(|(z, pre)| reference::relu_forward(pre, z));
}

/// [`crate::reference::activations::relu_backward`]: dpre = dz * [pre > 0].
pub fn relu_backward(pre: &[f32], dz: &[f32], dpre: &mut [f32]) {
    assert_eq!(pre.len(), dpre.len(), "relu_backward: pre and dpre lengths");
    assert_eq!(dz.len(), dpre.len(), "relu_backward: dz and dpre lengths");
    dpre.par_chunks_mut(ENTRIES_PER_TASK)
        .zip(pre.par_chunks(ENTRIES_PER_TASK))
        .zip(dz.par_chunks(ENTRIES_PER_TASK))
        .for_each(|((dpre, pre), dz)| reference::relu_backward(pre, dz, dpre));
}

/// [`crate::reference::activations::jumprelu_forward`]: z[r, i] = pre[r, i] * [pre[r, i] >
/// theta_i], theta = exp(log_theta), blocks of rows in parallel, each row the reference's
/// `jumprelu_row`.
/// pre: (rows, n), log_theta: (n) -> z: (rows, n)
pub fn jumprelu_forward(pre: &[f32], rows: usize, n: usize, log_theta: &[f32], z: &mut [f32]) {
    check("jumprelu_forward", "pre", pre.len(), rows * n);
    check("jumprelu_forward", "log_theta", log_theta.len(), n);
    check("jumprelu_forward", "z", z.len(), rows * n);
    let theta: Vec<f32> = log_theta.iter().map(|l| l.exp()).collect();
    let task = (ENTRIES_PER_TASK / n.max(1)).max(1) * n.max(1);
    z.par_chunks_mut(task)
        .zip(pre.par_chunks(task))
        .for_each(|(z, pre)| {
            for (z, pre) in z.chunks_exact_mut(n).zip(pre.chunks_exact(n)) {
                reference::jumprelu_row(pre, &theta, z);
            }
        });
}

/// [`crate::reference::activations::jumprelu_backward`]: dpre = dz * [pre > theta] by
/// blocks of rows, then each latent's threshold gradient (`ThresholdWindow`'s terms summed
/// over the rows in order, times theta) by blocks of columns.
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
    reference::check_jumprelu_backward(pre, dz, rows, n, log_theta, dpre, dlog_theta);
    let windows: Vec<ThresholdWindow> = log_theta
        .iter()
        .map(|&l| ThresholdWindow::new(l, eps, l0_scale))
        .collect();
    let task = (ENTRIES_PER_TASK / n.max(1)).max(1) * n.max(1);
    dpre.par_chunks_mut(task)
        .zip(pre.par_chunks(task).zip(dz.par_chunks(task)))
        .for_each(|(dpre, (pre, dz))| {
            let rows = dpre
                .chunks_exact_mut(n)
                .zip(pre.chunks_exact(n).zip(dz.chunks_exact(n)));
            for (dpre, (pre, dz)) in rows {
                for ((d, w), (&v, &g)) in dpre.iter_mut().zip(&windows).zip(pre.iter().zip(dz)) {
                    *d = if v > w.theta { g } else { 0.0 };
                }
            }
        });
    dlog_theta
        .par_chunks_mut(COLS_PER_TASK)
        .zip(windows.par_chunks(COLS_PER_TASK))
        .enumerate()
        .for_each(|(t, (out, windows))| {
            let j0 = t * COLS_PER_TASK;
            let mut acc = [0.0f32; COLS_PER_TASK];
            let acc = &mut acc[..out.len()];
            for r in 0..rows {
                let (pre, dz) = (&pre[r * n + j0..], &dz[r * n + j0..]);
                for (i, (a, w)) in acc.iter_mut().zip(windows).enumerate() {
                    *a = w.add(*a, pre[i], dz[i]);
                }
            }
            for ((o, a), w) in out.iter_mut().zip(acc.iter()).zip(windows) {
                *o = w.theta * a;
            }
        });
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use crate::cpu_codes::tests::coarse;
    use crate::cpu_sparse::tests::bits;
    use crate::reference::activations as reference;

    #[test]
    fn activations_are_the_reference_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
        // Shapes below and past a task of entries and a block of columns, and empty ones.
        for (rows, n) in [
            (0, 5),
            (3, 0),
            (1, 1),
            (7, 13),
            (40, 300),
            (3, 20_000),
            (70, 600),
        ] {
            let what = format!("({rows}, {n})");
            // On a grid (ties with the thresholds and the window's edges), with zeros of
            // both signs, infinities and subnormals among them.
            let specials = [0.0, -0.0, f32::INFINITY, -f32::INFINITY, 1e-40, -1e-40];
            let pre = coarse(&mut rng, rows * n, &specials);
            let dz: Vec<f32> = (0..rows * n).map(|_| rng.random_range(-2.0..2.0)).collect();
            // Thresholds on pre's grid, so that pre == theta and the window's edges occur.
            let log_theta: Vec<f32> = (0..n)
                .map(|_| ((rng.random_range(1i32..8) as f32) * 0.25).ln())
                .collect();
            let (mut want, mut got) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * n]);
            reference::relu_forward(&pre, &mut want);
            super::relu_forward(&pre, &mut got);
            assert_eq!(bits(&got), bits(&want), "relu_forward {what}");
            reference::relu_backward(&pre, &dz, &mut want);
            super::relu_backward(&pre, &dz, &mut got);
            assert_eq!(bits(&got), bits(&want), "relu_backward {what}");
            reference::jumprelu_forward(&pre, rows, n, &log_theta, &mut want);
            super::jumprelu_forward(&pre, rows, n, &log_theta, &mut got);
            assert_eq!(bits(&got), bits(&want), "jumprelu_forward {what}");
            for eps in [0.25f32, 0.05] {
                let (mut want_t, mut got_t) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                #[rustfmt::skip]
                reference::jumprelu_backward(&pre, &dz, rows, n, &log_theta, eps, 0.3, &mut want, &mut want_t);
                #[rustfmt::skip]
                super::jumprelu_backward(&pre, &dz, rows, n, &log_theta, eps, 0.3, &mut got, &mut got_t);
                assert_eq!(bits(&got), bits(&want), "jumprelu_backward dpre {what}");
                let what = format!("jumprelu_backward dlog_theta {what}, eps {eps}");
                assert_eq!(bits(&got_t), bits(&want_t), "{what}");
            }
        }
    }
}
