//! The demo's data helpers and its steering experiment's measures: the held-out rows' true
//! coefficients, projections on a feature, the latent's firing rate, the feature to steer.

use std::path::Path;

use crate::Result;
use crate::data::Shard;
use crate::eval::recovery::Recovery;
use crate::sae::infer::Encoder;

/// Sparse true coefficients of the held-out rows (CSR over rows).
pub(super) struct TrueCodes {
    pub(super) row_ptr: Vec<usize>,
    pub(super) idx: Vec<u32>,
    pub(super) val: Vec<f32>,
}

impl TrueCodes {
    pub(super) fn coef(&self, r: usize, f: usize) -> f32 {
        let s = &self.idx[self.row_ptr[r]..self.row_ptr[r + 1]];
        s.binary_search(&(f as u32))
            .map(|j| self.val[self.row_ptr[r] + j])
            .unwrap_or(0.0)
    }
}

/// All rows of one shard as f32.
pub(super) fn read_all(path: &Path) -> Result<(Vec<f32>, usize)> {
    let s = Shard::open(path, None)?;
    let mut x = vec![0.0f32; s.rows * s.d];
    s.read_rows(0, s.rows, &mut x)?;
    Ok((x, s.rows))
}

/// Mean of <x_r, f> over rows where `pick(r)`.
pub(super) fn mean_proj(x: &[f32], d: usize, f: &[f32], pick: impl Fn(usize) -> bool) -> f64 {
    let (mut s, mut n) = (0.0f64, 0u64);
    for (r, row) in x.chunks_exact(d).enumerate() {
        if pick(r) {
            s += row
                .iter()
                .zip(f)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>();
            n += 1;
        }
    }
    s / n.max(1) as f64
}

/// Fraction of rows of x on which the encoder fires `latent`, and its largest activation.
pub(super) fn fire_rate(
    enc: &Encoder,
    x: &[f32],
    rows: usize,
    d: usize,
    latent: u32,
) -> Result<(f64, f32)> {
    let (mut fired, mut max) = (0u64, 0.0f32);
    for chunk in x.chunks(enc.batch * d) {
        let c = enc.encode(chunk, chunk.len() / d)?;
        for (&i, &v) in c.idx.iter().zip(&c.val) {
            if i == latent {
                fired += 1;
                max = max.max(v);
            }
        }
    }
    Ok((fired as f64 / rows.max(1) as f64, max))
}

/// Choose the feature to steer: among true features recovered with |cos| >= 0.9 by a
/// latent pointing the same way, the one active on the most held-out rows (ties: the
/// better cosine, then the lower index); else the best-recovered feature.
pub(super) fn choose_feature(
    rec: &Recovery,
    truth_f: &[f32],
    w_dec: &[f32],
    d: usize,
    counts: &[u64],
) -> usize {
    let aligned = |f: usize| {
        let l = rec.best[f].1 as usize;
        let dot: f32 = truth_f[f * d..(f + 1) * d]
            .iter()
            .zip(&w_dec[l * d..(l + 1) * d])
            .map(|(a, b)| a * b)
            .sum();
        dot > 0.0
    };
    let key = |f: &usize| (counts[*f], (rec.best[*f].0 * 1e6) as u64);
    let good: Vec<usize> = (0..rec.best.len())
        .filter(|&f| rec.best[f].0 >= 0.9 && aligned(f))
        .collect();
    let pool = if good.is_empty() {
        (0..rec.best.len()).collect()
    } else {
        good
    };
    let best = pool.iter().map(key).max().expect("at least one feature");
    *pool.iter().find(|f| key(f) == best).expect("present")
}

/// Bin rows by the true coefficient of f and average the projections (for the plot).
pub(super) fn binned(coef: &[f32], proj: &[f64], bins: usize) -> Vec<(f64, f64)> {
    let mut sum = vec![(0.0f64, 0.0f64, 0u64); bins + 1];
    for (&c, &p) in coef.iter().zip(proj) {
        let b = if c == 0.0 {
            0
        } else {
            1 + ((c as f64 * bins as f64) as usize).min(bins - 1)
        };
        sum[b].0 += c as f64;
        sum[b].1 += p;
        sum[b].2 += 1;
    }
    sum.iter()
        .filter(|s| s.2 > 0)
        .map(|s| (s.0 / s.2 as f64, s.1 / s.2 as f64))
        .collect()
}

pub(super) fn projections(x: &[f32], d: usize, f: &[f32]) -> Vec<f64> {
    x.chunks_exact(d)
        .map(|r| r.iter().zip(f).map(|(&a, &b)| a as f64 * b as f64).sum())
        .collect()
}
