//! Ground-truth metrics as SAELens's `eval_sae_on_synthetic_data` (sae_lens.synthetic.evals,
//! 6.54) defines them, for an SAE trained on a world with a planted dictionary.
//!
//! With W the SAE's decoder rows (n latents) and F the true features (n_true), and
//! |cos| the (n, n_true) matrix of absolute cosines (norms clamped at 1e-8, as SAELens's
//! `cosine_similarities`):
//!
//! - `mcc`: the one-to-one matching of latents to features that maximises the summed |cos|
//!   (the linear sum assignment of cost 1 - |cos|, solved exactly by the shortest
//!   augmenting path algorithm scipy uses, through the `lsap` crate), and the mean |cos|
//!   over its min(n, n_true) pairs;
//! - `uniqueness`: each latent's best-matching feature is argmax_j |cos(W_i, F_j)| (first
//!   on ties); uniqueness = distinct best-matching features / n;
//! - per latent i, on every evaluated row: the latent fires (code != 0) or not, its best
//!   feature fires (true code > 0) or not: TP, FP, FN, TN. precision_i = TP / (TP + FP),
//!   recall_i = TP / (TP + FN), f1_i = 2 P R / (P + R), each 0 when its denominator is 0,
//!   accuracy_i = (TP + TN) / rows; `precision`, `recall`, `f1`, `accuracy` are their means
//!   over all n latents (dead latents count, with 0);
//! - `true_l0`: mean number of true features active per row.
//!
//! The first two need only the dictionaries; the rest need the true codes of the rows
//! (`synth` writes them beside the shards, see `crate::synth::codes`).

use serde::Serialize;

use crate::reference::gemm::{GemmSpec, gemm};
use crate::{Error, Result};

/// Rows scaled to unit norm, norms clamped at `floor` (a zero row stays zero).
fn unit_rows(rows: &[f32], d: usize, floor: f32) -> Vec<f32> {
    let mut out = rows.to_vec();
    for r in out.chunks_exact_mut(d) {
        let len = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(floor);
        if len > 0.0 {
            r.iter_mut().for_each(|v| *v /= len);
        }
    }
    out
}

/// |cos| of every (a row, b row): (na, nb).
pub fn abs_cosines(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    abs_cosines_floor(a, b, d, 1e-8)
}

/// `abs_cosines` with the row norms clamped at `floor` (0: only zero rows are left alone).
pub(crate) fn abs_cosines_floor(a: &[f32], b: &[f32], d: usize, floor: f32) -> Vec<f32> {
    let (na, nb) = (a.len() / d, b.len() / d);
    let (ua, ub) = (unit_rows(a, d, floor), unit_rows(b, d, floor));
    let mut cos = vec![0.0f32; na * nb];
    gemm(&GemmSpec::nt(na, nb, d), &ua, &ub, None, &mut cos);
    cos.iter_mut().for_each(|c| *c = c.abs());
    cos
}

/// Per row of `cos` (rows, cols): its largest entry and that entry's column (first on ties).
pub fn best_per_row(cos: &[f32], cols: usize) -> Vec<(f32, u32)> {
    cos.chunks_exact(cols)
        .map(|row| {
            let mut best = (f32::NEG_INFINITY, 0u32);
            for (j, &c) in row.iter().enumerate() {
                if c > best.0 {
                    best = (c, j as u32);
                }
            }
            best
        })
        .collect()
}

/// Per row of `cos` (rows, cols): the column of its largest entry (first on ties).
pub fn argmax_rows(cos: &[f32], cols: usize) -> Vec<u32> {
    best_per_row(cos, cols).into_iter().map(|b| b.1).collect()
}

/// How many distinct values `v` holds.
pub(crate) fn distinct(v: &[u32]) -> usize {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Distinct values of `best` (each latent's best feature) over the number of latents.
pub fn uniqueness(best: &[u32]) -> f64 {
    if best.is_empty() {
        return 0.0;
    }
    distinct(best) as f64 / best.len() as f64
}

/// The optimal one-to-one matching of `cos` (rows, cols) maximising the summed entries:
/// (row, col) pairs, min(rows, cols) of them, ascending row. Solved as scipy's
/// `linear_sum_assignment(1 - cos)` is (same algorithm, same handling of a wide or tall
/// matrix), in f64.
pub fn assignment(cos: &[f32], rows: usize, cols: usize) -> Result<Vec<(usize, usize)>> {
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    // scipy transposes a tall matrix; build the transposed cost directly (no second copy).
    let tall = rows > cols;
    let (nr, nc) = if tall { (cols, rows) } else { (rows, cols) };
    let bytes = (nr as u128) * (nc as u128) * 8;
    crate::io::check_host_memory(
        &format!("the MCC assignment ({rows} x {cols} f64 costs)"),
        bytes,
        "evaluate a smaller dictionary",
    )?;
    let mut cost = vec![0.0f64; nr * nc];
    if tall {
        for (i, row) in cos.chunks_exact(cols).enumerate() {
            for (j, &c) in row.iter().enumerate() {
                cost[j * nc + i] = 1.0 - c as f64;
            }
        }
    } else {
        for (o, &c) in cost.iter_mut().zip(cos) {
            *o = 1.0 - c as f64;
        }
    }
    let (a, b) = lsap::solve(nr, nc, &cost, false).map_err(|e| {
        Error::input(format!(
            "MCC: the assignment failed ({e}): non-finite cosines?"
        ))
    })?;
    let mut pairs: Vec<(usize, usize)> = if tall {
        a.into_iter().zip(b).map(|(c, r)| (r, c)).collect()
    } else {
        a.into_iter().zip(b).collect()
    };
    pairs.sort_unstable();
    Ok(pairs)
}

/// The dictionary-only ground-truth metrics.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DictionaryTruth {
    /// Mean |cos| over the optimal one-to-one matching of latents to true features.
    pub mcc: f64,
    /// Pairs in that matching: min(n, n_true).
    pub mcc_pairs: usize,
    /// Distinct best-matching true features over latents.
    pub uniqueness: f64,
    /// Each latent's best-matching true feature.
    #[serde(skip)]
    pub best: Vec<u32>,
    /// The matching's (latent, true feature) pairs.
    #[serde(skip)]
    pub pairs: Vec<(usize, usize)>,
}

/// MCC and uniqueness of the decoder `w_dec` (n, d) against the true `features` (n_true, d).
pub fn dictionary_truth(w_dec: &[f32], features: &[f32], d: usize) -> Result<DictionaryTruth> {
    let (n, nt) = (w_dec.len() / d, features.len() / d);
    crate::io::check_host_memory(
        &format!("the |cosine| matrix of {n} latents x {nt} true features"),
        (n as u128) * (nt as u128) * 4,
        "evaluate a smaller dictionary",
    )?;
    let cos = abs_cosines(w_dec, features, d);
    let best = argmax_rows(&cos, nt);
    let pairs = assignment(&cos, n, nt)?;
    let mcc = if pairs.is_empty() {
        0.0
    } else {
        pairs
            .iter()
            .map(|&(i, j)| cos[i * nt + j] as f64)
            .sum::<f64>()
            / pairs.len() as f64
    };
    Ok(DictionaryTruth {
        mcc,
        mcc_pairs: pairs.len(),
        uniqueness: uniqueness(&best),
        best,
        pairs,
    })
}

/// Per-latent firing counts against each latent's best-matching feature, row by row.
#[derive(Clone, Debug)]
pub struct FiringCounts {
    best: Vec<u32>,
    tp: Vec<u64>,
    fp: Vec<u64>,
    /// Per true feature: rows it fired on.
    true_fires: Vec<u64>,
    rows: u64,
    true_active: u64,
    /// Scratch: is true feature j active in the current row?
    on: Vec<bool>,
}

/// The firing metrics (see the module doc).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FiringMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
    pub true_l0: f64,
    /// Rows these were measured on.
    pub rows: u64,
}

impl FiringCounts {
    /// `best`: each latent's best-matching true feature; `n_true`: true features.
    pub fn new(best: Vec<u32>, n_true: usize) -> FiringCounts {
        let n = best.len();
        FiringCounts {
            best,
            tp: vec![0; n],
            fp: vec![0; n],
            true_fires: vec![0; n_true],
            rows: 0,
            true_active: 0,
            on: vec![false; n_true],
        }
    }

    /// One row: the latents that fired (code != 0) and the true features active (> 0).
    pub fn add_row(&mut self, fired: &[u32], active: &[u32]) {
        for &j in active {
            self.on[j as usize] = true;
            self.true_fires[j as usize] += 1;
        }
        for &i in fired {
            let i = i as usize;
            if self.on[self.best[i] as usize] {
                self.tp[i] += 1;
            } else {
                self.fp[i] += 1;
            }
        }
        for &j in active {
            self.on[j as usize] = false;
        }
        self.rows += 1;
        self.true_active += active.len() as u64;
    }

    pub fn finish(&self) -> FiringMetrics {
        let n = self.best.len();
        let rows = self.rows as f64;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let (mut p_sum, mut r_sum, mut f_sum, mut a_sum) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..n {
            let tp = self.tp[i] as f64;
            let fp = self.fp[i] as f64;
            let fneg = self.true_fires[self.best[i] as usize] as f64 - tp;
            let tn = rows - tp - fp - fneg;
            let p = ratio(tp, tp + fp);
            let r = ratio(tp, tp + fneg);
            p_sum += p;
            r_sum += r;
            f_sum += ratio(2.0 * p * r, p + r);
            a_sum += ratio(tp + tn, rows.max(1e-8));
        }
        let mean = |s: f64| if n > 0 { s / n as f64 } else { 0.0 };
        FiringMetrics {
            precision: mean(p_sum),
            recall: mean(r_sum),
            f1: mean(f_sum),
            accuracy: mean(a_sum),
            true_l0: ratio(self.true_active as f64, rows),
            rows: self.rows,
        }
    }
}

/// The ground-truth section of an eval report.
#[derive(Clone, Debug)]
pub struct TruthReport {
    pub dictionary: DictionaryTruth,
    /// The firing metrics on the in-distribution rows, or why there are none.
    pub firing: std::result::Result<FiringMetrics, String>,
    /// With a hierarchy in the truth and the firing metrics: the absorption measure
    /// (`super::absorption`).
    pub absorption: Option<super::absorption::Absorption>,
}

impl TruthReport {
    /// Text lines for the eval table.
    pub fn table(&self) -> String {
        let d = &self.dictionary;
        let mut o = format!(
            "ground truth (SAELens's definitions): MCC {:.4} (Hungarian, {} pairs), uniqueness {:.4}\n",
            d.mcc, d.mcc_pairs, d.uniqueness
        );
        match &self.firing {
            Ok(f) => o.push_str(&format!(
                "latent firing vs its best-matching true feature ({} rows): precision {:.4}, recall {:.4}, F1 {:.4}, accuracy {:.4}; true L0 {:.3}\n",
                f.rows, f.precision, f.recall, f.f1, f.accuracy, f.true_l0
            )),
            Err(why) => o.push_str(&format!("latent firing metrics: none ({why})\n")),
        }
        if let Some(a) = &self.absorption {
            o.push_str(&format!(
                "absorption (child latent silent while its parent's latent fires): {:.4} over {} parent-child edges ({} rows); parent latent silent while its child's fires: {:.4} ({} edges)\n",
                a.absorption, a.absorption_edges, a.absorption_rows, a.absorption_parent, a.absorption_parent_edges
            ));
        }
        o
    }

    /// JSON keys: mcc, mcc_pairs, uniqueness; with codes precision, recall, f1, accuracy,
    /// true_l0, truth_rows; without, truth_codes_missing (the reason).
    pub fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value, json};
        let mut m = serde_json::Map::new();
        if let Value::Object(o) = json!(self.dictionary) {
            m.extend(o);
        }
        match &self.firing {
            Ok(f) => {
                m.insert("precision".into(), json!(f.precision));
                m.insert("recall".into(), json!(f.recall));
                m.insert("f1".into(), json!(f.f1));
                m.insert("accuracy".into(), json!(f.accuracy));
                m.insert("true_l0".into(), json!(f.true_l0));
                m.insert("truth_rows".into(), json!(f.rows));
            }
            Err(why) => {
                m.insert("truth_codes_missing".into(), json!(why));
            }
        }
        if let Some(Value::Object(o)) = self.absorption.as_ref().map(|a| json!(a)) {
            m.extend(o);
        }
        m
    }
}
