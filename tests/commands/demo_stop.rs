//! Stopping `saeforge demo` in each phase: the run's `StopToken` stopped as a phase starts
//! (synthesis, training, evaluate, encode, steer) and in the middle of training, and a
//! real SIGINT sent to a `saeforge demo` process while it trains. Each must end with
//! `Error::Interrupted` (exit code 130) naming where it stopped, leave no temporary or
//! unreadable file behind, write nothing of the later phases, and release the folder's
//! lock. CPU engine: the phases' stop points do not depend on the engine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use saeforge::cli::demo::{DemoArgs, Phase, run_until};
use saeforge::gpu::DeviceChoice;
use saeforge::stop::StopToken;

use crate::common::{cpu_test, fail};
use crate::demo::small;
use crate::support::tmp;

/// Steps enough that training is still under way when a test stops it.
const LONG: u64 = 1_000_000;

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// No temporary file, every safetensors and JSON file whole, the lock free again, and
/// none of `absent` (paths under `out`) written.
fn check_clean(out: &Path, absent: &[&str]) -> Result<(), Failed> {
    for p in files(out) {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if saeforge::io::is_temp_name(&name) {
            return Err(format!("temporary file left behind: {}", p.display()).into());
        }
        match p.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => {
                let bytes = saeforge::data::read_input(&p).map_err(fail)?;
                saeforge::data::parse_safetensors(&p, &bytes).map_err(fail)?;
            }
            Some("json") => {
                let bytes = std::fs::read(&p).map_err(fail)?;
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            _ => {}
        }
    }
    for a in absent {
        if out.join(a).exists() {
            return Err(format!("{a} was written by a phase after the stop").into());
        }
    }
    drop(saeforge::lock::acquire(out, "--out").map_err(fail)?);
    Ok(())
}

/// The interruption `r` must be, with `says` in its message.
fn interrupted<T>(r: saeforge::Result<T>, says: &str) -> Result<String, Failed> {
    match r {
        Ok(_) => Err(format!("the demo ran to its end; expected it to stop ({says})").into()),
        Err(e) if e.exit_code() == 130 && e.to_string().contains(says) => Ok(e.to_string()),
        Err(e) => Err(format!("expected an interruption saying {says:?}, got: {e}").into()),
    }
}

/// Stop the token as `phase` starts.
fn stop_at(phase: Phase, says: &'static str, absent: &'static [&'static str]) -> Trial {
    cpu_test(format!("demo_stops_as_{phase:?}_starts"), move |_| {
        let out = tmp(&format!("demo-stop-{phase:?}")).join("demo");
        let stop = StopToken::new();
        let r = run_until(small(&out, DeviceChoice::Cpu), &stop, &mut |p| {
            if p == phase {
                stop.stop();
            }
        });
        let msg = interrupted(r, says)?;
        eprintln!("{phase:?}: {msg}");
        check_clean(&out, absent)
    })
}

/// What the demo writes after training: none of it may exist when it stops in training.
const AFTER_TRAINING: &[&str] = &[
    "heldout-codes.safetensors",
    "steer",
    "plots",
    "report.md",
    "summary.json",
];

/// Stop the token half a second into training (the thread watches for sae/).
fn stop_mid_training() -> Trial {
    cpu_test("demo_stops_mid_training", |_| {
        let out = tmp("demo-stop-mid-training").join("demo");
        let stop = StopToken::new();
        let args = DemoArgs {
            steps: Some(LONG),
            ..small(&out, DeviceChoice::Cpu)
        };
        let watcher = {
            let (stop, sae) = (stop.clone(), out.join("sae"));
            std::thread::spawn(move || {
                let t = Instant::now();
                while !sae.is_dir() && t.elapsed() < Duration::from_secs(300) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(500));
                stop.stop();
            })
        };
        let r = run_until(args, &stop, &mut |_| {});
        watcher.join().map_err(|_| "watcher panicked")?;
        let msg = interrupted(r, "stopped at step")?;
        eprintln!("mid-training: {msg}");
        let sae = out.join("sae");
        if !saeforge::sae::checkpoint::path(&sae).exists() {
            return Err("no checkpoint written when training stopped".into());
        }
        let mut absent = AFTER_TRAINING.to_vec();
        absent.push("sae/sae_weights.safetensors");
        check_clean(&out, &absent)
    })
}

/// A real Ctrl-C: SIGINT to a `saeforge demo` process while it trains exits 130 with a
/// checkpoint and a line saying where it stopped.
#[cfg(unix)]
fn sigint_mid_training() -> Trial {
    cpu_test("demo_sigint_mid_training_exits_130", |_| {
        let out = tmp("demo-sigint").join("demo");
        let s = small(&out, DeviceChoice::Cpu);
        let opt = |v: Option<usize>| v.expect("small() sets it").to_string();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_saeforge"))
            .arg("demo")
            .arg("--out")
            .arg(&out)
            .args(["--device", "cpu", "--steps", &LONG.to_string()])
            .args(["--features", &opt(s.features), "--d-in", &opt(s.d_in)])
            .args(["--d-sae", &opt(s.d_sae), "--k", &opt(s.k)])
            .args(["--tokens", &opt(s.tokens), "--heldout", &opt(s.heldout)])
            .args(["--batch", &opt(s.batch), "--active", "2"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(fail)?;
        let t = Instant::now();
        while !out.join("sae").is_dir() && t.elapsed() < Duration::from_secs(300) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        let sent = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .map_err(fail)?;
        if !sent.success() {
            return Err("kill -INT failed".into());
        }
        let done = child.wait_with_output().map_err(fail)?;
        let err = String::from_utf8_lossy(&done.stderr);
        if done.status.code() != Some(130) || !err.contains("stopped at step") {
            return Err(format!("exit {:?}, stderr:\n{err}", done.status.code()).into());
        }
        let mut absent = AFTER_TRAINING.to_vec();
        absent.push("sae/sae_weights.safetensors");
        check_clean(&out, &absent)
    })
}

pub fn trials() -> Vec<Trial> {
    let mut t = vec![
        stop_at(
            Phase::Synthesise,
            "interrupted while synthesising the data",
            &["sae", "heldout-codes.safetensors", "summary.json"],
        ),
        stop_at(
            Phase::Train,
            "interrupted before training started",
            &["sae/cfg.json", "heldout-codes.safetensors", "summary.json"],
        ),
        stop_mid_training(),
        stop_at(
            Phase::Evaluate,
            "interrupted after evaluating",
            &["heldout-codes.safetensors", "steer", "summary.json"],
        ),
        stop_at(
            Phase::Encode,
            "interrupted after encoding",
            &["steer/ablate.safetensors", "report.md", "summary.json"],
        ),
        stop_at(
            Phase::Steer,
            "interrupted after steering",
            &["plots", "report.md", "summary.json"],
        ),
    ];
    #[cfg(unix)]
    t.push(sigint_mid_training());
    t
}
