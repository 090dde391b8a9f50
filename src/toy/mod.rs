//! Toy models of superposition (Elhage et al. 2022, "Toy Models of Superposition",
//! transformer-circuits.pub/2022/toy_model), reproduced on saeforge's own kernels.
//!
//! n features x_i, each U[0, 1) with probability 1 - S and 0 otherwise, pass through m < n
//! hidden dimensions and back: x' = ReLU(W^T W x + b) (the ReLU output model) or
//! x' = W^T W x + b (the linear model), trained on sum_i I_i (x_i - x'_i)^2 averaged over the
//! batch. With dense data a model keeps the m most important features in orthogonal
//! directions and drops the rest, like PCA; as the data get sparser the ReLU model packs
//! more features than dimensions into superposition, in antipodal pairs, triangles,
//! pentagons, tetrahedra... which shows in D* = m / ||W||_F^2 sticking at 1/2, 2/5, ...
//!
//! Many instances (one per density level, or per cell and restart of the phase diagram) are
//! trained at once, on the GPU engine (shaders/toy.wgsl) or the CPU engine (its twin in
//! `crate::reference::toy`), with the recipe of the authors' notebook: W Xavier-normal (as
//! the notebook applies it to all instances at once, see [`Init`]), b = 0, AdamW (lr 1e-3, weight decay 0.01), batch 1024, 10,000 steps.
//!
//! `sweep` trains and measures ([`run_sweep`], [`geometry`]), `phase` draws the n = 2 -> m = 1
//! phase diagram ([`phase::run_phase`]), `plots` the figures.

pub mod args;
pub mod geometry;
pub mod lab;
pub mod mlp;
pub mod phase;
pub mod plots;
pub mod train;

use std::path::Path;

use crate::Result;
use crate::gpu::Engine;
use args::ToyArgs;

pub use geometry::{Geometry, geometry};
pub use train::{
    Init, Log, Params, Progress, ToyData, TrainConfig, TrainOptions, Trained, Training,
    init_params, train, train_with,
};

/// n features of importance I_i = importance_decay^i through m hidden dimensions (neurons),
/// at density `D`: 1 - S per instance (`Vec<f32>`), or of every instance (`f32`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Features<D = Vec<f32>> {
    pub n: usize,
    pub m: usize,
    /// I_i = importance_decay^i (i from 0); 1 gives equal importance.
    pub importance_decay: f32,
    /// 1 - S.
    pub density: D,
}

impl<D> Features<D> {
    /// `--features`, `--hidden` and `--importance-decay` over these defaults, at `density`.
    pub fn with_flags<E>(&self, a: &ToyArgs, density: E) -> Features<E> {
        Features {
            n: a.features.unwrap_or(self.n),
            m: a.hidden.unwrap_or(self.m),
            importance_decay: a.importance_decay.unwrap_or(self.importance_decay),
            density,
        }
    }

    /// I_i = decay^i for each feature.
    pub fn importance(&self) -> Vec<f32> {
        decay_importance(self.n, self.importance_decay)
    }
}

/// I_i = decay^i for features i = 0..n.
pub fn decay_importance(n: usize, decay: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (decay as f64).powi(i as i32) as f32)
        .collect()
}

/// One run of the ReLU (or linear) model at several densities: the paper's sweeps.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepConfig {
    /// n, m, I_i and 1 - S per instance (flat in results.json).
    #[serde(flatten)]
    pub features: Features,
    pub relu: bool,
    /// Init, steps, batch, AdamW, seed, final-loss batches (flat in results.json).
    #[serde(flatten)]
    pub recipe: Recipe,
}

impl SweepConfig {
    /// The notebook's first model: n = 5, m = 2, I_i = 0.9^i, ten densities 20^-linspace(0, 1, 10).
    pub fn intro() -> Self {
        SweepConfig {
            features: Features {
                n: 5,
                m: 2,
                importance_decay: 0.9,
                density: log_space(0.05, 1.0, 10),
            },
            relu: true,
            recipe: Recipe::notebook(),
        }
    }

    pub fn train_config(&self, log_every: u64) -> TrainConfig {
        let f = &self.features;
        TrainConfig {
            relu: self.relu,
            ..self
                .recipe
                .train_config(f.n, f.m, f.density.clone(), &f.importance(), log_every)
        }
    }
}

/// The training recipe shared by the sweeps, the phase diagram and the lab experiments
/// (the notebook's unless flags say).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Recipe {
    pub steps: u64,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub init: Init,
    pub seed: u64,
    pub eval_batches: usize,
}

impl Recipe {
    /// The authors' notebook: notebook init, 10,000 steps of 1024 rows, AdamW lr 1e-3,
    /// weight decay 0.01, seed 0; final loss over 8 batches.
    pub fn notebook() -> Self {
        Schedule::notebook().recipe(Init::Notebook)
    }

    /// The recipe the flags give, with this experiment's default steps and batch.
    pub fn from_args(a: &ToyArgs, steps: u64, batch: usize) -> Self {
        Schedule::from_args(a, steps, batch).recipe(a.init.unwrap_or(Init::Notebook))
    }

    /// A training configuration of the ReLU output model: one density and one importance
    /// vector per instance.
    pub fn train_config(
        &self,
        n: usize,
        m: usize,
        density: Vec<f32>,
        importance: &[f32],
        log_every: u64,
    ) -> TrainConfig {
        let importance = density
            .iter()
            .flat_map(|_| importance.iter().copied())
            .collect();
        self.train_config_per_instance(n, m, density, importance, log_every)
    }

    /// [`Recipe::train_config`] with the importances of every instance, (instances, n).
    pub fn train_config_per_instance(
        &self,
        n: usize,
        m: usize,
        density: Vec<f32>,
        importance: Vec<f32>,
        log_every: u64,
    ) -> TrainConfig {
        TrainConfig {
            data: ToyData {
                n,
                m,
                density,
                importance,
            },
            relu: true,
            training: self.training(log_every),
        }
    }

    /// This recipe's [`Training`], logging every `log_every` steps.
    pub fn training(&self, log_every: u64) -> Training {
        Training {
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            eval_batches: self.eval_batches,
            log_every,
        }
    }

    /// Train `tc` with `opts` from parameters drawn with this recipe's init and seed.
    pub fn train(
        &self,
        engine: &Engine,
        tc: &TrainConfig,
        opts: &TrainOptions,
        log: Log<'_>,
    ) -> Result<Trained> {
        let init = init_params(tc.shape(), self.init, self.seed);
        train_with(engine, tc, opts, init, log)
    }
}

/// A [`Recipe`] but for the initialisation and the final loss: `steps` AdamW steps (`lr`,
/// `weight_decay`) on batches of `batch` rows, W and the data seeded by `seed`. What the
/// lab's two-layer experiments and intervene configure (flat in results.json).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Schedule {
    pub steps: u64,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub seed: u64,
}

impl Schedule {
    /// The authors' notebook: 10,000 steps of 1024 rows, AdamW lr 1e-3, weight decay 0.01,
    /// seed 0.
    pub fn notebook() -> Self {
        Schedule {
            steps: 10_000,
            batch: 1024,
            lr: 1e-3,
            weight_decay: 0.01,
            seed: 0,
        }
    }

    /// The schedule the flags give, with this experiment's default steps and batch.
    pub fn from_args(a: &ToyArgs, steps: u64, batch: usize) -> Self {
        Schedule {
            steps: a.steps.unwrap_or(steps),
            batch: a.batch.unwrap_or(batch),
            lr: a.lr,
            weight_decay: a.weight_decay,
            seed: a.seed,
        }
    }

    /// This schedule with W drawn by `init`; the final loss over 8 batches.
    pub fn recipe(self, init: Init) -> Recipe {
        Recipe {
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            init,
            seed: self.seed,
            eval_batches: 8,
        }
    }
}

/// `count` values from `hi` down to `lo`, evenly spaced in log (hi (lo / hi)^(k / (count - 1))),
/// so that `log_space(0.05, 1.0, 20)` is the notebook's 20^-linspace(0, 1, 20).
pub fn log_space(lo: f64, hi: f64, count: usize) -> Vec<f32> {
    match count {
        0 => Vec::new(),
        1 => vec![hi as f32],
        _ => (0..count)
            .map(|k| (hi * (lo / hi).powf(k as f64 / (count - 1) as f64)) as f32)
            .collect(),
    }
}

/// One trained instance, as written to results.json.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InstanceResult {
    /// 1 - S.
    pub density: f32,
    /// 1 / (1 - S), the x axis of the paper's D* figure.
    pub inverse_density: f64,
    pub importance: Vec<f32>,
    /// m / ||W||_F^2.
    pub dstar: f64,
    /// ||W_i||.
    pub norms: Vec<f64>,
    /// sum_{j != i} (W_i_hat . W_j)^2.
    pub superposition: Vec<f64>,
    /// D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2.
    pub dims: Vec<f64>,
    pub bias: Vec<f32>,
    /// Features with ||W_i|| > 0.5.
    pub represented: Vec<usize>,
    /// Mean over fresh batches of sum_i I_i (x_i - x'_i)^2.
    pub final_loss: f64,
    /// W^T W, (n, n); written for n <= 50 only (else recompute it from `w`).
    #[serde(skip_serializing_if = "too_big")]
    pub wtw: Vec<Vec<f64>>,
    /// The feature directions W_i, (n, m).
    pub w: Vec<Vec<f32>>,
}

fn too_big(wtw: &[Vec<f64>]) -> bool {
    wtw.len() > plots::MAX_HEAT_FEATURES
}

/// A finished sweep, as written to results.json.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepResult {
    pub model: &'static str,
    /// The configuration, the engine and the training's wall time (flat in results.json).
    #[serde(flatten)]
    pub run: Run<SweepConfig>,
    pub instances: Vec<InstanceResult>,
}

/// Train every density of `cfg` at once on `engine` and measure each instance.
pub fn run_sweep(
    engine: &Engine,
    cfg: &SweepConfig,
    log_every: u64,
    log: Log<'_>,
) -> Result<SweepResult> {
    let tc = cfg.train_config(log_every);
    let shape = tc.shape();
    let trained = cfg
        .recipe
        .train(engine, &tc, &TrainOptions::default(), log)?;
    let (n, m) = (cfg.features.n, cfg.features.m);
    let instances = (0..shape.instances)
        .map(|e| {
            let w = &trained.params.w[e * n * m..(e + 1) * n * m];
            let geo = geometry(w, n, m);
            InstanceResult {
                density: cfg.features.density[e],
                inverse_density: 1.0 / cfg.features.density[e] as f64,
                importance: tc.data.importance[e * n..(e + 1) * n].to_vec(),
                dstar: geo.dstar,
                represented: geo.represented(),
                norms: geo.norms,
                superposition: geo.superposition,
                dims: geo.dims,
                bias: trained.params.b[e * n..(e + 1) * n].to_vec(),
                final_loss: trained.final_loss[e],
                wtw: geo.wtw.chunks(n).map(|r| r.to_vec()).collect(),
                w: w.chunks(m).map(|r| r.to_vec()).collect(),
            }
        })
        .collect();
    Ok(SweepResult {
        model: if cfg.relu { "relu" } else { "linear" },
        run: Run::new(cfg, engine, trained.seconds),
        instances,
    })
}

/// What every toy result starts with (flat in results.json): the configuration, the engine
/// and the wall time of the training steps.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Run<C> {
    pub config: C,
    pub engine: String,
    /// Wall time of the training steps.
    pub train_seconds: f64,
}

impl<C: Clone> Run<C> {
    /// `config` trained on `engine` in `train_seconds`.
    pub fn new(config: &C, engine: &Engine, train_seconds: f64) -> Self {
        Run {
            config: config.clone(),
            engine: engine.name(),
            train_seconds,
        }
    }
}

impl<C> Run<C> {
    /// "S s training on the ENGINE", for the printed summary.
    pub fn trained(&self) -> String {
        format!(
            "{:.1} s training on the {}",
            self.train_seconds, self.engine
        )
    }
}

/// Create DIR and write `r` to DIR/results.json.
pub fn write_results(dir: &Path, r: &impl serde::Serialize) -> Result<()> {
    crate::io::create_dir(dir)?;
    crate::io::write_json(&dir.join("results.json"), r)
}

/// Write DIR/results.json and the figures (features, dimensionality, and for m = 2
/// directions), each as PNG and SVG. Returns the files written.
pub fn write_sweep(dir: &Path, r: &SweepResult) -> Result<Vec<String>> {
    write_results(dir, r)?;
    let mut files = vec!["results.json".to_string()];
    plots::features(dir, r)?;
    files.push("features.{png,svg}".into());
    plots::dimensionality(dir, r)?;
    files.push("dimensionality.{png,svg}".into());
    if r.run.config.features.m == 2 {
        plots::directions(dir, r)?;
        files.push("directions.{png,svg}".into());
    }
    Ok(files)
}

/// Write DIR/results.json and phase.{png,svg} for a phase diagram.
pub fn write_phase(dir: &Path, r: &phase::PhaseResult) -> Result<Vec<String>> {
    write_results(dir, r)?;
    plots::phase(dir, r)?;
    Ok(vec!["results.json".into(), "phase.{png,svg}".into()])
}
