//! `toy --experiment abs`: computation in superposition (the paper's section of that name).
//! Inputs x_i in [-1, 1] (uniform when present), target y_i = |x_i|, model
//! h = ReLU(W1 x + b1), y = ReLU(W2 h + b2) with m < 2n neurons and importance I_i = R^i.
//! Without superposition |x_i| takes two neurons, ReLU(x_i) + ReLU(-x_i), so m neurons
//! compute at most m / 2 features; sparse enough, the model computes more.
//!
//! A feature's sign is *computed* when, fed alone at 0.25, 0.5, 0.75 of that sign, its
//! output's mean relative error | y_i - |v| | / |v| is below [`COMPUTED_ERROR`]; a feature is
//! computed when both signs are. Without superposition a neuron computes one sign of one
//! feature, so at most m signs (m / 2 features) are computed. A feature's
//! *monosemantic pair*: a monosemantic neuron whose top input weight is +, and another
//! whose top weight is -, both on that feature (the neurons of ReLU(x) and ReLU(-x)).

use std::path::Path;

use crate::Result;
use crate::gpu::Engine;
use crate::reference::toy_mlp::{HiddenAct, MlpShape, MlpSpec};
use crate::toy::Log;
use crate::toy::mlp::forward_one;
use crate::toy::plots::density_label;

use super::Features;
use super::plots_neurons::StackPanel;
use super::privileged::{
    DensitySweep, DensitySweepResult, NeuronCounts, NeuronKind, classify, paper,
};

/// Mean relative error below which a feature counts as computed.
pub const COMPUTED_ERROR: f64 = 0.25;

/// n = 40 features, m = 16 neurons (the paper: 100 and 40), I_i = 0.8^i, six densities
/// from 1 to 0.003; the training of [`paper`].
pub fn default_size() -> DensitySweep {
    DensitySweep {
        features: Features {
            n: 40,
            m: 16,
            importance_decay: 0.8,
            density: vec![1.0, 0.3, 0.1, 0.03, 0.01, 0.003],
        },
        ..paper()
    }
}

pub fn spec() -> MlpSpec {
    MlpSpec {
        act_h: HiddenAct::Relu,
        relu_out: true,
        tied: false,
        hidden_bias: true,
        signed: true,
        abs_target: true,
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AbsNeuron {
    /// W1[k, :].
    pub weights_in: Vec<f32>,
    /// W2[:, k].
    pub weights_out: Vec<f32>,
    pub bias: f32,
    pub monosemantic: bool,
    pub kind: NeuronKind,
    pub top_feature: usize,
    /// Sign of its top input weight: +1 computes ReLU(x), -1 ReLU(-x).
    pub sign: i8,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AbsInstance {
    pub density: f32,
    pub loss: f64,
    #[serde(flatten)]
    pub counts: NeuronCounts,
    /// Features whose |x_i| the model computes (see the module doc).
    pub features_computed: usize,
    /// Halves ReLU(x_i), ReLU(-x_i) computed (mean relative error below
    /// [`COMPUTED_ERROR`] on that sign): without superposition at most one per neuron, m.
    pub signs_computed: usize,
    /// Per feature: mean relative error of y_i on single-feature inputs (both signs).
    pub feature_error: Vec<f64>,
    /// Features with a monosemantic pair of neurons.
    pub monosemantic_pairs: Vec<usize>,
    pub neurons: Vec<AbsNeuron>,
}

pub type AbsResult = DensitySweepResult<AbsInstance>;

pub fn run(engine: &Engine, cfg: &DensitySweep, log_every: u64, log: Log<'_>) -> Result<AbsResult> {
    let spec = spec();
    cfg.run(
        "abs",
        spec,
        engine,
        log_every,
        log,
        |shape, density, w, loss| AbsInstance {
            density,
            loss,
            ..analyse(shape, spec, w)
        },
    )
}

/// Neurons, pairs and computed features of one instance's parameters `w`.
pub fn analyse(shape: MlpShape, spec: MlpSpec, w: &[f32]) -> AbsInstance {
    let (n, m) = (shape.n, shape.m);
    let (ow2, ob1, _) = shape.offsets();
    let neurons: Vec<AbsNeuron> = (0..m)
        .map(|k| {
            let weights_in = w[k * n..(k + 1) * n].to_vec();
            let weights_out = (0..n).map(|i| w[ow2 + i * m + k]).collect();
            let (kind, top) = classify(&weights_in, true);
            AbsNeuron {
                sign: if weights_in[top] >= 0.0 { 1 } else { -1 },
                weights_in,
                weights_out,
                bias: w[ob1 + k],
                monosemantic: kind == NeuronKind::Monosemantic,
                kind,
                top_feature: top,
            }
        })
        .collect();
    // Per feature and sign: mean relative error of y_i over x_i = +-0.25, +-0.5, +-0.75.
    let sign_error: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            [1.0f32, -1.0].map(|s| {
                let vals = [0.25f32, 0.5, 0.75];
                vals.iter()
                    .map(|&a| {
                        let mut x = vec![0.0f32; n];
                        x[i] = s * a;
                        let (_, y) = forward_one(n, m, spec, m as u32, w, &x);
                        ((y[i] - a).abs() / a) as f64
                    })
                    .sum::<f64>()
                    / vals.len() as f64
            })
        })
        .collect();
    let feature_error: Vec<f64> = sign_error.iter().map(|e| (e[0] + e[1]) / 2.0).collect();
    let signs_computed = sign_error
        .iter()
        .map(|e| e.iter().filter(|&&v| v < COMPUTED_ERROR).count())
        .sum();
    let mono = |i: usize, s: i8| {
        neurons
            .iter()
            .any(|u| u.monosemantic && u.top_feature == i && u.sign == s)
    };
    AbsInstance {
        density: 0.0,
        loss: 0.0,
        counts: NeuronCounts::of(neurons.iter().map(|u| u.kind)),
        features_computed: sign_error
            .iter()
            .filter(|e| e.iter().all(|&v| v < COMPUTED_ERROR))
            .count(),
        signs_computed,
        monosemantic_pairs: (0..n).filter(|&i| mono(i, 1) && mono(i, -1)).collect(),
        feature_error,
        neurons,
    }
}

pub fn write(dir: &Path, r: &AbsResult) -> Result<Vec<String>> {
    let title = format!(
        "Computation in superposition: y = |x| through h = ReLU(W1 x + b1), n = {}, m = {}; \
         each bar a neuron's input weights by feature (pale: negative, drawn downward)",
        r.run.config.features.n, r.run.config.features.m
    );
    r.write_stacks(dir, &title, |i| {
        let title = format!(
            "{}\n{} features,\n{} signs computed",
            density_label(i.density),
            i.features_computed,
            i.signs_computed
        );
        StackPanel::of(title, i.neurons.iter().map(|u| (&u.weights_in[..], u.kind)))
    })
}

pub fn table(r: &AbsResult) -> String {
    let [mono, poly, dead] = NeuronCounts::HEADER;
    let mut s = format!(
        "{:>8} {:>9} {:>6} {:>6} {:>5} {:>9} {:>6}  monosemantic pairs (features)\n",
        "1-S", "loss", mono, poly, dead, "features", "signs"
    );
    for i in &r.instances {
        let pairs: Vec<String> = i.monosemantic_pairs.iter().map(|v| v.to_string()).collect();
        s += &format!(
            "{:>8.4} {:>9.5} {} {:>9} {:>6}  [{}]\n",
            i.density,
            i.loss,
            i.counts.columns(),
            i.features_computed,
            i.signs_computed,
            pairs.join(" ")
        );
    }
    s
}
