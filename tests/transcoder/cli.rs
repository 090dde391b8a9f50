//! The commands on a transcoder export, through the binary: `info` shows d_out, `eval`
//! needs `--target-data` (one line, exit 2, without it; refused for an SAE), `eval` and
//! `encode` run on either engine (`--device gpu` in `cli_commands_gpu`, a GPU test; the
//! values in `infer`), `encode` codes its input rows, `steer` refuses it, `train --device
//! gpu` trains it on the GPU engine; every refusal one line on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::sae::{Arch, train};

use crate::common::{cpu_test, fail, gpu_test};
use crate::{D_IN, D_OUT, args, tmp, write_pairs};

fn saeforge(argv: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_saeforge"))
        .args(argv)
        .output()
        .expect("running saeforge");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Exit 2 with one line on stderr containing `needle`.
fn refused(argv: &[&str], needle: &str) -> Result<(), Failed> {
    let (rc, _, err) = saeforge(argv);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    if rc != 2 || lines.len() != 1 || !lines[0].contains(needle) {
        return Err(format!(
            "{argv:?}: exit {rc}, stderr {err:?} (expected one line with {needle:?})"
        )
        .into());
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A folder with paired data (700 rows) and a jumprelu transcoder trained on it:
/// [the folder, the inputs, the targets, the run].
fn trained(name: &str, rng: &mut ChaCha8Rng) -> Result<[PathBuf; 4], Failed> {
    let dir = tmp(name);
    let (inp, outd) = write_pairs(&dir, rng, &[400, 300]);
    let run = dir.join("run");
    train::run(&args(&inp, &outd, &run, Arch::Jumprelu, 6)).map_err(fail)?;
    Ok([dir, inp, outd, run])
}

fn commands(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let [dir, inp, outd, run] = trained("cli", rng)?;
    let (run_s, inp_s, outd_s) = (s(&run), s(&inp), s(&outd));

    let (rc, out, err) = saeforge(&["info", &run_s]);
    let want = format!("transcoder (jumprelu_transcoder), d_in {D_IN}, d_out {D_OUT}, d_sae 256");
    if rc != 0 || !out.contains(&want) || !out.contains(&format!("W_dec: F32 [256, {D_OUT}]")) {
        return Err(format!("info: exit {rc}, {out:?} {err:?}").into());
    }

    refused(
        &["eval", "--sae", &run_s, "--data", &inp_s],
        "--target-data: missing",
    )?;
    let (rc, out, err) = saeforge(&[
        "eval",
        "--sae",
        &run_s,
        "--data",
        &inp_s,
        "--target-data",
        &outd_s,
        "--device",
        "cpu",
    ]);
    if rc != 0 || !out.contains("700 paired rows") || !out.contains("explained variance") {
        return Err(format!("eval: exit {rc}, {out:?} {err:?}").into());
    }
    // An SAE has no target.
    let sae = dir.join("sae");
    let sae_args = saeforge::sae::TrainArgs {
        target_data: None,
        ..args(&inp, &outd, &sae, Arch::Topk, 3)
    };
    train::run(&sae_args).map_err(fail)?;
    refused(
        &[
            "eval",
            "--sae",
            &s(&sae),
            "--data",
            &inp_s,
            "--target-data",
            &outd_s,
        ],
        "is an SAE, not a transcoder",
    )?;

    let codes = dir.join("codes.safetensors");
    let (rc, out, err) = saeforge(&[
        "encode",
        "--sae",
        &run_s,
        "--data",
        &inp_s,
        "--out",
        &s(&codes),
    ]);
    if rc != 0 || !out.contains("encoded 700 rows") || !codes.is_file() {
        return Err(format!("encode: exit {rc}, {out:?} {err:?}").into());
    }
    refused(
        &[
            "steer",
            "--sae",
            &run_s,
            "--data",
            &inp_s,
            "--ablate",
            "1",
            "--out",
            &s(&dir.join("e.safetensors")),
        ],
        "is a transcoder",
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `eval`, `encode` and `train` with `--device gpu`.
fn gpu_commands(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let [dir, inp, outd, run] = trained("cli-gpu", rng)?;
    let (run_s, inp_s, outd_s) = (s(&run), s(&inp), s(&outd));
    // The same evaluation on the GPU engine (GPU == CPU in `infer`).
    #[rustfmt::skip]
    let (rc, gout, err) = saeforge(&[
        "eval", "--sae", &run_s, "--data", &inp_s, "--target-data", &outd_s, "--device", "gpu",
    ]);
    if rc != 0 || !gout.contains("GPU engine") || !gout.contains("700 paired rows") {
        return Err(format!("eval --device gpu: exit {rc}, {gout:?} {err:?}").into());
    }
    let gcodes = dir.join("gcodes.safetensors");
    #[rustfmt::skip]
    let (rc, out, err) = saeforge(&[
        "encode", "--sae", &run_s, "--data", &inp_s, "--out", &s(&gcodes), "--device", "gpu",
    ]);
    if rc != 0 || !out.contains("GPU engine") || !out.contains("encoded 700 rows") {
        return Err(format!("encode --device gpu: exit {rc}, {out:?} {err:?}").into());
    }
    let g = s(&dir.join("g"));
    #[rustfmt::skip]
    let (rc, out, err) = saeforge(&[
        "train", "--data", &inp_s, "--target-data", &outd_s, "--device", "gpu", "--out", &g,
        "--steps", "3", "--d-sae", "64", "--k", "4", "--batch", "32",
    ]);
    if rc != 0 || !out.contains("on the GPU engine") {
        return Err(format!("train --device gpu: exit {rc}, {out:?} {err:?}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("cli_commands", commands),
        gpu_test("cli_commands_gpu", |_, rng| gpu_commands(rng)),
    ]
}
