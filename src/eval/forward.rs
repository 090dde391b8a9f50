//! An SAE's encoder and decoder on an engine, batch by batch: the inference half of the
//! training step, as the same sequence of named kernels on the GPU engine and of their CPU
//! twins on the CPU engine.
//!
//!   xc = x - b_dec                      sub_row
//!   pre = xc W_enc + b_enc              gemm
//!   standard: z = max(pre, 0)           relu_forward
//!   jumprelu: z = pre * [pre > theta]   jumprelu_forward (log_theta = ln theta)
//!   topk:     top k of pre per row      topk, then relu_forward on the k values
//!   x_hat = z W_dec + b_dec             gemm (dense z) or sparse_decode (topk codes)
//!   L0, L1, fire counts                 dense_stats / sparse_stats with unit weights
//!
//! JumpReLU thresholds <= 0 are taken as the smallest positive f32 (ln of it is finite), so
//! that such a latent acts as a ReLU, which is what SAELens' relu(pre) * [pre > theta] does.
//! The per-latent fire counts accumulate over every batch run until [`Coder::reset_counts`].

use std::sync::Arc;

use crate::gpu::{Engine, Gpu, GpuTensor};
use crate::reference;
use crate::reference::gemm::GemmSpec;
use crate::reference::reduce::{METRIC_SLOTS, slot};
use crate::sae::export::{Codes, SaeKind, SaeModel};
use crate::{Error, Result};

/// What a coder returns for one batch.
#[derive(Clone, Debug, Default)]
pub struct BatchOut {
    /// (rows, d)
    pub x_hat: Vec<f32>,
    /// Active latents (code > 0) summed over the batch's rows.
    pub l0_sum: f64,
    /// Code values summed over the batch's rows and latents.
    pub l1_sum: f64,
    /// FISTA: iterations this batch ran.
    pub iterations: Option<usize>,
    /// The codes (CSR, ascending latent within a row), when asked for.
    pub codes: Option<Codes>,
}

/// Anything that turns rows into codes over a dictionary and reconstructs them: the SAE's
/// encoder ([`SaeForward`]) or FISTA ([`crate::eval::fista::FistaSolver`]).
pub trait Coder {
    /// Input dimension.
    fn d(&self) -> usize;
    /// Latents.
    fn n(&self) -> usize;
    /// Code and reconstruct `rows` rows of `x` (rows, d); the codes only if `want_codes`.
    fn run(&mut self, x: &[f32], rows: usize, want_codes: bool) -> Result<BatchOut>;
    /// Rows each latent fired on since the last reset.
    fn fire_counts(&self) -> Result<Vec<u64>>;
    fn reset_counts(&mut self) -> Result<()>;
}

/// ln(theta) per latent, thresholds <= 0 (or not finite) as the smallest positive f32.
pub fn log_thresholds(threshold: &[f32]) -> Vec<f32> {
    threshold
        .iter()
        .map(|&t| {
            if t > 0.0 && t.is_finite() {
                t.ln()
            } else {
                f32::MIN_POSITIVE.ln()
            }
        })
        .collect()
}

/// Dense codes (rows, n) as CSR, keeping values > 0.
pub fn dense_to_codes(z: &[f32], rows: usize, n: usize) -> Codes {
    let mut c = Codes {
        row_ptr: vec![0],
        ..Default::default()
    };
    for r in 0..rows {
        for (i, &v) in z[r * n..(r + 1) * n].iter().enumerate() {
            if v > 0.0 {
                c.idx.push(i as u32);
                c.val.push(v);
            }
        }
        c.row_ptr.push(c.idx.len());
    }
    c
}

/// TopK slots (rows, k) as CSR, keeping values > 0, ascending latent within a row.
fn topk_to_codes(idx: &[u32], val: &[f32], rows: usize, k: usize) -> Codes {
    let mut c = Codes {
        row_ptr: vec![0],
        ..Default::default()
    };
    for r in 0..rows {
        let mut pairs: Vec<(u32, f32)> = (r * k..(r + 1) * k)
            .map(|s| (idx[s], val[s]))
            .filter(|&(_, v)| v > 0.0)
            .collect();
        pairs.sort_by_key(|&(i, _)| i);
        for (i, v) in pairs {
            c.idx.push(i);
            c.val.push(v);
        }
        c.row_ptr.push(c.idx.len());
    }
    c
}

/// An SAE ready to run on an engine.
pub struct SaeForward {
    model: SaeModel,
    log_theta: Vec<f32>,
    backend: Backend,
}

enum Backend {
    Cpu { fired: Vec<u32> },
    Gpu(Box<GpuSae>),
}

/// The weights on the device and the buffers of the last batch size.
struct GpuSae {
    gpu: Arc<Gpu>,
    w_enc: GpuTensor,
    b_enc: GpuTensor,
    w_dec: GpuTensor,
    b_dec: GpuTensor,
    log_theta: GpuTensor,
    ones: GpuTensor,
    fired: GpuTensor,
    metrics: GpuTensor,
    bufs: Option<Bufs>,
}

/// Per-batch buffers for `rows` rows.
struct Bufs {
    rows: usize,
    x: GpuTensor,
    xc: GpuTensor,
    pre: GpuTensor,
    x_hat: GpuTensor,
    /// standard / jumprelu: z (rows, n)
    z: Option<GpuTensor>,
    /// topk: row_ptr (rows + 1), idx (rows, k), pre_val (rows, k), val (rows, k)
    topk: Option<[GpuTensor; 4]>,
}

impl SaeForward {
    /// Put `model` on `engine` (uploads the weights for the GPU engine).
    pub fn new(engine: &Engine, model: &SaeModel) -> Result<SaeForward> {
        let (d, n) = (model.d, model.n);
        let log_theta = if model.kind == SaeKind::Jumprelu {
            log_thresholds(&model.threshold)
        } else {
            Vec::new()
        };
        if let SaeKind::Topk { k } = model.kind
            && matches!(engine, Engine::Gpu(_))
            && k > crate::kernels::topk::MAX_K
        {
            return Err(Error::input(format!(
                "topk SAE with k = {k}: the GPU engine supports k <= {} (use --device cpu)",
                crate::kernels::topk::MAX_K
            )));
        }
        let backend = match engine {
            Engine::Cpu => Backend::Cpu { fired: vec![0; n] },
            Engine::Gpu(gpu) => {
                let g = &**gpu;
                let lt: &[f32] = if log_theta.is_empty() {
                    &[0.0]
                } else {
                    &log_theta
                };
                Backend::Gpu(Box::new(GpuSae {
                    w_enc: g.upload("W_enc", &[d, n], &model.w_enc)?,
                    b_enc: g.upload("b_enc", &[n], &model.b_enc)?,
                    w_dec: g.upload("W_dec", &[n, d], &model.w_dec)?,
                    b_dec: g.upload("b_dec", &[d], &model.b_dec)?,
                    log_theta: g.upload("log_theta", &[lt.len()], lt)?,
                    ones: g.upload("unit weights", &[n], &vec![1.0; n])?,
                    fired: g.zeros_u32("fired", &[n])?,
                    metrics: g.zeros("metrics", &[METRIC_SLOTS])?,
                    bufs: None,
                    gpu: gpu.clone(),
                }))
            }
        };
        Ok(SaeForward {
            model: model.clone(),
            log_theta,
            backend,
        })
    }

    pub fn model(&self) -> &SaeModel {
        &self.model
    }
}

/// The CPU engine's batch: the same sequence as `GpuSae::run`, with the CPU twins.
fn run_cpu(
    m: &SaeModel,
    log_theta: &[f32],
    fired: &mut [u32],
    x: &[f32],
    rows: usize,
    want: bool,
) -> BatchOut {
    use reference::{activations, gemm, reduce, sparse, topk};
    let (d, n) = (m.d, m.n);
    let mut xc = vec![0.0f32; rows * d];
    reduce::sub_row(x, &m.b_dec, rows, d, &mut xc);
    let mut pre = vec![0.0f32; rows * n];
    gemm::gemm(
        &GemmSpec::nn(rows, n, d),
        &xc,
        &m.w_enc,
        Some(&m.b_enc),
        &mut pre,
    );
    let ones = vec![1.0f32; n];
    let mut metrics = vec![0.0f32; METRIC_SLOTS];
    let mut x_hat = vec![0.0f32; rows * d];
    let codes = match m.kind {
        SaeKind::Topk { k } => {
            let mut idx = vec![0u32; rows * k];
            let mut pre_val = vec![0.0f32; rows * k];
            let mut val = vec![0.0f32; rows * k];
            let mut row_ptr = vec![0u32; rows + 1];
            topk::topk(&pre, rows, n, k, None, &mut idx, &mut pre_val);
            activations::relu_forward(&pre_val, &mut val);
            sparse::row_ptr_fixed(rows, k, &mut row_ptr);
            sparse::sparse_decode(
                &row_ptr,
                &idx,
                &val,
                &m.w_dec,
                Some(&m.b_dec),
                rows,
                n,
                d,
                &mut x_hat,
            );
            reduce::sparse_stats(&row_ptr, &idx, &val, rows, n, &ones, fired, &mut metrics);
            want.then(|| topk_to_codes(&idx, &val, rows, k))
        }
        SaeKind::Standard | SaeKind::Jumprelu => {
            let mut z = vec![0.0f32; rows * n];
            if m.kind == SaeKind::Standard {
                activations::relu_forward(&pre, &mut z);
            } else {
                activations::jumprelu_forward(&pre, rows, n, log_theta, &mut z);
            }
            gemm::gemm(
                &GemmSpec::nn(rows, d, n),
                &z,
                &m.w_dec,
                Some(&m.b_dec),
                &mut x_hat,
            );
            reduce::dense_stats(&z, rows, n, &ones, fired, &mut metrics);
            want.then(|| dense_to_codes(&z, rows, n))
        }
    };
    BatchOut {
        x_hat,
        l0_sum: metrics[slot::L0 as usize] as f64,
        l1_sum: metrics[slot::L1 as usize] as f64,
        iterations: None,
        codes,
    }
}

impl GpuSae {
    fn bufs(&mut self, kind: SaeKind, rows: usize, d: usize, n: usize) -> Result<()> {
        if self.bufs.as_ref().is_some_and(|b| b.rows == rows) {
            return Ok(());
        }
        self.bufs = None;
        let g = &*self.gpu;
        let (z, topk) = match kind {
            SaeKind::Topk { k } => {
                let row_ptr = g.zeros_u32("row_ptr", &[rows + 1])?;
                let mut enc = g.encoder();
                crate::kernels::sparse::row_ptr_fixed(g, &mut enc, rows, k, &row_ptr)?;
                g.submit(enc);
                (
                    None,
                    Some([
                        row_ptr,
                        g.zeros_u32("idx", &[rows, k])?,
                        g.zeros("pre_val", &[rows, k])?,
                        g.zeros("val", &[rows, k])?,
                    ]),
                )
            }
            _ => (Some(g.zeros("z", &[rows, n])?), None),
        };
        self.bufs = Some(Bufs {
            rows,
            x: g.zeros("x", &[rows, d])?,
            xc: g.zeros("xc", &[rows, d])?,
            pre: g.zeros("pre", &[rows, n])?,
            x_hat: g.zeros("x_hat", &[rows, d])?,
            z,
            topk,
        });
        Ok(())
    }

    fn run(&mut self, m: &SaeModel, x: &[f32], rows: usize, want: bool) -> Result<BatchOut> {
        use crate::kernels::{activations, gemm, reduce, sparse, topk};
        let (d, n) = (m.d, m.n);
        self.bufs(m.kind, rows, d, n)?;
        let g = &*self.gpu;
        let b = self.bufs.as_ref().expect("allocated above");
        g.write(&b.x, x)?;
        g.fill(&self.metrics, 0.0);
        let mut enc = g.encoder();
        reduce::sub_row(g, &mut enc, &b.x, &self.b_dec, rows, d, &b.xc)?;
        gemm::gemm(
            g,
            &mut enc,
            &GemmSpec::nn(rows, n, d),
            &b.xc,
            &self.w_enc,
            Some(&self.b_enc),
            &b.pre,
        )?;
        match (&b.z, &b.topk) {
            (_, Some([row_ptr, idx, pre_val, val])) => {
                topk::topk(g, &mut enc, &b.pre, None, idx, pre_val)?;
                activations::relu_forward(g, &mut enc, pre_val, val)?;
                sparse::sparse_decode(
                    g,
                    &mut enc,
                    row_ptr,
                    idx,
                    val,
                    &self.w_dec,
                    Some(&self.b_dec),
                    rows,
                    n,
                    d,
                    &b.x_hat,
                )?;
                reduce::sparse_stats(
                    g,
                    &mut enc,
                    row_ptr,
                    idx,
                    val,
                    rows,
                    n,
                    &self.ones,
                    &self.fired,
                    &self.metrics,
                )?;
            }
            (Some(z), None) => {
                if m.kind == SaeKind::Jumprelu {
                    activations::jumprelu_forward(
                        g,
                        &mut enc,
                        &b.pre,
                        rows,
                        n,
                        &self.log_theta,
                        z,
                    )?;
                } else {
                    activations::relu_forward(g, &mut enc, &b.pre, z)?;
                }
                gemm::gemm(
                    g,
                    &mut enc,
                    &GemmSpec::nn(rows, d, n),
                    z,
                    &self.w_dec,
                    Some(&self.b_dec),
                    &b.x_hat,
                )?;
                reduce::dense_stats(
                    g,
                    &mut enc,
                    z,
                    rows,
                    n,
                    &self.ones,
                    &self.fired,
                    &self.metrics,
                )?;
            }
            _ => unreachable!("one of z and topk is allocated"),
        }
        g.submit(enc);
        let x_hat = g.read_f32(&b.x_hat)?;
        let metrics = g.read_f32(&self.metrics)?;
        let codes = if want {
            match (&b.z, &b.topk) {
                (_, Some([_, idx, _, val])) => {
                    let k = idx.shape[1];
                    Some(topk_to_codes(&g.read_u32(idx)?, &g.read_f32(val)?, rows, k))
                }
                (Some(z), _) => Some(dense_to_codes(&g.read_f32(z)?, rows, n)),
                _ => None,
            }
        } else {
            None
        };
        Ok(BatchOut {
            x_hat,
            l0_sum: metrics[slot::L0 as usize] as f64,
            l1_sum: metrics[slot::L1 as usize] as f64,
            iterations: None,
            codes,
        })
    }
}

impl Coder for SaeForward {
    fn d(&self) -> usize {
        self.model.d
    }
    fn n(&self) -> usize {
        self.model.n
    }
    fn run(&mut self, x: &[f32], rows: usize, want_codes: bool) -> Result<BatchOut> {
        if x.len() != rows * self.model.d {
            return Err(Error::Internal(format!(
                "SaeForward::run: {} values for {rows} rows of d = {}",
                x.len(),
                self.model.d
            )));
        }
        if rows == 0 {
            return Ok(BatchOut::default());
        }
        match &mut self.backend {
            Backend::Cpu { fired } => Ok(run_cpu(
                &self.model,
                &self.log_theta,
                fired,
                x,
                rows,
                want_codes,
            )),
            Backend::Gpu(g) => g.run(&self.model, x, rows, want_codes),
        }
    }
    fn fire_counts(&self) -> Result<Vec<u64>> {
        Ok(match &self.backend {
            Backend::Cpu { fired } => fired.iter().map(|&c| c as u64).collect(),
            Backend::Gpu(g) => g
                .gpu
                .read_u32(&g.fired)?
                .into_iter()
                .map(|c| c as u64)
                .collect(),
        })
    }
    fn reset_counts(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Cpu { fired } => fired.iter_mut().for_each(|c| *c = 0),
            Backend::Gpu(g) => g.gpu.write(&g.fired, &vec![0u32; self.model.n])?,
        }
        Ok(())
    }
}
