//! Shared fixtures: random SAEs of every architecture saved as SAELens folders, shards with
//! extra tensors and metadata, safetensors reading; and the streaming writer's own tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::data::FloatType;
use saeforge::io::{OutTensor, StreamWriter, write_safetensors};
use saeforge::sae::export::{SaeKind, SaeModel};
use safetensors::Dtype;

use crate::common::{cpu_test, fail, randn, uniform};

pub fn tmp(name: &str) -> PathBuf {
    crate::common::tmp_dir("cmd", name)
}

/// A random SAE: W_enc ~ N(0, 1/d), unit-norm W_dec rows, b_enc ~ N(0, 0.2) (so that the
/// dense architectures fire on a fraction of latents), jumprelu thresholds in [0.1, 0.5].
/// Latent n - 1 never fires (b_enc = -1e3).
pub fn random_model(rng: &mut ChaCha8Rng, kind: SaeKind, d: usize, n: usize) -> SaeModel {
    let mut w_dec = randn(rng, n * d, 1.0);
    for r in w_dec.chunks_exact_mut(d) {
        let len = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        r.iter_mut().for_each(|v| *v /= len);
    }
    let mut b_enc = randn(rng, n, 0.2);
    b_enc[n - 1] = -1e3;
    SaeModel {
        kind,
        d,
        n,
        w_enc: randn(rng, d * n, 1.0 / (d as f32).sqrt()),
        b_enc,
        w_dec,
        b_dec: randn(rng, d, 0.1),
        threshold: if kind == SaeKind::Jumprelu {
            uniform(rng, n, 0.1, 0.5)
        } else {
            Vec::new()
        },
        skip: None,
        d_out: None,
    }
}

/// Save as an SAELens folder and load it back (what the commands see).
pub fn saved(dir: &Path, m: &SaeModel) -> Result<SaeModel, Failed> {
    m.save(dir, None, serde_json::json!({})).map_err(fail)?;
    SaeModel::load(dir).map_err(fail)
}

/// Activations ~ N(0, 1) rounded to `dtype` (so the f32 values are exactly what the file
/// holds).
pub fn activations(rng: &mut ChaCha8Rng, len: usize, dtype: FloatType) -> Vec<f32> {
    randn(rng, len, 1.0)
        .into_iter()
        .map(|v| match dtype {
            FloatType::F32 => v,
            FloatType::F16 => half::f16::from_f32(v).to_f32(),
            FloatType::Bf16 => half::bf16::from_f32(v).to_f32(),
        })
        .collect()
}

/// A shard holding "acts" (shape, dtype), a u32 "token_ids" tensor and metadata.
pub fn write_shard(path: &Path, shape: &[usize], x: &[f32], dtype: FloatType) {
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let ids: Vec<u32> = (0..rows as u32).map(|i| i * 7 + 3).collect();
    write_safetensors(
        path,
        &[
            OutTensor::float("acts", shape, x, dtype.safetensors()),
            OutTensor::u32("token_ids", &[rows], &ids),
        ],
        Some(HashMap::from([("model".to_string(), "toy".to_string())])),
    )
    .unwrap();
}

/// (dtype, shape, bytes) of a tensor, and the file's metadata.
pub fn read_tensor(path: &Path, name: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("{}: no tensor {name}", path.display()));
    (v.dtype(), v.shape().to_vec(), v.data().to_vec())
}

/// The file's metadata less saeforge's digests (`xxh3_64:*`, which the readers check); None
/// when nothing else is left.
pub fn read_metadata(path: &Path) -> Option<HashMap<String, String>> {
    let bytes = std::fs::read(path).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let user: HashMap<String, String> = m
        .metadata()
        .clone()?
        .into_iter()
        .filter(|(k, _)| !k.starts_with(saeforge::digest::PREFIX))
        .collect();
    (!user.is_empty()).then_some(user)
}

/// Rows whose support could flip under a GEMM-rounding difference: for topk, the k-th and
/// (k+1)-th largest pre-activations within `margin`; for the others, a pre-activation within
/// `margin` of its threshold.
pub fn borderline(m: &SaeModel, x: &[f32], rows: usize, margin: f32) -> Vec<bool> {
    let pre = m.pre(x, rows);
    (0..rows)
        .map(|r| {
            let p = &pre[r * m.n..(r + 1) * m.n];
            match m.kind {
                SaeKind::Topk { k } => {
                    let mut s = p.to_vec();
                    s.sort_by(|a, b| b.partial_cmp(a).unwrap());
                    (s[k - 1] - s[k]).abs() < margin || s[k - 1].abs() < margin
                }
                SaeKind::Standard => p.iter().any(|v| v.abs() < margin),
                SaeKind::Jumprelu => p
                    .iter()
                    .zip(&m.threshold)
                    .any(|(v, t)| (v - t).abs() < margin),
            }
        })
        .collect()
}

/// The rows of `v` (rows of `width`) not marked in `skip`, concatenated.
pub fn kept_rows(v: &[f32], width: usize, skip: &[bool]) -> Vec<f32> {
    v.chunks_exact(width)
        .zip(skip)
        .filter(|(_, s)| !**s)
        .flat_map(|(r, _)| r.to_vec())
        .collect()
}

/// f32 values of a float tensor.
pub fn floats(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    let ft = match dtype {
        Dtype::F32 => FloatType::F32,
        Dtype::F16 => FloatType::F16,
        Dtype::BF16 => FloatType::Bf16,
        other => panic!("not a float tensor: {other:?}"),
    };
    let mut out = vec![0.0f32; bytes.len() / ft.bytes()];
    saeforge::data::convert(ft, bytes, &mut out);
    out
}

/// Random bytes of every declared tensor, streamed in uneven chunks, read back equal, with
/// the metadata; a writer dropped before `finish` leaves nothing behind; writing more or
/// fewer bytes than declared is refused.
fn stream_writer(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("stream-writer");
    let decls = vec![
        ("indptr".to_string(), Dtype::I64, vec![5]),
        ("values".to_string(), Dtype::F32, vec![3, 7]),
        ("half".to_string(), Dtype::F16, vec![9]),
        ("empty".to_string(), Dtype::I32, vec![0]),
    ];
    let sizes = [40usize, 84, 18, 0];
    let data: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&s| (0..s).map(|_| rng.random()).collect())
        .collect();
    let all: Vec<u8> = data.concat();
    let meta = HashMap::from([("a".to_string(), "1".to_string()), ("b".into(), "x".into())]);
    let p = dir.join("out.safetensors");
    let mut w = StreamWriter::create(&p, &decls, Some(meta.clone())).map_err(fail)?;
    let mut at = 0;
    while at < all.len() {
        let step = rng.random_range(1..=23).min(all.len() - at);
        w.write(&all[at..at + step]).map_err(fail)?;
        at += step;
    }
    if w.write(&[0]).is_ok() {
        return Err("writing past the declared size was accepted".into());
    }
    w.finish().map_err(fail)?;
    for ((name, dtype, shape), bytes) in decls.iter().zip(&data) {
        let (dt, sh, b) = read_tensor(&p, name);
        if (&dt, &sh, &b) != (dtype, shape, bytes) {
            return Err(format!("{name}: read back {dt:?} {sh:?} differs").into());
        }
    }
    if read_metadata(&p) != Some(meta.clone()) {
        return Err("metadata differs".into());
    }
    // Same input, same bytes (sorted header).
    let q = dir.join("again.safetensors");
    let mut w = StreamWriter::create(&q, &decls, Some(meta)).map_err(fail)?;
    w.write(&all).map_err(fail)?;
    w.finish().map_err(fail)?;
    if std::fs::read(&p).unwrap() != std::fs::read(&q).unwrap() {
        return Err("two writes of the same tensors differ".into());
    }
    // Short writes: refused at finish; dropped writers leave no file.
    let r = dir.join("short.safetensors");
    let mut w = StreamWriter::create(&r, &decls, None).map_err(fail)?;
    w.write(&all[..10]).map_err(fail)?;
    if w.finish().is_ok() {
        return Err("a short write was accepted".into());
    }
    let w = StreamWriter::create(&r, &decls, None).map_err(fail)?;
    drop(w);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "out.safetensors" && n != "again.safetensors")
        .collect();
    if !left.is_empty() {
        return Err(format!("left behind: {left:?}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![cpu_test("io::stream_writer", stream_writer)]
}
