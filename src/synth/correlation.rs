//! Low-rank correlated firing through a Gaussian copula (SAELens's
//! `generate_random_low_rank_correlation_matrix` and low-rank sampler).
//!
//! The correlation matrix is C = F F^T + diag(D) with F (n, rank) entries N(0, scale^2)
//! and D = 1 - rowsum(F^2), so that diag(C) = 1; a row of F whose squares sum past 0.99
//! is scaled down to 0.99 (D >= 0.01). A row of the data draws e ~ N(0, I_rank) and
//! h ~ N(0, I_n); feature i fires when g_i = F_i . e + sqrt(D_i) h_i > Phi^-1(1 - p_i),
//! which happens with probability exactly p_i, features with shared factors together.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Smallest diagonal term (SAELens's `_MIN_DIAG`).
pub const MIN_DIAG: f64 = 0.01;

#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    pub rank: usize,
    /// (n, rank)
    pub factor: Vec<f32>,
    /// (n)
    pub diag: Vec<f32>,
    /// sqrt(diag), (n)
    diag_sqrt: Vec<f32>,
    /// Phi^-1(1 - p_i), (n); +inf never fires, -inf always.
    threshold: Vec<f32>,
}

impl LowRank {
    pub fn new(n: usize, rank: usize, scale: f64, p: &[f32], rng: &mut ChaCha8Rng) -> LowRank {
        let mut factor: Vec<f32> = (0..n * rank)
            .map(|_| (rng.sample::<f64, _>(StandardNormal) * scale) as f32)
            .collect();
        let mut diag = vec![0.0f32; n];
        for (row, d) in factor.chunks_exact_mut(rank).zip(diag.iter_mut()) {
            let sq: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
            if 1.0 - sq < MIN_DIAG {
                let s = ((1.0 - MIN_DIAG) / sq).sqrt();
                row.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
            }
            let sq: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
            *d = (1.0 - sq) as f32;
        }
        let diag_sqrt = diag.iter().map(|&d| d.max(0.0).sqrt()).collect();
        let threshold = p.iter().map(|&q| probit(1.0 - q as f64) as f32).collect();
        LowRank {
            rank,
            factor,
            diag,
            diag_sqrt,
            threshold,
        }
    }

    /// Push the features that fire in one row onto `out` (ascending).
    pub fn fire(&self, rng: &mut ChaCha8Rng, eps: &mut Vec<f32>, out: &mut Vec<usize>) {
        eps.clear();
        eps.extend((0..self.rank).map(|_| rng.sample::<f32, _>(StandardNormal)));
        for (i, f) in self.factor.chunks_exact(self.rank).enumerate() {
            let h: f32 = rng.sample(StandardNormal);
            let mut g = self.diag_sqrt[i] * h;
            for (a, b) in f.iter().zip(eps.iter()) {
                g += a * b;
            }
            if g > self.threshold[i] {
                out.push(i);
            }
        }
    }
}

/// Phi^-1(q), the standard normal quantile: Acklam's rational approximation (relative
/// error < 1.2e-9 over (0, 1)); q <= 0 gives -inf, q >= 1 gives +inf.
pub fn probit(q: f64) -> f64 {
    if q <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if q >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383_577_518_672_69e2,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let tail = |p: f64| {
        let r = (-2.0 * p.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    const LOW: f64 = 0.02425;
    if q < LOW {
        tail(q)
    } else if q > 1.0 - LOW {
        -tail(1.0 - q)
    } else {
        let s = q - 0.5;
        let r = s * s;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * s
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}
