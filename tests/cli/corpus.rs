//! The bad-input corpus. Every case makes its inputs in a fresh folder, runs the real binary
//! and asserts: the exit code, that stderr is exactly ONE line, starting with "error:",
//! holding the expected words (the file, tensor or flag and what was expected), that
//! nothing panicked, and that the folder is byte for byte as it was (no output left behind,
//! nothing existing overwritten).
//!
//! Three tables: bad shards x every command that reads shards, bad SAE folders x every
//! command that reads an SAE, and single command lines (flags, run folders, configs).
//! A new command is one row in `SHARD_COMMANDS` / `SAE_COMMANDS` (its bad-input coverage
//! then comes for free) plus rows in `LINES` for its own flags.

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use crate::fx;
use crate::{run, snapshot, tmp, trial, words};

mod lines;
mod saes;
mod shards;

use lines::{LINES, TRAIN};
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
    for l in LINES {
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
    t.push(print_trial());
    t
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
        for l in LINES {
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
