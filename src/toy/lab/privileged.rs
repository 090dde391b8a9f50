//! `toy --experiment privileged`: superposition in a privileged basis (the paper's section
//! "Superposition in a Privileged Basis"). The model h = ReLU(W x), x' = ReLU(W^T h + b) is
//! trained at several densities at once; each neuron's weights W[k, :] are drawn as a
//! stacked bar (one block per feature, height |w|) and classified by [`classify`].
//!
//! The paper: with dense features, neurons are monosemantic (each the m most important
//! features' own); as features get sparser, more features are represented than neurons
//! and the neurons become polysemantic.

use std::path::Path;

use crate::Result;
use crate::gpu::Engine;
use crate::reference::toy_mlp::{HiddenAct, MlpShape, MlpSpec};
use crate::toy::Log;
use crate::toy::mlp::{MlpConfig, init_mlp, train_mlp};
use crate::toy::plots::density_label;

use super::plots_neurons::StackPanel;
use super::{Features, Run, Schedule};

/// A neuron whose firing weights' norm is below this is dead (neither kind).
pub const DEAD_NORM: f64 = 0.1;
/// A neuron is monosemantic when its largest firing weight carries at least this share of
/// the squared norm of its firing weights.
pub const MONO_SHARE: f64 = 0.9;

/// How a neuron is classified: its *firing* weights are the ones through which an input can
/// make it fire (the positive ones when inputs are >= 0; all of them when inputs have both
/// signs). Dead: their norm is below [`DEAD_NORM`]. Monosemantic: the largest squared one
/// is at least [`MONO_SHARE`] of their sum of squares. Polysemantic: otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NeuronKind {
    Dead,
    Monosemantic,
    Polysemantic,
}

impl NeuronKind {
    /// The neuron's mark in the stack plots.
    pub fn label(self) -> &'static str {
        match self {
            NeuronKind::Monosemantic => "M",
            NeuronKind::Polysemantic => "P",
            NeuronKind::Dead => "-",
        }
    }
}

/// How many of a model's neurons are of each [`NeuronKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NeuronCounts {
    pub monosemantic_neurons: usize,
    pub polysemantic_neurons: usize,
    pub dead_neurons: usize,
}

impl NeuronCounts {
    /// The printed tables' header of [`NeuronCounts::columns`].
    pub const HEADER: [&'static str; 3] = ["mono", "poly", "dead"];

    /// Count `kinds`, one per neuron.
    pub fn of(kinds: impl IntoIterator<Item = NeuronKind>) -> Self {
        let mut c = NeuronCounts::default();
        for k in kinds {
            *match k {
                NeuronKind::Monosemantic => &mut c.monosemantic_neurons,
                NeuronKind::Polysemantic => &mut c.polysemantic_neurons,
                NeuronKind::Dead => &mut c.dead_neurons,
            } += 1;
        }
        c
    }

    /// The three counts as the printed tables' columns.
    pub fn columns(&self) -> String {
        format!(
            "{:>6} {:>6} {:>5}",
            self.monosemantic_neurons, self.polysemantic_neurons, self.dead_neurons
        )
    }
}

impl StackPanel {
    /// A panel titled `title` with one bar per neuron: its weights, marked by its kind.
    pub fn of<'a>(title: String, neurons: impl Iterator<Item = (&'a [f32], NeuronKind)>) -> Self {
        StackPanel {
            title,
            neurons: neurons.map(|(w, k)| (w.to_vec(), k.label())).collect(),
        }
    }
}

/// The part of input weight `v` through which an input can make a neuron fire: all of it
/// when inputs have both signs (`signed`), else its positive part.
fn firing(v: f32, signed: bool) -> f64 {
    if signed {
        v as f64
    } else {
        (v as f64).max(0.0)
    }
}

/// Classify a neuron's input weights `w` (one per feature); `signed`: inputs of both signs.
/// Returns the kind and the feature with the largest firing weight.
pub fn classify(w: &[f32], signed: bool) -> (NeuronKind, usize) {
    let sq: Vec<f64> = w.iter().map(|&v| firing(v, signed).powi(2)).collect();
    let total: f64 = sq.iter().sum();
    let (top, &big) = sq
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap_or((0, &0.0));
    let kind = if total.sqrt() < DEAD_NORM {
        NeuronKind::Dead
    } else if big >= MONO_SHARE * total {
        NeuronKind::Monosemantic
    } else {
        NeuronKind::Polysemantic
    };
    (kind, top)
}

/// What the privileged and abs experiments run: one instance per density.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DensitySweep {
    /// n, m, I_i and 1 - S per instance (flat in results.json).
    #[serde(flatten)]
    pub features: Features,
    /// Steps, batch, AdamW and seed (flat in results.json).
    #[serde(flatten)]
    pub schedule: Schedule,
}

/// n = 10 features, m = 5 neurons, I_i = 0.75^i, seven densities from 1 to 0.01.
pub fn paper() -> DensitySweep {
    DensitySweep {
        features: Features {
            n: 10,
            m: 5,
            importance_decay: 0.75,
            density: crate::toy::log_space(0.01, 1.0, 7),
        },
        schedule: Schedule::notebook(),
    }
}

/// The model: ReLU hidden layer without bias, tied weights, ReLU output.
pub fn spec() -> MlpSpec {
    MlpSpec {
        act_h: HiddenAct::Relu,
        relu_out: true,
        tied: true,
        hidden_bias: false,
        signed: false,
        abs_target: false,
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Neuron {
    /// W[k, :], one weight per feature.
    pub weights: Vec<f32>,
    pub monosemantic: bool,
    pub kind: NeuronKind,
    /// The feature with the largest firing weight.
    pub top_feature: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PrivilegedInstance {
    pub density: f32,
    pub neurons: Vec<Neuron>,
    #[serde(flatten)]
    pub counts: NeuronCounts,
    /// Features whose firing weights W[:, i] (positive ones for inputs >= 0) have norm
    /// above 0.5: features some neuron fires for.
    pub features_represented: usize,
    pub loss: f64,
    pub bias: Vec<f32>,
}

/// A finished privileged or abs run, instances `I`, as written to results.json.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DensitySweepResult<I> {
    pub experiment: &'static str,
    /// The configuration, the engine and the training's wall time (flat in results.json).
    #[serde(flatten)]
    pub run: Run<DensitySweep>,
    /// The monosemantic rule, in words.
    pub rule: String,
    pub instances: Vec<I>,
}

pub type PrivilegedResult = DensitySweepResult<PrivilegedInstance>;

impl<I: serde::Serialize> DensitySweepResult<I> {
    /// Write DIR/results.json and neurons.{png,svg}, one stack panel per instance under
    /// `title`; returns the files written.
    pub(super) fn write_stacks(
        &self,
        dir: &Path,
        title: &str,
        panel: impl Fn(&I) -> StackPanel,
    ) -> Result<Vec<String>> {
        crate::toy::write_results(dir, self)?;
        let panels: Vec<StackPanel> = self.instances.iter().map(panel).collect();
        super::plots_neurons::stacks(dir, "neurons", title, self.run.config.features.n, &panels)?;
        Ok(vec!["results.json".into(), "neurons.{png,svg}".into()])
    }
}

/// The rule in words, for results.json and the README.
pub fn rule_text(signed: bool) -> String {
    let which = if signed {
        "all its input weights (inputs have both signs)"
    } else {
        "its positive input weights (inputs are >= 0)"
    };
    format!(
        "firing weights of a neuron = {which}; dead if their norm < {DEAD_NORM}; \
         monosemantic if the largest squared firing weight is >= {MONO_SHARE} of their sum \
         of squares; polysemantic otherwise"
    )
}

/// Train `mc` (parameters from `init_mlp` with its seed) and map each instance's
/// parameters and final loss through `each`; returns them and the training seconds.
pub(super) fn train_instances<T>(
    engine: &Engine,
    mc: &MlpConfig,
    log: Log<'_>,
    each: impl Fn(usize, &[f32], f64) -> T,
) -> Result<(Vec<T>, f64)> {
    let (shape, p) = (mc.shape(), mc.shape().params());
    let t = train_mlp(engine, mc, init_mlp(shape, mc.spec, mc.training.seed), log)?;
    let out = (0..mc.instances())
        .map(|inst| {
            each(
                inst,
                &t.params[inst * p..(inst + 1) * p],
                t.final_loss[inst],
            )
        })
        .collect();
    Ok((out, t.seconds))
}

impl DensitySweep {
    /// Train `spec` at every density at once and map each instance's shape, density,
    /// parameters and final loss through `each`.
    pub(super) fn run<I>(
        &self,
        experiment: &'static str,
        spec: MlpSpec,
        engine: &Engine,
        log_every: u64,
        log: Log<'_>,
        each: impl Fn(MlpShape, f32, &[f32], f64) -> I,
    ) -> Result<DensitySweepResult<I>> {
        let cfg = self;
        let mc = mlp_config!(cfg, spec, cfg.features.density, log_every);
        let (instances, seconds) = train_instances(engine, &mc, log, |inst, w, loss| {
            each(mc.shape(), cfg.features.density[inst], w, loss)
        })?;
        Ok(DensitySweepResult {
            experiment,
            run: Run::new(cfg, engine, seconds),
            rule: rule_text(spec.signed),
            instances,
        })
    }
}

/// Train every density at once and classify the neurons.
pub fn run(
    engine: &Engine,
    cfg: &DensitySweep,
    log_every: u64,
    log: Log<'_>,
) -> Result<PrivilegedResult> {
    cfg.run(
        "privileged",
        spec(),
        engine,
        log_every,
        log,
        |shape, density, w, loss| PrivilegedInstance {
            density,
            loss,
            ..summarize(shape, w, false)
        },
    )
}

/// Classify the neurons of one instance's parameters `w` (density and loss left at 0).
pub fn summarize(shape: MlpShape, w: &[f32], signed: bool) -> PrivilegedInstance {
    let (n, m) = (shape.n, shape.m);
    let neurons: Vec<Neuron> = (0..m)
        .map(|k| {
            let weights = w[k * n..(k + 1) * n].to_vec();
            let (kind, top_feature) = classify(&weights, signed);
            Neuron {
                weights,
                monosemantic: kind == NeuronKind::Monosemantic,
                kind,
                top_feature,
            }
        })
        .collect();
    let features_represented = (0..n)
        .filter(|&i| {
            (0..m)
                .map(|k| firing(w[k * n + i], signed).powi(2))
                .sum::<f64>()
                .sqrt()
                > 0.5
        })
        .count();
    let (_, _, ob2) = shape.offsets();
    PrivilegedInstance {
        density: 0.0,
        counts: NeuronCounts::of(neurons.iter().map(|u| u.kind)),
        features_represented,
        neurons,
        loss: 0.0,
        bias: w[ob2..ob2 + n].to_vec(),
    }
}

/// Write DIR/results.json and neurons.{png,svg}; returns the files written.
pub fn write(dir: &Path, r: &PrivilegedResult) -> Result<Vec<String>> {
    let title = format!(
        "Privileged basis: h = ReLU(W x), x' = ReLU(W\u{1d40} h + b), n = {}, m = {}; \
         each bar a neuron, blocks |W[k, i]| by feature (pale, below the axis: negative)",
        r.run.config.features.n, r.run.config.features.m
    );
    r.write_stacks(dir, &title, |i| {
        let neurons = i.neurons.iter().map(|u| (&u.weights[..], u.kind));
        StackPanel::of(density_label(i.density), neurons)
    })
}

/// The printed table.
pub fn table(r: &PrivilegedResult) -> String {
    let [mono, poly, dead] = NeuronCounts::HEADER;
    let mut s = format!(
        "{:>8} {:>6} {:>6} {:>5} {:>9} {:>9}\n",
        "1-S", mono, poly, dead, "features", "loss"
    );
    for i in &r.instances {
        s += &format!(
            "{:>8.4} {} {:>9} {:>9.5}\n",
            i.density,
            i.counts.columns(),
            i.features_represented,
            i.loss
        );
    }
    s
}
