//! `--device auto`'s calibration through the real binary, on a software adapter (where it
//! calibrates): the first run times both products and the CPU engine's steps; the GPU
//! engine's steps are timed only for a shape the first stage leaves open, once, and kept
//! in the cache file; a shape the first stage decides trains on the CPU engine with the
//! bound in its line and the file untouched. The cache files are edited between runs so
//! that each stage's case is forced whatever this machine's speeds.

use std::path::{Path, PathBuf};

use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;

use crate::faults::{data, train_args};
use crate::{Output, command, common, ok, run_command, tmp};

/// The one calibration file in `cache`.
fn cache_file(cache: &Path) -> Result<PathBuf, Failed> {
    let files: Vec<PathBuf> = std::fs::read_dir(cache)
        .map_err(|e| format!("{}: {e}", cache.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "expected one calibration file in {}, found {files:?}",
            cache.display()
        )
        .into()),
    }
}

fn read_json(p: &Path) -> Result<Value, Failed> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?)
}

/// A one-step `--device auto` run with `cache` as the calibration cache.
fn run_auto(data: &Path, out: &Path, cache: &Path) -> Output {
    let _ = std::fs::remove_dir_all(out);
    let mut c = command(&train_args(data, out, "auto", 1, &[]));
    c.env("SAEFORGE_CACHE_DIR", cache);
    run_command(c)
}

/// `cal` with the GPU engine's fit dropped and its product's weight set to `gpu_gemm`.
fn without_gpu_steps(cal: &Value, gpu_gemm: f64) -> Value {
    let mut v = cal.clone();
    v["gpu"] = Value::Null;
    v["gpu_gemm"] = gpu_gemm.into();
    v
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn said(o: &Output, what: &str) -> bool {
    o.stderr.contains(what)
}

fn two_stages() -> Result<Completion, Failed> {
    match common::gpu() {
        Ok(g) if !g.is_software() => {
            return Ok(Completion::ignored_with(format!(
                "{} is a hardware adapter: --device auto picks it without calibrating",
                g.info.name
            )));
        }
        Ok(_) => {}
        Err(why) if std::env::var("SAEFORGE_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            return Err(format!("SAEFORGE_REQUIRE_GPU=1 but {why}").into());
        }
        Err(why) => return Ok(Completion::ignored_with(why)),
    }
    let dir = tmp("auto_two_stages");
    let (data, out, cache) = (data(&dir, false), dir.join("run"), dir.join("cache"));
    let (first, gpu_steps) = ("timing both engines", "timing the GPU engine's steps");

    // A fresh cache: the first stage, and the second if this machine's figures need it.
    let o = run_auto(&data, &out, &cache);
    ok("first run", &o)?;
    if !said(&o, first) {
        return Err(format!("the first run did not calibrate:\n{}", o.stderr).into());
    }
    let path = cache_file(&cache)?;
    let fresh = read_json(&path)?;
    let gpu_gemm = fresh["gpu_gemm"]
        .as_f64()
        .ok_or("no gpu_gemm in the cache file")?;
    match &fresh["gpu"] {
        Value::Null => {}
        Value::Object(g) if g["w_gemm"].as_f64() == Some(gpu_gemm) => {}
        g => return Err(format!("gpu fit {g} does not carry gpu_gemm {gpu_gemm}").into()),
    }

    // A first stage that cannot decide (the GPU's product nearly free): only the GPU
    // engine's steps are timed, the CPU fit and the product's weight are kept.
    write_json(&path, &without_gpu_steps(&fresh, 1e-30));
    let o = run_auto(&data, &out, &cache);
    ok("open shape", &o)?;
    if said(&o, first) || !said(&o, gpu_steps) {
        return Err(format!("expected the second stage alone:\n{}", o.stderr).into());
    }
    let done = read_json(&path)?;
    if done["cpu"] != fresh["cpu"]
        || done["gpu_gemm"].as_f64() != Some(1e-30)
        || done["gpu"]["w_gemm"].as_f64() != Some(1e-30)
    {
        return Err(format!("after the second stage: {done}\nbefore: {fresh}").into());
    }

    // Complete: nothing is timed again.
    let o = run_auto(&data, &out, &cache);
    ok("complete cache", &o)?;
    if said(&o, first) || said(&o, gpu_steps) || read_json(&path)? != done {
        return Err(format!("a complete cache was recalibrated:\n{}", o.stderr).into());
    }

    // A first stage that decides (the GPU's product takes a second per flop): the CPU
    // engine, the bound in the line, nothing timed, the file as it was.
    let decided = without_gpu_steps(&fresh, 1.0);
    write_json(&path, &decided);
    let o = run_auto(&data, &out, &cache);
    ok("decided shape", &o)?;
    if said(&o, first) || said(&o, gpu_steps) || !said(&o, "CPU engine") || !said(&o, "at most") {
        return Err(format!("expected the CPU engine by the bound:\n{}", o.stderr).into());
    }
    if read_json(&path)? != decided {
        return Err("the decided run rewrote the cache file".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![Trial::ignorable_test(
        "auto::calibration_in_two_stages",
        two_stages,
    )]
}
