//! The rest of "Toy Models of Superposition" (Elhage et al. 2022) beyond the sweeps and the
//! phase diagram: `saeforge toy --experiment NAME`, one module per experiment, each
//! training on the toy kernel family (either engine, `crate::toy::train`), writing
//! `OUT/results.json` and its figures (PNG + SVG), and printing a short table.
//!
//! - [`perturb`]: non-uniform superposition, the n 5 -> m 2 pentagon with one feature's
//!   density swept;
//! - [`correlated`]: feature sets that fire together or never together;
//! - [`graph`]: the feature geometry graph of the n 400 -> m 30 sweep, its components
//!   classified (digons, triangles, tetrahedra, pentagons, ...);
//! - [`dynamics`]: D_i and the loss during training, the energy-level jumps;
//! - [`adversarial`]: the optimal L2 attack on each feature against features per dimension;
//! - [`privileged`]: superposition in a privileged basis (h = ReLU(W x)), per-neuron stacks;
//! - [`abs`]: computation in superposition, y = |x| through fewer neurons than 2n;
//! - [`l1`]: an L1 penalty (or a top-k) on the hidden layer against superposition;
//! - [`intervene`]: an SAE trained on the toy model's hidden layer, its latents ablated and
//!   clamped inside the model's forward pass.
//!
//! The first five train the ReLU output model (`crate::toy::train`); the last four the
//! two-layer family of `crate::toy::mlp`. Figures: `plots_a` (perturb, correlated), each
//! experiment's own (geometry, dynamics, adversarial: their `chart`), `plots_neurons` (the
//! last four).

/// The `MlpConfig` of an MLP experiment's config `$cfg` (fields features, a `Features`, and
/// schedule, a `Schedule`): one instance per entry of `$density`, each with
/// I_i = importance_decay^i, penalty `$l1` and top-k `$topk` (without them: no penalty,
/// all m neurons).
macro_rules! mlp_config {
    ($cfg:expr, $spec:expr, $density:expr, $log_every:expr) => {{
        let e = $density.len();
        mlp_config!(
            $cfg,
            $spec,
            $density.clone(),
            vec![0.0; e],
            vec![$cfg.features.m as u32; e],
            $log_every
        )
    }};
    ($cfg:expr, $spec:expr, $density:expr, $l1:expr, $topk:expr, $log_every:expr) => {{
        let density: Vec<f32> = $density;
        let e = density.len();
        $crate::toy::mlp::MlpConfig {
            data: $crate::toy::ToyData {
                n: $cfg.features.n,
                m: $cfg.features.m,
                importance: $cfg.features.importance().repeat(e),
                density,
            },
            spec: $spec,
            l1: $l1,
            topk: $topk,
            // init_mlp draws Xavier-normal weights per instance.
            training: $cfg
                .schedule
                .recipe($crate::toy::Init::Xavier)
                .training($log_every),
        }
    }};
}

pub mod abs;
pub mod adversarial;
pub mod correlated;
pub mod dynamics;
pub mod graph;
pub mod intervene;
pub mod l1;
pub mod perturb;
pub mod plots_a;
pub mod plots_neurons;
pub mod privileged;

pub use crate::toy::{Features, Recipe, Run, Schedule};

use crate::gpu::Engine;
use crate::toy::Progress;
use crate::toy::args::{
    ToyArgs, check_common, check_densities, lab_flags, open_engine, progress_line,
};
use crate::{Error, Result};

/// Refuse flags the experiment `name` does not read (`allowed`: the optional flags it
/// does), then the common checks.
pub fn check_flags(a: &ToyArgs, name: &str, allowed: &[&str]) -> Result<()> {
    check_common(a)?;
    let mut given: Vec<(&str, bool)> = lab_flags(a).to_vec();
    given.extend([
        ("--features", a.features.is_some()),
        ("--hidden", a.hidden.is_some()),
        ("--importance-decay", a.importance_decay.is_some()),
        ("--density", a.density.is_some()),
        ("--density-range", a.density_range.is_some()),
        ("--linear", a.linear),
    ]);
    if let Some((flag, _)) = given.iter().find(|(f, g)| *g && !allowed.contains(f)) {
        return Err(Error::input(format!(
            "{flag} does not apply to --experiment {name} (it reads {})",
            if allowed.is_empty() {
                "none of the model flags".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    Ok(())
}

/// `--features` (at least 2), or `default`.
pub fn check_features(a: &ToyArgs, default: usize) -> Result<usize> {
    match a.features.unwrap_or(default) {
        n if n < 2 => Err(Error::input("--features: at least 2")),
        n => Ok(n),
    }
}

/// A hidden width the kernels hold (1 ..= 32), or an error naming the flag.
pub fn check_hidden(m: usize) -> Result<usize> {
    let max = crate::kernels::toy::MAX_HIDDEN;
    if m == 0 || m > max {
        return Err(Error::input(format!(
            "--hidden {m}: between 1 and {max} hidden dimensions"
        )));
    }
    Ok(m)
}

/// One density in (0, 1] from `--density` (exactly one value), or `default`.
pub fn one_density(a: &ToyArgs, default: f32) -> Result<f32> {
    match a.density.as_deref() {
        None => Ok(default),
        Some([d]) => check_densities(&[*d]).map(|()| *d),
        Some(_) => Err(Error::input("--density: this experiment takes one value")),
    }
}

/// Densities from `--density-range LO:HI:COUNT` (HI at most 1), or `default`.
pub fn density_range(a: &ToyArgs, default: (f64, f64, usize)) -> Result<Vec<f32>> {
    let (lo, hi, k) = crate::toy::args::density_bounds(a, default)?;
    Ok(crate::toy::log_space(lo, hi, k))
}

/// The start of the `main` of experiment `what` ("toy NAME"): refuse a model of `shape`
/// (instances, n, m, batch) that would not fit (`more`: what to lower, as
/// `check_toy_memory` says), open the engine; returns it and the progress line to train
/// with.
pub fn start(
    a: &ToyArgs,
    what: &'static str,
    shape: [usize; 4],
    more: &str,
) -> Result<(Engine, impl FnMut(&Progress) + use<>)> {
    crate::toy::args::check_toy_memory(what, shape, more)?;
    Ok((open_engine(a)?, progress_line(what)))
}

/// What the experiments that sweep the densities of an n -> m model tell to lower when it
/// would not fit.
pub const SWEEP_SIZE: &str = "--features or the densities (--density-range)";

/// Print the files written under `dir`.
pub fn wrote(dir: &std::path::Path, files: &[&str]) {
    println!("wrote {}: {}", dir.display(), files.join(", "));
}

/// Cosine of two vectors (0 when either is zero).
pub fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        0.0
    }
}
