//! How well a learned decoder recovers a planted dictionary: for every true feature, the
//! best |cosine| with any decoder row.

use serde::Serialize;

use crate::reference::gemm::{GemmSpec, gemm};

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

fn normalized(rows: &[f32], d: usize) -> Vec<f32> {
    let mut out = rows.to_vec();
    for r in out.chunks_exact_mut(d) {
        let len = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        if len > 0.0 {
            r.iter_mut().for_each(|v| *v /= len);
        }
    }
    out
}

/// truth: (n_true, d) rows; w_dec: (n, d) rows. Ties go to the lower decoder row.
pub fn recovery(truth: &[f32], w_dec: &[f32], d: usize) -> Recovery {
    let nt = truth.len() / d;
    let n = w_dec.len() / d;
    let t = normalized(truth, d);
    let w = normalized(w_dec, d);
    let mut cos = vec![0.0f32; nt * n];
    let spec = GemmSpec {
        m: nt,
        n,
        k: d,
        trans_a: false,
        trans_b: true,
        alpha: 1.0,
        beta: 0.0,
    };
    gemm(&spec, &t, &w, None, &mut cos);
    let mut best = Vec::with_capacity(nt);
    for row in cos.chunks_exact(n) {
        let mut b = (f32::NEG_INFINITY, 0u32);
        for (i, &c) in row.iter().enumerate() {
            if c.abs() > b.0 {
                b = (c.abs(), i as u32);
            }
        }
        best.push(b);
    }
    let mut rows: Vec<u32> = best.iter().map(|b| b.1).collect();
    rows.sort_unstable();
    rows.dedup();
    let frac = |th: f32| best.iter().filter(|b| b.0 >= th).count() as f64 / nt.max(1) as f64;
    Recovery {
        mmcs: best.iter().map(|b| b.0 as f64).sum::<f64>() / nt.max(1) as f64,
        recovered_0_9: frac(0.9),
        recovered_0_7: frac(0.7),
        uniqueness: rows.len(),
        best,
    }
}
