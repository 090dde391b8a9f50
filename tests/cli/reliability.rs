//! One writer per folder, digests and data fingerprints, through the real binary: a second
//! writer is refused naming the holder while a run trains, a reader says a live run writes
//! the folder, a killed holder's lock is taken over and said so; a bit flipped in a
//! checkpoint or in exported weights, an edited cfg.json and a folder mixing two exports
//! are refused with one line naming the file and the tensor, nothing written; a resume on
//! changed shards is refused naming the shard unless --allow-data-change; a shard
//! truncated, replaced or removed under a training run stops it with exit 1 (no signal
//! death) after a checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use saeforge::sae::checkpoint::Checkpoint;

use crate::faults::{data, strs, train_args};
use crate::{Output, command, fx, ok, run, snapshot, tmp, trial};

fn ck_step(out: &Path) -> Option<u64> {
    Checkpoint::load(out).ok().map(|c| c.state.step)
}

/// Spawn a command with stderr into `log`, stdout discarded.
fn spawn(args: &[String], log: &Path) -> Result<Child, Failed> {
    let f = std::fs::File::create(log).unwrap();
    Ok(command(args)
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .map_err(|e| e.to_string())?)
}

/// Wait until `cond`, failing if the child ends first or after 120 s.
fn wait_for(
    child: &mut Child,
    log: &Path,
    what: &str,
    cond: impl Fn() -> bool,
) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if cond() {
            return Ok(());
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("the run ended ({status}) before {what}:\n{log}").into());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("no {what} within 120 s").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Exit `code`, exactly one stderr line starting with "error:" and holding every word.
fn one_line(what: &str, o: &Output, code: i32, words: &[&str]) -> Result<(), Failed> {
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let good = o.code == Some(code)
        && lines.len() == 1
        && lines[0].starts_with("error: ")
        && words.iter().all(|w| lines[0].contains(w));
    if !good {
        return Err(format!(
            "{what}: expected exit {code} and one line holding {words:?}, got {:?}:\n{}",
            o.code, o.stderr
        )
        .into());
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Flip one bit of `path` at `at` bytes from its end.
fn flip(path: &Path, from_end: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() - from_end;
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

/// A fresh folder `name` with the three-shard data and an 8-step CPU run in `run`:
/// (folder, data, run).
fn trained(name: &str) -> Result<(PathBuf, PathBuf, PathBuf), Failed> {
    let dir = tmp(name);
    let data = data(&dir, false);
    let out = dir.join("run");
    ok("run", &run(&train_args(&data, &out, "cpu", 8, &[])))?;
    Ok((dir, data, out))
}

/// A run trains in a folder: a second `train --out --overwrite` and a `--resume` are
/// refused before touching it, naming the holder's pid; `eval` of the folder says a live
/// run writes it; after kill -9 the next resume takes the lock over and says so, and the
/// folder then holds one run's complete, verified state.
fn second_writer_refused_and_dead_lock_taken_over() -> Result<(), Failed> {
    let (dir, data, out) = trained("lock")?;
    let log = dir.join("long.log");
    let mut child = spawn(
        &strs(&["train", "--resume", &s(&out), "--steps", "1000000"]),
        &log,
    )?;
    let pid = child.id();
    wait_for(&mut child, &log, "a checkpoint past step 12", || {
        ck_step(&out).is_some_and(|s| s >= 12)
    })?;
    let holder = format!("pid {pid} on host ");
    let o = run(&train_args(&data, &out, "cpu", 20, &["--overwrite"]));
    one_line(
        "train --overwrite beside a live run",
        &o,
        2,
        &[
            "--out",
            "another saeforge run is writing this folder",
            &holder,
        ],
    )?;
    let o = run(&strs(&[
        "train",
        "--resume",
        &s(&out),
        "--steps",
        "2000000",
    ]));
    one_line(
        "train --resume beside a live run",
        &o,
        2,
        &[
            "--resume",
            "another saeforge run is writing this folder",
            &holder,
        ],
    )?;
    let o = run(&strs(&["eval", "--sae", &s(&out), "--data", &s(&data)]));
    // kill -9 before any check can return, so that a failure leaves no run behind.
    child.kill().map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    ok("eval of a folder being written", &o)?;
    if !o.stderr.contains("is being written by a live run") || !o.stderr.contains(&holder) {
        return Err(format!("eval said nothing of the live run:\n{}", o.stderr).into());
    }
    if !o
        .stdout
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("engine: "))
    {
        return Err(format!("eval's report does not name its engine:\n{}", o.stdout).into());
    }
    if !out.join(saeforge::lock::LOCK_FILE).exists() {
        return Err("a killed holder leaves its lock record behind (for the take-over)".into());
    }
    let at = ck_step(&out).ok_or("no verified checkpoint after kill -9")?;
    let o = run(&strs(&[
        "train",
        "--resume",
        &s(&out),
        "--steps",
        &(at + 3).to_string(),
    ]));
    ok("resume after kill -9", &o)?;
    if !o.stderr.contains("took over the lock") || !o.stderr.contains(&holder) {
        return Err(format!("no take-over line naming the dead holder:\n{}", o.stderr).into());
    }
    if out.join(saeforge::lock::LOCK_FILE).exists() {
        return Err("a run that ended cleanly left its lock file".into());
    }
    if ck_step(&out) != Some(at + 3) {
        return Err(format!(
            "final checkpoint at {:?}, expected {}",
            ck_step(&out),
            at + 3
        )
        .into());
    }
    // Resumed again at its budget: nothing to train, said as such (not "0 tokens/s").
    let o = run(&strs(&["train", "--resume", &s(&out)]));
    ok("resume of a finished run", &o)?;
    if !o.stdout.contains("nothing left to train") || o.stdout.contains("tokens/s") {
        return Err(format!("resume of a finished run printed:\n{}", o.stdout).into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A bit flipped inside a checkpoint tensor: --resume and info refuse it with one line
/// naming the file and the tensor, exit 2, and nothing in the folder changes.
fn damaged_checkpoint_refused() -> Result<(), Failed> {
    let (dir, _, out) = trained("bad-checkpoint")?;
    let state = saeforge::sae::checkpoint::path(&out);
    flip(&state, 100);
    let before = snapshot(&dir);
    let o = run(&strs(&["train", "--resume", &s(&out), "--steps", "12"]));
    one_line(
        "resume of a damaged checkpoint",
        &o,
        2,
        &[&s(&state), "tensor \"", "does not match its digest"],
    )?;
    let o = run(&strs(&["info", &s(&out)]));
    if o.code != Some(2) || !o.stderr.contains("does not match its digest") {
        return Err(format!("info of a damaged checkpoint: {:?}\n{}", o.code, o.stderr).into());
    }
    if snapshot(&dir) != before {
        return Err("a refused resume changed the folder".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `info` on CSR codes: `encode`'s output and `synth`'s true codes are described (rows,
/// latents, entries, who wrote them, digests) with exit 0, not refused as activations; a
/// damaged codes file, one whose indptr does not rise and one with a negative index are
/// refused naming the file.
fn info_describes_csr_codes() -> Result<(), Failed> {
    let (dir, data, out) = trained("info-codes")?;
    let codes = dir.join("codes.safetensors");
    let shard = data.join("shard-0.safetensors");
    #[rustfmt::skip]
    let encode = strs(&["encode", "--sae", &s(&out), "--data", &s(&shard), "--out", &s(&codes), "--device", "cpu"]);
    ok("encode", &run(&encode))?;
    let o = run(&strs(&["info", &s(&codes)]));
    let want = "CSR codes: 1000 rows x 64 latents, 4000 entries (mean L0 4.00)";
    let by = format!(
        "written by saeforge encode with the SAE {}; digests verified",
        s(&out)
    );
    if o.code != Some(0) || !o.stdout.contains(want) || !o.stdout.contains(&by) {
        return Err(format!(
            "info of encode's codes: {:?}\n{}{}",
            o.code, o.stdout, o.stderr
        )
        .into());
    }
    let syn = dir.join("syn");
    #[rustfmt::skip]
    let synth = strs(&["synth", "--out", &s(&syn), "--features", "32", "--d-in", "8", "--active", "2", "--tokens", "500"]);
    ok("synth", &run(&synth))?;
    let o = run(&strs(&["info", &s(&syn.join("codes"))]));
    if o.code != Some(0) || !o.stdout.contains("CSR codes: 500 rows, latents up to ") {
        return Err(format!(
            "info of synth's codes: {:?}\n{}{}",
            o.code, o.stdout, o.stderr
        )
        .into());
    }
    flip(&codes, 100);
    let o = run(&strs(&["info", &s(&codes)]));
    one_line(
        "info of damaged codes",
        &o,
        2,
        &[&s(&codes), "does not match its digest"],
    )?;
    // Files that are not CSR matrices: (name, indptr, its declared length, index, the
    // refusal's words).
    let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    #[rustfmt::skip]
    let broken: [(&str, &[i64], usize, i64, &str); 3] = [
        ("falling.safetensors", &[0, 2, 1], 3, 0, "do not form a CSR matrix"),
        ("negative.safetensors", &[0, 1], 2, -1, "latent index -1 out of range"),
        ("short.safetensors", &[0, 1], 3, 0, "needs 24"),
    ];
    for (name, indptr, declared, index, words) in broken {
        let f = dir.join(name);
        fx::write(
            &f,
            &[
                ("indptr", "I64", vec![declared], i64s(indptr)),
                ("indices", "I64", vec![1], i64s(&[index])),
                ("values", "F32", vec![1], fx::f32_bytes(&[1.0])),
            ],
        );
        let o = run(&strs(&["info", &s(&f)]));
        one_line(&format!("info of {name}"), &o, 2, &[&s(&f), words])?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Exported weights with a flipped bit, an edited cfg.json, and sparsity from another
/// export: every SAE reader refuses, naming the file (and the tensor), exit 2, nothing
/// written.
fn damaged_export_refused() -> Result<(), Failed> {
    let (dir, data, out) = trained("bad-export")?;
    let other = dir.join("other");
    ok("other run", &run(&train_args(&data, &other, "cpu", 6, &[])))?;
    let shard = data.join("shard-0.safetensors");
    let readers = |sae: &Path| -> Vec<(&'static str, Vec<String>)> {
        vec![
            (
                "eval",
                strs(&["eval", "--sae", &s(sae), "--data", &s(&shard)]),
            ),
            ("info", strs(&["info", &s(sae)])),
            (
                "encode",
                strs(&[
                    "encode",
                    "--sae",
                    &s(sae),
                    "--data",
                    &s(&shard),
                    "--out",
                    &s(&dir.join("codes.safetensors")),
                    "--device",
                    "cpu",
                ]),
            ),
            (
                "steer",
                strs(&[
                    "steer",
                    "--sae",
                    &s(sae),
                    "--data",
                    &s(&shard),
                    "--out",
                    &s(&dir.join("steered.safetensors")),
                    "--device",
                    "cpu",
                    "--ablate",
                    "0",
                ]),
            ),
        ]
    };
    let weights = out.join("sae_weights.safetensors");
    let cfg = out.join("cfg.json");
    let sparsity = out.join("sparsity.safetensors");
    let (w0, c0, s0) = (
        std::fs::read(&weights).unwrap(),
        std::fs::read(&cfg).unwrap(),
        std::fs::read(&sparsity).unwrap(),
    );
    type Damage = Box<dyn Fn()>;
    let cases: Vec<(&str, Damage, Vec<String>, bool)> = vec![
        (
            "a bit flipped in W_dec",
            Box::new({
                let w = weights.clone();
                move || flip(&w, 100)
            }),
            vec![
                s(&weights),
                "tensor \"".into(),
                "does not match its digest".into(),
            ],
            true,
        ),
        (
            "cfg.json edited",
            Box::new({
                let c = cfg.clone();
                move || {
                    let t = std::fs::read_to_string(&c).unwrap();
                    std::fs::write(&c, t.replace("\"k\": 4", "\"k\": 3")).unwrap();
                }
            }),
            vec![s(&cfg), "does not match its digest".into()],
            true,
        ),
        (
            "sparsity from another export",
            Box::new({
                let (from, to) = (other.join("sparsity.safetensors"), sparsity.clone());
                move || {
                    std::fs::copy(&from, &to).unwrap();
                }
            }),
            vec![s(&sparsity), "mixes files of two exports".into()],
            false, // only info reads sparsity
        ),
    ];
    for (what, damage, words, all) in cases {
        damage();
        let before = snapshot(&dir);
        for (cmd, args) in readers(&out) {
            if !all && cmd != "info" {
                continue;
            }
            let o = run(&args);
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            one_line(&format!("{cmd} with {what}"), &o, 2, &w)?;
            if snapshot(&dir) != before {
                return Err(format!("{cmd} with {what} wrote something").into());
            }
        }
        std::fs::write(&weights, &w0).unwrap();
        std::fs::write(&cfg, &c0).unwrap();
        std::fs::write(&sparsity, &s0).unwrap();
    }
    ok(
        "info of the restored folder",
        &run(&strs(&["info", &s(&out)])),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One shard's rows replaced (same name, shape and size) after a checkpoint: --resume
/// refuses naming it; --allow-data-change goes on and says the run is no longer an exact
/// resume; --allow-data-change without --resume is refused.
fn changed_data_refused_unless_allowed() -> Result<(), Failed> {
    let (dir, data, out) = trained("data-change")?;
    let shard = data.join("shard-1.safetensors");
    fx::shard(&shard, 1000, 16, 999);
    let before = snapshot(&dir);
    let o = run(&strs(&["train", "--resume", &s(&out), "--steps", "12"]));
    one_line(
        "resume on changed data",
        &o,
        2,
        &[
            "the data changed since the checkpoint",
            &s(&shard),
            "other contents",
            "--allow-data-change",
        ],
    )?;
    if snapshot(&dir) != before {
        return Err("a refused resume changed the folder".into());
    }
    let o = run(&train_args(
        &data,
        &dir.join("new"),
        "cpu",
        8,
        &["--allow-data-change"],
    ));
    one_line(
        "--allow-data-change without --resume",
        &o,
        2,
        &["--allow-data-change", "--resume"],
    )?;
    let o = run(&strs(&[
        "train",
        "--resume",
        &s(&out),
        "--steps",
        "12",
        "--allow-data-change",
    ]));
    ok("resume --allow-data-change", &o)?;
    if !o.stderr.contains("no longer an exact resume") || !o.stderr.contains(&s(&shard)) {
        return Err(format!("no line saying the resume is not exact:\n{}", o.stderr).into());
    }
    // The new checkpoint records the data it now trains on: a plain resume goes on.
    ok(
        "plain resume after an allowed change",
        &run(&strs(&["train", "--resume", &s(&out), "--steps", "14"])),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A shard truncated, replaced or removed while `train` reads it: exit 1 (never a signal),
/// one error line naming the file and what happened, and a checkpoint of what was trained.
fn shard_changed_mid_run(how: &'static str) -> Result<(), Failed> {
    let dir = tmp(&format!("mid-run-{how}"));
    let data = data(&dir, false);
    let out = dir.join("run");
    let log = dir.join("run.log");
    let mut child = spawn(&train_args(&data, &out, "cpu", 1_000_000, &[]), &log)?;
    wait_for(&mut child, &log, "a checkpoint past step 4", || {
        ck_step(&out).is_some_and(|s| s >= 4)
    })?;
    let shard = data.join("shard-1.safetensors");
    let said = match how {
        "truncated" => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&shard)
                .unwrap();
            f.set_len(2000).unwrap();
            "was truncated while being read"
        }
        "replaced" => {
            let tmp = data.join("new.tmp");
            fx::shard(&tmp, 1000, 16, 555);
            std::fs::rename(&tmp, &shard).unwrap();
            "was replaced by another file while being read"
        }
        _ => {
            std::fs::remove_file(&shard).unwrap();
            "was removed while being read"
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("the run went on for 120 s after the shard was {how}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let last = text.lines().last().unwrap_or("");
    if status.code() != Some(1)
        || !last.starts_with("error: ")
        || !last.contains(&s(&shard))
        || !last.contains(said)
        || !last.contains("with a checkpoint at step")
    {
        return Err(format!(
            "expected exit 1 and {said:?} naming the shard, got {status}:\n{text}"
        )
        .into());
    }
    let at = ck_step(&out).ok_or("no verified checkpoint after the stop")?;
    if !last.contains(&format!("with a checkpoint at step {at};")) {
        return Err(format!("checkpoint at step {at}, but the line says {last:?}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = vec![
        trial(
            "reliability::second_writer_refused_and_dead_lock_taken_over".into(),
            false,
            second_writer_refused_and_dead_lock_taken_over,
        ),
        trial(
            "reliability::damaged_checkpoint_refused".into(),
            false,
            damaged_checkpoint_refused,
        ),
        trial(
            "reliability::damaged_export_refused_by_every_reader".into(),
            false,
            damaged_export_refused,
        ),
        trial(
            "reliability::info_describes_csr_codes".into(),
            false,
            info_describes_csr_codes,
        ),
        trial(
            "reliability::changed_data_refused_unless_allowed".into(),
            false,
            changed_data_refused_unless_allowed,
        ),
    ];
    for how in ["truncated", "replaced", "removed"] {
        t.push(trial(
            format!("reliability::shard_{how}_mid_run_stops_with_a_checkpoint"),
            false,
            move || shard_changed_mid_run(how),
        ));
    }
    t
}
