//! Reconstruction metrics of sparse codes on held-out rows, accumulated batch by batch in
//! f64 on the host (memory bounded by one batch), whatever engine produced the codes.
//!
//! Definitions (N rows x of dimension d, reconstructions x_hat, codes z with n latents):
//! - mse = sum ||x - x_hat||^2 / N (summed over d, averaged over rows, as in training);
//! - nmse = sum ||x - x_hat||^2 / sum ||x||^2;
//! - explained_variance = 1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2 (mean over the N rows);
//! - cosine = mean over rows of x . x_hat / (||x|| ||x_hat||) (0 where either is zero);
//! - l0 = mean number of z_i > 0 per row; l1 = mean sum_i z_i per row (plain, not weighted
//!   by decoder norms; codes are non-negative);
//! - relative_reconstruction_bias = sum ||x_hat||^2 / sum x . x_hat, the gamma of Wright &
//!   Sharkey (2024): the scale minimising ||x_hat / gamma - x||^2; < 1 means shrinkage;
//! - shrinkage = mean over rows with x != 0 of ||x_hat|| / ||x||;
//! - dead_fraction: latents that never fired on these rows; dense_fraction: latents that
//!   fired on more than 10% of them.

use std::path::Path;

use serde::Serialize;

use crate::Result;

/// Latents firing on more than this fraction of rows count as dense.
pub const DENSE_THRESHOLD: f64 = 0.1;

/// Metrics of one method (encoder or FISTA) on one set of rows.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReconMetrics {
    pub rows: u64,
    pub mse: f64,
    pub nmse: f64,
    pub explained_variance: f64,
    pub cosine: f64,
    pub l0: f64,
    pub l1: f64,
    pub relative_reconstruction_bias: f64,
    pub shrinkage: f64,
    pub dead_fraction: f64,
    pub dense_fraction: f64,
    /// Latents never fired / fired on more than 10% of rows.
    pub dead: usize,
    pub dense: usize,
    /// Latents of the dictionary.
    pub n_latents: usize,
    /// FISTA only: mean iterations per row (rows of a batch stop together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<f64>,
    /// Per latent: rows it fired on (for the density histogram).
    #[serde(skip)]
    pub fire_counts: Vec<u64>,
}

/// Running sums over batches. Feed it every batch with [`Accumulator::add`], then
/// [`Accumulator::finish`] with the fire counts.
#[derive(Clone, Debug)]
pub struct Accumulator {
    d: usize,
    rows: u64,
    sse: f64,
    sum_x: Vec<f64>,
    sum_xx: f64,
    sum_hh: f64,
    sum_xh: f64,
    cos: f64,
    shrink: f64,
    shrink_rows: u64,
    l0: f64,
    l1: f64,
    iters: f64,
    has_iters: bool,
}

impl Accumulator {
    pub fn new(d: usize) -> Accumulator {
        Accumulator {
            d,
            rows: 0,
            sse: 0.0,
            sum_x: vec![0.0; d],
            sum_xx: 0.0,
            sum_hh: 0.0,
            sum_xh: 0.0,
            cos: 0.0,
            shrink: 0.0,
            shrink_rows: 0,
            l0: 0.0,
            l1: 0.0,
            iters: 0.0,
            has_iters: false,
        }
    }

    /// One batch: x and x_hat (rows, d); l0_sum and l1_sum are the batch's totals of active
    /// latents and of code values; iterations (FISTA) is what each row of the batch ran.
    pub fn add(
        &mut self,
        x: &[f32],
        x_hat: &[f32],
        rows: usize,
        l0_sum: f64,
        l1_sum: f64,
        iterations: Option<usize>,
    ) {
        let d = self.d;
        assert_eq!(x.len(), rows * d, "Accumulator::add: x");
        assert_eq!(x_hat.len(), rows * d, "Accumulator::add: x_hat");
        for (xr, hr) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
            let (mut xx, mut hh, mut xh, mut ee) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            for j in 0..d {
                let (a, b) = (xr[j] as f64, hr[j] as f64);
                xx += a * a;
                hh += b * b;
                xh += a * b;
                ee += (a - b) * (a - b);
                self.sum_x[j] += a;
            }
            self.sse += ee;
            self.sum_xx += xx;
            self.sum_hh += hh;
            self.sum_xh += xh;
            let nn = (xx * hh).sqrt();
            if nn > 0.0 {
                self.cos += xh / nn;
            }
            if xx > 0.0 {
                self.shrink += (hh / xx).sqrt();
                self.shrink_rows += 1;
            }
        }
        self.rows += rows as u64;
        self.l0 += l0_sum;
        self.l1 += l1_sum;
        if let Some(it) = iterations {
            self.iters += (it * rows) as f64;
            self.has_iters = true;
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The metrics, given how many rows each latent fired on.
    pub fn finish(&self, fire_counts: &[u64]) -> ReconMetrics {
        let r = self.rows.max(1) as f64;
        let n = fire_counts.len();
        let mean_sq: f64 = self.sum_x.iter().map(|s| s * s).sum::<f64>() / r;
        let sst = (self.sum_xx - mean_sq).max(0.0);
        let dead = fire_counts.iter().filter(|&&c| c == 0).count();
        let dense = fire_counts
            .iter()
            .filter(|&&c| c as f64 > DENSE_THRESHOLD * self.rows as f64)
            .count();
        let ratio = |a: f64, b: f64| if b != 0.0 { a / b } else { f64::NAN };
        ReconMetrics {
            rows: self.rows,
            mse: self.sse / r,
            nmse: ratio(self.sse, self.sum_xx),
            explained_variance: if sst > 0.0 {
                1.0 - self.sse / sst
            } else {
                f64::NAN
            },
            cosine: self.cos / r,
            l0: self.l0 / r,
            l1: self.l1 / r,
            relative_reconstruction_bias: ratio(self.sum_hh, self.sum_xh),
            shrinkage: ratio(self.shrink, self.shrink_rows as f64),
            dead_fraction: dead as f64 / n.max(1) as f64,
            dense_fraction: dense as f64 / n.max(1) as f64,
            dead,
            dense,
            n_latents: n,
            iterations: self.has_iters.then(|| self.iters / r),
            fire_counts: fire_counts.to_vec(),
        }
    }
}

/// The feature density histogram: log10 of each latent's firing frequency over `rows`
/// rows, written to `dir/NAME.png` and `dir/NAME.svg`; latents that never fired are
/// counted in the corner note.
pub fn density_histogram(
    dir: &Path,
    name: &str,
    title: &str,
    fire_counts: &[u64],
    rows: u64,
) -> Result<()> {
    let vals: Vec<f64> = fire_counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| (c as f64 / rows.max(1) as f64).log10())
        .collect();
    let never = fire_counts.len() - vals.len();
    let dense = fire_counts
        .iter()
        .filter(|&&c| c as f64 > DENSE_THRESHOLD * rows as f64)
        .count();
    crate::report::plots::histogram(
        dir,
        name,
        title,
        "log10 firing frequency",
        &vals,
        50,
        &format!(
            "{rows} rows; {never} of {} latents never fired (not shown), {dense} fired on > 10% of rows",
            fire_counts.len()
        ),
    )
}
