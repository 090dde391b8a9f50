//! The SAELens v6 folder layout, written by `train` and read by `eval`, `encode`, `steer`
//! and `info`: cfg.json, sae_weights.safetensors (exactly W_enc, W_dec, b_enc, b_dec, plus
//! threshold for jumprelu) and sparsity.safetensors (log10 firing frequency).
//!
//! Transcoders (`super::transcoder`) are written in SAELens's transcoder layouts:
//! architecture "transcoder" (relu), "jumprelu_transcoder" (jumprelu and batchtopk, with
//! the learned threshold), with d_out, W_dec (d_sae, d_out), b_dec (d_out) and
//! apply_b_dec_to_input false. SAELens has no top-k transcoder: a topk transcoder is saved
//! as architecture "topk_transcoder" with k, in the same tensors; SAELens loads it once a
//! `Transcoder` subclass with a TopK activation is registered under that name (README,
//! "Transcoders"), and saeforge reads it back as it wrote it.
//!
//! Any activation scaling used in training is folded into the weights (W_enc * s, W_dec / s,
//! b_dec / s, as SAELens' fold_activation_norm_scaling_factor does), so the dictionary works
//! on raw activations and cfg.json says normalize_activations "none".

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::{Arch, SaeParams, TrainConfig};
use crate::data::FloatType;
use crate::io::{OutTensor, write_json, write_safetensors_digest};
use crate::{Error, Result};

pub const CFG_FILE: &str = "cfg.json";
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
pub const SPARSITY_FILE: &str = "sparsity.safetensors";
/// Key of cfg.json's "saeforge" object holding the folder's file digests.
pub const DIGESTS: &str = "digests";

/// The digests cfg.json records for the folder's files (saeforge folders; None for others),
/// after checking cfg.json's own.
fn recorded_digests(
    cfg_path: &Path,
    cfg: &Value,
) -> Result<Option<serde_json::Map<String, Value>>> {
    let Some(Value::Object(files)) = cfg.get("saeforge").and_then(|s| s.get(DIGESTS)) else {
        return Ok(None);
    };
    if let Some(stored) = files.get(CFG_FILE).and_then(Value::as_str) {
        let mut rest = cfg.clone();
        if let Some(sf) = rest.get_mut("saeforge").and_then(Value::as_object_mut) {
            sf.remove(DIGESTS);
        }
        let now = crate::digest::of(crate::digest::canonical_json(&rest).as_bytes());
        if now != stored {
            return Err(
                crate::digest::mismatch(cfg_path, "its content", stored, &now)
                    .with_hint("cfg.json was edited or damaged after saeforge wrote it"),
            );
        }
    }
    Ok(Some(files.clone()))
}

/// Err unless `bytes` (the file `name` of the folder) has the digest cfg.json records.
fn check_file_digest(
    files: Option<&serde_json::Map<String, Value>>,
    path: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    if let Some(stored) = files.and_then(|f| f.get(name)).and_then(Value::as_str) {
        let now = crate::digest::of(bytes);
        if now != stored {
            return Err(Error::input(format!(
                "{}: is not the file {CFG_FILE} was written with (xxh3_64 recorded {stored}, computed {now}): it was replaced, or the folder mixes files of two exports",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Architecture as SAELens names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaeKind {
    /// ReLU encoder ("standard").
    Standard,
    /// Top-k per row.
    Topk { k: usize },
    /// Per-latent threshold.
    Jumprelu,
}

impl SaeKind {
    pub fn name(&self) -> &'static str {
        match self {
            SaeKind::Standard => "standard",
            SaeKind::Topk { .. } => "topk",
            SaeKind::Jumprelu => "jumprelu",
        }
    }
}

/// An SAE for inference, on raw (unscaled) activations.
#[derive(Clone, Debug)]
pub struct SaeModel {
    pub kind: SaeKind,
    pub d: usize,
    pub n: usize,
    /// (d, n)
    pub w_enc: Vec<f32>,
    /// (n)
    pub b_enc: Vec<f32>,
    /// (n, d)
    pub w_dec: Vec<f32>,
    /// (d)
    pub b_dec: Vec<f32>,
    /// (n) for jumprelu, else empty
    pub threshold: Vec<f32>,
    /// (d, d): a linear skip connection, x_hat += x W_skip^T (sparsify's `W_skip`); None
    /// for every SAE saeforge trains. The codes do not depend on it.
    pub skip: Option<Vec<f32>>,
    /// A transcoder's output width (None for an SAE): W_dec is then (n, d_out), b_dec
    /// (d_out), and the encoder does not subtract b_dec (x W_enc + b_enc).
    pub d_out: Option<usize>,
}

impl SaeModel {
    /// The decoder's width: d_out for a transcoder, d for an SAE.
    pub fn out_dim(&self) -> usize {
        self.d_out.unwrap_or(self.d)
    }

    /// The architecture as cfg.json names it (SAELens's transcoder names for transcoders).
    pub fn architecture(&self) -> &'static str {
        match (self.d_out, self.kind) {
            (None, k) => k.name(),
            (Some(_), SaeKind::Standard) => "transcoder",
            (Some(_), SaeKind::Jumprelu) => "jumprelu_transcoder",
            (Some(_), SaeKind::Topk { .. }) => "topk_transcoder",
        }
    }

    /// The exported model of a training run: scaling folded in, BatchTopK as JumpReLU with
    /// its learned inference threshold.
    pub fn from_training(
        p: &SaeParams,
        cfg: &TrainConfig,
        scale: f32,
        batchtopk_threshold: f32,
    ) -> SaeModel {
        let s = scale;
        // A transcoder's decoder is in the target's units (`TrainConfig::target_scale`).
        let s_out = if cfg.d_out.is_some() {
            cfg.target_scale
        } else {
            scale
        };
        let folded;
        let p = if cfg.decoder_norm == super::DecoderNorm::Rescale {
            folded = p.rescale_folded();
            &folded
        } else {
            p
        };
        let kind = match cfg.arch {
            Arch::Relu => SaeKind::Standard,
            Arch::Topk => SaeKind::Topk { k: cfg.k },
            Arch::Batchtopk | Arch::Matryoshka | Arch::Jumprelu => SaeKind::Jumprelu,
        };
        let threshold = match cfg.arch {
            Arch::Jumprelu => p.log_threshold.iter().map(|t| t.exp()).collect(),
            Arch::Batchtopk | Arch::Matryoshka => vec![batchtopk_threshold; p.n],
            _ => Vec::new(),
        };
        SaeModel {
            kind,
            d: p.d,
            n: p.n,
            w_enc: p.w_enc.iter().map(|w| w * s).collect(),
            b_enc: p.b_enc.clone(),
            w_dec: p.w_dec.iter().map(|w| w / s_out).collect(),
            b_dec: p.b_dec.iter().map(|b| b / s_out).collect(),
            threshold,
            skip: None,
            d_out: cfg.d_out,
        }
    }

    fn tensors(&self) -> Vec<OutTensor<'_>> {
        let mut t = vec![
            OutTensor::f32("W_enc", &[self.d, self.n], &self.w_enc),
            OutTensor::f32("W_dec", &[self.n, self.out_dim()], &self.w_dec),
            OutTensor::f32("b_enc", &[self.n], &self.b_enc),
            OutTensor::f32("b_dec", &[self.out_dim()], &self.b_dec),
        ];
        if self.kind == SaeKind::Jumprelu {
            t.push(OutTensor::f32("threshold", &[self.n], &self.threshold));
        }
        t
    }

    /// cfg.json contents.
    pub fn cfg_json(&self, saeforge: Value) -> Value {
        let mut cfg = json!({
            "architecture": self.architecture(),
            "d_in": self.d,
            "d_sae": self.n,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": true,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {
                "sae_lens_version": "6.0.0",
                "sae_lens_training_version": "6.0.0",
            },
            "saeforge": saeforge,
        });
        if let SaeKind::Topk { k } = self.kind {
            cfg["k"] = json!(k);
        }
        if let Some(d_out) = self.d_out {
            // SAELens's transcoders refuse apply_b_dec_to_input (b_dec is in the output
            // space).
            cfg["d_out"] = json!(d_out);
            cfg["apply_b_dec_to_input"] = json!(false);
        }
        cfg
    }

    /// Write cfg.json, sae_weights.safetensors and (if given) sparsity.safetensors. The
    /// safetensors files carry per-tensor digests; cfg.json, written last, records a digest
    /// of each of them and of itself under `saeforge.digests`, so that a folder mixing files
    /// of two exports (a crash between them) or a replaced file is noticed when read back.
    pub fn save(&self, dir: &Path, log10_sparsity: Option<&[f32]>, saeforge: Value) -> Result<()> {
        self.check_saelens(dir)?;
        crate::io::create_dir(dir)?;
        let mut files = serde_json::Map::new();
        let w = write_safetensors_digest(&dir.join(WEIGHTS_FILE), &self.tensors(), None)?;
        files.insert(WEIGHTS_FILE.into(), json!(w));
        if let Some(s) = log10_sparsity {
            let d = write_safetensors_digest(
                &dir.join(SPARSITY_FILE),
                &[OutTensor::f32("sparsity", &[self.n], s)],
                None,
            )?;
            files.insert(SPARSITY_FILE.into(), json!(d));
        }
        let mut cfg = self.cfg_json(saeforge);
        if let Some(sf) = cfg.get_mut("saeforge").and_then(Value::as_object_mut) {
            sf.remove(DIGESTS);
            // Over the value as a reader parses it back from the text (serde_json's float
            // parsing need not round-trip the last bit), so writer and reader agree.
            let text = serde_json::to_string(&cfg).expect("plain data");
            let parsed: Value = serde_json::from_str(&text).expect("JSON just written");
            let own = crate::digest::of(crate::digest::canonical_json(&parsed).as_bytes());
            files.insert(CFG_FILE.into(), json!(own));
            cfg["saeforge"][DIGESTS] = Value::Object(files);
        }
        write_json(&dir.join(CFG_FILE), &cfg)
    }

    /// An encoder that computes x W_enc + b_enc (no b_dec subtracted first) as saeforge's
    /// (x - b_dec) W_enc + b_enc: b_enc += b_dec W_enc, summed in f64 and rounded once.
    pub(crate) fn fold_b_dec(&mut self) {
        let (d, n) = (self.d, self.n);
        for (j, b) in self.b_enc.iter_mut().enumerate() {
            let shift: f64 = (0..d)
                .map(|i| self.b_dec[i] as f64 * self.w_enc[i * n + j] as f64)
                .sum();
            *b = (*b as f64 + shift) as f32;
        }
    }

    /// Err (naming `dir`) unless SAELens's layout can hold this SAE: it has no skip
    /// connection.
    pub fn check_saelens(&self, dir: &Path) -> Result<()> {
        match self.skip {
            Some(_) => Err(Error::input(format!(
                "{}: SAELens's layout has no skip connection (W_skip); write this SAE with --to sparsify",
                dir.display()
            ))),
            None => Ok(()),
        }
    }

    /// Load a SAELens-layout folder (standard, topk, jumprelu), checking that the weights
    /// are exactly the tensors the architecture needs, with shapes agreeing with cfg.json.
    pub fn load_saelens(dir: &Path) -> Result<SaeModel> {
        crate::lock::note_if_writing(dir);
        let cfg_path = dir.join(CFG_FILE);
        if !dir.is_dir() {
            return Err(Error::input(format!(
                "{}: not an SAE folder ({})",
                dir.display(),
                if dir.exists() {
                    "a file, expected a folder with cfg.json and sae_weights.safetensors"
                } else {
                    "no such folder"
                }
            )));
        }
        if !cfg_path.is_file() {
            return Err(Error::input(format!(
                "{}: not an SAE folder (no {CFG_FILE}; expected the SAELens layout: {CFG_FILE} and {WEIGHTS_FILE})",
                dir.display()
            )));
        }
        let text = String::from_utf8(crate::data::read_input(&cfg_path)?)
            .map_err(|_| Error::input(format!("{}: not UTF-8 text", cfg_path.display())))?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| Error::input(format!("{}: not valid JSON: {e}", cfg_path.display())))?;
        let bad_cfg = |msg: String| Error::input(format!("{}: {msg}", cfg_path.display()));
        let files = recorded_digests(&cfg_path, &cfg)?;
        let get_usize = |key: &str| {
            cfg.get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad_cfg(format!("missing or non-integer \"{key}\"")))
        };
        let d = get_usize("d_in")?;
        let n = get_usize("d_sae")?;
        if d == 0 || n == 0 {
            return Err(bad_cfg(format!(
                "d_in = {d}, d_sae = {n}: expected both at least 1"
            )));
        }
        // A string, or absent / null (SAELens's default, "standard"); any other type is
        // refused rather than read as "standard".
        let text_key = |key: &str| match cfg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(bad_cfg(format!("\"{key}\" = {other}: expected a string"))),
        };
        let arch = text_key("architecture")?.unwrap_or("standard");
        let transcoder = matches!(
            arch,
            "transcoder" | "jumprelu_transcoder" | "topk_transcoder"
        );
        let d_out = if transcoder {
            let d_out = get_usize("d_out")?;
            if d_out == 0 {
                return Err(bad_cfg("d_out = 0: expected at least 1".into()));
            }
            Some(d_out)
        } else {
            None
        };
        let dd = d_out.unwrap_or(d);
        let kind = match arch {
            "standard" | "transcoder" => SaeKind::Standard,
            "topk" | "topk_transcoder" => {
                let k = get_usize("k")?;
                if k == 0 || k > n {
                    return Err(bad_cfg(format!("\"k\" = {k}: expected 1 ..= d_sae ({n})")));
                }
                SaeKind::Topk { k }
            }
            "jumprelu" | "jumprelu_transcoder" => SaeKind::Jumprelu,
            other => {
                return Err(bad_cfg(format!(
                    "architecture {other:?} is not supported (expected standard, topk, jumprelu, transcoder, jumprelu_transcoder or topk_transcoder)"
                )));
            }
        };
        if let Some(norm) = text_key("normalize_activations")?
            && norm != "none"
        {
            return Err(bad_cfg(format!(
                "normalize_activations {norm:?} is not supported (expected \"none\"; fold the scaling into the weights)"
            )));
        }
        // SAELens's "hook_z" reshapes [.., heads, d_head] activations; saeforge reads rows.
        if let Some(r) = text_key("reshape_activations")?
            && r != "none"
        {
            return Err(bad_cfg(format!(
                "reshape_activations {r:?} is not supported (expected \"none\": saeforge reads activations as rows of d_in)"
            )));
        }
        let dtype = match text_key("dtype")? {
            None => None,
            Some(t) => Some((
                t,
                super::tensors::cfg_dtype(t).ok_or_else(|| {
                    bad_cfg(format!(
                        "dtype {t:?} is not supported (expected float32, float16 or bfloat16)"
                    ))
                })?,
            )),
        };
        let wpath = dir.join(WEIGHTS_FILE);
        if !wpath.is_file() {
            return Err(Error::input(format!(
                "{}: not an SAE folder (no {WEIGHTS_FILE} beside {CFG_FILE})",
                dir.display()
            )));
        }
        let bytes = crate::data::read_input(&wpath)?;
        let st = crate::data::parse_safetensors(&wpath, &bytes)?;
        check_file_digest(files.as_ref(), &wpath, WEIGHTS_FILE, &bytes)?;
        let mut expected: BTreeMap<&str, Vec<usize>> = BTreeMap::from([
            ("W_enc", vec![d, n]),
            ("W_dec", vec![n, dd]),
            ("b_enc", vec![n]),
            ("b_dec", vec![dd]),
        ]);
        if kind == SaeKind::Jumprelu {
            expected.insert("threshold", vec![n]);
        }
        let names: Vec<&str> = expected.keys().copied().collect();
        let what = format!("a {arch} SAE");
        super::tensors::no_extra_tensors(&st, &wpath, &what, &names)?;
        if let Some((said, want)) = dtype {
            super::tensors::same_dtype(&st, &wpath, &names, want, said)?;
        }
        let source = match d_out {
            Some(o) => format!("cfg.json (d_in {d}, d_out {o}, d_sae {n})"),
            None => format!("cfg.json (d_in {d}, d_sae {n})"),
        };
        let take = |name: &str| -> Result<Vec<f32>> {
            super::tensors::take_tensor(&st, &wpath, name, &expected[name], &source)
        };
        let w_enc = take("W_enc")?;
        let w_dec = take("W_dec")?;
        let b_enc = take("b_enc")?;
        let b_dec = take("b_dec")?;
        // SAELens' apply_b_dec_to_input = false encodes x W_enc + b_enc, without first
        // subtracting b_dec. saeforge always encodes (x - b_dec) W_enc + b_enc, which is the
        // same function with b_enc + b_dec W_enc in place of b_enc (summed in f64, rounded
        // once), so such folders are folded here and everything downstream stays one path.
        let apply_b_dec = match cfg.get("apply_b_dec_to_input") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad_cfg(format!(
                    "\"apply_b_dec_to_input\" = {other}: expected true or false"
                )));
            }
        };
        let threshold = if kind == SaeKind::Jumprelu {
            take("threshold")?
        } else {
            Vec::new()
        };
        let mut m = SaeModel {
            kind,
            d,
            n,
            w_enc,
            b_enc,
            w_dec,
            b_dec,
            threshold,
            skip: None,
            d_out,
        };
        // A transcoder never subtracts b_dec (it is in the output space).
        if !apply_b_dec && !transcoder {
            m.fold_b_dec();
        }
        Ok(m)
    }
}

/// Read sparsity.safetensors if present.
pub fn load_sparsity(dir: &Path) -> Result<Option<Vec<f32>>> {
    let path = dir.join(SPARSITY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = crate::data::read_input(&path)?;
    let st = crate::data::parse_safetensors(&path, &bytes)?;
    let cfg_path = dir.join(CFG_FILE);
    if let Ok(text) = std::fs::read_to_string(&cfg_path)
        && let Ok(cfg) = serde_json::from_str::<Value>(&text)
    {
        let files = recorded_digests(&cfg_path, &cfg)?;
        check_file_digest(files.as_ref(), &path, SPARSITY_FILE, &bytes)?;
    }
    let v = st
        .tensor("sparsity")
        .map_err(|_| Error::input(format!("{}: missing tensor \"sparsity\"", path.display())))?;
    if v.dtype() != safetensors::Dtype::F32 {
        return Err(Error::input(format!(
            "{}: \"sparsity\" is {:?}, expected F32",
            path.display(),
            v.dtype()
        )));
    }
    let mut out = vec![0.0f32; v.data().len() / 4];
    crate::data::convert(FloatType::F32, v.data(), &mut out);
    Ok(Some(out))
}

/// Sparse codes of a batch: CSR over rows (latent index, activation), ascending latent
/// within a row. Only non-zero activations are kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Codes {
    pub row_ptr: Vec<usize>,
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl SaeModel {
    /// Pre-activations (rows, n) = (x - b_dec) W_enc + b_enc.
    pub fn pre(&self, x: &[f32], rows: usize) -> Vec<f32> {
        use crate::reference::gemm::{GemmSpec, gemm};
        let (d, n) = (self.d, self.n);
        let mut xc = x.to_vec();
        for r in xc.chunks_exact_mut(d).filter(|_| self.d_out.is_none()) {
            for (v, b) in r.iter_mut().zip(&self.b_dec) {
                *v -= b;
            }
        }
        let mut pre = vec![0.0f32; rows * n];
        let spec = GemmSpec::nn(rows, n, d);
        gemm(&spec, &xc, &self.w_enc, Some(&self.b_enc), &mut pre);
        pre
    }

    /// Encode rows (CPU): the architecture's activation, kept sparse, on the reference's
    /// plain product: the judge the tests hold `sae::infer::Encoder` (what the commands
    /// and training's held-out evaluation encode with) to.
    pub fn encode(&self, x: &[f32], rows: usize) -> Codes {
        self.codes_from_pre(&self.pre(x, rows), rows)
    }

    /// The architecture's activation of pre-activations (rows, n), kept sparse (the
    /// second half of [`SaeModel::encode`]).
    pub fn codes_from_pre(&self, pre: &[f32], rows: usize) -> Codes {
        let n = self.n;
        debug_assert_eq!(pre.len(), rows * n);
        let mut codes = Codes {
            row_ptr: vec![0],
            ..Default::default()
        };
        for p in pre.chunks_exact(n) {
            match self.kind {
                SaeKind::Topk { k } => {
                    // The k largest positive entries, latents ascending.
                    let (mut rp, mut idx, mut val) = ([0u32; 2], vec![0u32; k], vec![0.0f32; k]);
                    crate::reference::codes::topk_codes(
                        p, 1, n, k, None, &mut rp, &mut idx, &mut val,
                    );
                    let kept = rp[1] as usize;
                    codes.idx.extend_from_slice(&idx[..kept]);
                    codes.val.extend_from_slice(&val[..kept]);
                }
                SaeKind::Standard => {
                    for (i, &v) in p.iter().enumerate() {
                        if v > 0.0 {
                            codes.idx.push(i as u32);
                            codes.val.push(v);
                        }
                    }
                }
                SaeKind::Jumprelu => {
                    for (i, &v) in p.iter().enumerate() {
                        if v > self.threshold[i] && v != 0.0 {
                            codes.idx.push(i as u32);
                            codes.val.push(v);
                        }
                    }
                }
            }
            codes.row_ptr.push(codes.idx.len());
        }
        codes
    }

    /// x_hat (rows, d) = codes W_dec + b_dec ((rows, d_out) for a transcoder).
    pub fn decode(&self, codes: &Codes) -> Vec<f32> {
        let d = self.out_dim();
        let rows = codes.row_ptr.len() - 1;
        let mut out = vec![0.0f32; rows * d];
        for r in 0..rows {
            let o = &mut out[r * d..(r + 1) * d];
            o.copy_from_slice(&self.b_dec);
            for s in codes.row_ptr[r]..codes.row_ptr[r + 1] {
                let w = &self.w_dec[codes.idx[s] as usize * d..(codes.idx[s] as usize + 1) * d];
                for (a, &b) in o.iter_mut().zip(w) {
                    *a += codes.val[s] * b;
                }
            }
        }
        out
    }
}
