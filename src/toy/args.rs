//! The options of `saeforge toy` (clap) and their checks, shared by the sweep, the phase
//! diagram (`cli::toy`) and every experiment of the lab (`lab`), each of which builds its
//! configuration from them. They live beside the lab rather than under `cli/` so that the
//! lab depends on them and not on the command line's dispatch.

use std::path::PathBuf;

use super::{Init, Progress};
use crate::gpu::EngineArgs;
use crate::{Error, Result};

/// The lab's experiments (`--experiment`), one module each under `crate::toy::lab`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// Non-uniform superposition: the n 5 -> m 2 pentagon with feature 5's density swept.
    Perturb,
    /// Feature sets that fire together (--correlation correlated) or never together.
    Correlated,
    /// The feature geometry graph of the n 400 -> m 30 sweep, components classified.
    Geometry,
    /// D_i and the loss during training: the energy-level jumps.
    Dynamics,
    /// The optimal L2 attack on each feature against features per dimension.
    Adversarial,
    /// Superposition in a privileged basis: h = ReLU(W x), per-neuron stacked bars.
    Privileged,
    /// Computation in superposition: y = |x| through a ReLU hidden layer.
    Abs,
    /// An L1 penalty (and a top-k) on the hidden layer against superposition.
    L1,
    /// An SAE trained on the toy model's hidden layer; its latents ablated / clamped.
    Intervene,
}

/// `--correlation`: how the features of a set fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Correlation {
    Correlated,
    Anticorrelated,
}

#[derive(clap::Args, Debug)]
pub struct ToyArgs {
    /// Features n [default: 5].
    #[arg(long)]
    pub features: Option<usize>,
    /// Hidden dimensions m (at most 32) [default: 2].
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Feature importance I_i = R^i (i from 0); 1 for equal importance [default: 0.9].
    #[arg(long, value_name = "R")]
    pub importance_decay: Option<f32>,
    /// Feature densities 1 - S, one instance each, comma-separated (e.g. 1,0.3,0.1).
    /// (perturb: the four unperturbed features' density; correlated, dynamics: one value.)
    #[arg(long, value_delimiter = ',')]
    pub density: Option<Vec<f32>>,
    /// COUNT densities log-spaced from HI down to LO [default: 0.05:1:10, the paper's
    /// 20^-linspace(0, 1, 10); with --phase 0.01:1:15].
    #[arg(long, value_name = "LO:HI:COUNT")]
    pub density_range: Option<String>,
    /// Train the linear model x' = W^T W x + b instead of the ReLU output model.
    #[arg(long)]
    pub linear: bool,
    /// Training steps [default: 10000; geometry 4000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Batch rows per instance and step [default: 1024; geometry 256].
    #[arg(long)]
    pub batch: Option<usize>,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// AdamW decoupled weight decay (torch.optim.AdamW's default).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// W's initialisation: notebook (the authors' notebook: Xavier-normal over the
    /// (instances, n, m) parameter, std sqrt(2 / (m (n + instances)))) or xavier (per
    /// instance, W (m, n): std sqrt(2 / (n + m))) [default: notebook]. Not read by the
    /// privileged, abs, l1 and intervene experiments (their models start Xavier-normal).
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// Seed of the initialisation and of the data hash.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: results.json and the figures (PNG and SVG).
    #[arg(long, default_value = "toy")]
    pub out: PathBuf,
    /// Draw the n = 2 -> m = 1 phase diagram (relative importance of feature 2 against
    /// density) instead of a sweep.
    #[arg(long)]
    pub phase: bool,
    /// With --phase: COUNT relative importances of feature 2, log-spaced from LO to HI
    /// [default: 0.1:10:15].
    #[arg(long, value_name = "LO:HI:COUNT")]
    pub importance_range: Option<String>,
    /// With --phase: restarts per cell (the lowest final loss wins); with --experiment
    /// perturb (per density) and correlated: instances trained, the lowest final loss
    /// reported [default: 4]. Refused elsewhere.
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Run one experiment of the lab instead of a sweep (README "Superposition lab"):
    /// perturb (n 5 -> m 2, the fifth feature's density swept), correlated (feature sets
    /// firing together or never together), geometry (the feature geometry graph of the
    /// n 400 -> m 30 sweep), dynamics (D_i and the loss during training, energy-level
    /// jumps), adversarial (the optimal L2 attack against features per dimension),
    /// privileged (a ReLU hidden layer: per-neuron stacks), abs (y = |x| computed in
    /// superposition), l1 (an L1 penalty or top-k on the hidden layer), intervene (an SAE
    /// on the hidden layer, its latents ablated and clamped inside the model).
    #[arg(long, value_enum, conflicts_with = "phase")]
    pub experiment: Option<Experiment>,
    /// correlated: features per set [default: 2].
    #[arg(long)]
    pub set_size: Option<usize>,
    /// correlated: number of sets (n = sets x set size) [default: 2].
    #[arg(long)]
    pub sets: Option<usize>,
    /// correlated: the sets' features fire together (correlated) or at most one at a time
    /// (anticorrelated) [default: correlated].
    #[arg(long, value_enum)]
    pub correlation: Option<Correlation>,
    /// geometry: an edge joins features i and j when |W_i_hat . W_j| exceeds this
    /// [default: 0.3].
    #[arg(long)]
    pub threshold: Option<f64>,
    /// dynamics: record D_i and the loss every this many steps [default: 25].
    #[arg(long)]
    pub record_every: Option<u64>,
    /// adversarial: the L2 radius of the attack on the input [default: 0.05].
    #[arg(long)]
    pub epsilon: Option<f64>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub lab_b: LabBArgs,
}

/// Parse LO:HI:COUNT.
pub fn parse_range(flag: &str, s: &str) -> Result<(f64, f64, usize)> {
    let bad = || {
        Error::input(format!(
            "{flag} {s:?}: expected LO:HI:COUNT with 0 < LO <= HI and COUNT >= 1, e.g. 0.05:1:20"
        ))
    };
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let lo: f64 = parts[0].trim().parse().map_err(|_| bad())?;
    let hi: f64 = parts[1].trim().parse().map_err(|_| bad())?;
    let count: usize = parts[2].trim().parse().map_err(|_| bad())?;
    if !(lo > 0.0 && lo <= hi && hi.is_finite() && count >= 1) {
        return Err(bad());
    }
    // COUNT instances of at least one feature and one row each, before the COUNT values
    // themselves are made.
    crate::io::check_host_memory(
        &format!("{flag} {s} ({count} instances)"),
        toy_bytes(count, 1, 1, 1),
        "lower COUNT",
    )?;
    Ok((lo, hi, count))
}

/// `--density`: at least one value, each a density.
pub fn check_density(d: &[f32]) -> Result<()> {
    if d.is_empty() {
        return Err(Error::input("--density: give at least one value"));
    }
    check_densities(d)
}

/// Every `--density` value a density 1 - S, in (0, 1].
pub fn check_densities(d: &[f32]) -> Result<()> {
    if let Some(v) = d.iter().find(|&&v| !(v > 0.0 && v <= 1.0)) {
        return Err(Error::input(format!(
            "--density {v}: a density 1 - S must be in (0, 1]"
        )));
    }
    Ok(())
}

/// `--density-range LO:HI:COUNT` (HI at most 1), or `default`.
pub fn density_bounds(a: &ToyArgs, default: (f64, f64, usize)) -> Result<(f64, f64, usize)> {
    let (lo, hi, k) = match &a.density_range {
        Some(r) => parse_range("--density-range", r)?,
        None => default,
    };
    if hi > 1.0 {
        return Err(Error::input(format!(
            "--density-range: densities must be at most 1, got {hi}"
        )));
    }
    Ok((lo, hi, k))
}

/// `--hidden M` within the kernels' limit.
pub fn check_max_hidden(m: usize) -> Result<()> {
    if m > crate::kernels::toy::MAX_HIDDEN {
        return Err(Error::input(format!(
            "--hidden {m}: at most {} hidden dimensions",
            crate::kernels::toy::MAX_HIDDEN
        )));
    }
    Ok(())
}

/// `--importance-decay R`: positive (and finite).
pub fn check_decay(r: f32) -> Result<f32> {
    if !(r > 0.0 && r.is_finite()) {
        return Err(Error::input(format!(
            "--importance-decay {r}: must be positive"
        )));
    }
    Ok(r)
}

/// The flags only the lab's experiments read, as (flag, given).
pub fn lab_flags(a: &ToyArgs) -> [(&'static str, bool); 12] {
    let b = &a.lab_b;
    [
        ("--set-size", a.set_size.is_some()),
        ("--sets", a.sets.is_some()),
        ("--correlation", a.correlation.is_some()),
        ("--threshold", a.threshold.is_some()),
        ("--record-every", a.record_every.is_some()),
        ("--epsilon", a.epsilon.is_some()),
        ("--l1-values", b.l1_values.is_some()),
        ("--topk-values", b.topk_values.is_some()),
        ("--sae-latents", b.sae_latents.is_some()),
        ("--sae-k", b.sae_k.is_some()),
        ("--sae-steps", b.sae_steps.is_some()),
        ("--capture-rows", b.capture_rows.is_some()),
    ]
}

/// `--restarts` (default 4), at least 1.
pub fn restarts(a: &ToyArgs) -> Result<usize> {
    match a.restarts.unwrap_or(4) {
        0 => Err(Error::input("--restarts must be at least 1")),
        r => Ok(r),
    }
}

/// What the run is, in the words of its flags: `--phase`, `--experiment NAME` or the sweep.
pub fn run_name(a: &ToyArgs) -> String {
    match (a.phase, a.experiment) {
        (_, Some(x)) => format!(
            "--experiment {}",
            clap::ValueEnum::to_possible_value(&x)
                .map_or_else(String::new, |v| v.get_name().to_string())
        ),
        (true, None) => "--phase".into(),
        (false, None) => "the sweep (no --phase or --experiment)".into(),
    }
}

/// Refuse the options of the recipe the run at hand ignores: `--restarts` outside
/// --phase, perturb and correlated; `--importance-range` outside --phase; `--init` for the
/// two-layer experiments, whose models start Xavier-normal.
fn check_ignored(a: &ToyArgs) -> Result<()> {
    use Experiment::*;
    let restarts = a.phase || matches!(a.experiment, Some(Perturb | Correlated));
    let init = !matches!(a.experiment, Some(Privileged | Abs | L1 | Intervene));
    let ignored = [
        (
            "--restarts",
            a.restarts.is_some() && !restarts,
            "--phase, --experiment perturb and --experiment correlated",
        ),
        (
            "--importance-range",
            a.importance_range.is_some() && !a.phase,
            "--phase",
        ),
        (
            "--init",
            a.init.is_some() && !init,
            "the sweep, --phase and the perturb, correlated, geometry, dynamics and adversarial experiments",
        ),
    ];
    match ignored.into_iter().find(|(_, bad, _)| *bad) {
        Some((flag, _, by)) => Err(Error::input(format!(
            "{flag} does not apply to {} (it is read by {by}); drop it",
            run_name(a)
        ))),
        None => Ok(()),
    }
}

/// Bytes a toy run holds at its largest for `instances` models of `n` features and `m`
/// hidden units trained on `batch` rows a step (`crate::toy::train`, `crate::toy::mlp`):
/// per instance the step's rows (x and g: n floats a row; h and dh: m; the loss), the
/// parameters (the MLP's untied layers, 2 n m + n + m, which bound the other family's),
/// their two Adam moments and gradient, the gradient partials of every chunk of
/// `CHUNK_ROWS` rows, and the densities and importances. Saturates rather than overflows.
pub fn toy_bytes(instances: usize, n: usize, m: usize, batch: usize) -> u128 {
    let [e, n, m, rows] = [instances, n, m, batch].map(|v| v as u128);
    let chunks = rows.div_ceil(super::train::CHUNK_ROWS as u128);
    let params = (2 * n).saturating_mul(m).saturating_add(n + m);
    let per_instance = rows
        .saturating_mul(2 * n + 2 * m + 1)
        .saturating_add(params.saturating_mul(chunks.saturating_add(4)))
        .saturating_add(2 * n);
    per_instance.saturating_mul(e).saturating_mul(4)
}

/// Refuse, before anything is allocated, a toy run (`what`: the command, e.g. "toy
/// geometry") whose buffers ([`toy_bytes`]) need more memory than this machine has: one
/// line naming the sizes, `--batch` and the flags (`lower`) that set the rest. An
/// allocation that fails would abort the process (exit 134) without a word.
pub fn check_toy_memory(
    what: &str,
    [instances, n, m, batch]: [usize; 4],
    lower: &str,
) -> Result<()> {
    crate::io::check_host_memory(
        &format!("{what}: {instances} instances of n {n} -> m {m} at --batch {batch}"),
        toy_bytes(instances, n, m, batch),
        &format!("lower --batch, or {lower}"),
    )
}

pub fn check_common(a: &ToyArgs) -> Result<()> {
    check_ignored(a)?;
    if a.steps == Some(0) {
        return Err(Error::input("--steps must be at least 1"));
    }
    if a.batch == Some(0) {
        return Err(Error::input("--batch must be at least 1"));
    }
    if a.experiment.is_none()
        && let Some((flag, _)) = lab_flags(a).into_iter().find(|(_, given)| *given)
    {
        return Err(Error::input(format!(
            "{flag} applies to --experiment only (see saeforge toy --help)"
        )));
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        return Err(Error::input(format!("--lr {}: must be positive", a.lr)));
    }
    if !(a.weight_decay >= 0.0 && a.weight_decay.is_finite()) {
        return Err(Error::input(format!(
            "--weight-decay {}: must be >= 0",
            a.weight_decay
        )));
    }
    Ok(())
}

pub fn progress_line(what: &str) -> impl FnMut(&Progress) + '_ {
    move |p: &Progress| {
        let k = p.batch_loss.len() as f64;
        let mean = p.batch_loss.iter().sum::<f64>() / k;
        let rate = p.step as f64 / p.seconds.max(1e-9);
        let eta = (p.steps - p.step) as f64 / rate.max(1e-9);
        eprintln!(
            "{what}: step {}/{}  mean batch loss {mean:.5}  {rate:.0} steps/s  ETA {eta:.0} s",
            p.step, p.steps
        );
    }
}

/// Flags of the privileged / abs / l1 / intervene experiments.
#[derive(clap::Args, Debug, Default)]
pub struct LabBArgs {
    /// --experiment l1: the L1 penalties, one instance each [default: 0,0.01,0.03,0.1,0.2,0.3,0.5,1].
    #[arg(long, value_delimiter = ',')]
    pub l1_values: Option<Vec<f32>>,
    /// --experiment l1: the k of the top-k run, one instance each; 0 alone: no top-k run
    /// [default: 1..m].
    #[arg(long, value_delimiter = ',')]
    pub topk_values: Option<Vec<u32>>,
    /// --experiment intervene: SAE latents [default: 2 n].
    #[arg(long)]
    pub sae_latents: Option<usize>,
    /// --experiment intervene: SAE top-k [default: 2].
    #[arg(long)]
    pub sae_k: Option<usize>,
    /// --experiment intervene: SAE training steps [default: 3000].
    #[arg(long)]
    pub sae_steps: Option<u64>,
    /// --experiment intervene: rows of hidden activations captured for the SAE
    /// [default: 65536].
    #[arg(long)]
    pub capture_rows: Option<usize>,
}

/// Validate the flags of a lab experiment, then open the engine `--device` picks.
pub fn open_engine(a: &ToyArgs) -> Result<crate::gpu::Engine> {
    crate::io::check_output_dir("--out", &a.out)?;
    let (engine, why) = a.engine.select()?;
    eprintln!("{why}");
    Ok(engine)
}
