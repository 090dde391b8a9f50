//! The row generator: the planted dictionary plus the sampling rules, plain or structured.
//!
//! Plain (the world `synth` has always written, byte for byte): each feature switches on
//! independently with probability p_i (correlated groups fire together, anti-correlated
//! groups keep at most one member), magnitude U[lo, hi).
//!
//! Structured (any of hierarchy, correlation, firing range, Gaussian magnitudes), in this
//! order per row: the firing set (Bernoulli(p_i), or the low-rank Gaussian copula), a
//! magnitude for each firing feature (U[lo, hi) or max(0, mean_i + std_i N(0, 1)), in
//! ascending feature order), then the hierarchy's gating (see [`super::hierarchy`]).
//!
//! Then, in both: x = sum_i c_i f_i (ascending i) + bias, + noise N(0, noise^2) per
//! coordinate. Every draw comes from ChaCha8 streams seeded by `seed`: the dictionary and
//! the rows from one stream (as before), the structure (forest, correlation factor,
//! per-feature magnitudes, bias direction) from streams of their own, so adding a bias to a
//! plain world changes no other draw.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::codes::SparseCodes;
use super::config::{SynthConfig, probabilities, random_directions};
use super::correlation::LowRank;
use super::hierarchy::Forest;
use super::structure::{Structure, zipf_range};
use crate::Result;

/// The planted dictionary: unit-norm features (n, d), firing probabilities (n), and the
/// structure a structured world adds (empty vectors / None when absent).
#[derive(Clone, Debug, Default)]
pub struct Truth {
    pub n: usize,
    pub d: usize,
    pub features: Vec<f32>,
    /// Each feature's target firing rate.
    pub probability: Vec<f32>,
    /// (d) added to every row; empty when none.
    pub bias: Vec<f32>,
    /// Per feature: its parent in the hierarchy, or -1; empty when no hierarchy.
    pub parent: Vec<i32>,
    /// Per feature: 1 if its children are mutually exclusive; empty when no hierarchy.
    pub exclusive_children: Vec<i32>,
    /// The probability each feature is drawn with before the hierarchy's gating (raised
    /// by the compensation); empty when equal to `probability`.
    pub sampling_probability: Vec<f32>,
    /// Gaussian magnitudes' per-feature mean and std; empty with U[lo, hi) magnitudes.
    pub magnitude_mean: Vec<f32>,
    pub magnitude_std: Vec<f32>,
    /// Low-rank correlation: factor (n, rank) and diagonal (n); None without.
    pub correlation: Option<(usize, Vec<f32>, Vec<f32>)>,
}

/// Stream salts: one ChaCha8 stream per part of the world.
const DICTIONARY: u64 = 0x005E_EDDA_7A0F_5A1E;
const BIAS: u64 = 0xB1A5_0F5A_1E00_0001;
const HIERARCHY: u64 = 0x41E2_A2C4_0F5A_1E00;
const CORRELATION: u64 = 0xC022_E1A7_0F5A_1E00;
const MAGNITUDE: u64 = 0x3A61_17DE_0F5A_1E00;

/// What the structured sampler needs beyond the truth.
struct World {
    forest: Option<Forest>,
    copula: Option<LowRank>,
    /// Sampling probabilities (after compensation).
    p: Vec<f32>,
    /// Gaussian magnitudes (mean, std) or None for U[lo, hi).
    gaussian: Option<(Vec<f32>, Vec<f32>)>,
    fired: Vec<usize>,
    eps: Vec<f32>,
    scratch: Vec<usize>,
}

/// Row generator: the dictionary plus the sampling rules.
pub struct Generator {
    pub cfg: SynthConfig,
    pub structure: Structure,
    pub truth: Truth,
    rng: ChaCha8Rng,
    world: Option<World>,
}

impl Generator {
    /// The plain world.
    pub fn new(cfg: SynthConfig) -> Result<Generator> {
        Generator::with_structure(cfg, Structure::default())
    }

    pub fn with_structure(cfg: SynthConfig, structure: Structure) -> Result<Generator> {
        cfg.validate()?;
        structure.validate(&cfg)?;
        // Not `seed` itself: `train --seed` draws the SAE's initial decoder rows the same way
        // (normalised Gaussians from ChaCha8), and equal seeds would hand the trainer the
        // planted dictionary as its initialisation.
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ DICTIONARY);
        let (n, d) = (cfg.features, cfg.d_in);
        let features = random_directions(&mut rng, n, d);
        let probability = match structure.firing_range {
            Some((lo, hi)) => zipf_range(n, cfg.density_decay, lo, hi),
            None => probabilities(n, cfg.active, cfg.density_decay),
        };
        let mut truth = Truth {
            n,
            d,
            features,
            probability,
            ..Truth::default()
        };
        if structure.bias > 0.0 {
            let mut r = ChaCha8Rng::seed_from_u64(cfg.seed ^ BIAS);
            let dir = random_directions(&mut r, 1, d);
            truth.bias = dir.iter().map(|&v| v * structure.bias as f32).collect();
        }
        let world = structure
            .structured()
            .then(|| build_world(&cfg, &structure, &mut truth));
        Ok(Generator {
            cfg,
            structure,
            truth,
            rng,
            world,
        })
    }

    /// Coefficients of one row (n), sparse in practice.
    pub fn coefficients(&mut self, out: &mut [f32]) {
        if self.world.is_some() {
            self.structured_coefficients(out);
        } else {
            self.plain_coefficients(out);
        }
    }

    fn plain_coefficients(&mut self, out: &mut [f32]) {
        let c = &self.cfg;
        let (lo, hi) = c.magnitude;
        out.iter_mut().for_each(|v| *v = 0.0);
        let gs = c.group_size;
        let corr_end = c.correlated_groups * gs;
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
        for (o, &p) in out[corr_end..c.features]
            .iter_mut()
            .zip(&self.truth.probability[corr_end..])
        {
            if self.rng.random::<f32>() < p {
                *o = self.rng.random_range(lo..hi);
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
    }

    fn structured_coefficients(&mut self, out: &mut [f32]) {
        let (lo, hi) = self.cfg.magnitude;
        let w = self.world.as_mut().expect("structured world");
        let rng = &mut self.rng;
        out.iter_mut().for_each(|v| *v = 0.0);
        w.fired.clear();
        match &w.copula {
            Some(c) => c.fire(rng, &mut w.eps, &mut w.fired),
            None => {
                for (i, &p) in w.p.iter().enumerate() {
                    if rng.random::<f32>() < p {
                        w.fired.push(i);
                    }
                }
            }
        }
        for &i in &w.fired {
            out[i] = match &w.gaussian {
                Some((mean, std)) => {
                    let z: f32 = rng.sample(StandardNormal);
                    (mean[i] + std[i] * z).max(0.0)
                }
                None => rng.random_range(lo..hi),
            };
        }
        if let Some(f) = &w.forest {
            f.apply(out, rng, &mut w.scratch);
        }
    }

    /// One row: its codes (n) into `coef`, its activations (d) into `x`.
    fn row(&mut self, coef: &mut [f32], x: &mut [f32]) {
        let d = self.cfg.d_in;
        self.coefficients(coef);
        x.iter_mut().for_each(|v| *v = 0.0);
        for (i, &c) in coef.iter().enumerate() {
            if c != 0.0 {
                let f = &self.truth.features[i * d..(i + 1) * d];
                for (a, &b) in x.iter_mut().zip(f) {
                    *a += c * b;
                }
            }
        }
        for (a, &b) in x.iter_mut().zip(&self.truth.bias) {
            *a += b;
        }
        if self.cfg.noise > 0.0 {
            for a in x.iter_mut() {
                *a += self.cfg.noise * self.rng.sample::<f32, _>(StandardNormal);
            }
        }
    }

    /// Rows (rows, d) and their coefficients (rows, n).
    pub fn rows(&mut self, rows: usize) -> (Vec<f32>, Vec<f32>) {
        let (n, d) = (self.cfg.features, self.cfg.d_in);
        let mut x = vec![0.0f32; rows * d];
        let mut coef = vec![0.0f32; rows * n];
        for (cr, xr) in coef.chunks_exact_mut(n).zip(x.chunks_exact_mut(d)) {
            self.row(cr, xr);
        }
        (x, coef)
    }

    /// Rows (rows, d) and their coefficients as CSR (memory: one dense row of n).
    pub fn rows_sparse(&mut self, rows: usize) -> (Vec<f32>, SparseCodes) {
        let (n, d) = (self.cfg.features, self.cfg.d_in);
        let mut x = vec![0.0f32; rows * d];
        let mut coef = vec![0.0f32; n];
        let mut codes = SparseCodes::new(n);
        for xr in x.chunks_exact_mut(d) {
            self.row(&mut coef, xr);
            codes.push_dense(&coef);
        }
        (x, codes)
    }
}

/// The forest, the copula, sampling probabilities and magnitudes of a structured world,
/// recording them in the truth.
fn build_world(cfg: &SynthConfig, s: &Structure, truth: &mut Truth) -> World {
    let n = cfg.features;
    let seed = cfg.seed;
    let mut p = truth.probability.clone();
    let forest = s.hierarchy.as_ref().map(|h| {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ HIERARCHY);
        let f = Forest::grow(n, h, &mut r);
        if h.compensate {
            let factor = f.compensation(&truth.probability);
            for (q, k) in p.iter_mut().zip(factor) {
                *q = ((*q as f64) * k).min(1.0) as f32;
            }
        }
        truth.parent = f.parent.clone();
        truth.exclusive_children = f.exclusive.iter().map(|&e| e as i32).collect();
        f
    });
    if p != truth.probability {
        truth.sampling_probability = p.clone();
    }
    let copula = s.correlation.as_ref().map(|c| {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ CORRELATION);
        let lr = LowRank::new(n, c.rank, c.scale, &p, &mut r);
        truth.correlation = Some((lr.rank, lr.factor.clone(), lr.diag.clone()));
        lr
    });
    let gaussian = (s.magnitude_mean.is_some() || s.magnitude_std.is_some()).then(|| {
        use super::structure::PerFeature;
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ MAGNITUDE);
        let mean_spec = s
            .magnitude_mean
            .clone()
            .unwrap_or(PerFeature::Constant(1.0));
        let std_spec = s.magnitude_std.clone().unwrap_or(PerFeature::Constant(0.0));
        let mean = mean_spec.values(n, || r.sample(StandardNormal));
        let std = std_spec.values(n, || r.sample(StandardNormal));
        truth.magnitude_mean = mean.clone();
        truth.magnitude_std = std.clone();
        (mean, std)
    });
    World {
        forest,
        copula,
        p,
        gaussian,
        fired: Vec::new(),
        eps: Vec::new(),
        scratch: Vec::new(),
    }
}
