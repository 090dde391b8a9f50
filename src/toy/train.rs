//! Training many toy-model instances at once on either engine. Both engines run the same
//! named operations per step (`toy_data`, `toy_forward`, `toy_grad`, `toy_sum_chunks` x 2,
//! `adam` x 2): the GPU engine records them into one submission, the CPU engine calls their
//! twins in `crate::reference`. The batch is hashed from (seed, step, instance, row,
//! feature) on the device, so the engines see identical data and nothing is uploaded per
//! step but two small uniforms (the step and Adam's bias corrections).

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::gpu::{Engine, Gpu, GpuTensor};
use crate::kernels::optim::AdamHyper;
use crate::reference::toy::{FeatureSets, ToyShape};
use crate::{Error, Result, kernels, reference};

/// Rows per gradient chunk: toy_grad writes one partial per chunk of this many rows, then
/// toy_sum_chunks adds them in order (enough workgroups for a GPU, deterministic sums).
pub const CHUNK_ROWS: usize = 128;

/// Adam's betas and epsilon: torch.optim.AdamW's defaults, as in the authors' notebook.
pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-8;

/// What to train: `instances` models of n features and m hidden dimensions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainConfig {
    /// n, m, densities and importances (flat when serialized).
    #[serde(flatten)]
    pub data: ToyData,
    /// ReLU output model (true) or linear model (false).
    pub relu: bool,
    /// Steps, batch, AdamW, seed, final loss and logging (flat when serialized).
    #[serde(flatten)]
    pub training: Training,
}

/// The instances a toy model (this one or [`super::mlp`]'s) trains at once: each maps n
/// features through m hidden dimensions (neurons for the MLP) and back.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ToyData {
    pub n: usize,
    pub m: usize,
    /// Probability 1 - S that a feature is present, one per instance.
    pub density: Vec<f32>,
    /// Loss weight I_i, (instances, n) row-major.
    pub importance: Vec<f32>,
}

impl ToyData {
    pub fn instances(&self) -> usize {
        self.density.len()
    }
}

/// How a toy model (this one or [`super::mlp`]'s) is trained, every instance alike: `steps`
/// AdamW steps on batches of `batch` rows hashed from `seed`, then the final loss.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Training {
    pub steps: u64,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub seed: u64,
    /// Batches (of `batch` rows, never trained on) averaged for the final loss.
    pub eval_batches: usize,
    /// Log the batch loss every this many steps (0: never).
    pub log_every: u64,
}

impl Training {
    /// The AdamW hyperparameters of step `t` (0-based).
    pub(super) fn hyper(&self, t: u64) -> AdamHyper {
        AdamHyper::at_step(self.lr, BETA1, BETA2, EPS, self.weight_decay, t + 1)
    }
}

impl TrainConfig {
    pub fn instances(&self) -> usize {
        self.data.instances()
    }

    pub fn shape(&self) -> ToyShape {
        ToyShape {
            instances: self.instances(),
            rows: self.training.batch,
            n: self.data.n,
            m: self.data.m,
        }
    }

    fn check(&self) -> Result<()> {
        let s = self.shape();
        check_positive(s.instances, s.n, ("hidden", s.m), s.rows)?;
        if s.m > kernels::toy::MAX_HIDDEN {
            return Err(Error::input(format!(
                "toy model: --hidden {} exceeds the kernels' limit of {}",
                s.m,
                kernels::toy::MAX_HIDDEN
            )));
        }
        let importance = &self.data.importance;
        if importance.len() != s.instances * s.n {
            return Err(Error::Internal(format!(
                "toy model: {} importances for {} instances of {} features",
                importance.len(),
                s.instances,
                s.n
            )));
        }
        Ok(())
    }
}

/// Refuse an empty model; `hidden` names m and gives it ("hidden" here, "neurons" for the
/// MLP).
pub(super) fn check_positive(
    instances: usize,
    n: usize,
    (hidden, m): (&str, usize),
    rows: usize,
) -> Result<()> {
    if instances == 0 || n == 0 || m == 0 || rows == 0 {
        return Err(Error::input(format!(
            "toy model: instances {instances}, features {n}, {hidden} {m} and batch {rows} must all be positive"
        )));
    }
    Ok(())
}

/// Parameters of every instance: w (instances, n, m), row i of instance e being the feature
/// direction W_i; b (instances, n).
#[derive(Clone, Debug)]
pub struct Params {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// How W is initialised (b always starts at 0).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The authors' notebook: `nn.init.xavier_normal_` on the (instances, n, m) parameter
    /// that holds every instance, whose fans torch takes as n m and instances m, so
    /// std = sqrt(2 / (m (n + instances))). (It depends on how many instances are trained
    /// together; with it the n = 200 sweep lands on the published D* curve.)
    Notebook,
    /// Xavier-normal per instance, W (m, n): std = sqrt(2 / (n + m)).
    Xavier,
}

impl Init {
    /// The standard deviation of W's entries for `shape`.
    pub fn std(self, shape: ToyShape) -> f64 {
        let (n, m, e) = (shape.n as f64, shape.m as f64, shape.instances as f64);
        match self {
            Init::Notebook => (2.0 / (m * (n + e))).sqrt(),
            Init::Xavier => (2.0 / (n + m)).sqrt(),
        }
    }
}

/// W ~ N(0, init.std(shape)^2) entry by entry, b = 0, drawn from ChaCha8(seed) instance by
/// instance.
pub fn init_params(shape: ToyShape, init: Init, seed: u64) -> Params {
    let normal = Normal::new(0.0f32, init.std(shape) as f32).expect("positive std");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w = (0..shape.instances * shape.n * shape.m)
        .map(|_| normal.sample(&mut rng))
        .collect();
    Params {
        w,
        b: vec![0.0; shape.instances * shape.n],
    }
}

/// A progress report: the step reached and the mean loss of that step's batch per instance.
pub struct Progress<'a> {
    pub step: u64,
    pub steps: u64,
    pub batch_loss: &'a [f64],
    pub seconds: f64,
}

/// Where a run reports its [`Progress`].
pub type Log<'a> = &'a mut dyn FnMut(&Progress);

/// The outcome of a run, parameters `P` (this model's or [`super::mlp`]'s).
pub struct Trained<P = Params> {
    pub params: P,
    /// Per instance: mean over `eval_batches` fresh batches of sum_i I_i (x_i - x'_i)^2
    /// (for the MLP the reconstruction loss alone, without its L1 term).
    pub final_loss: Vec<f64>,
    /// (step, per-instance batch loss, the MLP's with its L1 term) at every log interval.
    pub curve: Vec<(u64, Vec<f64>)>,
    /// (step, parameters) every `TrainOptions::snapshot_every` steps.
    pub snapshots: Vec<(u64, P)>,
    /// Wall time of the training steps (not the evaluation).
    pub seconds: f64,
}

/// One engine's state for a run, parameters `P` (this model's and [`super::mlp`]'s).
pub(super) trait Stepper<P> {
    /// Training step `t` (0-based): data for step t, forward, backward, AdamW step t + 1.
    fn step(&mut self, t: u64) -> Result<()>;
    /// The batch for data step `t` and the forward pass alone (the MLP's without its L1
    /// term), for [`Stepper::batch_loss`] to read.
    fn forward_eval(&mut self, t: u64) -> Result<()>;
    /// Mean row loss of the last batch, per instance.
    fn batch_loss(&mut self) -> Result<Vec<f64>>;
    fn params(&mut self) -> Result<P>;
}

pub(super) fn row_means(loss: &[f32], rows: usize) -> Vec<f64> {
    loss.chunks_exact(rows)
        .map(|r| r.iter().map(|&v| v as f64).sum::<f64>() / rows as f64)
        .collect()
}

/// Both engines' training loop for `instances` instances: the steps (logging at every
/// `log_every` and the last, parameters kept every `snapshot_every` steps, 0: never), then
/// the evaluation on `eval_batches` fresh batches from data step `steps` on.
pub(super) fn run_steps<P>(
    stepper: &mut dyn Stepper<P>,
    s: &Training,
    instances: usize,
    snapshot_every: u64,
    log: Log<'_>,
) -> Result<Trained<P>> {
    let mut snapshots = Vec::new();
    let start = Instant::now();
    let mut curve = Vec::new();
    for t in 0..s.steps {
        stepper.step(t)?;
        let done = t + 1;
        if s.log_every > 0 && (done % s.log_every == 0 || done == s.steps) {
            let loss = stepper.batch_loss()?;
            log(&Progress {
                step: done,
                steps: s.steps,
                batch_loss: &loss,
                seconds: start.elapsed().as_secs_f64(),
            });
            curve.push((done, loss));
        }
        if snapshot_every > 0 && done.is_multiple_of(snapshot_every) {
            snapshots.push((done, stepper.params()?));
        }
    }
    let params = stepper.params()?;
    let seconds = start.elapsed().as_secs_f64();
    let mut final_loss = vec![0.0; instances];
    for j in 0..s.eval_batches as u64 {
        stepper.forward_eval(s.steps + j)?;
        for (f, l) in final_loss.iter_mut().zip(stepper.batch_loss()?) {
            *f += l / s.eval_batches as f64;
        }
    }
    Ok(Trained {
        params,
        final_loss,
        curve,
        snapshots,
        seconds,
    })
}

/// What [`train_with`] adds to a [`TrainConfig`]: how the data are drawn beyond one
/// density per instance, and parameter snapshots during training (the lab experiments).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Density per (instance, feature), (instances, n) row-major; None: the instance's
    /// `TrainConfig::density` for every feature.
    pub feature_density: Option<Vec<f32>>,
    /// Features drawn in correlated or anticorrelated sets (default: independent).
    pub sets: FeatureSets,
    /// Keep the parameters every this many steps in [`Trained::snapshots`] (0: never).
    pub snapshot_every: u64,
}

impl TrainOptions {
    /// The (instances, n) density `toy_data` reads.
    fn density(&self, cfg: &TrainConfig) -> Result<Vec<f32>> {
        let n = cfg.data.n;
        match &self.feature_density {
            Some(d) if d.len() == cfg.instances() * n => Ok(d.clone()),
            Some(d) => Err(Error::Internal(format!(
                "toy model: {} feature densities for {} instances of {n} features",
                d.len(),
                cfg.instances()
            ))),
            None => Ok(cfg
                .data
                .density
                .iter()
                .flat_map(|&d| std::iter::repeat_n(d, n))
                .collect()),
        }
    }
}

/// Train `cfg` from `init` on `engine`, calling `log` every `cfg.log_every` steps.
pub fn train(engine: &Engine, cfg: &TrainConfig, init: Params, log: Log<'_>) -> Result<Trained> {
    train_with(engine, cfg, &TrainOptions::default(), init, log)
}

/// [`train`] with per-feature densities, feature sets or snapshots.
pub fn train_with(
    engine: &Engine,
    cfg: &TrainConfig,
    opts: &TrainOptions,
    init: Params,
    log: Log<'_>,
) -> Result<Trained> {
    cfg.check()?;
    let density = opts.density(cfg)?;
    let mut stepper: Box<dyn Stepper<Params>> = match engine {
        Engine::Gpu(gpu) => Box::new(GpuToy::new(gpu.clone(), cfg, opts.sets, &density, init)?),
        Engine::Cpu => Box::new(CpuToy::new(cfg, opts.sets, density, init)?),
    };
    let (e, every) = (cfg.instances(), opts.snapshot_every);
    run_steps(stepper.as_mut(), &cfg.training, e, every, log)
}

// ---------------------------------------------------------------- CPU engine

struct CpuToy {
    cfg: TrainConfig,
    sets: FeatureSets,
    density: Vec<f32>,
    shape: ToyShape,
    chunks: usize,
    p: Params,
    buf: Buffers<Vec<f32>>,
}

/// Both engines' buffers besides the parameters, `T` a host vector or a GPU tensor: AdamW's
/// moments, the batch x, h, g = dL/dx', dh, the row losses, the gradient partials per chunk
/// of rows and their sums.
struct Buffers<T> {
    mw: T,
    vw: T,
    mb: T,
    vb: T,
    x: T,
    h: T,
    g: T,
    dh: T,
    loss: T,
    pw: T,
    pb: T,
    dw: T,
    db: T,
}

impl<T> Buffers<T> {
    /// Each buffer from `zeros(label, dims)`, zero-filled.
    fn new(
        s: ToyShape,
        chunks: usize,
        mut zeros: impl FnMut(&str, &[usize]) -> Result<T>,
    ) -> Result<Self> {
        let ToyShape {
            instances: e,
            rows,
            n,
            m,
        } = s;
        Ok(Buffers {
            mw: zeros("m(w)", &[e, n, m])?,
            vw: zeros("v(w)", &[e, n, m])?,
            mb: zeros("m(b)", &[e, n])?,
            vb: zeros("v(b)", &[e, n])?,
            x: zeros("x", &[e, rows, n])?,
            h: zeros("h", &[e, rows, m])?,
            g: zeros("g", &[e, rows, n])?,
            dh: zeros("dh", &[e, rows, m])?,
            loss: zeros("loss", &[e, rows])?,
            pw: zeros("dw partials", &[e, chunks, n, m])?,
            pb: zeros("db partials", &[e, chunks, n])?,
            dw: zeros("dw", &[e, n, m])?,
            db: zeros("db", &[e, n])?,
        })
    }
}

/// A zero-filled host buffer of `dims`.
pub(super) fn host_zeros(_label: &str, dims: &[usize]) -> Result<Vec<f32>> {
    Ok(vec![0.0; dims.iter().product()])
}

impl CpuToy {
    fn new(cfg: &TrainConfig, sets: FeatureSets, density: Vec<f32>, p: Params) -> Result<Self> {
        let s = cfg.shape();
        let chunks = s.chunks(CHUNK_ROWS);
        Ok(CpuToy {
            cfg: cfg.clone(),
            sets,
            density,
            shape: s,
            chunks,
            p,
            buf: Buffers::new(s, chunks, host_zeros)?,
        })
    }

    fn forward(&mut self, t: u64) {
        let s = self.shape;
        reference::toy::toy_data(
            s,
            self.cfg.training.seed,
            t as u32,
            self.sets,
            &self.density,
            &mut self.buf.x,
        );
        reference::toy::toy_forward(
            s,
            self.cfg.relu,
            &self.buf.x,
            &self.p.w,
            &self.p.b,
            &self.cfg.data.importance,
            &mut self.buf.h,
            &mut self.buf.g,
            &mut self.buf.dh,
            &mut self.buf.loss,
        );
    }
}

impl Stepper<Params> for CpuToy {
    fn step(&mut self, t: u64) -> Result<()> {
        let s = self.shape;
        let ToyShape {
            instances: e, n, m, ..
        } = s;
        self.forward(t);
        reference::toy::toy_grad(
            s,
            CHUNK_ROWS,
            &self.buf.x,
            &self.buf.g,
            &self.buf.h,
            &self.buf.dh,
            &mut self.buf.pw,
            &mut self.buf.pb,
        );
        reference::toy::toy_sum_chunks(&self.buf.pw, e, self.chunks, n * m, &mut self.buf.dw);
        reference::toy::toy_sum_chunks(&self.buf.pb, e, self.chunks, n, &mut self.buf.db);
        let h = self.cfg.training.hyper(t);
        let b = &mut self.buf;
        for (p, grad, m, v) in [
            (&mut self.p.w, &b.dw, &mut b.mw, &mut b.vw),
            (&mut self.p.b, &b.db, &mut b.mb, &mut b.vb),
        ] {
            reference::optim::adam(p, grad, m, v, &h, &[1.0, 0.0]);
        }
        Ok(())
    }

    fn forward_eval(&mut self, t: u64) -> Result<()> {
        self.forward(t);
        Ok(())
    }

    fn batch_loss(&mut self) -> Result<Vec<f64>> {
        Ok(row_means(&self.buf.loss, self.shape.rows))
    }

    fn params(&mut self) -> Result<Params> {
        Ok(self.p.clone())
    }
}

// ---------------------------------------------------------------- GPU engine

/// What the GPU engines (this model's and [`super::mlp`]'s) share: the two per-step
/// uniforms (the data step, AdamW's hyperparameters), the gradient clip (none) and the
/// pacing of submissions.
pub(super) struct GpuSteps {
    pub gpu: Arc<Gpu>,
    pub step_buf: wgpu::Buffer,
    hyper_buf: wgpu::Buffer,
    clip: GpuTensor,
}

/// Wait for the device every this many steps, so that the queue does not run arbitrarily
/// far ahead of the host (each step queues two small uniform writes).
const SYNC_EVERY: u64 = 64;

impl GpuSteps {
    /// `label` prefixes the buffers' names.
    pub fn new(gpu: Arc<Gpu>, label: &str) -> Result<Self> {
        Ok(GpuSteps {
            step_buf: kernels::toy::step_buffer(&gpu),
            hyper_buf: kernels::optim::hyper_buffer(&gpu),
            clip: gpu.upload(&format!("{label} clip"), &[2], &[1.0, 0.0])?,
            gpu,
        })
    }

    /// Queue data step `t` (drawn with `sets`) and, for a training step, AdamW's
    /// hyperparameters (`adamw`'s lr and weight decay) at step `t`; returns the encoder to
    /// record into.
    pub fn begin(
        &self,
        t: u64,
        sets: FeatureSets,
        adamw: Option<&Training>,
    ) -> wgpu::CommandEncoder {
        kernels::toy::write_step_sets(&self.gpu, &self.step_buf, t as u32, sets);
        if let Some(training) = adamw {
            kernels::optim::write_hyper(&self.gpu, &self.hyper_buf, &training.hyper(t));
        }
        self.gpu.encoder()
    }

    /// Record AdamW on `w` with gradient `dw` and moments `m`, `v`.
    pub fn adam(
        &self,
        enc: &mut wgpu::CommandEncoder,
        w: &GpuTensor,
        dw: &GpuTensor,
        m: &GpuTensor,
        v: &GpuTensor,
    ) -> Result<()> {
        kernels::optim::adam(&self.gpu, enc, w, dw, m, v, &self.hyper_buf, &self.clip)
    }

    /// Submit training step `t`, waiting for the device every [`SYNC_EVERY`] steps.
    pub fn submit_step(&self, enc: wgpu::CommandEncoder, t: u64) -> Result<()> {
        self.gpu.submit(enc);
        if (t + 1).is_multiple_of(SYNC_EVERY) {
            self.gpu.wait()?;
        }
        Ok(())
    }

    /// Mean row loss per instance of `loss` (instances, rows).
    pub fn row_means(&self, loss: &GpuTensor, rows: usize) -> Result<Vec<f64>> {
        Ok(row_means(&self.gpu.read_f32(loss)?, rows))
    }
}

struct GpuToy {
    run: GpuSteps,
    cfg: TrainConfig,
    sets: FeatureSets,
    shape: ToyShape,
    chunks: usize,
    density: GpuTensor,
    importance: GpuTensor,
    w: GpuTensor,
    b: GpuTensor,
    buf: Buffers<GpuTensor>,
}

impl GpuToy {
    fn new(
        gpu: Arc<Gpu>,
        cfg: &TrainConfig,
        sets: FeatureSets,
        density: &[f32],
        p: Params,
    ) -> Result<Self> {
        let s = cfg.shape();
        let (e, n, m) = (s.instances, s.n, s.m);
        let chunks = s.chunks(CHUNK_ROWS);
        let run = GpuSteps::new(gpu, "toy")?;
        let g = &run.gpu;
        Ok(GpuToy {
            density: g.upload("toy density", &[e, n], density)?,
            importance: g.upload("toy importance", &[e, n], &cfg.data.importance)?,
            w: g.upload("toy w", &[e, n, m], &p.w)?,
            b: g.upload("toy b", &[e, n], &p.b)?,
            buf: Buffers::new(s, chunks, |label, dims| {
                g.zeros(&format!("toy {label}"), dims)
            })?,
            run,
            cfg: cfg.clone(),
            sets,
            shape: s,
            chunks,
        })
    }

    fn record_forward(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let (gpu, s) = (&*self.run.gpu, self.shape);
        kernels::toy::toy_data(
            gpu,
            enc,
            s,
            self.cfg.training.seed,
            &self.run.step_buf,
            &self.density,
            &self.buf.x,
        )?;
        kernels::toy::toy_forward(
            gpu,
            enc,
            s,
            self.cfg.relu,
            &self.buf.x,
            &self.w,
            &self.b,
            &self.importance,
            &self.buf.h,
            &self.buf.g,
            &self.buf.dh,
            &self.buf.loss,
        )
    }
}

impl Stepper<Params> for GpuToy {
    fn step(&mut self, t: u64) -> Result<()> {
        let (gpu, s) = (&*self.run.gpu, self.shape);
        let ToyShape {
            instances: e, n, m, ..
        } = s;
        let mut enc = self.run.begin(t, self.sets, Some(&self.cfg.training));
        self.record_forward(&mut enc)?;
        kernels::toy::toy_grad(
            gpu,
            &mut enc,
            s,
            CHUNK_ROWS,
            &self.buf.x,
            &self.buf.g,
            &self.buf.h,
            &self.buf.dh,
            &self.buf.pw,
            &self.buf.pb,
        )?;
        kernels::toy::toy_sum_chunks(
            gpu,
            &mut enc,
            &self.buf.pw,
            e,
            self.chunks,
            n * m,
            &self.buf.dw,
        )?;
        kernels::toy::toy_sum_chunks(gpu, &mut enc, &self.buf.pb, e, self.chunks, n, &self.buf.db)?;
        self.run
            .adam(&mut enc, &self.w, &self.buf.dw, &self.buf.mw, &self.buf.vw)?;
        self.run
            .adam(&mut enc, &self.b, &self.buf.db, &self.buf.mb, &self.buf.vb)?;
        self.run.submit_step(enc, t)
    }

    fn forward_eval(&mut self, t: u64) -> Result<()> {
        let mut enc = self.run.begin(t, self.sets, None);
        self.record_forward(&mut enc)?;
        self.run.gpu.submit(enc);
        Ok(())
    }

    fn batch_loss(&mut self) -> Result<Vec<f64>> {
        self.run.row_means(&self.buf.loss, self.shape.rows)
    }

    fn params(&mut self) -> Result<Params> {
        let gpu = &self.run.gpu;
        Ok(Params {
            w: gpu.read_f32(&self.w)?,
            b: gpu.read_f32(&self.b)?,
        })
    }
}
