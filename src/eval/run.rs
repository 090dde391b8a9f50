//! The whole of `saeforge eval` as a library call: held-out splits (in-distribution and,
//! optionally, out-of-distribution), each coded by the SAE's encoder and, with FISTA, by
//! FISTA on the SAE's dictionary (the amortisation gap) and on the true dictionary (the
//! oracle); the metrics of every (method, split), recovery of a planted dictionary, density
//! plots, and the report as a text table and as JSON.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::fista::{Dictionary, FistaConfig, FistaSolver};
use super::forward::Coder;
use super::metrics::{Accumulator, ReconMetrics, density_histogram};
use super::recovery::{Recovery, recovery};
use super::source::HeldOut;
use super::truth::TruthReport;
use crate::gpu::Engine;
use crate::sae::export::{SaeKind, SaeModel};
use crate::sae::infer::Encoder;
use crate::synth::read_truth;
use crate::{Error, Result};

/// Every coder in `coders` on the same rows of `src` (read once, batch by batch).
pub fn evaluate(
    coders: &mut [&mut dyn Coder],
    src: &mut HeldOut,
    batch: usize,
) -> Result<Vec<ReconMetrics>> {
    evaluate_with(coders, src, batch, &mut |_, _| {})
}

/// [`evaluate`], calling `progress(rows done, rows in all)` after every batch.
pub fn evaluate_with(
    coders: &mut [&mut dyn Coder],
    src: &mut HeldOut,
    batch: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<ReconMetrics>> {
    src.rewind();
    let mut accs = Vec::new();
    for c in coders.iter_mut() {
        if c.d() != src.d {
            return Err(Error::input(format!(
                "the data has d = {}, the dictionary d = {}",
                src.d,
                c.d()
            )));
        }
        c.reset_counts()?;
        accs.push(Accumulator::new(c.d()));
    }
    let mut done = 0u64;
    while let Some((x, rows)) = src.next_batch(batch)? {
        for (c, acc) in coders.iter_mut().zip(accs.iter_mut()) {
            let out = c.run(&x, rows, false)?;
            acc.add(&x, &out.x_hat, rows, out.l0_sum, out.l1_sum, out.iterations);
        }
        done += rows as u64;
        progress(done, src.rows as u64);
    }
    coders
        .iter()
        .zip(&accs)
        .map(|(c, a)| Ok(a.finish(&c.fire_counts()?)))
        .collect()
}

/// Rows per batch when not given: 2^22 / n (16 MiB per (batch, n) f32 buffer; FISTA keeps
/// four), within 64 ..= 4096. Large batches amortise the per-dispatch cost of FISTA's
/// many small launches.
pub fn default_batch(n: usize) -> usize {
    ((1usize << 22) / n.max(1)).clamp(64, 4096)
}

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub sae: PathBuf,
    /// In-distribution held-out shards.
    pub data: Vec<PathBuf>,
    /// Out-of-distribution shards (may be empty).
    pub ood: Vec<PathBuf>,
    pub tensor: Option<String>,
    /// A planted dictionary (truth.safetensors): recovery, and FISTA's oracle.
    pub truth: Option<PathBuf>,
    /// Rows per split at most.
    pub rows: usize,
    /// Rows per batch; 0: [`default_batch`] of the SAE's d_sae.
    pub batch: usize,
    /// Run FISTA next to the encoder.
    pub fista: Option<FistaConfig>,
    /// Write the feature density histograms here.
    pub plots: Option<PathBuf>,
}

/// The methods of one split, in table order.
#[derive(Clone, Debug)]
pub struct SplitReport {
    /// "in_distribution" or "ood".
    pub name: &'static str,
    /// The inputs as given.
    pub inputs: String,
    pub encoder: ReconMetrics,
    /// FISTA on the SAE's dictionary.
    pub fista: Option<ReconMetrics>,
    /// FISTA on the true dictionary.
    pub oracle: Option<ReconMetrics>,
}

impl SplitReport {
    /// (JSON key, label, metrics) of each method present.
    pub fn methods(&self) -> Vec<(&'static str, &'static str, &ReconMetrics)> {
        let mut v = vec![("encoder", "encoder", &self.encoder)];
        if let Some(m) = &self.fista {
            v.push(("fista", "FISTA, SAE dictionary", m));
        }
        if let Some(m) = &self.oracle {
            v.push(("oracle", "FISTA, true dictionary", m));
        }
        v
    }
}

#[derive(Clone, Debug)]
pub struct EvalReport {
    pub engine: String,
    pub sae: PathBuf,
    pub kind: SaeKind,
    pub d: usize,
    pub n: usize,
    pub splits: Vec<SplitReport>,
    pub recovery: Option<Recovery>,
    /// SAELens's ground-truth metrics (MCC, uniqueness, firing F1, ...) with a truth.
    pub ground_truth: Option<TruthReport>,
    pub fista: Option<FistaConfig>,
    /// L of FISTA on the SAE's dictionary and on the true one.
    pub lipschitz: (Option<f32>, Option<f32>),
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run the evaluation of `cfg` on `engine`.
pub fn run_eval(engine: &Engine, engine_line: &str, cfg: &EvalConfig) -> Result<EvalReport> {
    let model = SaeModel::load(&cfg.sae)?;
    if cfg.data.is_empty() && cfg.truth.is_none() {
        return Err(Error::input(
            "nothing to evaluate: give --data (held-out shards) and/or --truth",
        ));
    }
    if cfg.data.is_empty() && !cfg.ood.is_empty() {
        return Err(Error::input(
            "--ood needs --data too (the in-distribution rows to compare with)",
        ));
    }
    let batch = if cfg.batch == 0 {
        default_batch(model.n)
    } else {
        cfg.batch
    };
    let truth = match &cfg.truth {
        Some(t) => {
            let truth = read_truth(t)?;
            if truth.d != model.d {
                return Err(Error::input(format!(
                    "{}: features have d = {}, but the SAE in {} has d_in = {}",
                    t.display(),
                    truth.d,
                    cfg.sae.display(),
                    model.d
                )));
            }
            Some(truth)
        }
        None => None,
    };
    let recovery = truth
        .as_ref()
        .map(|t| recovery(&t.features, &model.w_dec, model.d));

    let mut splits = Vec::new();
    let mut lipschitz = (None, None);
    let mut ground_truth = None;
    if !cfg.data.is_empty() {
        let mut encoder = Encoder::new(&model, engine, batch)?;
        let mut fista = match cfg.fista {
            Some(f) => Some(FistaSolver::new(engine, Dictionary::of_sae(&model), f)?),
            None => None,
        };
        let mut oracle = match (cfg.fista, &truth) {
            (Some(f), Some(t)) => Some(FistaSolver::new(
                engine,
                Dictionary::of_features(&t.features, t.n, t.d),
                f,
            )?),
            _ => None,
        };
        lipschitz = (
            fista.as_ref().map(|f| f.lipschitz()),
            oracle.as_ref().map(|f| f.lipschitz()),
        );
        let mut sets = vec![("in_distribution", &cfg.data)];
        if !cfg.ood.is_empty() {
            sets.push(("ood", &cfg.ood));
        }
        for (name, inputs) in sets {
            let mut src = HeldOut::open(inputs, cfg.tensor.as_deref(), cfg.rows)?;
            if src.d != model.d {
                return Err(Error::input(format!(
                    "{}: d = {}, but the SAE in {} has d_in = {}",
                    show(inputs),
                    src.d,
                    cfg.sae.display(),
                    model.d
                )));
            }
            let mut coders: Vec<&mut dyn Coder> = vec![&mut encoder];
            if let Some(f) = fista.as_mut() {
                coders.push(f);
            }
            if let Some(o) = oracle.as_mut() {
                coders.push(o);
            }
            // FISTA can take a while: say how far it is on stderr, as one updated line on a
            // terminal, else (a log) a plain line at each tenth.
            let show_progress = cfg.fista.is_some();
            let tty = std::io::stderr().is_terminal();
            let mut shown_tenth = 0;
            let mut progress = |done: u64, total: u64| {
                if !show_progress {
                    return;
                }
                let split = if name == "ood" {
                    "out-of-distribution"
                } else {
                    "in-distribution"
                };
                let line = format!("saeforge: {split}: {done}/{total} rows");
                if tty {
                    eprint!("\r{line}");
                    if done == total {
                        eprintln!();
                    }
                } else {
                    let tenth = done * 10 / total.max(1);
                    if tenth > shown_tenth || done == total {
                        eprintln!("{line}");
                        shown_tenth = tenth;
                    }
                }
            };
            let mut m = evaluate_with(&mut coders, &mut src, batch, &mut progress)?.into_iter();
            let encoder_m = m.next().expect("encoder");
            let fista_m = if fista.is_some() { m.next() } else { None };
            let oracle_m = if oracle.is_some() { m.next() } else { None };
            splits.push(SplitReport {
                name,
                inputs: show(inputs),
                encoder: encoder_m,
                fista: fista_m,
                oracle: oracle_m,
            });
        }
        if let Some(t) = &truth {
            let (data, tensor) = (&cfg.data, cfg.tensor.as_deref());
            let e: &mut dyn Coder = &mut encoder;
            let r = super::truth_codes::report(&model, t, Some(e), data, tensor, cfg.rows, batch)?;
            ground_truth = Some(r);
        }
    }
    if let (None, Some(t)) = (&ground_truth, &truth) {
        let r = super::truth_codes::report(&model, t, None, &[], None, cfg.rows, batch)?;
        ground_truth = Some(r);
    }
    let report = EvalReport {
        engine: engine_line.to_string(),
        sae: cfg.sae.clone(),
        kind: model.kind,
        d: model.d,
        n: model.n,
        splits,
        recovery,
        ground_truth,
        fista: cfg.fista,
        lipschitz,
    };
    if let Some(dir) = &cfg.plots {
        report.plot(dir)?;
    }
    Ok(report)
}

/// A number in at most ~10 characters: fixed point for ordinary magnitudes, else
/// scientific.
fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".to_string()
    } else if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

impl EvalReport {
    /// Feature density histograms: feature_density (encoder, in-distribution), and
    /// feature_density_{fista,oracle}, feature_density_ood[_{fista,oracle}].
    pub fn plot(&self, dir: &std::path::Path) -> Result<()> {
        for s in &self.splits {
            for (key, label, m) in s.methods() {
                let mut name = "feature_density".to_string();
                if s.name == "ood" {
                    name.push_str("_ood");
                }
                if key != "encoder" {
                    name.push('_');
                    name.push_str(key);
                }
                let split = if s.name == "ood" {
                    "out-of-distribution"
                } else {
                    "held-out"
                };
                density_histogram(
                    dir,
                    &name,
                    &format!("Feature density: {label}, {split}"),
                    &m.fire_counts,
                    m.rows,
                )?;
            }
        }
        Ok(())
    }

    /// The report as text: a header, one detailed table per split, the side-by-side
    /// in-distribution / OOD table when there are both, and recovery.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let kind = match self.kind {
            SaeKind::Topk { k } => format!("topk (k = {k})"),
            k => k.name().to_string(),
        };
        o.push_str(&format!(
            "SAE {}: {kind}, d_in {}, d_sae {}\n",
            self.sae.display(),
            self.d,
            self.n,
        ));
        o.push_str(&format!("engine: {}\n", self.engine));
        if let Some(f) = &self.fista {
            let mut ls = Vec::new();
            if let Some(l) = self.lipschitz.0 {
                ls.push(format!("L = {} on the SAE dictionary", num(l as f64)));
            }
            if let Some(l) = self.lipschitz.1 {
                ls.push(format!("L = {} on the true dictionary", num(l as f64)));
            }
            o.push_str(&format!(
                "FISTA: lambda {}, at most {} iterations, tol {} (checked every {}); {}\n",
                f.lambda,
                f.max_iters,
                f.tol,
                f.check_every,
                ls.join(", ")
            ));
        }
        let cols = [
            "MSE", "NMSE", "EV", "cosine", "L0", "L1", "rel.bias", "shrink", "dead", "dense",
            "iters",
        ];
        for s in &self.splits {
            let title = if s.name == "ood" {
                "out-of-distribution"
            } else {
                "in-distribution"
            };
            o.push_str(&format!(
                "\n{title}: {} ({} rows)\n{:<24}",
                s.inputs, s.encoder.rows, "method"
            ));
            for c in cols {
                o.push_str(&format!("{c:>11}"));
            }
            o.push('\n');
            for (_, label, m) in s.methods() {
                o.push_str(&format!("{label:<24}"));
                let vals = [
                    num(m.mse),
                    num(m.nmse),
                    num(m.explained_variance),
                    num(m.cosine),
                    num(m.l0),
                    num(m.l1),
                    num(m.relative_reconstruction_bias),
                    num(m.shrinkage),
                    format!("{:.1}%", 100.0 * m.dead_fraction),
                    format!("{:.1}%", 100.0 * m.dense_fraction),
                    m.iterations.map_or("-".to_string(), |i| format!("{i:.0}")),
                ];
                for v in vals {
                    o.push_str(&format!("{v:>11}"));
                }
                o.push('\n');
            }
        }
        if let [id, ood] = &self.splits[..] {
            o.push_str(&format!(
                "\n{:<24}{:^44}{:^44}\n{:<24}",
                "", "in-distribution", "out-of-distribution", "method"
            ));
            for _ in 0..2 {
                for c in ["MSE", "EV", "cosine", "L0"] {
                    o.push_str(&format!("{c:>11}"));
                }
            }
            o.push_str(&format!("{:>11}\n", "MSE gap"));
            for ((_, label, a), (_, _, b)) in id.methods().into_iter().zip(ood.methods()) {
                o.push_str(&format!("{label:<24}"));
                for m in [a, b] {
                    for v in [m.mse, m.explained_variance, m.cosine, m.l0] {
                        o.push_str(&format!("{:>11}", num(v)));
                    }
                }
                o.push_str(&format!("{:>11}\n", num(b.mse - a.mse)));
            }
        }
        if let Some(r) = &self.recovery {
            o.push_str(&format!(
                "\nrecovery of the true features by the decoder: MMCS {:.4}, recovered >= 0.9: {:.1}%, >= 0.7: {:.1}%, unique best matches {}\n",
                r.mmcs,
                100.0 * r.recovered_0_9,
                100.0 * r.recovered_0_7,
                r.uniqueness
            ));
        }
        if let Some(g) = &self.ground_truth {
            o.push_str(&g.table());
        }
        o
    }

    /// The report as JSON: the encoder's in-distribution metrics at the top level (mse,
    /// nmse, explained_variance, cosine, l0, l1, relative_reconstruction_bias, shrinkage,
    /// dead_fraction, dense_fraction, ...), the recovery and ground-truth keys with a truth
    /// (`Recovery`, `TruthReport::json`), "fista" and
    /// "oracle" objects with the same metrics for FISTA, and "ood": {"encoder", "fista",
    /// "oracle"} for the out-of-distribution split.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("sae".into(), json!(self.sae.display().to_string()));
        out.insert("architecture".into(), json!(self.kind.name()));
        out.insert("d_in".into(), json!(self.d));
        out.insert("d_sae".into(), json!(self.n));
        out.insert("engine".into(), json!(self.engine));
        let obj = |m: &ReconMetrics| serde_json::to_value(m).expect("plain data");
        for s in &self.splits {
            if s.name == "in_distribution" {
                out.insert("data".into(), json!(s.inputs));
                if let Value::Object(m) = obj(&s.encoder) {
                    out.extend(m);
                }
                for (key, _, m) in s.methods().into_iter().skip(1) {
                    out.insert(key.into(), obj(m));
                }
            } else {
                let mut o = Map::new();
                o.insert("data".into(), json!(s.inputs));
                for (key, _, m) in s.methods() {
                    o.insert(key.into(), obj(m));
                }
                out.insert(s.name.into(), Value::Object(o));
            }
        }
        if let Some(r) = &self.recovery
            && let Value::Object(m) = serde_json::to_value(r).expect("plain data")
        {
            out.extend(m);
        }
        if let Some(g) = &self.ground_truth {
            out.extend(g.json());
        }
        if let Some(f) = &self.fista {
            // f32 settings as their shortest decimal (0.01, not 0.009999999776482582).
            let short = |v: f32| v.to_string().parse::<f64>().unwrap_or(v as f64);
            out.insert(
                "fista_config".into(),
                json!({
                    "lambda": short(f.lambda),
                    "max_iters": f.max_iters,
                    "tol": short(f.tol),
                    "check_every": f.check_every,
                    "lipschitz_sae": self.lipschitz.0.map(short),
                    "lipschitz_oracle": self.lipschitz.1.map(short),
                }),
            );
        }
        Value::Object(out)
    }
}
