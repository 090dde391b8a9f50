//! Every transcoder export (relu -> "transcoder", jumprelu and batchtopk ->
//! "jumprelu_transcoder", topk -> "topk_transcoder") loaded by SAELens
//! (`SAE.load_from_disk`, tests/transcoder/saelens_transcoder.py) and run on the same rows
//! as saeforge's encoder: codes and outputs within TRANSCODER_PEER. Runs when
//! SAEFORGE_PEER_PYTHON names a python with sae_lens installed (e.g.
//! /work/peer-env/bin/python); otherwise reported as ignored, with that reason.

use std::process::Command;

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::Engine;
use saeforge::io::{OutTensor, write_safetensors};
use saeforge::sae::export::{SaeKind, SaeModel};
use saeforge::sae::infer::Encoder;
use saeforge::sae::{Arch, train};

use crate::common::{assert_close, fail, randn, tolerance};
use crate::{ARCHS, D_IN, D_OUT, args, tmp, write_pairs};

/// Whether every pre-activation of the row is 1e-3 clear of the model's selection edges.
fn clear_of_edges(m: &SaeModel, pre: &[f32]) -> bool {
    let gap = 1e-3;
    match m.kind {
        SaeKind::Standard => pre.iter().all(|p| p.abs() > gap),
        SaeKind::Jumprelu => pre
            .iter()
            .zip(&m.threshold)
            .all(|(p, t)| (p - t).abs() > gap && p.abs() > gap),
        SaeKind::Topk { k } => {
            let mut s = pre.to_vec();
            s.sort_by(|a, b| b.total_cmp(a));
            (s[k - 1] - s[k]).abs() > gap && s[k - 1].abs() > gap
        }
    }
}

fn compare(rng: &mut ChaCha8Rng, py: &str, arch: Arch) -> Result<(), Failed> {
    let dir = tmp(&format!("peer-{arch:?}"));
    let (inp, outd) = write_pairs(&dir, rng, &[800, 600]);
    let run = dir.join("run");
    train::run(&args(&inp, &outd, &run, arch, 40)).map_err(fail)?;
    let model = SaeModel::load(&run).map_err(fail)?;
    let want_arch = match arch {
        Arch::Relu => "transcoder",
        Arch::Topk => "topk_transcoder",
        _ => "jumprelu_transcoder",
    };
    if model.architecture() != want_arch || model.d_out != Some(D_OUT) {
        return Err(format!(
            "export is {} with d_out {:?}, expected {want_arch} with {D_OUT}",
            model.architecture(),
            model.d_out
        )
        .into());
    }
    agree(rng, py, &run, &model, &dir, &format!("{arch:?}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// SAELens's own transcoders (`Transcoder`, `JumpReLUTranscoder` with random weights,
/// written by its `save_model`) read by saeforge: the same codes and outputs.
fn own_folder(rng: &mut ChaCha8Rng, py: &str, arch: &str) -> Result<(), Failed> {
    let dir = tmp(&format!("own-{arch}"));
    let folder = dir.join("sae");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/transcoder/saelens_transcoder.py"
    );
    let seed: u32 = rand::Rng::random(rng);
    let o = Command::new(py)
        .arg(script)
        .args(["make", arch, &D_IN.to_string(), &D_OUT.to_string(), "64"])
        .arg(seed.to_string())
        .arg(&folder)
        .output()
        .map_err(fail)?;
    if !o.status.success() {
        return Err(format!("SAELens: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    let model = SaeModel::load(&folder).map_err(fail)?;
    if model.architecture() != arch || model.d_out != Some(D_OUT) {
        return Err(format!(
            "read as {} with d_out {:?}",
            model.architecture(),
            model.d_out
        )
        .into());
    }
    agree(rng, py, &folder, &model, &dir, arch)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// SAELens's codes and outputs of `folder` against saeforge's (`model`, read from it) on
/// rows clear of every selection edge.
fn agree(
    rng: &mut ChaCha8Rng,
    py: &str,
    run: &std::path::Path,
    model: &SaeModel,
    dir: &std::path::Path,
    arch: &str,
) -> Result<(), Failed> {
    // Rows clear of every selection edge, so that no code flips on rounding.
    let mut x = Vec::new();
    for _ in 0..4000 {
        let row = randn(rng, D_IN, 1.0);
        if clear_of_edges(model, &model.pre(&row, 1)) {
            x.extend_from_slice(&row);
        }
        if x.len() == 64 * D_IN {
            break;
        }
    }
    let rows = x.len() / D_IN;
    if rows < 8 {
        return Err(format!("only {rows} rows clear of the selection edges").into());
    }
    let enc = Encoder::new(model, &Engine::Cpu, rows).map_err(fail)?;
    let out = enc.run(&x, rows, true).map_err(fail)?;
    let codes = out.codes.expect("asked for codes");
    let n = model.n;
    let mut z = vec![0.0f32; rows * n];
    for r in 0..rows {
        for s in codes.row_ptr[r]..codes.row_ptr[r + 1] {
            z[r * n + codes.idx[s] as usize] = codes.val[s];
        }
    }
    let xin = dir.join("x.safetensors");
    write_safetensors(&xin, &[OutTensor::f32("x", &[rows, D_IN], &x)], None).map_err(fail)?;
    let peer_out = dir.join("peer.safetensors");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/transcoder/saelens_transcoder.py"
    );
    let o = Command::new(py)
        .arg(script)
        .arg(run)
        .arg(&xin)
        .arg(&peer_out)
        .output()
        .map_err(fail)?;
    if !o.status.success() {
        return Err(format!(
            "SAELens failed on {}: {}",
            run.display(),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    let bytes = std::fs::read(&peer_out).map_err(fail)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(fail)?;
    let get = |name: &str| -> Result<Vec<f32>, Failed> {
        let t = st.tensor(name).map_err(fail)?;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(t.data()))
    };
    let tol = tolerance::TRANSCODER_PEER;
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    eprintln!(
        "{arch}: {rows} rows, max abs difference SAELens vs saeforge: codes {:.2e}, outputs {:.2e}",
        max_diff(&get("z")?, &z),
        max_diff(&get("y")?, &out.x_hat)
    );
    assert_close(
        &format!("{arch} codes (SAELens vs saeforge)"),
        &get("z")?,
        &z,
        tol,
    )?;
    assert_close(
        &format!("{arch} outputs (SAELens vs saeforge)"),
        &get("y")?,
        &out.x_hat,
        tol,
    )?;
    Ok(())
}

/// A test against SAELens's Transcoder, or ignored with the reason.
fn peer_trial(
    name: String,
    body: impl FnOnce(&mut ChaCha8Rng, &str) -> Result<(), Failed> + Send + 'static,
) -> Trial {
    crate::common::peer_test(name, "from sae_lens import Transcoder", body)
}

pub fn trials() -> Vec<Trial> {
    let mut t: Vec<Trial> = ARCHS
        .into_iter()
        .map(|arch| {
            peer_trial(format!("peer_saelens_{arch:?}"), move |rng, py| {
                compare(rng, py, arch)
            })
        })
        .collect();
    for arch in ["transcoder", "jumprelu_transcoder"] {
        t.push(peer_trial(
            format!("peer_saelens_own_{arch}"),
            move |rng, py| own_folder(rng, py, arch),
        ));
    }
    t
}
