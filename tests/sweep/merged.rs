//! Same-shape GPU members' encoder products in one launch (`sweep::merge`). Under
//! SAEFORGE_FORCE_PATH=hardware (lavapipe runs the register GEMM a hardware adapter runs,
//! the path that can merge) a sweep of topk and batchtopk at k 4, 8, 16 with
//! SAEFORGE_SWEEP_MERGE=always says it launches their six encoders as one and each member
//! still equals its solo `saeforge train` (same environment) byte for byte; `never` says one launch per member; the default
//! times both and says which it kept; any other value is refused before any work.

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use crate::cli::{saeforge, text};
use crate::common::gpu_test;
use crate::util::{synth, tmp};

const HW: (&str, &str) = ("SAEFORGE_FORCE_PATH", "hardware");

/// The options every run shares, then `extra`.
fn args<'a>(cmd: &'a str, data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        cmd, "--data", data, "--out", out, "--steps", "6", "--batch", "64", "--device", "gpu",
    ];
    a.extend(extra);
    a
}

/// A sweep of topk and batchtopk at k 4, 8, 16 with SAEFORGE_SWEEP_MERGE=`policy`; its
/// output.
fn sweep(dir: &Path, data: &str, policy: &str) -> Result<String, Failed> {
    let out = dir.join(format!("sweep-{policy}"));
    let o = out.to_str().unwrap();
    let sets = ["--set", "d_sae=96", "--set", "eval_fraction=0.1"];
    let mut a = args("sweep", data, o, &sets);
    a.extend(["--k", "4,8,16", "--grid", "arch=topk,batchtopk"]);
    let r = saeforge(&a, &[HW, ("SAEFORGE_SWEEP_MERGE", policy)])?;
    if !r.status.success() || !text(&r).contains("6 of 6 members finished") {
        return Err(format!("sweep ({policy}) failed: {}", text(&r)).into());
    }
    Ok(text(&r))
}

fn bytes(p: &Path) -> Result<Vec<u8>, Failed> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()).into())
}

fn merged() -> Result<(), Failed> {
    let dir = tmp("merged");
    let data = dir.join("data");
    synth(&data)?;
    let d = data.to_str().unwrap();
    let said = sweep(&dir, d, "always")?;
    let names: Vec<String> = ["topk", "batchtopk"]
        .iter()
        .flat_map(|a| [4, 8, 16].map(|k| format!("arch{a}_k{k}")))
        .collect();
    if !said.contains(&format!(
        "members {} (16 -> 96 latents, batch 64)",
        names.join(", ")
    )) || !said.contains("one encoder launch for all 6 (SAEFORGE_SWEEP_MERGE=always)")
    {
        return Err(format!("no merge line: {said}").into());
    }
    for name in &names {
        let (arch, k) = name[4..].split_once("_k").unwrap();
        let solo = dir.join(format!("solo-{name}"));
        let extra = [
            "--d-sae",
            "96",
            "--eval-fraction",
            "0.1",
            "--k",
            k,
            "--arch",
            arch,
        ];
        let r = saeforge(&args("train", d, solo.to_str().unwrap(), &extra), &[HW])?;
        if !r.status.success() {
            return Err(format!("train {name} failed: {}", text(&r)).into());
        }
        for f in ["sae_weights.safetensors", "sparsity.safetensors"] {
            let member = dir.join("sweep-always").join(name).join(f);
            if bytes(&member)? != bytes(&solo.join(f))? {
                return Err(format!("{name}: {f} differs from the solo run's").into());
            }
        }
    }
    let said = sweep(&dir, d, "never")?;
    if !said.contains("one encoder launch per member (SAEFORGE_SWEEP_MERGE=never)") {
        return Err(format!("no per-member line: {said}").into());
    }
    let said = sweep(&dir, d, "auto")?;
    if !said.contains("one encoder launch for all 6 took") {
        return Err(format!("no timing line: {said}").into());
    }
    let out = dir.join("bad");
    let a = args("sweep", d, out.to_str().unwrap(), &["--k", "4,8"]);
    let r = saeforge(&a, &[("SAEFORGE_SWEEP_MERGE", "sometimes")])?;
    let err = String::from_utf8_lossy(&r.stderr);
    if r.status.code() != Some(2) || !err.contains("SAEFORGE_SWEEP_MERGE=sometimes") || out.exists()
    {
        return Err(format!("not refused: {}", text(&r)).into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![gpu_test("gpu_same_shape_members_one_launch", |_, _| {
        merged()
    })]
}
