//! The initial parameters: b_dec is the geometric median of the scaled sample, tested by its
//! defining property rather than against a second implementation: at the median m the unit
//! vectors from m to the points sum to zero (the gradient of sum_i ||x_i - m||).

use libtest_mimic::{Failed, Trial};
use saeforge::sae::params::geometric_median;

use crate::common::tolerance::GEOMETRIC_MEDIAN;
use crate::common::{cpu_test, uniform};

/// |sum_i (x_i - m) / ||x_i - m||| / rows: 0 at the geometric median, up to 1 elsewhere.
fn unit_pull(points: &[f32], d: usize, m: &[f32]) -> f64 {
    let mut sum = vec![0.0f64; d];
    let rows = points.len() / d;
    for r in points.chunks_exact(d) {
        let diff: Vec<f64> = r.iter().zip(m).map(|(&x, &c)| (x - c) as f64).collect();
        let len = diff.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        for (s, v) in sum.iter_mut().zip(&diff) {
            *s += v / len;
        }
    }
    sum.iter().map(|v| v * v).sum::<f64>().sqrt() / rows as f64
}

pub fn trials() -> Vec<Trial> {
    vec![cpu_test("init::b_dec_is_the_geometric_median", |rng| {
        // Skewed points (uniform cubed, then shifted): their mean is not their median.
        for (rows, d) in [(999, 5), (3000, 64)] {
            let points: Vec<f32> = uniform(rng, rows * d, 0.0, 1.0)
                .into_iter()
                .map(|u| 2.0 * u * u * u - 0.3)
                .collect();
            let median = geometric_median(&points, d, 100);
            let mean = geometric_median(&points, d, 0);
            let (at_median, at_mean) =
                (unit_pull(&points, d, &median), unit_pull(&points, d, &mean));
            let tol = f64::from(GEOMETRIC_MEDIAN.atol);
            if at_median > tol || at_mean < 100.0 * tol {
                return Err(Failed::from(format!(
                    "({rows}, {d}): the unit vectors' mean pull is {at_median:.3e} at the \
                     median (<= {:e} expected, {}) and {at_mean:.3e} at the mean \
                     (>= {:e} expected, so that the check can fail)",
                    GEOMETRIC_MEDIAN.atol,
                    GEOMETRIC_MEDIAN.name,
                    100.0 * GEOMETRIC_MEDIAN.atol
                )));
            }
        }
        Ok(())
    })]
}
