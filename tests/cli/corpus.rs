//! The bad-input corpus. Every case makes its inputs in a fresh folder, runs the real binary
//! and asserts: the exit code, that stderr is exactly ONE line, starting with "error:",
//! holding the expected words (the file, tensor or flag and what was expected), that
//! nothing panicked, and that the folder is byte for byte as it was (no output left behind,
//! nothing existing overwritten).
//!
//! Three tables: bad shards x every command that reads shards, bad SAE folders x every
//! command that reads an SAE, and single command lines (flags, run folders, configs:
//! `LINES`; the outputs of encode, steer, eval, toy and convert: `OUTPUT_LINES`; sizes and
//! ranges: `LIMIT_LINES`).
//! A new command is one row in `SHARD_COMMANDS` / `SAE_COMMANDS` (its bad-input coverage
//! then comes for free) plus rows in `LINES` for its own flags.

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use crate::fx;
use crate::{run, snapshot, tmp, trial, words};

mod limits;
mod lines;
mod outputs;
mod saes;
mod shards;

use limits::LIMIT_LINES;
use lines::{LINES, TRAIN};
use outputs::OUTPUT_LINES;
use saes::BAD_SAES;
use shards::BAD_SHARDS;

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Commands that read activation shards. `{in}` is the shard argument (it may carry
/// --tensor), `{dir}` the case's folder, which holds good.safetensors (64 x 8 f32) and a
/// good topk SAE in sae/ (d 8, d_sae 16, k 4). `streams`: the command reads rows, so it
/// meets NaN / Inf values too.
const SHARD_COMMANDS: &[(&str, &str, bool)] = &[
    (
        "train",
        "train --data {in} --out {dir}/out --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
        true,
    ),
    (
        "train_eval_data",
        "train --data {dir}/good.safetensors --eval-data {in} --out {dir}/out --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
        true,
    ),
    ("info", "info {in}", false),
    ("eval", "eval --sae {dir}/sae --data {in}", true),
    (
        "encode",
        "encode --sae {dir}/sae --data {in} --out {dir}/codes.safetensors --device cpu",
        true,
    ),
    (
        "steer",
        "steer --sae {dir}/sae --data {in} --out {dir}/steered --device cpu --ablate 0",
        true,
    ),
];

/// Commands that read an SAE folder `{sae}`.
const SAE_COMMANDS: &[(&str, &str)] = &[
    ("eval", "eval --sae {sae} --data {dir}/good.safetensors"),
    ("info", "info {sae}"),
    (
        "encode",
        "encode --sae {sae} --data {dir}/good.safetensors --out {dir}/codes.safetensors --device cpu",
    ),
    (
        "steer",
        "steer --sae {sae} --data {dir}/good.safetensors --out {dir}/steered.safetensors --device cpu --ablate 0",
    ),
];

/// The common fixtures of a case folder.
fn base(dir: &Path) {
    fx::shard(&dir.join("good.safetensors"), 64, 8, 1);
    fx::sae(&dir.join("sae"), 8, 16, 4);
}

/// Run one case: make, snapshot, run, check everything.
fn check(
    case: &str,
    make: impl FnOnce(&Path) -> String,
    template: &str,
    code: i32,
    expect: &[&str],
) -> Result<(), Failed> {
    let dir = tmp(&format!("corpus-{case}"));
    base(&dir);
    let arg = make(&dir);
    let d = dir.display().to_string();
    let line = template
        .replace("{train}", TRAIN)
        .replace("{in}", &arg)
        .replace("{sae}", &arg)
        .replace("{dir}", &d);
    let before = snapshot(&dir);
    let o = run(&words(&line));
    let after = snapshot(&dir);
    let ctx = || {
        format!(
            "\n  saeforge {line}\n  exit {:?}\n  stderr: {:?}\n  stdout: {:?}",
            o.code, o.stderr, o.stdout
        )
    };
    if o.code != Some(code) {
        return Err(format!("expected exit {code}{}", ctx()).into());
    }
    let lines: Vec<&str> = o.stderr.lines().collect();
    if lines.len() != 1 {
        return Err(format!("expected ONE line on stderr, got {}{}", lines.len(), ctx()).into());
    }
    let l = lines[0];
    if !l.starts_with("error: ") || l.contains("panicked") || l.contains("RUST_BACKTRACE") {
        return Err(format!("expected an `error: ` line and no panic{}", ctx()).into());
    }
    for e in expect {
        let e = e.replace("{dir}", &d);
        if !l.contains(&e) {
            return Err(format!("stderr does not name {e:?}{}", ctx()).into());
        }
    }
    if before != after {
        let changed: Vec<String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .map(|k| k.display().to_string())
            .collect();
        return Err(format!("files changed or left behind: {changed:?}{}", ctx()).into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for bad in BAD_SHARDS {
        for &(cmd, template, streams) in SHARD_COMMANDS {
            if bad.streaming && !streams {
                continue;
            }
            let (make, expect) = (bad.make, bad.expect);
            let name = format!("corpus::shard::{}::{cmd}", bad.name);
            let case = format!("shard-{}-{cmd}", bad.name);
            t.push(trial(name, false, move || {
                check(&case, make, template, 2, expect)
            }));
        }
    }
    for bad in BAD_SAES {
        for &(cmd, template) in SAE_COMMANDS {
            let (make, expect) = (bad.make, bad.expect);
            let name = format!("corpus::sae::{}::{cmd}", bad.name);
            let case = format!("sae-{}-{cmd}", bad.name);
            t.push(trial(name, false, move || {
                check(&case, make, template, 2, expect)
            }));
        }
    }
    for l in LINES.iter().chain(OUTPUT_LINES).chain(LIMIT_LINES) {
        let (setup, args, code, expect) = (l.setup, l.args, l.code, l.expect);
        let name = format!("corpus::line::{}", l.name);
        let case = format!("line-{}", l.name);
        t.push(trial(name, l.gpu, move || {
            check(
                &case,
                |d| {
                    setup(d);
                    String::new()
                },
                args,
                code,
                expect,
            )
        }));
    }
    for &(cmd, template) in NON_UTF8_ARGS {
        let name = format!("corpus::non_utf8_arg::{cmd}");
        t.push(trial(name, false, move || non_utf8_arg(cmd, template)));
    }
    t.push(print_trial());
    t
}

/// Command lines with one argument, `{bad}`, that is not UTF-8 (a folder name in Latin-1,
/// say). Paths go into JSON files, so they are refused up front; before, `train` and
/// `steer` panicked on serialising them and `synth`, `sweep` and `demo` in the lock record
/// (`env::args`).
const NON_UTF8_ARGS: &[(&str, &str)] = &[
    ("train", "{train} --d-sae 16 --k 4 --batch 16 --out {bad}"),
    (
        "synth",
        "synth --out {bad} --features 16 --d-in 8 --tokens 64",
    ),
    (
        "sweep",
        "sweep --data {dir}/good.safetensors --out {bad} --k 2,4 --set d_sae=16 --set batch=16 --set steps=2 --set device=cpu",
    ),
    ("demo", "demo --out {bad}"),
    (
        "steer",
        "steer --sae {dir}/sae --data {dir}/good.safetensors --out {bad} --device cpu --ablate 0",
    ),
];

fn non_utf8_arg(cmd: &str, template: &str) -> Result<(), Failed> {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let dir = tmp(&format!("corpus-non-utf8-{cmd}"));
    base(&dir);
    let d = dir.display().to_string();
    let mut bad = dir.join("x").into_os_string().into_vec();
    bad.extend_from_slice(b"\xe9t\xe9");
    let bad = OsString::from_vec(bad);
    let args: Vec<OsString> = words(&template.replace("{train}", TRAIN).replace("{dir}", &d))
        .into_iter()
        .map(|w| if w == "{bad}" { bad.clone() } else { w.into() })
        .collect();
    let before = snapshot(&dir);
    let o = crate::command(&[]).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let ctx = || {
        format!(
            "\n  saeforge {template}\n  exit {:?}\n  stderr: {stderr:?}",
            o.status.code()
        )
    };
    if o.status.code() != Some(2) {
        return Err(format!("expected exit 2{}", ctx()).into());
    }
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() != 1
        || !lines[0].starts_with("error: ")
        || !lines[0].contains("is not valid UTF-8")
    {
        return Err(format!("expected ONE `error: ... is not valid UTF-8` line{}", ctx()).into());
    }
    if snapshot(&dir) != before {
        return Err(format!("files changed or left behind{}", ctx()).into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One printed case: its name, what builds its input, and the command template.
type PrintCase = (String, Box<dyn FnOnce(&Path) -> String>, &'static str);

/// Every case of the corpus with the line it produces (for the docs; run with
/// `cargo test --release --test cli -- --ignored corpus::print --nocapture`).
pub fn print_trial() -> Trial {
    Trial::test("corpus::print", || {
        let mut cases: Vec<PrintCase> = Vec::new();
        for bad in BAD_SHARDS {
            let template = SHARD_COMMANDS[0].1;
            cases.push((format!("shard {}", bad.name), Box::new(bad.make), template));
        }
        for bad in BAD_SAES {
            cases.push((
                format!("sae {}", bad.name),
                Box::new(bad.make),
                SAE_COMMANDS[0].1,
            ));
        }
        for l in LINES.iter().chain(OUTPUT_LINES).chain(LIMIT_LINES) {
            let setup = l.setup;
            cases.push((
                format!("line {}", l.name),
                Box::new(move |d: &Path| {
                    setup(d);
                    String::new()
                }),
                l.args,
            ));
        }
        for (name, make, template) in cases {
            let dir = tmp(&format!("print-{}", name.replace(' ', "-")));
            base(&dir);
            let arg = make(&dir);
            let d = dir.display().to_string();
            let line = template
                .replace("{train}", TRAIN)
                .replace("{in}", &arg)
                .replace("{sae}", &arg)
                .replace("{dir}", &d);
            let o = run(&words(&line));
            println!(
                "{name} | exit {:?} | {}",
                o.code,
                o.stderr.trim().replace(&d, "DIR")
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    })
    .with_ignored_flag(true)
}
