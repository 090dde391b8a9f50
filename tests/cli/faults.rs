//! Faults during training, through the real binary: kill -9, SIGINT and SIGTERM at an
//! arbitrary step then `--resume` to parameters bitwise equal to an uninterrupted run (CPU
//! and GPU engines); NaN in the data (stop before the bad batch, resume with
//! --skip-nonfinite); divergence (stop, keep the last good checkpoint); a full disk (the
//! previous checkpoint intact); and, in-process, device errors reported by wgpu's callbacks
//! as errors rather than panics.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use saeforge::sae::checkpoint::{self, Checkpoint};

use crate::{bin, command, fx, ok, run, tmp, trial};

/// Three shards of 1000 x 16 f32 rows; row 700 of the second gets a NaN when `nan`.
pub fn data(dir: &Path, nan: bool) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..3 {
        let mut v = fx::randn(1000 * 16, 100 + i as u64);
        if nan && i == 1 {
            v[700 * 16 + 3] = f32::NAN;
        }
        fx::write(
            &data.join(format!("shard-{i}.safetensors")),
            &[("x", "F32", vec![1000, 16], fx::f32_bytes(&v))],
        );
    }
    data
}

/// A run whose every schedule is set explicitly, so that only --steps differs between a
/// long run that is interrupted and an uninterrupted run of the resumed length.
pub fn train_args(
    data: &Path,
    out: &Path,
    device: &str,
    steps: u64,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--data",
        &data.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--device",
        device,
        "--arch",
        "topk",
        "--d-sae",
        "64",
        "--k",
        "4",
        "--batch",
        "32",
        "--steps",
        &steps.to_string(),
        "--lr",
        "2e-3",
        "--lr-warmup",
        "5",
        "--sparsity-warmup",
        "5",
        "--dead-tokens",
        "512",
        "--log-every",
        "3",
        "--checkpoint-every",
        "4",
        "--eval-every",
        "0",
        "--shuffle-rows",
        "500",
        "--init-rows",
        "256",
        "--seed",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `extra` flags replace the defaults above (a flag may be given once).
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        let value = extra.get(i + 1).filter(|v| !v.starts_with("--"));
        match (a.iter().position(|x| x == flag), value) {
            (Some(j), Some(v)) => a[j + 1] = v.to_string(),
            (None, Some(v)) => a.extend([flag.to_string(), v.to_string()]),
            (_, None) => a.push(flag.to_string()),
        }
        i += if value.is_some() { 2 } else { 1 };
    }
    a
}

pub fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn ck_step(out: &Path) -> Option<u64> {
    Checkpoint::load(out).ok().map(|c| c.state.step)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The final checkpoints of two runs hold bitwise-equal state (parameters, Adam moments,
/// counters, threshold, metric sums, data position, scale), and the exported dictionaries
/// are byte for byte the same.
fn same_state(a: &Path, b: &Path) -> Result<(), Failed> {
    let x = Checkpoint::load(a).map_err(|e| e.to_string())?;
    let y = Checkpoint::load(b).map_err(|e| e.to_string())?;
    let (sx, sy) = (&x.state, &y.state);
    if sx.step != sy.step || x.batches != y.batches {
        return Err(format!(
            "step {} / {} rows drawn vs step {} / {}",
            sx.step, x.batches, sy.step, y.batches
        )
        .into());
    }
    for (what, p, q) in [
        ("", &sx.params, &sy.params),
        ("adam_m.", &sx.moments.m, &sy.moments.m),
        ("adam_v.", &sx.moments.v, &sy.moments.v),
    ] {
        if let Some((name, j, u, v)) = crate::common::first_bit_difference(p, q) {
            return Err(format!("{what}{name}[{j}]: uninterrupted {u} vs resumed {v}").into());
        }
    }
    if sx.since_fired != sy.since_fired || sx.fire_total != sy.fire_total {
        return Err("dead-latent counters differ".into());
    }
    if bits(&sx.metrics) != bits(&sy.metrics)
        || sx.threshold.to_bits() != sy.threshold.to_bits()
        || sx.grad_norm.to_bits() != sy.grad_norm.to_bits()
        || x.scale.to_bits() != y.scale.to_bits()
    {
        return Err("metric sums, threshold, grad norm or scale differ".into());
    }
    let w = |d: &Path| std::fs::read(d.join("sae_weights.safetensors")).unwrap_or_default();
    if w(a).is_empty() || w(a) != w(b) {
        return Err("sae_weights.safetensors differ (or are missing)".into());
    }
    Ok(())
}

/// Start a long run, wait for a checkpoint past step 8, stop it with `signal` (KILL, INT or
/// TERM), resume it to a few steps past its checkpoint, and hold it against an
/// uninterrupted run of that length.
fn stop_and_resume(device: &str, signal: &str) -> Result<(), Failed> {
    let dir = tmp(&format!("stop-{signal}-{device}"));
    let data = data(&dir, false);
    let b = dir.join("interrupted");
    let log_path = dir.join("interrupted.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = command(&train_args(&data, &b, device, 1_000_000, &[]))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("the run ended by itself ({status}):\n{log}").into());
        }
        if ck_step(&b).is_some_and(|s| s >= 8) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("no checkpoint past step 8 within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if signal == "KILL" {
        child.kill().map_err(|e| e.to_string())?;
    } else {
        Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", child.id())])
            .status()
            .map_err(|e| e.to_string())?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let stopped_at = ck_step(&b).ok_or("no readable checkpoint after the stop")?;
    if signal == "KILL" {
        if status.signal() != Some(9) {
            return Err(format!("expected death by SIGKILL, got {status}").into());
        }
    } else {
        // Exit 130 with one line naming the step, the checkpoint and how to resume.
        let last = log.lines().last().unwrap_or("");
        let want = format!(
            "saeforge: interrupted at step {stopped_at} of 1000000; checkpoint written to {}. Resume with: saeforge train --resume {}",
            checkpoint::path(&b).display(),
            b.display()
        );
        if status.code() != Some(130) || last != want {
            return Err(format!(
                "expected exit 130 and {want:?}, got {status} and {last:?}\n{log}"
            )
            .into());
        }
        if log.contains("error") || log.contains("panicked") {
            return Err(format!("stderr of an interrupted run has an error:\n{log}").into());
        }
    }
    let total = stopped_at + 7;
    let r = run(&strs(&[
        "train",
        "--resume",
        &b.display().to_string(),
        "--steps",
        &total.to_string(),
    ]));
    ok("resume", &r)?;
    let a = dir.join("uninterrupted");
    ok(
        "uninterrupted run",
        &run(&train_args(&data, &a, device, total, &[])),
    )?;
    same_state(&a, &b)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A NaN in the data stops the run before the batch holding it reaches the parameters,
/// with a checkpoint of everything trained so far; resuming with --skip-nonfinite ends
/// exactly where a run with --skip-nonfinite from the start ends.
fn nan_injection() -> Result<(), Failed> {
    let dir = tmp("nan-injection");
    let data = data(&dir, true);
    let out = dir.join("run");
    let o = run(&train_args(&data, &out, "cpu", 150, &[]));
    let last = o.stderr.lines().last().unwrap_or("").to_string();
    let shard = data.join("shard-1.safetensors");
    let head = format!(
        "error: {}: tensor \"x\" row 700 column 3 is NaN (use --skip-nonfinite to drop such rows); stopped before step ",
        shard.display()
    );
    if o.code != Some(2) || !last.starts_with(&head) {
        return Err(format!(
            "expected exit 2 and {head:?}..., got {:?}: {last:?}",
            o.code
        )
        .into());
    }
    let at: u64 = last
        .split("with a checkpoint at step ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no checkpoint step in {last:?}"))?;
    if !last.ends_with(&format!(
        "saeforge train --resume {} --skip-nonfinite",
        out.display()
    )) {
        return Err(format!("no resume hint in {last:?}").into());
    }
    // The checkpoint holds the state before the bad batch (Checkpoint::load refuses NaN).
    let ck = Checkpoint::load(&out).map_err(|e| e.to_string())?;
    if ck.state.step != at || at == 0 {
        return Err(format!("checkpoint at step {}, message says {at}", ck.state.step).into());
    }
    let r = run(&strs(&[
        "train",
        "--resume",
        &out.display().to_string(),
        "--skip-nonfinite",
    ]));
    ok("resume --skip-nonfinite", &r)?;
    if !r
        .stdout
        .contains("rows holding NaN or Inf (--skip-nonfinite)")
    {
        return Err(format!("no count of skipped rows in {:?}", r.stdout).into());
    }
    let fresh = dir.join("fresh");
    ok(
        "run with --skip-nonfinite from the start",
        &run(&train_args(
            &data,
            &fresh,
            "cpu",
            150,
            &["--skip-nonfinite"],
        )),
    )?;
    same_state(&fresh, &out)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// An absurd learning rate makes the loss non-finite: the run stops with exit 1, names the
/// step and the last good checkpoint, which is on disk and finite; a sane learning rate
/// continues from it.
fn divergence(device: &str) -> Result<(), Failed> {
    let dir = tmp(&format!("diverge-{device}"));
    let data = data(&dir, false);
    let out = dir.join("run");
    ok(
        "first steps",
        &run(&train_args(&data, &out, device, 6, &["--log-every", "1"])),
    )?;
    let o = run(&strs(&[
        "train",
        "--resume",
        &out.display().to_string(),
        "--steps",
        "60",
        "--lr",
        "1e30",
    ]));
    let lines: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| !l.starts_with("step "))
        .collect();
    let last = lines.last().copied().unwrap_or("");
    if o.code != Some(1) || !last.starts_with("error: training diverged: ") {
        return Err(format!(
            "expected exit 1 and a divergence line, got {:?}: {last:?}",
            o.code
        )
        .into());
    }
    let good: u64 = last
        .split("The last good checkpoint (step ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no last good checkpoint in {last:?}"))?;
    if !(last.contains(" at step ") || last.contains("by step ")) || !last.contains("--lr 1e29") {
        return Err(format!("the line names no step or no lower --lr: {last:?}").into());
    }
    let ck = Checkpoint::load(&out).map_err(|e| e.to_string())?;
    if ck.state.step != good || good < 6 {
        return Err(format!("checkpoint at step {}, message says {good}", ck.state.step).into());
    }
    ok(
        "resume with a sane learning rate",
        &run(&strs(&[
            "train",
            "--resume",
            &out.display().to_string(),
            "--steps",
            "20",
            "--lr",
            "1e-3",
        ])),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A full disk (a file-size limit here) when a checkpoint is due: a clear error, exit 1,
/// the previous checkpoint intact and no temporary file left.
fn disk_full() -> Result<(), Failed> {
    let dir = tmp("disk-full");
    let data = data(&dir, false);
    let out = dir.join("run");
    // d_sae 1024: a checkpoint is ~1.2 MB, far above the limit; config.json and
    // training.jsonl stay far below it.
    ok(
        "first steps",
        &run(&train_args(&data, &out, "cpu", 4, &["--d-sae", "1024"])),
    )?;
    let state = checkpoint::path(&out);
    let before = std::fs::read(&state).unwrap();
    let script = format!(
        "ulimit -f 256 && trap '' XFSZ && exec {} train --resume {} --steps 40",
        bin(),
        out.display()
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    let last = stderr.lines().last().unwrap_or("");
    let want = format!(
        "could not write the checkpoint at step 8; the last checkpoint (step 4) in {} is intact; continue with: saeforge train --resume {}",
        out.join("checkpoint").display(),
        out.display()
    );
    if o.status.code() != Some(1) || !last.starts_with("error: ") || !last.contains(&want) {
        return Err(format!(
            "expected exit 1 and ...{want:?}, got {:?}: {last:?}",
            o.status
        )
        .into());
    }
    if std::fs::read(&state).unwrap() != before {
        return Err("the previous checkpoint changed".into());
    }
    let left: Vec<String> = std::fs::read_dir(out.join("checkpoint"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "state.safetensors")
        .collect();
    if !left.is_empty() {
        return Err(format!("left behind in checkpoint/: {left:?}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A buffer beyond the adapter's limits: wgpu reports a validation error through the
/// callback saeforge installs, and `Gpu::check` returns it instead of a panic.
fn gpu_error_is_reported() -> Result<(), Failed> {
    let gpu = saeforge::gpu::Gpu::new(std::env::var("SAEFORGE_ADAPTER").ok().as_deref())
        .map_err(|e| e.to_string())?;
    gpu.check().map_err(|e| e.to_string())?;
    let _b = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("too large"),
        size: gpu.limits.max_buffer_size.saturating_add(1 << 20),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    match gpu.check() {
        Err(e @ saeforge::Error::DeviceFault(_)) if e.exit_code() == 1 => Ok(()),
        other => Err(format!("expected a DeviceFault, got {other:?}").into()),
    }
}

/// The device destroyed under a running GPU engine: the next step or readback is an
/// error, not a panic.
fn gpu_device_lost() -> Result<(), Failed> {
    use saeforge::sae::engine::StepEngine;
    use saeforge::sae::engine::TrainState;
    use saeforge::sae::{SaeParams, TrainArgs, TrainConfig};
    let gpu = Arc::new(
        saeforge::gpu::Gpu::new(std::env::var("SAEFORGE_ADAPTER").ok().as_deref())
            .map_err(|e| e.to_string())?,
    );
    let a = TrainArgs {
        out: Some(tmp("device-lost")),
        d_sae: Some(32),
        k: Some(4),
        batch: Some(16),
        steps: Some(10),
        ..Default::default()
    };
    let cfg = TrainConfig::resolve(&a, 8, 1000).map_err(|e| e.to_string())?;
    let x = fx::randn(16 * 8, 5);
    let st = TrainState::new(SaeParams::init(&cfg, &x));
    let mut eng =
        saeforge::sae::gpu::GpuEngine::new(gpu.clone(), &cfg, &st).map_err(|e| e.to_string())?;
    eng.step(&cfg, &x, 16).map_err(|e| e.to_string())?;
    eng.state().map_err(|e| e.to_string())?;
    gpu.device.destroy();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let s = eng.step(&cfg, &x, 16);
        let t = eng.state();
        (
            s.is_err() || t.is_err(),
            format!("{:?} / {:?}", s.err(), t.err()),
        )
    }));
    match r {
        Ok((true, _)) => Ok(()),
        Ok((false, _)) => Err("a destroyed device went unnoticed".into()),
        Err(_) => Err("a destroyed device made saeforge panic".into()),
    }
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for (device, gpu) in [("cpu", false), ("gpu", true)] {
        for signal in ["KILL", "INT", "TERM"] {
            if gpu && signal == "TERM" {
                continue; // the same path as INT; keeps the GPU share of the run short
            }
            t.push(trial(
                format!(
                    "faults::{}_then_resume_is_bitwise_exact_{device}",
                    signal.to_lowercase()
                ),
                gpu,
                move || stop_and_resume(device, signal),
            ));
        }
    }
    t.push(trial(
        "faults::nan_in_data_stops_before_the_batch_and_resumes_with_skip".into(),
        false,
        nan_injection,
    ));
    t.push(trial(
        "faults::divergence_keeps_the_last_good_checkpoint_cpu".into(),
        false,
        || divergence("cpu"),
    ));
    t.push(trial(
        "faults::divergence_keeps_the_last_good_checkpoint_gpu".into(),
        true,
        || divergence("gpu"),
    ));
    t.push(trial(
        "faults::full_disk_keeps_the_previous_checkpoint".into(),
        false,
        disk_full,
    ));
    t.push(trial(
        "faults::gpu_error_is_an_error_not_a_panic".into(),
        true,
        gpu_error_is_reported,
    ));
    t.push(trial(
        "faults::gpu_device_lost_is_an_error_not_a_panic".into(),
        true,
        gpu_device_lost,
    ));
    t.push(trial(
        "faults::a_hint_keeps_an_io_error_an_io_error".into(),
        false,
        hint_keeps_io,
    ));
    t
}

/// `Error::with_hint` appends to the message and keeps the kind (and so the exit code).
fn hint_keeps_io() -> Result<(), Failed> {
    let e = saeforge::Error::io(
        "/x/y",
        std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left"),
    )
    .with_hint("the checkpoint at step 3 is kept");
    match &e {
        saeforge::Error::Io { path, source }
            if path == std::path::Path::new("/x/y")
                && source.kind() == std::io::ErrorKind::StorageFull
                && e.to_string() == "/x/y: no space left; the checkpoint at step 3 is kept" =>
        {
            Ok(())
        }
        other => Err(format!("with_hint turned an I/O error into {other:?}").into()),
    }
}
