//! Training many two-layer toy-model instances at once on either engine (the models of
//! `crate::reference::toy_mlp`: privileged basis, absolute value, L1 / top-k hidden layer).
//! As in [`super::train`], both engines run the same named operations per step
//! (`mlp_data`, `mlp_forward`, `mlp_grad`, `toy_sum_chunks`, `adam`): the GPU engine records
//! them into one submission, the CPU engine calls their twins. The batch is hashed from
//! (seed, step, instance, row, feature) on the device, so the engines see identical data.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::train::{
    CHUNK_ROWS, GpuSteps, Log, Stepper, ToyData, Trained, Training, check_positive, host_zeros,
    row_means, run_steps,
};
use crate::gpu::{Engine, Gpu, GpuTensor};
use crate::reference::toy::FeatureSets;
use crate::reference::toy_mlp::{HiddenAct, MlpShape, MlpSpec};
use crate::{Error, Result, kernels, reference};

/// What to train: `instances` two-layer models of n features and m neurons.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MlpConfig {
    /// n, m (neurons), densities and importances (flat when serialized).
    #[serde(flatten)]
    pub data: ToyData,
    pub spec: MlpSpec,
    /// L1 penalty on the hidden activations, one per instance.
    pub l1: Vec<f32>,
    /// k of a top-k hidden layer, one per instance (unused by other activations).
    pub topk: Vec<u32>,
    /// Steps, batch, AdamW, seed, final loss and logging (flat when serialized).
    #[serde(flatten)]
    pub training: Training,
}

impl MlpConfig {
    pub fn instances(&self) -> usize {
        self.data.instances()
    }

    pub fn shape(&self) -> MlpShape {
        MlpShape {
            instances: self.instances(),
            rows: self.training.batch,
            n: self.data.n,
            m: self.data.m,
        }
    }

    fn check(&self) -> Result<()> {
        let s = self.shape();
        check_positive(s.instances, s.n, ("neurons", s.m), s.rows)?;
        let e = s.instances;
        let importance = &self.data.importance;
        if importance.len() != e * s.n || self.l1.len() != e || self.topk.len() != e {
            return Err(Error::Internal(format!(
                "toy model: {} importances, {} l1, {} topk for {e} instances of {} features",
                importance.len(),
                self.l1.len(),
                self.topk.len(),
                s.n
            )));
        }
        Ok(())
    }
}

/// Every instance's flat parameters, (instances, P) (layout: `reference::toy_mlp`).
pub type MlpParams = Vec<f32>;

/// W1 (and W2 when untied) ~ N(0, 2 / (n + m)) (Xavier-normal per instance), biases 0,
/// W2 = 0 when tied (unused); drawn from ChaCha8(seed) instance by instance.
pub fn init_mlp(shape: MlpShape, spec: MlpSpec, seed: u64) -> MlpParams {
    let std = (2.0 / (shape.n + shape.m) as f64).sqrt() as f32;
    let normal = Normal::new(0.0f32, std).expect("positive std");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mn = shape.m * shape.n;
    let mut prm = vec![0.0f32; shape.instances * shape.params()];
    for pe in prm.chunks_mut(shape.params()) {
        let weights = if spec.tied { mn } else { 2 * mn };
        for v in &mut pe[..weights] {
            *v = normal.sample(&mut rng);
        }
    }
    prm
}

/// The outcome of a run (no snapshots).
pub type MlpTrained = Trained<MlpParams>;

/// Train `cfg` from `init` on `engine`, calling `log` every `cfg.log_every` steps.
pub fn train_mlp(
    engine: &Engine,
    cfg: &MlpConfig,
    init: MlpParams,
    log: Log<'_>,
) -> Result<MlpTrained> {
    cfg.check()?;
    let mut stepper: Box<dyn Stepper<MlpParams>> = match engine {
        Engine::Gpu(gpu) => Box::new(GpuMlp::new(gpu.clone(), cfg, init)?),
        Engine::Cpu => Box::new(CpuMlp::new(cfg, init)?),
    };
    run_steps(stepper.as_mut(), &cfg.training, cfg.instances(), 0, log)
}

/// The model applied to one input on the host (the twin's forward on one row, then
/// [`decode`]): returns (h, y) for instance parameters `w` (length P).
pub fn forward_one(
    n: usize,
    m: usize,
    spec: MlpSpec,
    topk: u32,
    w: &[f32],
    x: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let s = MlpShape {
        instances: 1,
        rows: 1,
        n,
        m,
    };
    let (mut h, mut g, mut dpre, mut loss) = (vec![0.0; m], vec![0.0; n], vec![0.0; m], [0.0]);
    reference::toy_mlp::mlp_forward(
        s,
        spec,
        x,
        w,
        &vec![0.0; n],
        &[0.0],
        &[topk],
        &mut h,
        &mut g,
        &mut dpre,
        &mut loss,
    );
    let y = decode(n, m, spec, w, &h);
    (h, y)
}

/// y = act_o(W2 h + b2) for instance parameters `w` and a hidden vector `h`.
pub fn decode(n: usize, m: usize, spec: MlpSpec, w: &[f32], h: &[f32]) -> Vec<f32> {
    let s = MlpShape {
        instances: 1,
        rows: 1,
        n,
        m,
    };
    let (ow2, _, ob2) = s.offsets();
    (0..n)
        .map(|i| {
            let mut o = w[ob2 + i];
            for k in 0..m {
                let w2 = if spec.tied {
                    w[k * n + i]
                } else {
                    w[ow2 + i * m + k]
                };
                o += w2 * h[k];
            }
            if spec.relu_out { o.max(0.0) } else { o }
        })
        .collect()
}

// ---------------------------------------------------------------- CPU engine

struct CpuMlp {
    cfg: MlpConfig,
    shape: MlpShape,
    chunks: usize,
    prm: Vec<f32>,
    buf: MlpBuffers<Vec<f32>>,
}

/// Both engines' buffers besides the parameters, `T` a host vector or a GPU tensor: AdamW's
/// moments, the batch x, h, g = dL/dy, the pre-activation gradient, the row losses, the
/// gradient partials per chunk of rows and their sum.
struct MlpBuffers<T> {
    mom: T,
    vel: T,
    x: T,
    h: T,
    g: T,
    dpre: T,
    loss: T,
    part: T,
    grad: T,
}

impl<T> MlpBuffers<T> {
    /// Each buffer from `zeros(label, dims)`, zero-filled.
    fn new(s: MlpShape, mut zeros: impl FnMut(&str, &[usize]) -> Result<T>) -> Result<Self> {
        let MlpShape {
            instances: e,
            rows,
            n,
            m,
        } = s;
        let (p, chunks) = (s.params(), s.chunks(CHUNK_ROWS));
        Ok(MlpBuffers {
            mom: zeros("m(prm)", &[e, p])?,
            vel: zeros("v(prm)", &[e, p])?,
            x: zeros("x", &[e, rows, n])?,
            h: zeros("h", &[e, rows, m])?,
            g: zeros("g", &[e, rows, n])?,
            dpre: zeros("dpre", &[e, rows, m])?,
            loss: zeros("loss", &[e, rows])?,
            part: zeros("partials", &[e, chunks, p])?,
            grad: zeros("grad", &[e, p])?,
        })
    }
}

impl CpuMlp {
    fn new(cfg: &MlpConfig, prm: MlpParams) -> Result<Self> {
        let s = cfg.shape();
        Ok(CpuMlp {
            cfg: cfg.clone(),
            shape: s,
            chunks: s.chunks(CHUNK_ROWS),
            prm,
            buf: MlpBuffers::new(s, host_zeros)?,
        })
    }

    fn forward(&mut self, t: u64, l1: &[f32]) {
        let (s, c) = (self.shape, &self.cfg);
        let (seed, density) = (c.training.seed, &c.data.density);
        reference::toy_mlp::mlp_data(s, c.spec.signed, seed, t as u32, density, &mut self.buf.x);
        reference::toy_mlp::mlp_forward(
            s,
            c.spec,
            &self.buf.x,
            &self.prm,
            &c.data.importance,
            l1,
            &c.topk,
            &mut self.buf.h,
            &mut self.buf.g,
            &mut self.buf.dpre,
            &mut self.buf.loss,
        );
    }
}

impl Stepper<MlpParams> for CpuMlp {
    fn step(&mut self, t: u64) -> Result<()> {
        let s = self.shape;
        let l1 = self.cfg.l1.clone();
        self.forward(t, &l1);
        reference::toy_mlp::mlp_grad(
            s,
            self.cfg.spec,
            CHUNK_ROWS,
            &self.buf.x,
            &self.buf.g,
            &self.buf.h,
            &self.buf.dpre,
            &mut self.buf.part,
        );
        let p = s.params();
        reference::toy::toy_sum_chunks(
            &self.buf.part,
            s.instances,
            self.chunks,
            p,
            &mut self.buf.grad,
        );
        let h = self.cfg.training.hyper(t);
        reference::optim::adam(
            &mut self.prm,
            &self.buf.grad,
            &mut self.buf.mom,
            &mut self.buf.vel,
            &h,
            &[1.0, 0.0],
        );
        Ok(())
    }

    fn forward_eval(&mut self, t: u64) -> Result<()> {
        let zero = vec![0.0; self.shape.instances];
        self.forward(t, &zero);
        Ok(())
    }

    fn batch_loss(&mut self) -> Result<Vec<f64>> {
        Ok(row_means(&self.buf.loss, self.shape.rows))
    }

    fn params(&mut self) -> Result<MlpParams> {
        Ok(self.prm.clone())
    }
}

// ---------------------------------------------------------------- GPU engine

struct GpuMlp {
    run: GpuSteps,
    cfg: MlpConfig,
    shape: MlpShape,
    chunks: usize,
    density: GpuTensor,
    importance: GpuTensor,
    l1: GpuTensor,
    l1_zero: GpuTensor,
    topk: GpuTensor,
    prm: GpuTensor,
    buf: MlpBuffers<GpuTensor>,
}

impl GpuMlp {
    fn new(gpu: Arc<Gpu>, cfg: &MlpConfig, prm: MlpParams) -> Result<Self> {
        let s = cfg.shape();
        let (e, n, p) = (s.instances, s.n, s.params());
        let run = GpuSteps::new(gpu, "mlp")?;
        let g = &run.gpu;
        Ok(GpuMlp {
            density: g.upload("mlp density", &[e], &cfg.data.density)?,
            importance: g.upload("mlp importance", &[e, n], &cfg.data.importance)?,
            l1: g.upload("mlp l1", &[e], &cfg.l1)?,
            l1_zero: g.zeros("mlp l1 (eval)", &[e])?,
            topk: g.upload_u32("mlp topk", &[e], &cfg.topk)?,
            prm: g.upload("mlp prm", &[e, p], &prm)?,
            buf: MlpBuffers::new(s, |label, dims| g.zeros(&format!("mlp {label}"), dims))?,
            run,
            cfg: cfg.clone(),
            shape: s,
            chunks: s.chunks(CHUNK_ROWS),
        })
    }

    /// Record data step `t` (queued) and the forward pass, with the L1 term for training.
    fn begin(&self, t: u64, train: bool) -> Result<wgpu::CommandEncoder> {
        let (gpu, s, c) = (&*self.run.gpu, self.shape, &self.cfg);
        let adamw = train.then_some(&c.training);
        let mut enc = self.run.begin(t, FeatureSets::default(), adamw);
        kernels::toy_mlp::mlp_data(
            gpu,
            &mut enc,
            s,
            c.spec.signed,
            c.training.seed,
            &self.run.step_buf,
            &self.density,
            &self.buf.x,
        )?;
        kernels::toy_mlp::mlp_forward(
            gpu,
            &mut enc,
            s,
            c.spec,
            &self.buf.x,
            &self.prm,
            &self.importance,
            if train { &self.l1 } else { &self.l1_zero },
            &self.topk,
            &self.buf.h,
            &self.buf.g,
            &self.buf.dpre,
            &self.buf.loss,
        )?;
        Ok(enc)
    }
}

impl Stepper<MlpParams> for GpuMlp {
    fn step(&mut self, t: u64) -> Result<()> {
        let (gpu, s) = (&*self.run.gpu, self.shape);
        let mut enc = self.begin(t, true)?;
        kernels::toy_mlp::mlp_grad(
            gpu,
            &mut enc,
            s,
            self.cfg.spec,
            CHUNK_ROWS,
            &self.buf.x,
            &self.buf.g,
            &self.buf.h,
            &self.buf.dpre,
            &self.buf.part,
        )?;
        let p = s.params();
        kernels::toy::toy_sum_chunks(
            gpu,
            &mut enc,
            &self.buf.part,
            s.instances,
            self.chunks,
            p,
            &self.buf.grad,
        )?;
        self.run.adam(
            &mut enc,
            &self.prm,
            &self.buf.grad,
            &self.buf.mom,
            &self.buf.vel,
        )?;
        self.run.submit_step(enc, t)
    }

    fn forward_eval(&mut self, t: u64) -> Result<()> {
        let enc = self.begin(t, false)?;
        self.run.gpu.submit(enc);
        Ok(())
    }

    fn batch_loss(&mut self) -> Result<Vec<f64>> {
        self.run.row_means(&self.buf.loss, self.shape.rows)
    }

    fn params(&mut self) -> Result<MlpParams> {
        self.run.gpu.read_f32(&self.prm)
    }
}

/// The hidden activation's name as written to results.json.
pub fn act_name(a: HiddenAct) -> &'static str {
    match a {
        HiddenAct::Identity => "identity",
        HiddenAct::Relu => "relu",
        HiddenAct::TopK => "topk",
    }
}
