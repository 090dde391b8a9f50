//! Synthetic activations with a planted dictionary: the ground truth an SAE should recover.
//!
//! n true features are random unit directions in d dimensions (superposition when n > d).
//! Each row switches features on independently with per-feature probability p_i (uniform,
//! or Zipf-like p_i ~ (i+1)^-decay), scaled so that sum_i p_i = `active`; an active feature
//! gets a magnitude drawn from U[lo, hi). Optional correlated groups fire together,
//! anti-correlated groups keep at most one member, and Gaussian noise may be added.
//! x = sum_i c_i f_i (+ noise).
//!
//! [`write_compositional`] writes a compositional out-of-distribution split instead (train/,
//! test/ and ood/ folders over one dictionary; see [`CompositionalConfig`]).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::data::FloatType;
use crate::io::{OutTensor, write_json, write_safetensors};
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
        if !(self.magnitude.0 >= 0.0 && self.magnitude.1 > self.magnitude.0) {
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

/// The planted dictionary: unit-norm features (n, d) and firing probabilities (n).
#[derive(Clone, Debug)]
pub struct Truth {
    pub n: usize,
    pub d: usize,
    pub features: Vec<f32>,
    pub probability: Vec<f32>,
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

/// Row generator: the dictionary plus the sampling rules.
pub struct Generator {
    pub cfg: SynthConfig,
    pub truth: Truth,
    rng: ChaCha8Rng,
}

impl Generator {
    pub fn new(cfg: SynthConfig) -> Result<Generator> {
        cfg.validate()?;
        // Not `seed` itself: `train --seed` draws the SAE's initial decoder rows the same way
        // (normalised Gaussians from ChaCha8), and equal seeds would hand the trainer the
        // planted dictionary as its initialisation.
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x005E_EDDA_7A0F_5A1E);
        let features = random_directions(&mut rng, cfg.features, cfg.d_in);
        let probability = probabilities(cfg.features, cfg.active, cfg.density_decay);
        let truth = Truth {
            n: cfg.features,
            d: cfg.d_in,
            features,
            probability,
        };
        Ok(Generator { cfg, truth, rng })
    }

    /// Coefficients of one row (n), sparse in practice.
    #[allow(clippy::needless_range_loop)] // draws in feature order, as written
    pub fn coefficients(&mut self, out: &mut [f32]) {
        let c = &self.cfg;
        let (lo, hi) = c.magnitude;
        out.iter_mut().for_each(|v| *v = 0.0);
        let gs = c.group_size;
        let corr_end = c.correlated_groups * gs;
        let anti_end = corr_end + c.anticorrelated_groups * gs;
        // Correlated groups: the group fires with its mean probability; then all members do.
        for g in 0..c.correlated_groups {
            let members = g * gs..(g + 1) * gs;
            let p: f32 = self.truth.probability[members.clone()].iter().sum::<f32>() / gs as f32;
            if self.rng.random::<f32>() < p {
                for i in members {
                    out[i] = self.rng.random_range(lo..hi);
                }
            }
        }
        // Independent features (anti-correlated ones are thinned below).
        for i in corr_end..c.features {
            if self.rng.random::<f32>() < self.truth.probability[i] {
                out[i] = self.rng.random_range(lo..hi);
            }
        }
        // Anti-correlated groups: keep one active member at random.
        for g in 0..c.anticorrelated_groups {
            let base = corr_end + g * gs;
            let on: Vec<usize> = (base..base + gs).filter(|&i| out[i] != 0.0).collect();
            if on.len() > 1 {
                let keep = on[self.rng.random_range(0..on.len())];
                for i in on {
                    if i != keep {
                        out[i] = 0.0;
                    }
                }
            }
        }
        debug_assert!(anti_end <= c.features);
    }

    /// Rows (rows, d) and their coefficients (rows, n).
    pub fn rows(&mut self, rows: usize) -> (Vec<f32>, Vec<f32>) {
        let (n, d) = (self.cfg.features, self.cfg.d_in);
        let mut x = vec![0.0f32; rows * d];
        let mut coef = vec![0.0f32; rows * n];
        for r in 0..rows {
            let cr = &mut coef[r * n..(r + 1) * n];
            self.coefficients(cr);
            let xr = &mut x[r * d..(r + 1) * d];
            for (i, &c) in cr.iter().enumerate() {
                if c != 0.0 {
                    let f = &self.truth.features[i * d..(i + 1) * d];
                    for (a, &b) in xr.iter_mut().zip(f) {
                        *a += c * b;
                    }
                }
            }
            if self.cfg.noise > 0.0 {
                for a in xr.iter_mut() {
                    *a += self.cfg.noise * self.rng.sample::<f32, _>(StandardNormal);
                }
            }
        }
        (x, coef)
    }
}

/// Write truth.safetensors (features [n, d], probability [n]).
pub fn write_truth(path: &Path, t: &Truth) -> Result<()> {
    write_safetensors(
        path,
        &[
            OutTensor::f32("features", &[t.n, t.d], &t.features),
            OutTensor::f32("probability", &[t.n], &t.probability),
        ],
        None,
    )
}

/// Read a truth file (features [n, d]; probability optional).
pub fn read_truth(path: &Path) -> Result<Truth> {
    let bytes = crate::data::read_input(path)?;
    let st = crate::data::parse_safetensors(path, &bytes)?;
    let f = st.tensor("features").map_err(|_| {
        Error::input(format!(
            "{}: missing tensor \"features\" [n, d]",
            path.display()
        ))
    })?;
    if f.shape().len() != 2 || f.dtype() != safetensors::Dtype::F32 {
        return Err(Error::input(format!(
            "{}: tensor \"features\" is {:?} {:?}; expected F32 [n, d]",
            path.display(),
            f.dtype(),
            f.shape()
        )));
    }
    let (n, d) = (f.shape()[0], f.shape()[1]);
    let features = bytemuck::pod_collect_to_vec::<u8, f32>(f.data());
    let probability = match st.tensor("probability") {
        Ok(p) if p.dtype() == safetensors::Dtype::F32 && p.shape() == [n] => {
            bytemuck::pod_collect_to_vec::<u8, f32>(p.data())
        }
        _ => Vec::new(),
    };
    Ok(Truth {
        n,
        d,
        features,
        probability,
    })
}

/// `saeforge synth`: write DIR/shard-NNNNN.safetensors, DIR/truth.safetensors, DIR/synth.json.
pub fn write_dataset(out: &Path, cfg: SynthConfig) -> Result<Vec<PathBuf>> {
    let mut g = Generator::new(cfg)?;
    crate::io::create_dir(out)?;
    let c = g.cfg.clone();
    let mut paths = Vec::new();
    let mut done = 0usize;
    let mut i = 0usize;
    while done < c.tokens {
        let rows = c.shard_tokens.min(c.tokens - done);
        let (x, _) = g.rows(rows);
        let p = out.join(format!("shard-{i:05}.safetensors"));
        write_safetensors(
            &p,
            &[OutTensor::float(
                "activations",
                &[rows, c.d_in],
                &x,
                c.dtype.safetensors(),
            )],
            None,
        )?;
        paths.push(p);
        done += rows;
        i += 1;
    }
    write_truth(&out.join("truth.safetensors"), &g.truth)?;
    write_json(&out.join("synth.json"), &c)?;
    Ok(paths)
}

// ---------------------------------------------------------------- compositional split

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

/// Write `total` rows from `make` into DIR/shard-NNNNN.safetensors, `shard` rows per file.
fn write_shards(
    dir: &Path,
    total: usize,
    shard: usize,
    d: usize,
    dtype: FloatType,
    mut make: impl FnMut(usize) -> Vec<f32>,
) -> Result<Vec<PathBuf>> {
    crate::io::create_dir(dir)?;
    let mut paths = Vec::new();
    let mut done = 0usize;
    while done < total {
        let rows = shard.min(total - done);
        let x = make(rows);
        let p = dir.join(format!("shard-{:05}.safetensors", paths.len()));
        write_safetensors(
            &p,
            &[OutTensor::float(
                "activations",
                &[rows, d],
                &x,
                dtype.safetensors(),
            )],
            None,
        )?;
        paths.push(p);
        done += rows;
    }
    Ok(paths)
}

/// `saeforge synth --compositional`: DIR/train/, DIR/test/ (held-out, same distribution),
/// DIR/ood/ (shards), DIR/truth.safetensors (features [n, d], probability [n] = each
/// feature's firing rate in training, pool [n] u32: 0 probe, 1 in-distribution, 2 OOD) and
/// DIR/synth.json. Returns the three folders.
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
        write_shards(dir, tokens, c.shard_tokens, c.d_in, c.dtype, |rows| {
            g.rows(kind, rows).0
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
