//! The structure real activations have, as SAELens's SynthSAEBench builds it: a feature
//! hierarchy, low-rank correlated firing, Zipf firing probabilities between a minimum and
//! a maximum, per-feature magnitude means and spreads, and a bias. Settings only; the
//! sampling is in [`super::generator`], the forest in [`super::hierarchy`], the copula in
//! [`super::correlation`].

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the hierarchy forest is grown (SAELens's `HierarchyConfig`): `roots` trees whose
/// nodes are the lowest feature indices, grown breadth first, each parent getting
/// U{branching.0 ..= branching.1} children, down to `depth` levels below the roots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HierarchySettings {
    pub roots: usize,
    /// Children per parent, inclusive range.
    pub branching: (usize, usize),
    /// Levels below the roots (1: parents with leaf children).
    pub depth: usize,
    /// Fraction of parents (with >= 2 children) whose children are mutually exclusive.
    pub exclusive: f64,
    /// Raise the sampling probabilities so that each feature's firing rate stays near its
    /// target despite the gating by its parent and its exclusive siblings.
    pub compensate: bool,
}

/// Low-rank Gaussian-copula firing (SAELens's `LowRankCorrelationConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrelationSettings {
    pub rank: usize,
    /// Entries of the factor are N(0, scale^2).
    pub scale: f64,
}

/// A per-feature value: one for all, linear or exponential from the first feature to the
/// last, or drawn |N(mean, std^2)| per feature (SAELens's magnitude configs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerFeature {
    Constant(f64),
    Linear(f64, f64),
    Exponential(f64, f64),
    FoldedNormal(f64, f64),
}

/// As the flag is written (`V`, `linear:A:B`, ...), for messages.
impl std::fmt::Display for PerFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            PerFeature::Constant(v) => write!(f, "{v}"),
            PerFeature::Linear(a, b) => write!(f, "linear:{a}:{b}"),
            PerFeature::Exponential(a, b) => write!(f, "exponential:{a}:{b}"),
            PerFeature::FoldedNormal(m, s) => write!(f, "folded-normal:{m}:{s}"),
        }
    }
}

impl PerFeature {
    /// Parse `V`, `linear:A:B`, `exponential:A:B` or `folded-normal:MEAN:STD`.
    pub fn parse(flag: &str, s: &str) -> Result<PerFeature> {
        let bad = || {
            Error::input(format!(
                "--{flag} {s:?}: expected V, linear:A:B, exponential:A:B or folded-normal:MEAN:STD"
            ))
        };
        let num = |t: &str| t.trim().parse::<f64>().map_err(|_| bad());
        let parts: Vec<&str> = s.split(':').collect();
        match parts[..] {
            [v] => Ok(PerFeature::Constant(num(v)?)),
            ["linear", a, b] => Ok(PerFeature::Linear(num(a)?, num(b)?)),
            ["exponential", a, b] => Ok(PerFeature::Exponential(num(a)?, num(b)?)),
            ["folded-normal", a, b] => Ok(PerFeature::FoldedNormal(num(a)?, num(b)?)),
            _ => Err(bad()),
        }
    }

    fn check(&self, flag: &str) -> Result<()> {
        let bad = |m: &str| Err(Error::input(format!("--{flag} {self}: {m}")));
        let finite = |v: f64| v.is_finite();
        match *self {
            PerFeature::Constant(v) if !(finite(v) && v >= 0.0) => {
                bad("expected a finite value >= 0")
            }
            PerFeature::Linear(a, b) if !(finite(a) && finite(b) && a >= 0.0 && b >= 0.0) => {
                bad("expected finite ends >= 0")
            }
            PerFeature::Exponential(a, b) if !(finite(a) && finite(b) && a > 0.0 && b > 0.0) => {
                bad("expected finite ends > 0")
            }
            PerFeature::FoldedNormal(m, s) if !(finite(m) && finite(s) && s > 0.0) => {
                bad("expected a finite mean and a std > 0")
            }
            _ => Ok(()),
        }
    }

    /// The n values; `normal` draws N(0, 1) for the folded normal.
    pub fn values(&self, n: usize, mut normal: impl FnMut() -> f64) -> Vec<f32> {
        let t = |i: usize| {
            if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            }
        };
        (0..n)
            .map(|i| match *self {
                PerFeature::Constant(v) => v,
                PerFeature::Linear(a, b) => a + (b - a) * t(i),
                PerFeature::Exponential(a, b) => a * (b / a).powf(t(i)),
                PerFeature::FoldedNormal(m, s) => (m + s * normal()).abs(),
            } as f32)
            .collect()
    }
}

/// Everything beyond the plain world. The default is the plain world (no structure).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Structure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy: Option<HierarchySettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<CorrelationSettings>,
    /// Zipf firing probabilities between MIN and MAX: p_i = min + (max - min)
    /// (r_i^-e - n^-e) / (1 - n^-e) with r_i = i + 1 and e = `density_decay` (SAELens's
    /// `zipfian_firing_probabilities`), instead of probabilities summing to `active`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firing_range: Option<(f64, f64)>,
    /// Gaussian magnitudes max(0, mean_i + std_i N(0, 1)) instead of U[lo, hi).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnitude_mean: Option<PerFeature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnitude_std: Option<PerFeature>,
    /// Norm of a random bias direction added to every row (0: none).
    #[serde(skip_serializing_if = "is_zero")]
    pub bias: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Structure {
    /// Does any setting need the structured sampler? (A bias alone does not: it is added
    /// after the plain sampler's rows, drawn from a stream of its own.)
    pub fn structured(&self) -> bool {
        self.hierarchy.is_some()
            || self.correlation.is_some()
            || self.firing_range.is_some()
            || self.magnitude_mean.is_some()
            || self.magnitude_std.is_some()
    }

    /// Anything at all beyond the plain world.
    pub fn is_plain(&self) -> bool {
        !self.structured() && self.bias == 0.0
    }

    /// Check the settings against the plain ones (one line naming the flag).
    pub fn validate(&self, cfg: &super::SynthConfig) -> Result<()> {
        let bad = |m: String| Err(Error::input(m));
        if self.structured() && cfg.correlated_groups + cfg.anticorrelated_groups > 0 {
            return bad(format!(
                "--{}-groups does not combine with --hierarchy, --correlation-rank, --firing-range or --magnitude-mean/--magnitude-std: use --correlation-rank for correlated firing and --mutually-exclusive for exclusive siblings",
                if cfg.correlated_groups > 0 {
                    "correlated"
                } else {
                    "anticorrelated"
                }
            ));
        }
        if let Some(h) = &self.hierarchy {
            if h.roots == 0 || h.roots > cfg.features {
                return bad(format!(
                    "--hierarchy {}: expected 1 ..= --features ({}) root features",
                    h.roots, cfg.features
                ));
            }
            if h.branching.0 < 2 || h.branching.1 < h.branching.0 {
                return bad(format!(
                    "--branching {}:{}: expected 2 <= LO <= HI children per parent",
                    h.branching.0, h.branching.1
                ));
            }
            if h.depth == 0 {
                return bad("--hierarchy-depth 0: expected at least 1".into());
            }
            if !(0.0..=1.0).contains(&h.exclusive) {
                return bad(format!(
                    "--mutually-exclusive {}: expected a fraction in 0 ..= 1",
                    h.exclusive
                ));
            }
        }
        if let Some(c) = &self.correlation {
            if c.rank == 0 || c.rank > cfg.features {
                return bad(format!(
                    "--correlation-rank {}: expected 1 ..= --features ({})",
                    c.rank, cfg.features
                ));
            }
            if !(c.scale.is_finite() && c.scale >= 0.0) {
                return bad(format!(
                    "--correlation-scale {}: expected a finite value >= 0",
                    c.scale
                ));
            }
        }
        if let Some((lo, hi)) = self.firing_range {
            if !(lo > 0.0 && lo < hi && hi <= 1.0) {
                return bad(format!(
                    "--firing-range {lo}:{hi}: expected 0 < MIN < MAX <= 1"
                ));
            }
            if cfg.density_decay <= 0.0 {
                return bad(format!(
                    "--firing-range needs --density-decay > 0 (the Zipf exponent; got {})",
                    cfg.density_decay
                ));
            }
        }
        if let Some(m) = &self.magnitude_mean {
            m.check("magnitude-mean")?;
        }
        if let Some(s) = &self.magnitude_std {
            s.check("magnitude-std")?;
        }
        if !(self.bias.is_finite() && self.bias >= 0.0) {
            return bad(format!("--bias {}: expected a finite norm >= 0", self.bias));
        }
        Ok(())
    }
}

/// SAELens's Zipf probabilities: rank r = i + 1, w = r^-e, scaled affinely so that the
/// first feature has `max` and the last `min`.
pub fn zipf_range(n: usize, exponent: f64, min: f64, max: f64) -> Vec<f32> {
    if n == 1 {
        return vec![max as f32];
    }
    let w: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-exponent)).collect();
    let (wmin, wmax) = (w[n - 1], w[0]);
    w.iter()
        .map(|&x| (min + (max - min) * (x - wmin) / (wmax - wmin)) as f32)
        .collect()
}
