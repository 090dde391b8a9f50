//! EleutherAI sparsify's folder: cfg.json (its `SparseCoderConfig` plus `d_in`) and
//! sae.safetensors with `encoder.weight` (n, d), `encoder.bias` (n), `W_dec` (n, d),
//! `b_dec` (d) and, with `skip_connection`, `W_skip` (d, d). Its encoder is
//! topk(relu((x - b_dec) encoder.weight^T + encoder.bias)), saeforge's topk exactly; its
//! output adds x W_skip^T to the decode (kept as [`SaeModel::skip`]). Transcoders
//! (`transcode`: the encoder reads another layer than the decoder writes) and the
//! `groupmax` activation are refused.

use std::path::Path;

use serde_json::{Value, json};

use crate::io::{OutTensor, write_json, write_safetensors};
use crate::sae::export::{CFG_FILE, SaeKind, SaeModel};
use crate::sae::params::transpose;
use crate::sae::tensors::{no_extra_tensors, take_tensor};
use crate::{Error, Result};

pub const WEIGHTS_FILE: &str = "sae.safetensors";

/// Read a sparsify folder.
pub fn load(dir: &Path) -> Result<SaeModel> {
    let cfg_path = dir.join(CFG_FILE);
    let text = String::from_utf8(crate::data::read_input(&cfg_path)?)
        .map_err(|_| Error::input(format!("{}: not UTF-8 text", cfg_path.display())))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| Error::input(format!("{}: not valid JSON: {e}", cfg_path.display())))?;
    let bad = |msg: String| Error::input(format!("{}: {msg}", cfg_path.display()));
    let int = |key: &str, default: Option<u64>| -> Result<usize> {
        match cfg.get(key) {
            None | Some(Value::Null) => {
                default.ok_or_else(|| bad(format!("missing \"{key}\" (sparsify writes it)")))
            }
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad(format!("\"{key}\" = {v}: expected a non-negative integer"))),
        }
        .map(|v| v as usize)
    };
    let flag = |key: &str| match cfg.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(format!("\"{key}\" = {v}: expected true or false"))),
    };
    if flag("transcode")? {
        return Err(bad(
            "\"transcode\" is true: a transcoder (its encoder reads another layer than its decoder writes); saeforge reads sparsify SAEs only".into(),
        ));
    }
    match cfg
        .get("activation")
        .and_then(Value::as_str)
        .unwrap_or("topk")
    {
        "topk" => {}
        other => {
            return Err(bad(format!(
                "activation {other:?} is not supported (expected \"topk\")"
            )));
        }
    }
    let d = int("d_in", None)?;
    let k = int("k", Some(32))?;
    let skip = flag("skip_connection")?;
    let wpath = dir.join(WEIGHTS_FILE);
    let bytes = crate::data::read_input(&wpath)?;
    let st = crate::data::parse_safetensors(&wpath, &bytes)?;
    // The latent count from the weights; cfg.json's num_latents (or expansion_factor x d)
    // must agree with it.
    let n = st
        .tensor("W_dec")
        .map_err(|_| Error::input(format!("{}: missing tensor \"W_dec\"", wpath.display())))?
        .shape()
        .first()
        .copied()
        .unwrap_or(0);
    let want_n = match int("num_latents", Some(0))? {
        0 => int("expansion_factor", Some(32))? * d,
        v => v,
    };
    if d == 0 || n == 0 || n != want_n {
        return Err(bad(format!(
            "d_in {d} and {n} latents in W_dec; cfg.json's num_latents / expansion_factor say {want_n}"
        )));
    }
    if k == 0 || k > n {
        return Err(bad(format!("\"k\" = {k}: expected 1 ..= {n} latents")));
    }
    let mut names = vec!["encoder.weight", "encoder.bias", "W_dec", "b_dec"];
    if skip {
        names.push("W_skip");
    }
    no_extra_tensors(&st, &wpath, "a sparsify SAE", &names)?;
    let source = format!("cfg.json's d_in {d} with W_dec's {n} latents");
    let take = |name: &str, shape: &[usize]| take_tensor(&st, &wpath, name, shape, &source);
    let enc_w = take("encoder.weight", &[n, d])?;
    Ok(SaeModel {
        kind: SaeKind::Topk { k },
        d,
        n,
        w_enc: transpose(&enc_w, n, d),
        b_enc: take("encoder.bias", &[n])?,
        w_dec: take("W_dec", &[n, d])?,
        b_dec: take("b_dec", &[d])?,
        threshold: Vec::new(),
        skip: match skip {
            true => Some(take("W_skip", &[d, d])?),
            false => None,
        },
        d_out: None,
    })
}

/// The k of `m`, or Err (naming `dir`) unless sparsify's layout can hold it: topk only.
pub fn check(m: &SaeModel, dir: &Path) -> Result<usize> {
    if m.d_out.is_some() {
        return Err(Error::input(format!(
            "{}: saeforge writes sparsify's layout for SAEs only; this is a {} (write it with --to saelens)",
            dir.display(),
            m.architecture()
        )));
    }
    match m.kind {
        SaeKind::Topk { k } => Ok(k),
        _ => Err(Error::input(format!(
            "{}: sparsify's layout holds topk SAEs only; this one is {} (write it with --to saelens)",
            dir.display(),
            m.kind.name()
        ))),
    }
}

/// Write `m` as a sparsify folder (f32 tensors). Only a topk SAE has this layout.
pub fn save(m: &SaeModel, dir: &Path) -> Result<()> {
    let k = check(m, dir)?;
    let (d, n) = (m.d, m.n);
    crate::io::create_dir(dir)?;
    let encoder = transpose(&m.w_enc, d, n);
    let mut tensors = vec![
        OutTensor::f32("encoder.weight", &[n, d], &encoder),
        OutTensor::f32("encoder.bias", &[n], &m.b_enc),
        OutTensor::f32("W_dec", &[n, d], &m.w_dec),
        OutTensor::f32("b_dec", &[d], &m.b_dec),
    ];
    if let Some(s) = &m.skip {
        tensors.push(OutTensor::f32("W_skip", &[d, d], s));
    }
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors, None)?;
    let unit = m.w_dec.chunks_exact(d).all(|row| {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        (norm - 1.0).abs() < 1e-3
    });
    let cfg = json!({
        "activation": "topk",
        "expansion_factor": (n / d).max(1),
        "normalize_decoder": unit,
        "num_latents": n,
        "k": k,
        "multi_topk": false,
        "skip_connection": m.skip.is_some(),
        "transcode": false,
        "d_in": d,
    });
    write_json(&dir.join(CFG_FILE), &cfg)
}
