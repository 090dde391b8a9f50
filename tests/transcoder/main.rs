//! Transcoders (`--target-data`): whole CPU runs on small paired shards. Exact resume; the
//! misaligned pairs refused before anything is written; the CPU engine's gradients against
//! finite differences with d_out != d_in (`finite_diff`); every export loaded by SAELens
//! with the same codes and outputs (`peer`, when SAEFORGE_PEER_PYTHON names a python with
//! sae_lens; otherwise ignored, with that reason).

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod finite_diff;
mod infer;
mod peer;
mod sweep;

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::DeviceChoice;
use saeforge::io::{OutTensor, write_safetensors};
use saeforge::sae::{Arch, TrainArgs, train};

use common::{cpu_test, fail, gpu_test, randn};

pub const D_IN: usize = 32;
pub const D_OUT: usize = 48;
pub const ARCHS: [Arch; 4] = [Arch::Relu, Arch::Topk, Arch::Batchtopk, Arch::Jumprelu];

pub fn tmp(name: &str) -> PathBuf {
    common::tmp_dir("transcoder", name)
}

/// Paired shards under `dir`/in and `dir`/out, `rows[i]` rows in pair i: inputs x ~ N(0, 1)
/// (d_in), targets y = gain (relu(x A - 1) B + c) (d_out), a fixed random map. Returns the
/// folders.
pub fn write_pairs(dir: &Path, rng: &mut ChaCha8Rng, rows: &[usize]) -> (PathBuf, PathBuf) {
    write_pairs_gain(dir, rng, rows, 1.0)
}

pub fn write_pairs_gain(
    dir: &Path,
    rng: &mut ChaCha8Rng,
    rows: &[usize],
    gain: f32,
) -> (PathBuf, PathBuf) {
    let (inp, out) = (dir.join("in"), dir.join("out"));
    std::fs::create_dir_all(&inp).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let h = 64;
    let a = randn(rng, D_IN * h, 1.0);
    let b = randn(rng, h * D_OUT, 0.2);
    let c = randn(rng, D_OUT, 0.5);
    for (i, &r) in rows.iter().enumerate() {
        let x = randn(rng, r * D_IN, 1.0);
        let mut y = vec![0.0f32; r * D_OUT];
        for t in 0..r {
            let hid: Vec<f32> = (0..h)
                .map(|j| {
                    let s: f32 = (0..D_IN).map(|k| x[t * D_IN + k] * a[k * h + j]).sum();
                    (s - 1.0).max(0.0)
                })
                .collect();
            for o in 0..D_OUT {
                y[t * D_OUT + o] =
                    gain * (c[o] + (0..h).map(|j| hid[j] * b[j * D_OUT + o]).sum::<f32>());
            }
        }
        let name = format!("acts-{i:05}.safetensors");
        write_safetensors(
            &inp.join(&name),
            &[OutTensor::f32("acts", &[r, D_IN], &x)],
            None,
        )
        .unwrap();
        write_safetensors(
            &out.join(&name),
            &[OutTensor::f32("acts", &[r, D_OUT], &y)],
            None,
        )
        .unwrap();
    }
    (inp, out)
}

/// A small CPU transcoder run.
pub fn args(inp: &Path, out_data: &Path, out: &Path, arch: Arch, steps: u64) -> TrainArgs {
    TrainArgs {
        data: Some(vec![inp.to_path_buf()]),
        target_data: Some(vec![out_data.to_path_buf()]),
        out: Some(out.to_path_buf()),
        arch: Some(arch),
        d_sae: Some(256),
        k: Some(8),
        batch: Some(64),
        steps: Some(steps),
        lr: Some(2e-3),
        l1: Some(0.5),
        l0: Some(0.5),
        threshold_init: Some(0.1),
        lr_warmup: Some(2),
        sparsity_warmup: Some(2),
        dead_tokens: Some(256),
        log_every: Some(2),
        eval_every: Some(0),
        checkpoint_every: Some(3),
        shuffle_rows: Some(500),
        init_rows: Some(256),
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    }
}

/// A run stopped at step 5 and resumed to step 9 ends bitwise equal to a 9-step run.
fn resume_exact(rng: &mut ChaCha8Rng, arch: Arch, device: DeviceChoice) -> Result<(), Failed> {
    let dir = tmp(&format!("resume-{arch:?}-{device:?}"));
    let (inp, outd) = write_pairs(&dir, rng, &[700, 500]);
    let (a, b) = common::resume_matches(&dir, |out, steps| TrainArgs {
        device: Some(device),
        ..args(&inp, &outd, out, arch, steps)
    })?;
    if a.state.params.w_dec.len() != 256 * D_OUT || a.state.params.b_dec.len() != D_OUT {
        return Err("the decoder is not (d_sae, d_out)".into());
    }
    if a.config.target_scale != b.config.target_scale || a.config.target_scale == 1.0 {
        return Err(format!(
            "target scales {} and {} (expected equal, and estimated)",
            a.config.target_scale, b.config.target_scale
        )
        .into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Misaligned pairs are refused in one line naming the files, before the output folder
/// is created: a missing shard, a pair of different row counts, pairs in another order, and
/// (on --resume) a target shard changed since the checkpoint.
fn misaligned(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("misaligned");
    // Equal rows, so that only the order check tells swapped pairs apart.
    let (inp, outd) = write_pairs(&dir, rng, &[250, 250]);
    let shard = |d: &Path, i: usize| d.join(format!("acts-{i:05}.safetensors"));
    let run_out = dir.join("run");
    let expect = |a: TrainArgs, needles: &[PathBuf], what: &str| -> Result<(), Failed> {
        let e = match train::run(&a) {
            Ok(_) => return Err(format!("{what}: trained").into()),
            Err(e) => e.to_string(),
        };
        if e.contains('\n') {
            return Err(format!("{what}: more than one line: {e}").into());
        }
        for n in needles {
            if !e.contains(&n.display().to_string()) {
                return Err(format!("{what}: {e:?} does not name {}", n.display()).into());
            }
        }
        if run_out.exists() {
            return Err(format!("{what}: the output folder was created").into());
        }
        Ok(())
    };
    let base = |targets: Vec<PathBuf>| TrainArgs {
        target_data: Some(targets),
        ..args(&inp, &outd, &run_out, Arch::Topk, 4)
    };
    // One target shard for two inputs.
    let a = base(vec![shard(&outd, 0)]);
    expect(a, &[shard(&inp, 1)], "a missing target shard")?;
    // Pairs listed in another order.
    let a = base(vec![shard(&outd, 1), shard(&outd, 0)]);
    expect(a, &[shard(&inp, 0), shard(&outd, 1)], "pairs out of order")?;
    // A target shard with other rows.
    let short = dir.join("short");
    std::fs::create_dir_all(&short).unwrap();
    std::fs::copy(shard(&outd, 0), shard(&short, 0)).unwrap();
    let y = randn(rng, 150 * D_OUT, 1.0);
    write_safetensors(
        &shard(&short, 1),
        &[OutTensor::f32("acts", &[150, D_OUT], &y)],
        None,
    )
    .unwrap();
    let a = base(vec![short.clone()]);
    expect(
        a,
        &[shard(&inp, 1), shard(&short, 1)],
        "different row counts",
    )?;
    // Resume on a changed target shard.
    let good = dir.join("good");
    train::run(&args(&inp, &outd, &good, Arch::Topk, 3)).map_err(fail)?;
    let y = randn(rng, 250 * D_OUT, 1.0);
    write_safetensors(
        &shard(&outd, 1),
        &[OutTensor::f32("acts", &[250, D_OUT], &y)],
        None,
    )
    .unwrap();
    let resume = TrainArgs {
        resume: Some(good.clone()),
        steps: Some(6),
        ..Default::default()
    };
    match train::run(&resume) {
        Ok(_) => return Err("resume on a changed target shard: trained".into()),
        Err(e) if !e.to_string().contains("acts-00001") => {
            return Err(format!("resume on a changed target shard: {e}").into());
        }
        Err(_) => {}
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The export works on raw activations: targets 8x the inputs' scale, so the two scales
/// differ and a fold of the wrong one (or none) shows; the explained variance of the raw
/// targets by the export (`eval`'s transcoder path) is the training run's, and the
/// transcoder explains most of the target.
fn export_raw_units(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("raw-units");
    let (inp, outd) = write_pairs_gain(&dir, rng, &[1500, 1500], 8.0);
    let run = dir.join("run");
    let a = TrainArgs {
        batch: Some(256),
        ..args(&inp, &outd, &run, Arch::Topk, 120)
    };
    let outcome = train::run(&a).map_err(fail)?;
    let ev_train = outcome.last.expect("a logged step").explained_variance;
    let model = saeforge::sae::export::SaeModel::load(&run).map_err(fail)?;
    use saeforge::eval::transcoder::{TranscoderEval, evaluate};
    let e = TranscoderEval {
        sae: &run,
        data: std::slice::from_ref(&inp),
        target_data: std::slice::from_ref(&outd),
        tensor: None,
        rows: 3000,
        batch: 512,
    };
    let m = evaluate(&model, &saeforge::gpu::Engine::Cpu, &e).map_err(fail)?;
    if (m.explained_variance - ev_train).abs() > 0.1 || m.explained_variance < 0.3 {
        return Err(format!(
            "explained variance of the raw targets {} vs {ev_train} in training",
            m.explained_variance
        )
        .into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// NaN in a target row: an error naming the target shard, or with --skip-nonfinite the
/// pair dropped whole (the run trains and counts it; tests/data.rs checks the alignment).
fn nonfinite_pairs(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("nonfinite");
    let (inp, outd) = write_pairs(&dir, rng, &[300]);
    let mut y = randn(rng, 300 * D_OUT, 1.0);
    y[17 * D_OUT + 5] = f32::NAN;
    let bad = outd.join("acts-00000.safetensors");
    write_safetensors(&bad, &[OutTensor::f32("acts", &[300, D_OUT], &y)], None).map_err(fail)?;
    let run = |skip: bool, name: &str| {
        let a = TrainArgs {
            skip_nonfinite: Some(skip),
            shuffle_rows: Some(0),
            init_rows: Some(300),
            ..args(&inp, &outd, &dir.join(name), Arch::Topk, 6)
        };
        train::run(&a)
    };
    match run(false, "strict") {
        Err(e)
            if e.to_string().contains("acts-00000.safetensors")
                && e.to_string().contains("row 17") => {}
        other => {
            return Err(format!(
                "without --skip-nonfinite: {:?}",
                other.map(|o| o.skipped_rows)
            )
            .into());
        }
    }
    let o = run(true, "skip").map_err(fail)?;
    if o.skipped_rows == 0 {
        return Err("with --skip-nonfinite: no pair counted as skipped".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    let mut tests: Vec<Trial> = Vec::new();
    for arch in ARCHS {
        tests.push(cpu_test(format!("resume_exact_{arch:?}"), move |rng| {
            resume_exact(rng, arch, DeviceChoice::Cpu)
        }));
        tests.push(gpu_test(
            format!("gpu_resume_exact_{arch:?}"),
            move |_, rng| resume_exact(rng, arch, DeviceChoice::Gpu),
        ));
    }
    tests.push(cpu_test("misaligned_pairs_refused", misaligned));
    tests.push(cpu_test("export_raw_units", export_raw_units));
    tests.push(cpu_test(
        "nonfinite_pairs_refused_or_dropped",
        nonfinite_pairs,
    ));
    tests.extend(finite_diff::trials());
    tests.extend(peer::trials());
    tests.extend(cli::trials());
    tests.extend(infer::trials());
    tests.extend(sweep::trials());
    libtest_mimic::run(&args, tests).exit();
}
