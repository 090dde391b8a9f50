//! The report (sweep.json, report.md, plots), rebuilt by `saeforge sweep report`, and the
//! Slurm job array.

use std::path::Path;

use libtest_mimic::{Failed, Trial};
use saeforge::sweep::report;
use serde_json::Value;

use crate::common::fail;

/// The report of a finished sweep in `out` (trained on the synth folder `data`, so that
/// its truth scores the members): every member in sweep.json and report.md, `done` on the
/// frontier with truth metrics, `stopped` listed with its reason; the plots in PNG and SVG;
/// a rebuild gives the same sweep.json.
pub fn check_report(out: &Path, data: &Path, done: &[&str], stopped: &str) -> Result<(), Failed> {
    report::write(out, Some(data)).map_err(fail)?;
    let first = std::fs::read_to_string(out.join("sweep.json")).map_err(fail)?;
    let j: Value = serde_json::from_str(&first).map_err(fail)?;
    let members = j["members"].as_array().ok_or("no members")?;
    for name in done {
        let m = members
            .iter()
            .find(|m| m["name"] == *name)
            .ok_or("member missing")?;
        if m["status"] != "done" || m["held_out"]["explained_variance"].as_f64().is_none() {
            return Err(format!("{name}: {m}").into());
        }
        if m["truth"]["mcc"].as_f64().is_none() {
            return Err(format!("{name}: no ground-truth MCC: {m}").into());
        }
    }
    if j["pareto"].as_array().is_none_or(|p| p.is_empty()) {
        return Err("empty Pareto set".into());
    }
    let bad = members
        .iter()
        .find(|m| m["name"] == stopped)
        .ok_or("stopped member missing")?;
    if bad["status"] != "diverged" {
        return Err(format!("{stopped}: {bad}").into());
    }
    if j["data"]["training_streams"] != 1 {
        return Err(format!("expected one training stream: {}", j["data"]).into());
    }
    let md = std::fs::read_to_string(out.join("report.md")).map_err(fail)?;
    for x in done.iter().chain([&stopped]) {
        if !md.contains(&format!("| {x}")) {
            return Err(format!("report.md has no row for {x}").into());
        }
    }
    if !md.contains(&format!("- {stopped}: diverged")) || !md.contains("| MCC |") {
        return Err(
            format!("report.md lacks the diverged line or the truth columns:\n{md}").into(),
        );
    }
    for p in ["ev_vs_l0", "dead_vs_l0", "loss_curves"] {
        for ext in ["png", "svg"] {
            let f = out.join("plots").join(format!("{p}.{ext}"));
            if std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) == 0 {
                return Err(format!("{} missing", f.display()).into());
            }
        }
    }
    // `saeforge sweep report OUT` from the folder alone: the same document.
    std::fs::remove_file(out.join("sweep.json")).map_err(fail)?;
    report::write(out, Some(data)).map_err(fail)?;
    let again = std::fs::read_to_string(out.join("sweep.json")).map_err(fail)?;
    if again != first {
        return Err("the rebuilt sweep.json differs".into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![]
}
