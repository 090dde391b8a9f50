//! The plain world's settings (what `synth` has always taken) and the draws every world
//! shares: random unit directions and per-feature probabilities that sum to `active`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::data::FloatType;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SynthConfig {
    pub features: usize,
    pub d_in: usize,
    /// Mean number of active features per row.
    pub active: f64,
    /// 0 = every feature equally likely; > 0 = p_i ~ (i+1)^-decay.
    pub density_decay: f64,
    /// Magnitudes U[lo, hi).
    pub magnitude: (f32, f32),
    /// Groups of `group_size` features that fire together.
    pub correlated_groups: usize,
    /// Groups of `group_size` features of which at most one fires.
    pub anticorrelated_groups: usize,
    pub group_size: usize,
    /// Standard deviation of Gaussian noise added to every coordinate.
    pub noise: f32,
    pub tokens: usize,
    pub shard_tokens: usize,
    pub dtype: FloatType,
    pub seed: u64,
}

impl Default for SynthConfig {
    /// The CLI's defaults (`saeforge synth` with no flags but --out).
    fn default() -> Self {
        SynthConfig {
            features: 512,
            d_in: 64,
            active: 4.0,
            density_decay: 0.0,
            magnitude: (0.0, 1.0),
            correlated_groups: 0,
            anticorrelated_groups: 0,
            group_size: 4,
            noise: 0.0,
            tokens: 100_000,
            shard_tokens: 50_000,
            dtype: FloatType::F32,
            seed: 0,
        }
    }
}

impl SynthConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::input(m));
        if self.features == 0 {
            return bad("--features 0: expected at least 1".into());
        }
        if self.d_in == 0 {
            return bad("--d-in 0: expected at least 1".into());
        }
        if self.tokens == 0 {
            return bad("--tokens 0: expected at least 1".into());
        }
        if self.shard_tokens == 0 {
            return bad("--shard-tokens 0: expected at least 1".into());
        }
        if !(self.active > 0.0 && self.active <= self.features as f64) {
            return bad(format!(
                "--active {}: expected 0 < active <= features ({})",
                self.active, self.features
            ));
        }
        if self.density_decay < 0.0 || !self.density_decay.is_finite() {
            return bad(format!(
                "--density-decay {}: expected a finite value >= 0",
                self.density_decay
            ));
        }
        if !(self.magnitude.0 >= 0.0
            && self.magnitude.1 > self.magnitude.0
            && self.magnitude.1.is_finite())
        {
            return bad(format!(
                "--magnitude {}:{}: expected 0 <= lo < hi",
                self.magnitude.0, self.magnitude.1
            ));
        }
        if (self.correlated_groups + self.anticorrelated_groups) * self.group_size > self.features {
            return bad(format!(
                "--correlated-groups {} + --anticorrelated-groups {} of --group-size {} need more than --features {}",
                self.correlated_groups, self.anticorrelated_groups, self.group_size, self.features
            ));
        }
        if (self.correlated_groups + self.anticorrelated_groups) > 0 && self.group_size < 2 {
            return bad(format!(
                "--group-size {}: groups need at least 2 features",
                self.group_size
            ));
        }
        if self.noise < 0.0 || !self.noise.is_finite() {
            return bad(format!(
                "--noise {}: expected a finite value >= 0",
                self.noise
            ));
        }
        Ok(())
    }
}

/// n random unit directions in d dims.
pub fn random_directions(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
    let mut f = vec![0.0f32; n * d];
    for row in f.chunks_exact_mut(d) {
        loop {
            for v in row.iter_mut() {
                *v = rng.sample(StandardNormal);
            }
            let len = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if len > 1e-6 {
                row.iter_mut().for_each(|v| *v /= len);
                break;
            }
        }
    }
    f
}

/// Per-feature probabilities summing to `active` (each at most 1).
pub fn probabilities(n: usize, active: f64, decay: f64) -> Vec<f32> {
    let w: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-decay)).collect();
    // Scale so the sum is `active`, with clamping at 1 redistributed (a few rounds suffice).
    let mut scale = active / w.iter().sum::<f64>();
    for _ in 0..50 {
        let s: f64 = w.iter().map(|&x| (x * scale).min(1.0)).sum();
        if (s - active).abs() < 1e-9 * active {
            break;
        }
        scale *= active / s;
    }
    w.iter().map(|&x| (x * scale).min(1.0) as f32).collect()
}
