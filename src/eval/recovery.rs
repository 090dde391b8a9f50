//! How well a learned decoder recovers a planted dictionary: for every true feature, the
//! best |cosine| with any decoder row.

use serde::Serialize;

use super::truth::{abs_cosines_floor, best_per_row, distinct};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Recovery {
    /// Mean over true features of the best |cosine| with any decoder row.
    pub mmcs: f64,
    /// Fraction of true features whose best |cosine| is at least 0.9.
    pub recovered_0_9: f64,
    /// ... at least 0.7.
    pub recovered_0_7: f64,
    /// Number of distinct decoder rows that are the best match of some true feature (JSON
    /// `unique_best_matches`; SAELens's `uniqueness` is in `super::truth`).
    #[serde(rename = "unique_best_matches")]
    pub uniqueness: usize,
    /// Per true feature: best |cosine| and the decoder row achieving it.
    #[serde(skip)]
    pub best: Vec<(f32, u32)>,
}

/// truth: (n_true, d) rows; w_dec: (n, d) rows. Ties go to the lower decoder row.
pub fn recovery(truth: &[f32], w_dec: &[f32], d: usize) -> Recovery {
    let nt = truth.len() / d;
    let n = w_dec.len() / d;
    // Norms unclamped (a zero row stays zero).
    let best = best_per_row(&abs_cosines_floor(truth, w_dec, d, 0.0), n);
    let frac = |th: f32| best.iter().filter(|b| b.0 >= th).count() as f64 / nt.max(1) as f64;
    Recovery {
        mmcs: best.iter().map(|b| b.0 as f64).sum::<f64>() / nt.max(1) as f64,
        recovered_0_9: frac(0.9),
        recovered_0_7: frac(0.7),
        uniqueness: distinct(&best.iter().map(|b| b.1).collect::<Vec<_>>()),
        best,
    }
}
