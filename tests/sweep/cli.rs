//! The `saeforge sweep` command line: grid flags, the report subcommand, one-line refusals
//! (exit 2) before any work, and the members-together memory check.

use std::path::Path;
use std::process::{Command, Output};

use libtest_mimic::{Failed, Trial};

use crate::common::{cpu_test, fail, gpu_test};
use crate::util::{synth, tmp};

/// The binary with `args` and `env` (and no SAEFORGE_SWEEP_MERGE from the caller's).
pub(crate) fn saeforge(args: &[&str], env: &[(&str, &str)]) -> Result<Output, Failed> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saeforge"));
    c.args(args).env_remove("SAEFORGE_SWEEP_MERGE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().map_err(fail)
}

/// stdout then stderr.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A refusal: exit 2, one `error:` line naming every piece of `expect`, `out` not created.
fn refused(o: &Output, out: &Path, expect: &[&str]) -> Result<(), Failed> {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    if o.status.code() != Some(2) || lines.len() != 1 {
        return Err(format!(
            "expected one error line and exit 2, got {:?}: {}",
            o.status.code(),
            text(o)
        )
        .into());
    }
    for x in expect {
        if !lines[0].contains(x) {
            return Err(format!("`{}` does not name {x}", lines[0]).into());
        }
    }
    if out.exists() {
        return Err(format!("{} was written", out.display()).into());
    }
    Ok(())
}

fn cli() -> Result<(), Failed> {
    let dir = tmp("cli");
    let data = dir.join("data");
    synth(&data)?;
    let d = data.to_str().unwrap();
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let common = [
        "sweep",
        "--data",
        d,
        "--out",
        o,
        "--steps",
        "4",
        "--batch",
        "32",
        "--device",
        "cpu",
        "--set",
        "d_sae=32",
        "--set",
        "eval_fraction=0.1",
    ];
    // Refused before any work.
    let mut bad = common.to_vec();
    bad.extend(["--grid", "colour=1,2"]);
    refused(&saeforge(&bad, &[])?, &out, &["grid option", "`colour`"])?;
    let mut bad = common.to_vec();
    bad.extend(["--set", "k"]);
    refused(&saeforge(&bad, &[])?, &out, &["--set k", "OPTION=VALUE"])?;
    let mut bad = common.to_vec();
    bad.extend(["--set", "out=x", "--k", "4"]);
    refused(&saeforge(&bad, &[])?, &out, &["`out`"])?;
    // A grid of two from the flags, then the report rebuilt by `sweep report`.
    let mut good = common.to_vec();
    good.extend(["--k", "2,4"]);
    let r = saeforge(&good, &[])?;
    if !r.status.success() || !text(&r).contains("2 of 2 members finished") {
        return Err(format!("sweep failed: {}", text(&r)).into());
    }
    for m in ["k2", "k4"] {
        if !out.join(m).join("sae_weights.safetensors").is_file() {
            return Err(format!("no {m}/sae_weights.safetensors").into());
        }
    }
    // The same again is refused (the folder holds a sweep).
    refused(
        &saeforge(&good, &[])?,
        &dir.join("nothing"),
        &["already holds a sweep"],
    )?;
    std::fs::remove_file(out.join("report.md")).map_err(fail)?;
    let r = saeforge(&["sweep", "report", o], &[])?;
    if !r.status.success() || !out.join("report.md").is_file() {
        return Err(format!("sweep report failed: {}", text(&r)).into());
    }
    Ok(())
}

/// Members that fit one by one but not together on the device are refused before any work,
/// naming the members past the budget and by how much.
fn memory() -> Result<(), Failed> {
    let dir = tmp("memory");
    let data = dir.join("data");
    synth(&data)?;
    let out = dir.join("out");
    let args = [
        "sweep",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "64",
        "--device",
        "gpu",
        "--set",
        "d_sae=2048",
        "--k",
        "4,8,16",
    ];
    // About 2.7 MiB a member: two fit in 6 MiB, the third does not.
    let o = saeforge(&args, &[("SAEFORGE_DEVICE_MEMORY_MIB", "6")])?;
    refused(&o, &out, &["k16", "MiB more than", "do not fit"])?;
    let e = String::from_utf8_lossy(&o.stderr);
    if e.contains("k4 (") || e.contains("k8 (") {
        return Err(format!("names members that fit: {e}").into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("cli_grid_report_and_refusals", |_| cli()),
        gpu_test("members_that_do_not_fit_together_are_refused", |_, _| {
            memory()
        }),
    ]
}
