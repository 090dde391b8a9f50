//! Whole runs through `sae::train::run` on synthetic shards: exact resume on both engines
//! (also in the middle of a k annealing, `--k-anneal-steps`), and recovery of a planted
//! dictionary.

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use saeforge::data::FloatType;
use saeforge::gpu::DeviceChoice;
use saeforge::sae::export::SaeModel;
use saeforge::sae::{Arch, DecoderNorm, TrainArgs, train};
use saeforge::synth::{SynthConfig, read_truth, write_dataset};

use crate::common::{cpu_test, fail, gpu_test};

fn tmp(name: &str) -> PathBuf {
    crate::common::tmp_dir("train", name)
}

fn synth(
    dir: &Path,
    features: usize,
    d: usize,
    active: f64,
    tokens: usize,
    seed: u64,
) -> Result<(), Failed> {
    write_dataset(
        dir,
        SynthConfig {
            features,
            d_in: d,
            active,
            density_decay: 0.0,
            magnitude: (0.0, 1.0),
            correlated_groups: 0,
            anticorrelated_groups: 0,
            group_size: 2,
            noise: 0.0,
            tokens,
            shard_tokens: tokens / 3 + 1,
            dtype: FloatType::F16,
            seed,
        },
    )
    .map(|_| ())
    .map_err(fail)
}

fn args(data: &Path, out: &Path, arch: Arch, device: DeviceChoice, steps: u64) -> TrainArgs {
    TrainArgs {
        data: Some(vec![data.to_path_buf()]),
        out: Some(out.to_path_buf()),
        arch: Some(arch),
        d_sae: Some(96),
        k: Some(4),
        batch: Some(64),
        steps: Some(steps),
        lr: Some(2e-3),
        lr_warmup: Some(2),
        sparsity_warmup: Some(2),
        dead_tokens: Some(256),
        log_every: Some(2),
        eval_every: Some(0),
        checkpoint_every: Some(3),
        shuffle_rows: Some(500),
        init_rows: Some(256),
        device: Some(device),
        ..Default::default()
    }
}

/// A run stopped at step 5 and resumed to step 9 ends bitwise equal to a 9-step run. With
/// `anneal`, k falls from 40 to 4 over the first 8 steps: the stop is inside the decay.
fn resume_exact(
    device: DeviceChoice,
    arch: Arch,
    (anneal, rescale): (bool, bool),
) -> Result<(), Failed> {
    let dir = tmp(&format!("resume-{device:?}-{arch:?}-{anneal}-{rescale}"));
    let data = dir.join("data");
    synth(&data, 64, 16, 2.0, 3000, 5)?;
    let run_args = |out: &Path, steps| TrainArgs {
        k_anneal_steps: anneal.then_some(8),
        k_anneal_start: anneal.then_some(40),
        decoder_norm: rescale.then_some(DecoderNorm::Rescale),
        matryoshka_widths: (arch == Arch::Matryoshka).then(|| vec![8, 32, 96]),
        ..args(&data, out, arch, device, steps)
    };
    let (full, part) = (dir.join("full"), dir.join("part"));
    crate::common::resume_matches(&dir, run_args)?;
    if arch == Arch::Topk && !anneal {
        // Every record averages its metric sums over the rows they cover: a topk L0 is k
        // (4) but for rows with fewer positive pre-activations. The first record after the
        // resume (step 6) covers one step only: the run it resumes finished and logged at 5.
        for (run, out) in [("uninterrupted", &full), ("resumed", &part)] {
            let log = std::fs::read_to_string(out.join("training.jsonl")).map_err(fail)?;
            for l in log.lines() {
                let v: serde_json::Value = serde_json::from_str(l).map_err(fail)?;
                let l0 = v["l0"]
                    .as_f64()
                    .ok_or("a training.jsonl record without l0")?;
                if !(3.6..=4.0).contains(&l0) {
                    return Err(
                        format!("{run} run, step {}: L0 {l0}, expected 4 (k)", v["step"]).into(),
                    );
                }
            }
        }
    }
    if anneal {
        // The log says each record's k, on the schedule (log every 2 steps: k of steps 1,
        // 3, 5, 7 and 8, 0-based).
        let log = std::fs::read_to_string(full.join("training.jsonl")).map_err(fail)?;
        let ks: Vec<u64> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["k"].as_u64()))
            .collect::<Result<Option<Vec<_>>, _>>()
            .map_err(fail)?
            .ok_or("a training.jsonl record without k")?;
        if ks != [36, 26, 18, 8, 4] {
            return Err(format!("logged k {ks:?}, expected [36, 26, 18, 8, 4]").into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `--batch-dtype f16` against f32: the same run (CPU engine, same batches and start) on
/// halves trains to a final held-out MSE within BATCH_F16 of the f32 run's, and is not the
/// f32 run (the rounding reached the step).
fn batch_f16_close_to_f32() -> Result<(), Failed> {
    use saeforge::sae::config::BatchDtype;
    let dir = tmp("batch-f16");
    let data = dir.join("data");
    synth(&data, 256, 32, 3.0, 30_000, 3)?;
    let mut eval_mse = Vec::new();
    let mut weights = Vec::new();
    for dtype in [BatchDtype::F32, BatchDtype::F16] {
        let out = dir.join(format!("{dtype:?}"));
        let a = TrainArgs {
            batch_dtype: Some(dtype),
            d_sae: Some(256),
            k: Some(4),
            batch: Some(256),
            eval_fraction: Some(0.1),
            eval_every: Some(200),
            ..args(&data, &out, Arch::Topk, DeviceChoice::Cpu, 200)
        };
        let last = train::run(&a).map_err(fail)?.last.ok_or("no record")?;
        eval_mse.push(last.eval_mse.ok_or("no held-out MSE")?);
        weights.push(std::fs::read(out.join("sae_weights.safetensors")).map_err(fail)?);
    }
    if weights[0] == weights[1] {
        return Err("the f16 run's weights equal the f32 run's: nothing was rounded".into());
    }
    let rel = (eval_mse[1] - eval_mse[0]).abs() / eval_mse[0];
    let tol = crate::common::tolerance::BATCH_F16;
    if rel > tol.rtol as f64 {
        return Err(format!(
            "held-out MSE f16 {} vs f32 {}: relative {rel:.2e} > {} ({})",
            eval_mse[1], eval_mse[0], tol.rtol, tol.name
        )
        .into());
    }
    eprintln!(
        "batch f16 vs f32: held-out MSE {} vs {} (relative {rel:.2e})",
        eval_mse[1], eval_mse[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `train --profile`: the run's third step timed stage by stage (and on the GPU engine
/// kernel by kernel) into OUT/profile.json (the stages in the step's order; on the GPU
/// holding every dispatch, the encoder GEMM among the kernels, GPU times where the adapter
/// has timestamps), and the run's weights byte for byte those of the same run unprofiled.
fn profile_leaves_run_unchanged(device: DeviceChoice) -> Result<(), Failed> {
    let dir = tmp(&format!("profile-{device:?}"));
    let data = dir.join("data");
    synth(&data, 64, 16, 2.0, 3000, 7)?;
    let mut weights = Vec::new();
    for profile in [false, true] {
        let out = dir.join(format!("profile-{profile}"));
        let a = TrainArgs {
            profile: Some(profile),
            ..args(&data, &out, Arch::Topk, device, 6)
        };
        train::run(&a).map_err(fail)?;
        weights.push(std::fs::read(out.join("sae_weights.safetensors")).map_err(fail)?);
        let written = out.join("profile.json");
        if written.exists() != profile {
            return Err(format!("profile {profile}: profile.json exists {}", !profile).into());
        }
        if profile {
            let text = std::fs::read_to_string(&written).map_err(fail)?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(fail)?;
            let kernels = v["kernels"]
                .as_array()
                .ok_or("profile.json without kernels")?;
            // The GPU engine lists its kernels (the encoder GEMM among them); the CPU
            // engine its stages only.
            let gpu = device == DeviceChoice::Gpu;
            let has_gemm = kernels
                .iter()
                .any(|k| k["entry"].as_str().is_some_and(|e| e.starts_with("gemm")));
            if v["step"] != 2 || has_gemm != gpu || (!gpu && !kernels.is_empty()) {
                return Err(format!(
                    "profile.json: step {} and no gemm kernel: {text}",
                    v["step"]
                )
                .into());
            }
            // The stages in the step's order, their dispatches those of the kernels.
            let stages: Vec<&str> = v["stages"]
                .as_array()
                .ok_or("profile.json without stages")?
                .iter()
                .filter_map(|s| s["entry"].as_str())
                .collect();
            let at = |name| stages.iter().position(|s| *s == name);
            if !(at("encode").is_some()
                && at("encode") < at("codes")
                && at("codes") < at("optimizer"))
            {
                return Err(format!("profile.json stages out of order: {stages:?}").into());
            }
            let calls = |key: &str| -> u64 {
                v[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k["calls"].as_u64())
                    .sum()
            };
            if gpu && calls("stages") != calls("kernels") {
                return Err(format!(
                    "{} dispatches by stage, {} by kernel",
                    calls("stages"),
                    calls("kernels")
                )
                .into());
            }
            let timed = kernels
                .iter()
                .all(|k| k["gpu_ms"].as_f64().is_some_and(|g| g > 0.0));
            if v["timestamps"] == true && !timed {
                return Err(format!("timestamps, yet a kernel without GPU time: {text}").into());
            }
        }
    }
    if weights[0] != weights[1] {
        return Err("the profiled run's weights differ from the unprofiled run's".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// 512 unit directions in 64 dims, ~3 active per row: a topk SAE finds them.
fn recovery(device: DeviceChoice) -> Result<(), Failed> {
    let dir = tmp(&format!("recovery-{device:?}"));
    let data = dir.join("data");
    synth(&data, 512, 64, 3.0, 120_000, 11)?;
    let out = dir.join("sae");
    let a = TrainArgs {
        data: Some(vec![data.clone()]),
        out: Some(out.clone()),
        arch: Some(Arch::Topk),
        d_sae: Some(1024),
        k: Some(4),
        batch: Some(512),
        steps: Some(500),
        lr: Some(4e-3),
        device: Some(device),
        eval_every: Some(0),
        checkpoint_every: Some(0),
        ..Default::default()
    };
    train::run(&a).map_err(fail)?;
    let model = SaeModel::load(&out).map_err(fail)?;
    let truth = read_truth(&data.join("truth.safetensors")).map_err(fail)?;
    let r = saeforge::eval::recovery::recovery(&truth.features, &model.w_dec, model.d);
    eprintln!(
        "recovery on {device:?}: MMCS {:.4}, recovered >= 0.9: {:.3}",
        r.mmcs, r.recovered_0_9
    );
    if r.mmcs < 0.9 {
        return Err(format!(
            "MMCS {:.4} < 0.9 (recovered >= 0.9: {:.3})",
            r.mmcs, r.recovered_0_9
        )
        .into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A batchtopk-style export (batchtopk, matryoshka) is a JumpReLU whose threshold is the
/// one training learned: encoding the training data with the exported folder gives an L0
/// near the trained k. A threshold saved wrong (scaled, unscaled, of another latent) moves
/// L0 far from k, which SAELens's loading test cannot see (both sides read the same file).
fn exported_threshold_keeps_l0(device: DeviceChoice, arch: Arch) -> Result<(), Failed> {
    let dir = tmp(&format!("export-l0-{arch:?}-{device:?}"));
    let data = dir.join("data");
    synth(&data, 256, 32, 4.0, 40_000, 5)?;
    let out = dir.join("sae");
    let k = 8usize;
    let a = TrainArgs {
        data: Some(vec![data.clone()]),
        out: Some(out.clone()),
        arch: Some(arch),
        d_sae: Some(256),
        k: Some(k),
        matryoshka_widths: (arch == Arch::Matryoshka).then(|| vec![32, 128, 256]),
        batch: Some(256),
        steps: Some(300),
        device: Some(device),
        eval_every: Some(0),
        checkpoint_every: Some(0),
        ..Default::default()
    };
    train::run(&a).map_err(fail)?;
    let model = SaeModel::load(&out).map_err(fail)?;
    let paths = saeforge::data::discover(std::slice::from_ref(&data)).map_err(fail)?;
    let shards = std::sync::Arc::new(saeforge::data::open_shards(&paths, None).map_err(fail)?);
    let ranges = shards.iter().map(|s| (0, s.rows as u64)).collect();
    let rows = 4096;
    let x = saeforge::data::BatchStream::new(shards, ranges, 1, rows, 0)
        .and_then(|mut s| s.next_batch())
        .map_err(fail)?;
    let codes = model.encode(&x.data, x.rows);
    let l0 = codes.idx.len() as f64 / x.rows as f64;
    eprintln!("{arch:?} on {device:?}: exported L0 {l0:.2} (k {k})");
    if !(0.7 * k as f64..=1.4 * k as f64).contains(&l0) {
        return Err(format!("exported L0 {l0:.2} is not near the trained k {k}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// AuxK's loss is there only while some latent is dead: none can die within the run at
/// a dead window of 10^9 tokens (every logged aux_loss 0), and at 64 tokens most do
/// (some logged aux_loss > 0). The equivalence tests hold the two engines' AUX slots equal.
fn aux_loss_needs_dead_latents(device: DeviceChoice) -> Result<(), Failed> {
    let dir = tmp(&format!("aux-dead-{device:?}"));
    let data = dir.join("data");
    synth(&data, 128, 16, 3.0, 6000, 3)?;
    for (dead_tokens, want_aux) in [(1_000_000_000, false), (64, true)] {
        let out = dir.join(format!("sae-{dead_tokens}"));
        let mut a = args(&data, &out, Arch::Topk, device, 12);
        a.dead_tokens = Some(dead_tokens);
        a.checkpoint_every = Some(0);
        train::run(&a).map_err(fail)?;
        let log = std::fs::read_to_string(out.join("training.jsonl")).map_err(fail)?;
        let aux: Vec<f64> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|r| r["aux_loss"].as_f64()))
            .collect::<Result<Option<Vec<f64>>, _>>()
            .map_err(fail)?
            .ok_or("training.jsonl: a record without aux_loss")?;
        let any = aux.iter().any(|&v| v > 0.0);
        if any != want_aux {
            return Err(format!("--dead-tokens {dead_tokens}: logged aux_loss {aux:?}").into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    // (arch, (--k-anneal-steps, --decoder-norm rescale))
    let cases = [
        (Arch::Topk, (false, false)),
        (Arch::Relu, (false, false)),
        (Arch::Batchtopk, (false, false)),
        (Arch::Jumprelu, (false, false)),
        (Arch::Topk, (true, false)),
        (Arch::Batchtopk, (true, false)),
        (Arch::Topk, (false, true)),
        (Arch::Matryoshka, (false, false)),
        (Arch::Matryoshka, (true, false)),
    ];
    for (arch, how) in cases {
        let anneal = if how.0 { "_k_anneal" } else { "" };
        let rescale = if how.1 { "_rescale" } else { "" };
        let name = format!("{arch:?}{anneal}{rescale}").to_lowercase();
        t.push(cpu_test(
            format!("runs::resume_exact_cpu_{name}"),
            move |_| resume_exact(DeviceChoice::Cpu, arch, how),
        ));
        t.push(gpu_test(
            format!("runs::resume_exact_gpu_{name}"),
            move |_, _| resume_exact(DeviceChoice::Gpu, arch, how),
        ));
    }
    t.push(cpu_test(
        "runs::exported_threshold_keeps_l0_cpu_batchtopk",
        |_| exported_threshold_keeps_l0(DeviceChoice::Cpu, Arch::Batchtopk),
    ));
    t.push(cpu_test(
        "runs::exported_threshold_keeps_l0_cpu_matryoshka",
        |_| exported_threshold_keeps_l0(DeviceChoice::Cpu, Arch::Matryoshka),
    ));
    t.push(gpu_test(
        "runs::exported_threshold_keeps_l0_gpu_batchtopk",
        |_, _| exported_threshold_keeps_l0(DeviceChoice::Gpu, Arch::Batchtopk),
    ));
    t.push(gpu_test(
        "runs::exported_threshold_keeps_l0_gpu_matryoshka",
        |_, _| exported_threshold_keeps_l0(DeviceChoice::Gpu, Arch::Matryoshka),
    ));
    t.push(cpu_test("runs::aux_loss_needs_dead_latents_cpu", |_| {
        aux_loss_needs_dead_latents(DeviceChoice::Cpu)
    }));
    t.push(gpu_test("runs::aux_loss_needs_dead_latents_gpu", |_, _| {
        aux_loss_needs_dead_latents(DeviceChoice::Gpu)
    }));
    t.push(gpu_test(
        "runs::profile_leaves_run_unchanged_gpu",
        |_, _| profile_leaves_run_unchanged(DeviceChoice::Gpu),
    ));
    t.push(cpu_test("runs::profile_leaves_run_unchanged_cpu", |_| {
        profile_leaves_run_unchanged(DeviceChoice::Cpu)
    }));
    t.push(cpu_test("runs::batch_f16_close_to_f32", |_| {
        batch_f16_close_to_f32()
    }));
    t.push(gpu_test("runs::recovers_planted_dictionary_gpu", |_, _| {
        recovery(DeviceChoice::Gpu)
    }));
    t
}
