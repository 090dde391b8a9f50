//! Bad sweep files and command lines: refused before any work with one line naming the
//! member and the option.

use std::path::Path;

use libtest_mimic::{Failed, Trial};
use saeforge::stop::StopToken;
use saeforge::sweep::{SpecParts, SweepOptions, run_until};

use crate::common::{cpu_test, fail};
use crate::util::{synth, tmp};

/// The error of `toml` as a sweep file (expanded, then run into `out`), which must name
/// every piece of `expect`; nothing may be written.
fn refused(dir: &Path, name: &str, toml: &str, expect: &[&str]) -> Result<(), Failed> {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, toml).map_err(fail)?;
    let out = dir.join(format!("out-{name}"));
    let r = SpecParts::from_toml(&file)
        .and_then(|(p, _)| p.expand())
        .and_then(|spec| {
            let o = SweepOptions {
                out: out.clone(),
                ..Default::default()
            };
            run_until(Some(spec), &o, &StopToken::new())
        });
    let e = match r {
        Ok(_) => return Err(format!("{name}: accepted").into()),
        Err(e) => e.to_string(),
    };
    if e.lines().count() != 1 {
        return Err(format!("{name}: not one line: {e}").into());
    }
    for x in expect {
        if !e.contains(x) {
            return Err(format!("{name}: `{e}` does not name {x}").into());
        }
    }
    if out.exists() {
        return Err(format!("{name}: {} was written", out.display()).into());
    }
    Ok(())
}

fn bad_files() -> Result<(), Failed> {
    let dir = tmp("bad");
    let data = dir.join("data");
    synth(&data)?;
    let head = format!(
        "[shared]\ndata = [\"{}\"]\nsteps = 2\nbatch = 32\nd_sae = 32\ndevice = \"cpu\"\n",
        data.display()
    );
    let cases: [(&str, String, &[&str]); 10] = [
        (
            "unknown",
            format!("{head}[[member]]\nname = \"a\"\nkk = 4\n"),
            &["member `a`", "`kk`", "unknown field"],
        ),
        (
            "unknown-shared",
            format!("{head}colour = 1\n[grid]\nk = [4]\n"),
            &["shared option", "`colour`"],
        ),
        (
            "empty-grid",
            format!("{head}[grid]\nk = []\n"),
            &["grid option `k`", "empty"],
        ),
        ("no-members", head.clone(), &["no members"]),
        (
            "duplicate",
            format!("{head}[[member]]\nname = \"a\"\nk = 4\n[[member]]\nname = \"a\"\nk = 8\n"),
            &["member `a`", "duplicate"],
        ),
        (
            "conflict",
            format!("{head}[[member]]\nname = \"b\"\nexpansion = 4\n"),
            &["member `b`", "`expansion`", "`d_sae`"],
        ),
        (
            "arch-conflict",
            format!("{head}[[member]]\nname = \"c\"\narch = \"relu\"\nk = 4\n"),
            &["member `c`", "`k`", "relu"],
        ),
        (
            "bad-type",
            format!("{head}[grid]\nk = [\"many\"]\n"),
            &["`k`"],
        ),
        (
            // The grid's k silently replaced the shared one before.
            "shared-and-grid",
            format!("{head}k = 4\n[grid]\nk = [8, 16]\n"),
            &["`k`", "both shared and a grid axis"],
        ),
        (
            "too-big-k",
            format!("{head}[[member]]\nname = \"d\"\nk = 999\n"),
            &["member `d`", "--k 999"],
        ),
    ];
    for (name, toml, expect) in cases {
        refused(&dir, name, &toml, expect)?;
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![cpu_test("bad_sweep_files_refused_before_any_work", |_| {
        bad_files()
    })]
}
