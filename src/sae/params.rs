//! SAE parameters on the host, their initialisation, and the geometric median used for b_dec.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{BDecInit, DecoderNorm, TrainConfig};

/// Parameters in SAELens orientation. `log_threshold` is empty unless the architecture
/// trains a threshold (jumprelu).
#[derive(Clone, Debug, PartialEq)]
pub struct SaeParams {
    pub d: usize,
    pub n: usize,
    /// (d, n)
    pub w_enc: Vec<f32>,
    /// (n)
    pub b_enc: Vec<f32>,
    /// (n, d)
    pub w_dec: Vec<f32>,
    /// (d)
    pub b_dec: Vec<f32>,
    /// (n) or empty
    pub log_threshold: Vec<f32>,
}

/// The parameter tensors in optimiser order: name and shape.
pub const PARAM_NAMES: [&str; 5] = ["W_enc", "W_dec", "b_enc", "b_dec", "log_threshold"];

impl SaeParams {
    /// W_dec rows random directions at norm `init_norm` (unit-norm decoders: at norm 1),
    /// W_enc = init_norm x the unit directions^T, b_enc = 0, b_dec = geometric median / mean
    /// of `sample` (rows x d, already scaled) or zeros, log threshold for jumprelu at
    /// ln(threshold_init).
    pub fn init(cfg: &TrainConfig, sample: &[f32]) -> SaeParams {
        let (d, n) = (cfg.d_in, cfg.d_sae);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let norm = cfg.init_norm;
        let mut w_dec = vec![0.0f32; n * d];
        for row in w_dec.chunks_exact_mut(d) {
            loop {
                for v in row.iter_mut() {
                    *v = rng.sample(StandardNormal);
                }
                let len = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if len > 1e-6 {
                    for v in row.iter_mut() {
                        *v *= norm / len;
                    }
                    break;
                }
            }
        }
        let mut w_enc = vec![0.0f32; d * n];
        for i in 0..n {
            for j in 0..d {
                w_enc[j * n + i] = w_dec[i * d + j];
            }
        }
        if cfg.decoder_norm == DecoderNorm::Unit && norm != 1.0 {
            for v in w_dec.iter_mut() {
                *v /= norm;
            }
        }
        let b_dec = match cfg.b_dec_init {
            _ if sample.is_empty() => vec![0.0; d],
            BDecInit::Median => geometric_median(sample, d, 100),
            BDecInit::Mean => geometric_median(sample, d, 0),
            BDecInit::Zeros => vec![0.0; d],
        };
        let log_threshold = if cfg.arch == super::Arch::Jumprelu {
            vec![cfg.threshold_init.ln(); n]
        } else {
            Vec::new()
        };
        SaeParams {
            d,
            n,
            w_enc,
            b_enc: vec![0.0; n],
            w_dec,
            b_dec,
            log_threshold,
        }
    }

    /// The tensors in optimiser order (empty ones skipped by callers).
    pub fn tensors(&self) -> [&Vec<f32>; 5] {
        [
            &self.w_enc,
            &self.w_dec,
            &self.b_enc,
            &self.b_dec,
            &self.log_threshold,
        ]
    }

    pub fn tensors_mut(&mut self) -> [&mut Vec<f32>; 5] {
        [
            &mut self.w_enc,
            &mut self.w_dec,
            &mut self.b_enc,
            &mut self.b_dec,
            &mut self.log_threshold,
        ]
    }

    /// Shapes matching `tensors()`.
    pub fn shapes(&self) -> [Vec<usize>; 5] {
        [
            vec![self.d, self.n],
            vec![self.n, self.d],
            vec![self.n],
            vec![self.d],
            vec![self.log_threshold.len()],
        ]
    }

    /// The same SAE with the decoder norms of `--decoder-norm rescale` folded in: unit
    /// decoder rows, encoder columns and b_enc multiplied by the norms (what the codes see).
    pub fn rescale_folded(&self) -> SaeParams {
        let (d, n) = (self.d, self.n);
        let mut out = self.clone();
        let mut norms = vec![0.0f32; n];
        crate::reference::optim::rescale_view(
            &self.w_enc,
            &self.b_enc,
            &self.w_dec,
            n,
            d,
            &mut out.w_enc,
            &mut out.b_enc,
            &mut out.w_dec,
            &mut norms,
        );
        out
    }

    /// True when every value is finite.
    pub fn all_finite(&self) -> bool {
        self.tensors()
            .iter()
            .all(|t| t.iter().all(|v| v.is_finite()))
    }
}

/// Geometric median of `points` (rows x d) by Weiszfeld's algorithm, started at the mean.
/// f64 accumulation; stops when the update moves less than 1e-6 relative.
pub fn geometric_median(points: &[f32], d: usize, iters: usize) -> Vec<f32> {
    let rows = points.len() / d;
    let mut m = vec![0.0f64; d];
    for r in points.chunks_exact(d) {
        for (a, &b) in m.iter_mut().zip(r) {
            *a += b as f64;
        }
    }
    for a in m.iter_mut() {
        *a /= rows as f64;
    }
    for _ in 0..iters {
        let mut num = vec![0.0f64; d];
        let mut den = 0.0f64;
        for r in points.chunks_exact(d) {
            let dist = r
                .iter()
                .zip(&m)
                .map(|(&x, &c)| (x as f64 - c).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            let w = 1.0 / dist;
            for (a, &x) in num.iter_mut().zip(r) {
                *a += w * x as f64;
            }
            den += w;
        }
        let next: Vec<f64> = num.iter().map(|a| a / den).collect();
        let shift = next
            .iter()
            .zip(&m)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale = next.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        m = next;
        if shift / scale < 1e-6 {
            break;
        }
    }
    m.into_iter().map(|v| v as f32).collect()
}
