//! A compositional out-of-distribution split (train/, test/, ood/ over one dictionary).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::codes::SparseCodes;
use super::config::random_directions;
use super::files::write_shards;
use crate::data::FloatType;
use crate::io::{OutTensor, write_json, write_safetensors};
use crate::{Error, Result};

/// A compositional out-of-distribution split (Barin Pacela, Joshi et al. 2026, "Stop
/// Probing, Start Coding", arXiv 2603.28744): y = A z with A's n columns (our feature rows)
/// unit-norm Gaussian directions and z exactly k-sparse with values U(0, 1).
///
/// Feature 0 is the probe; features 1 .. n - ood_features form the in-distribution pool,
/// the last `ood_features` the OOD pool. Training (and held-out test) rows are, with
/// probability 1/2 each, the probe plus k - 1 features of the in-distribution pool, or k
/// features drawn from every feature but the probe (only from the in-distribution pool with
/// `ood_unseen`). OOD rows are the probe plus k - 1 features of the OOD pool: features the
/// model saw, but never together with the probe (with `ood_unseen`: never at all).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompositionalConfig {
    /// n: features including the probe.
    pub features: usize,
    pub d_in: usize,
    /// Non-zeros per row.
    pub k: usize,
    /// Size of the OOD pool (the last features).
    pub ood_features: usize,
    /// Training rows never use the OOD pool (a stricter shift than the paper's).
    pub ood_unseen: bool,
    pub train_tokens: usize,
    pub test_tokens: usize,
    pub ood_tokens: usize,
    pub shard_tokens: usize,
    pub dtype: FloatType,
    pub seed: u64,
}

/// Which distribution a compositional row comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompositionalRow {
    /// Training and held-out in-distribution rows.
    InDistribution,
    /// The probe with the OOD pool.
    Ood,
}

impl CompositionalConfig {
    /// First feature of the OOD pool.
    pub fn ood_start(&self) -> usize {
        self.features - self.ood_features
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::input(m));
        if self.d_in == 0 {
            return bad("--d-in 0: expected at least 1".into());
        }
        if self.k < 2 {
            return bad(format!(
                "--k {}: a compositional row is the probe plus at least one other feature (k >= 2)",
                self.k
            ));
        }
        if self.ood_features < self.k - 1 {
            return bad(format!(
                "--ood-features {}: the OOD pool needs at least k - 1 = {} features",
                self.ood_features,
                self.k - 1
            ));
        }
        if self.features < 1 + self.ood_features + self.k {
            return bad(format!(
                "--features {}: the probe, an in-distribution pool of at least k = {} features and --ood-features {} need at least {}",
                self.features,
                self.k,
                self.ood_features,
                1 + self.ood_features + self.k
            ));
        }
        for (flag, v) in [
            ("--tokens", self.train_tokens),
            ("--test-tokens", self.test_tokens),
            ("--ood-tokens", self.ood_tokens),
            ("--shard-tokens", self.shard_tokens),
        ] {
            if v == 0 {
                return bad(format!("{flag} 0: expected at least 1"));
            }
        }
        Ok(())
    }
}

/// Rows of a compositional split: the dictionary plus the sampling rule.
pub struct Compositional {
    pub cfg: CompositionalConfig,
    /// features (n, d), unit rows.
    pub features: Vec<f32>,
    rng: ChaCha8Rng,
}

impl Compositional {
    pub fn new(cfg: CompositionalConfig) -> Result<Compositional> {
        cfg.validate()?;
        // Not `seed` itself: `train --seed` draws the SAE's initial decoder rows the same way
        // (normalised Gaussians from ChaCha8), and equal seeds would hand the trainer the
        // planted dictionary as its initialisation.
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x005E_EDDA_7A0F_5A1E);
        let features = random_directions(&mut rng, cfg.features, cfg.d_in);
        Ok(Compositional { cfg, features, rng })
    }

    /// The k active features of one row, in the order drawn.
    pub fn support(&mut self, kind: CompositionalRow) -> Vec<usize> {
        let c = &self.cfg;
        let (k, start) = (c.k, c.ood_start());
        // `amount` distinct features of lo..hi.
        let draw = |rng: &mut ChaCha8Rng, lo: usize, hi: usize, amount: usize| {
            rand::seq::index::sample(rng, hi - lo, amount)
                .into_iter()
                .map(move |i| lo + i)
                .collect::<Vec<usize>>()
        };
        match kind {
            CompositionalRow::Ood => {
                let mut s = vec![0];
                s.extend(draw(&mut self.rng, start, c.features, k - 1));
                s
            }
            CompositionalRow::InDistribution => {
                if self.rng.random::<bool>() {
                    let mut s = vec![0];
                    s.extend(draw(&mut self.rng, 1, start, k - 1));
                    s
                } else {
                    let hi = if c.ood_unseen { start } else { c.features };
                    draw(&mut self.rng, 1, hi, k)
                }
            }
        }
    }

    /// Rows (rows, d) and their codes (rows, n): x = sum over the support of U(0, 1) f_i (a
    /// draw of exactly 0, about one in 2^24, is drawn again, so that every feature of the
    /// support is active; the other draws are those of U[0, 1)).
    pub fn rows(&mut self, kind: CompositionalRow, rows: usize) -> (Vec<f32>, Vec<f32>) {
        let (n, d) = (self.cfg.features, self.cfg.d_in);
        let mut x = vec![0.0f32; rows * d];
        let mut z = vec![0.0f32; rows * n];
        for r in 0..rows {
            for i in self.support(kind) {
                let mut c = 0.0f32;
                while c == 0.0 {
                    c = self.rng.random_range(0.0..1.0);
                }
                z[r * n + i] = c;
                let f = &self.features[i * d..(i + 1) * d];
                for (a, &b) in x[r * d..(r + 1) * d].iter_mut().zip(f) {
                    *a += c * b;
                }
            }
        }
        (x, z)
    }

    /// Which pool each feature is in: 0 the probe, 1 in-distribution, 2 OOD.
    pub fn pools(&self) -> Vec<u32> {
        (0..self.cfg.features)
            .map(|i| {
                if i == 0 {
                    0
                } else if i < self.cfg.ood_start() {
                    1
                } else {
                    2
                }
            })
            .collect()
    }
}

/// `saeforge synth --compositional`: DIR/train/, DIR/test/ (held-out, same distribution),
/// DIR/ood/ (shards, each with its true codes in FOLDER/codes/, see [`super::codes`]),
/// DIR/truth.safetensors (features [n, d], probability [n] = each feature's firing rate in
/// training, pool [n] u32: 0 probe, 1 in-distribution, 2 OOD) and DIR/synth.json. Returns
/// the three folders.
pub fn write_compositional(out: &Path, cfg: CompositionalConfig) -> Result<[PathBuf; 3]> {
    let mut g = Compositional::new(cfg)?;
    let c = g.cfg.clone();
    crate::io::create_dir(out)?;
    let dirs = [out.join("train"), out.join("test"), out.join("ood")];
    let parts = [
        (c.train_tokens, CompositionalRow::InDistribution),
        (c.test_tokens, CompositionalRow::InDistribution),
        (c.ood_tokens, CompositionalRow::Ood),
    ];
    for (dir, (tokens, kind)) in dirs.iter().zip(parts) {
        let n = c.features;
        write_shards(dir, tokens, c.shard_tokens, c.d_in, c.dtype, true, |rows| {
            let (x, z) = g.rows(kind, rows);
            (x, SparseCodes::from_dense(&z, rows, n))
        })?;
    }
    // Training firing rates: the probe in half the rows; a pool-1 feature in the other
    // half's k - 1 draws from it and in setting B's k draws from the eligible features.
    let (n, k) = (c.features as f64, c.k as f64);
    let pool1 = (c.ood_start() - 1) as f64;
    let b_pool = if c.ood_unseen { pool1 } else { n - 1.0 };
    let probability: Vec<f32> = g
        .pools()
        .iter()
        .map(|&p| match p {
            0 => 0.5,
            1 => 0.5 * (k - 1.0) / pool1 + 0.5 * k / b_pool,
            _ => {
                if c.ood_unseen {
                    0.0
                } else {
                    0.5 * k / b_pool
                }
            }
        } as f32)
        .collect();
    write_safetensors(
        &out.join("truth.safetensors"),
        &[
            OutTensor::f32("features", &[c.features, c.d_in], &g.features),
            OutTensor::f32("probability", &[c.features], &probability),
            OutTensor::u32("pool", &[c.features], &g.pools()),
        ],
        None,
    )?;
    write_json(
        &out.join("synth.json"),
        &serde_json::json!({
            "compositional": c,
            "probe_feature": 0,
            "in_distribution_pool": [1, c.ood_start()],
            "ood_pool": [c.ood_start(), c.features],
        }),
    )?;
    Ok(dirs)
}
