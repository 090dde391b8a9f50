//! FISTA (Beck & Teboulle 2009): per-row non-negative sparse coding over a fixed
//! dictionary, the iterative inference an SAE encoder amortises.
//!
//!   min over z >= 0 of 1/2 ||x - b - z W||^2 + lambda ||z||_1,   W: (n, d), b: (d)
//!
//! with step 1/L, L = the largest eigenvalue of W W^T (the Lipschitz constant of the
//! gradient), and the paper's momentum: y_1 = z_0 = 0, t_1 = 1,
//!   z_k = max(y_k - ((y_k W + b - x) W^T + lambda) / L, 0)
//!   t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
//!   y_{k+1} = z_k + ((t_k - 1) / t_{k+1}) (z_k - z_{k-1})
//! An iteration is gemm (y W + b), sub (minus x), gemm NT ((.) W^T) and fista_step; every
//! `check_every` iterations fista_row_change gives each row's ||z_k - z_{k-1}|| and ||z_k||,
//! and the batch stops once every row has ||z_k - z_{k-1}|| <= tol ||z_k|| (or at
//! `max_iters`). Rows of a batch therefore stop together. The GPU engine records
//! `check_every` iterations per submission and reads back only the per-row change; the CPU
//! engine runs the same sequence with the CPU twins.
//!
//! W is the dictionary scaled to unit atoms ([`Dictionary`]): the L1 term weighs each
//! given atom by its norm, and codes are reported over the atoms as given.
//!
//! L comes from a power iteration on W^T W in f64 on the host (once per dictionary),
//! times 1.01: the power iteration approaches the eigenvalue from below, and a step a
//! little under 1/L keeps FISTA's guarantee.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::forward::{BatchOut, Coder, dense_to_codes};
use crate::gpu::{Engine, Gpu, GpuTensor};
use crate::reference::gemm::GemmSpec;
use crate::reference::reduce::{METRIC_SLOTS, slot};
use crate::sae::config::nonneg;
use crate::sae::infer::widen;
use crate::{Error, Result};

/// FISTA's knobs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FistaConfig {
    /// L1 weight lambda, in the units of the codes times the data (absolute, not scaled).
    pub lambda: f32,
    /// Iterations at most.
    pub max_iters: usize,
    /// Stop when every row has ||z_k - z_{k-1}|| <= tol ||z_k|| (0: always run max_iters).
    pub tol: f32,
    /// Iterations between convergence checks.
    pub check_every: usize,
}

impl Default for FistaConfig {
    fn default() -> Self {
        FistaConfig {
            lambda: 0.01,
            max_iters: 500,
            tol: 1e-4,
            check_every: 10,
        }
    }
}

impl FistaConfig {
    pub fn validate(&self) -> Result<()> {
        nonneg("lambda", self.lambda)?;
        if self.max_iters == 0 {
            return Err(Error::input("--iters 0: expected at least 1"));
        }
        nonneg("tol", self.tol)?;
        if self.check_every == 0 {
            return Err(Error::input("FISTA check_every 0: expected at least 1"));
        }
        Ok(())
    }
}

/// A dictionary to code over: atoms (n, d) scaled to unit norm, an offset b (d) subtracted
/// from x, and per atom the factor that turns a code over the unit atoms back into a code
/// over the atoms as given (1 / ||atom||).
///
/// FISTA runs on the unit atoms, so its L1 term is lambda * sum_i ||W_i|| z_i in terms of
/// the codes z over the given atoms: the plain lambda ||z||_1 for unit-norm decoders (the
/// usual convention), and lambda keeps its meaning (data units) for decoders stored with
/// other norms, e.g. with an activation scale folded in. Reported codes and L1 are over the
/// atoms as given, so they compare with the encoder's. An all-zero atom stays zero (and
/// its code 0).
#[derive(Clone, Debug)]
pub struct Dictionary {
    pub n: usize,
    pub d: usize,
    /// (n, d), unit rows (or zero)
    pub w: Vec<f32>,
    /// (d)
    pub b: Vec<f32>,
    /// (n): code over the given atom = code over the unit atom * scale
    pub scale: Vec<f32>,
}

impl Dictionary {
    /// Atoms `w` (n, d) as given, offset `b` (d).
    pub fn new(w: &[f32], b: &[f32], n: usize, d: usize) -> Dictionary {
        assert_eq!(w.len(), n * d, "Dictionary: atoms");
        assert_eq!(b.len(), d, "Dictionary: offset");
        let mut unit = w.to_vec();
        let mut scale = vec![1.0f32; n];
        for (row, s) in unit.chunks_exact_mut(d.max(1)).zip(scale.iter_mut()) {
            let norm = row
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
                *s = (1.0 / norm) as f32;
            }
        }
        Dictionary {
            n,
            d,
            w: unit,
            b: b.to_vec(),
            scale,
        }
    }

    /// An SAE's decoder: W_dec and b_dec.
    pub fn of_sae(m: &crate::sae::export::SaeModel) -> Dictionary {
        Dictionary::new(&m.w_dec, &m.b_dec, m.n, m.d)
    }

    /// Planted features (n, d) with no offset (synthetic x = sum_i c_i f_i).
    pub fn of_features(features: &[f32], n: usize, d: usize) -> Dictionary {
        Dictionary::new(features, &vec![0.0; d], n, d)
    }

    /// Codes over the unit atoms (rows, n) -> codes over the atoms as given, in place.
    pub fn rescale(&self, z: &mut [f32]) {
        for row in z.chunks_exact_mut(self.n.max(1)) {
            for (v, &s) in row.iter_mut().zip(&self.scale) {
                *v *= s;
            }
        }
    }
}

/// The largest eigenvalue of W W^T (= that of W^T W), W: (n, d), by power iteration on
/// W^T W in f64 from a fixed random start, until the estimate changes by less than 1e-9
/// relative or after 1000 iterations.
pub fn largest_eigenvalue(w: &[f32], n: usize, d: usize) -> f64 {
    assert_eq!(w.len(), n * d, "largest_eigenvalue: w");
    if n == 0 || d == 0 {
        return 0.0;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5AE_F157A);
    let mut v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let nv = norm(&v);
    v.iter_mut().for_each(|a| *a /= nv);
    let mut lam = 0.0f64;
    for _ in 0..1000 {
        // u = W v (n), then v' = W^T u (d), summed over rows in blocks (fixed order).
        let u: Vec<f64> = w
            .par_chunks(d)
            .map(|row| row.iter().zip(&v).map(|(&a, &b)| a as f64 * b).sum())
            .collect();
        let block = 1024;
        let parts: Vec<Vec<f64>> = w
            .par_chunks(d * block)
            .zip(u.par_chunks(block))
            .map(|(rows, us)| {
                let mut acc = vec![0.0f64; d];
                for (row, &ui) in rows.chunks(d).zip(us) {
                    for (a, &r) in acc.iter_mut().zip(row) {
                        *a += ui * r as f64;
                    }
                }
                acc
            })
            .collect();
        let mut next = vec![0.0f64; d];
        for p in parts {
            for (a, b) in next.iter_mut().zip(p) {
                *a += b;
            }
        }
        let new_lam = norm(&next);
        if new_lam == 0.0 {
            return 0.0;
        }
        next.iter_mut().for_each(|a| *a /= new_lam);
        v = next;
        let done = (new_lam - lam).abs() <= 1e-9 * new_lam;
        lam = new_lam;
        if done {
            break;
        }
    }
    lam
}

/// Momentum (t_k - 1) / t_{k+1} of iterations k = 1..=iters, t_1 = 1,
/// t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2 (computed in f64).
pub fn momentum_schedule(iters: usize) -> Vec<f32> {
    let mut t = 1.0f64;
    (0..iters)
        .map(|_| {
            let next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
            let m = (t - 1.0) / next;
            t = next;
            m as f32
        })
        .collect()
}

/// Whether every row's change is within tolerance: change (rows, 2) = [||dz||^2, ||z||^2].
fn converged(change: &[f32], tol: f32) -> bool {
    let t2 = tol as f64 * tol as f64;
    change
        .chunks_exact(2)
        .all(|c| c[0] == 0.0 || (c[0] as f64) <= t2 * c[1] as f64)
}

/// FISTA over one dictionary on an engine.
pub struct FistaSolver {
    dict: Dictionary,
    cfg: FistaConfig,
    lipschitz: f32,
    momentum: Vec<f32>,
    backend: Backend,
}

enum Backend {
    Cpu { fired: Vec<u32> },
    Gpu(Box<GpuFista>),
}

struct GpuFista {
    gpu: Arc<Gpu>,
    w: GpuTensor,
    b: GpuTensor,
    /// (n) Dictionary::scale, the L1 weights of dense_stats
    scale: GpuTensor,
    fired: GpuTensor,
    metrics: GpuTensor,
    bufs: Option<Bufs>,
}

struct Bufs {
    rows: usize,
    x: GpuTensor,
    x_hat: GpuTensor,
    e: GpuTensor,
    g: GpuTensor,
    y: GpuTensor,
    z: [GpuTensor; 2],
    change: GpuTensor,
}

impl FistaSolver {
    /// Set up FISTA over `dict` on `engine` (computes L, uploads the dictionary).
    pub fn new(engine: &Engine, dict: Dictionary, cfg: FistaConfig) -> Result<FistaSolver> {
        cfg.validate()?;
        if dict.w.len() != dict.n * dict.d || dict.b.len() != dict.d || dict.scale.len() != dict.n {
            return Err(Error::Internal(format!(
                "FISTA dictionary: {} atom values, {} offset values and {} scales for n = {}, d = {}",
                dict.w.len(),
                dict.b.len(),
                dict.scale.len(),
                dict.n,
                dict.d
            )));
        }
        let lam = largest_eigenvalue(&dict.w, dict.n, dict.d);
        if !(lam > 0.0 && lam.is_finite()) {
            return Err(Error::input(format!(
                "FISTA: the dictionary's largest eigenvalue is {lam}; it needs a non-zero atom"
            )));
        }
        let lipschitz = (1.01 * lam) as f32;
        let backend = match engine {
            Engine::Cpu => Backend::Cpu {
                fired: vec![0; dict.n],
            },
            Engine::Gpu(gpu) => {
                let g = &**gpu;
                Backend::Gpu(Box::new(GpuFista {
                    w: g.upload("dictionary", &[dict.n, dict.d], &dict.w)?,
                    b: g.upload("offset", &[dict.d], &dict.b)?,
                    scale: g.upload("code scale", &[dict.n], &dict.scale)?,
                    fired: g.zeros_u32("fired", &[dict.n])?,
                    metrics: g.zeros("metrics", &[METRIC_SLOTS])?,
                    bufs: None,
                    gpu: gpu.clone(),
                }))
            }
        };
        Ok(FistaSolver {
            momentum: momentum_schedule(cfg.max_iters),
            dict,
            cfg,
            lipschitz,
            backend,
        })
    }

    /// The L used (1.01 times the largest eigenvalue of W W^T).
    pub fn lipschitz(&self) -> f32 {
        self.lipschitz
    }

    pub fn config(&self) -> &FistaConfig {
        &self.cfg
    }
}

impl FistaSolverView<'_> {
    /// Whether to test for convergence after iteration k: every check_every iterations
    /// before the last, and never with tol 0.
    fn checks_at(&self, k: usize) -> bool {
        self.cfg.tol > 0.0 && k.is_multiple_of(self.cfg.check_every) && k < self.cfg.max_iters
    }

    /// Codes over the unit atoms (rows, n), dense, and the batch output, on the CPU engine:
    /// the same sequence as `GpuFista::run`, with the CPU twins.
    fn run_cpu(&self, fired: &mut [u32], x: &[f32], rows: usize) -> (Vec<f32>, BatchOut) {
        use crate::reference::{fista, gemm, reduce};
        let (n, d) = (self.dict.n, self.dict.d);
        let (step, thr) = (1.0 / self.lipschitz, self.cfg.lambda / self.lipschitz);
        let mut y = vec![0.0f32; rows * n];
        let mut z_old = vec![0.0f32; rows * n];
        let mut z_new = vec![0.0f32; rows * n];
        let mut xh = vec![0.0f32; rows * d];
        let mut e = vec![0.0f32; rows * d];
        let mut g = vec![0.0f32; rows * n];
        let mut change = vec![0.0f32; rows * 2];
        let dec = GemmSpec::nn(rows, d, n);
        let nt = GemmSpec::nt(rows, n, d);
        let mut iters = 0;
        for k in 1..=self.cfg.max_iters {
            gemm::gemm(&dec, &y, &self.dict.w, Some(&self.dict.b), &mut xh);
            reduce::sub(&xh, x, &mut e);
            gemm::gemm(&nt, &e, &self.dict.w, None, &mut g);
            fista::fista_step(
                &g,
                &z_old,
                rows,
                n,
                step,
                thr,
                self.momentum[k - 1],
                &mut y,
                &mut z_new,
            );
            iters = k;
            std::mem::swap(&mut z_old, &mut z_new);
            if self.checks_at(k) {
                // z_old now holds z_k, z_new z_{k-1}.
                fista::fista_row_change(&z_old, &z_new, rows, n, &mut change);
                if converged(&change, self.cfg.tol) {
                    break;
                }
            }
        }
        let z = z_old;
        gemm::gemm(&dec, &z, &self.dict.w, Some(&self.dict.b), &mut xh);
        let mut metrics = vec![0.0f32; METRIC_SLOTS];
        reduce::dense_stats(&z, rows, n, &self.dict.scale, fired, &mut metrics);
        let out = BatchOut {
            x_hat: xh,
            l0_sum: metrics[slot::L0 as usize] as f64,
            l1_sum: metrics[slot::L1 as usize] as f64,
            iterations: Some(iters),
            codes: None,
        };
        (z, out)
    }
}

impl GpuFista {
    fn bufs(&mut self, rows: usize, n: usize, d: usize) -> Result<()> {
        if self.bufs.as_ref().is_some_and(|b| b.rows == rows) {
            return Ok(());
        }
        self.bufs = None;
        let g = &*self.gpu;
        self.bufs = Some(Bufs {
            rows,
            x: g.zeros("x", &[rows, d])?,
            x_hat: g.zeros("x_hat", &[rows, d])?,
            e: g.zeros("residual", &[rows, d])?,
            g: g.zeros("gradient", &[rows, n])?,
            y: g.zeros("y", &[rows, n])?,
            z: [g.zeros("z a", &[rows, n])?, g.zeros("z b", &[rows, n])?],
            change: g.zeros("change", &[rows, 2])?,
        });
        Ok(())
    }

    /// As `FistaSolver::run_cpu`, on the device; returns the final z's buffer index.
    fn run(&mut self, s: &FistaSolverView, x: &[f32], rows: usize) -> Result<(usize, BatchOut)> {
        use crate::kernels::{fista, gemm, reduce};
        let (n, d) = (s.dict.n, s.dict.d);
        self.bufs(rows, n, d)?;
        let g = &*self.gpu;
        let b = self.bufs.as_ref().expect("allocated above");
        g.write(&b.x, x)?;
        g.fill(&b.y, 0.0);
        g.fill(&b.z[0], 0.0);
        g.fill(&self.metrics, 0.0);
        let (step, thr) = (1.0 / s.lipschitz, s.cfg.lambda / s.lipschitz);
        let dec = GemmSpec::nn(rows, d, n);
        let nt = GemmSpec::nt(rows, n, d);
        // z[cur] holds z_{k-1} before iteration k.
        let mut cur = 0usize;
        let mut iters = 0;
        let mut enc = g.encoder();
        for k in 1..=s.cfg.max_iters {
            gemm::gemm(g, &mut enc, &dec, &b.y, &self.w, Some(&self.b), &b.x_hat)?;
            reduce::sub(g, &mut enc, &b.x_hat, &b.x, &b.e)?;
            gemm::gemm(g, &mut enc, &nt, &b.e, &self.w, None, &b.g)?;
            let (old, new) = (&b.z[cur], &b.z[1 - cur]);
            fista::fista_step(
                g,
                &mut enc,
                &b.g,
                old,
                rows,
                n,
                step,
                thr,
                s.momentum[k - 1],
                &b.y,
                new,
            )?;
            iters = k;
            cur = 1 - cur;
            if s.checks_at(k) {
                fista::fista_row_change(g, &mut enc, new, old, rows, n, &b.change)?;
                g.submit(std::mem::replace(&mut enc, g.encoder()));
                if converged(&g.read_f32(&b.change)?, s.cfg.tol) {
                    break;
                }
            }
        }
        let z = &b.z[cur];
        gemm::gemm(g, &mut enc, &dec, z, &self.w, Some(&self.b), &b.x_hat)?;
        reduce::dense_stats(
            g,
            &mut enc,
            z,
            rows,
            n,
            &self.scale,
            &self.fired,
            &self.metrics,
        )?;
        g.submit(enc);
        let x_hat = g.read_f32(&b.x_hat)?;
        let metrics = g.read_f32(&self.metrics)?;
        Ok((
            cur,
            BatchOut {
                x_hat,
                l0_sum: metrics[slot::L0 as usize] as f64,
                l1_sum: metrics[slot::L1 as usize] as f64,
                iterations: Some(iters),
                codes: None,
            },
        ))
    }
}

/// The solver's fixed parts, borrowed while the backend is borrowed mutably.
struct FistaSolverView<'a> {
    dict: &'a Dictionary,
    cfg: &'a FistaConfig,
    lipschitz: f32,
    momentum: &'a [f32],
}

impl FistaSolver {
    /// Solve `rows` rows of x (rows, d); the dense codes (rows, n) are returned only when
    /// `read_z` (on the GPU engine they are otherwise left on the device).
    fn run_inner(
        &mut self,
        x: &[f32],
        rows: usize,
        read_z: bool,
    ) -> Result<(Option<Vec<f32>>, BatchOut)> {
        let d = self.dict.d;
        if x.len() != rows * d {
            return Err(Error::Internal(format!(
                "FistaSolver: {} values for {rows} rows of d = {d}",
                x.len()
            )));
        }
        if rows == 0 {
            return Ok((read_z.then(Vec::new), BatchOut::default()));
        }
        let view = FistaSolverView {
            dict: &self.dict,
            cfg: &self.cfg,
            lipschitz: self.lipschitz,
            momentum: &self.momentum,
        };
        match &mut self.backend {
            Backend::Cpu { fired } => {
                let (z, out) = view.run_cpu(fired, x, rows);
                Ok((read_z.then_some(z), out))
            }
            Backend::Gpu(gf) => {
                let (cur, out) = gf.run(&view, x, rows)?;
                let z = if read_z {
                    let b = gf.bufs.as_ref().expect("allocated by run");
                    Some(gf.gpu.read_f32(&b.z[cur])?)
                } else {
                    None
                };
                Ok((z, out))
            }
        }
    }

    /// Solve `rows` rows of x (rows, d): the dense codes (rows, n) over the atoms as given
    /// (x_hat = z W + b) and the batch output (x_hat, L0 / L1 sums, iterations).
    pub fn solve(&mut self, x: &[f32], rows: usize) -> Result<(Vec<f32>, BatchOut)> {
        let (z, out) = self.run_inner(x, rows, true)?;
        let mut z = z.expect("asked for");
        self.dict.rescale(&mut z);
        Ok((z, out))
    }
}

impl Coder for FistaSolver {
    fn d(&self) -> usize {
        self.dict.d
    }
    fn n(&self) -> usize {
        self.dict.n
    }
    fn run(&mut self, x: &[f32], rows: usize, want_codes: bool) -> Result<BatchOut> {
        let (z, mut out) = self.run_inner(x, rows, want_codes)?;
        if let Some(mut z) = z {
            self.dict.rescale(&mut z);
            out.codes = Some(dense_to_codes(&z, rows, self.dict.n));
        }
        Ok(out)
    }
    fn fire_counts(&self) -> Result<Vec<u64>> {
        Ok(match &self.backend {
            Backend::Cpu { fired } => widen(fired),
            Backend::Gpu(g) => widen(&g.gpu.read_u32(&g.fired)?),
        })
    }
    fn reset_counts(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Cpu { fired } => fired.iter_mut().for_each(|c| *c = 0),
            Backend::Gpu(g) => g.gpu.write(&g.fired, &vec![0u32; self.dict.n])?,
        }
        Ok(())
    }
}
