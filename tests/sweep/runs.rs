//! Whole sweeps through `saeforge::sweep::run_until` against solo `sae::train::run` runs.

use std::path::Path;

use libtest_mimic::{Failed, Trial};
use saeforge::sae::checkpoint::Checkpoint;
use saeforge::sae::{TrainArgs, train};
use saeforge::stop::StopToken;
use saeforge::sweep::state::{Status, SweepState};
use saeforge::sweep::{SpecParts, SweepOptions, SweepSpec, run_until};
use serde_json::{Value, json};

use crate::common::{cpu_test, fail, gpu_test};
use crate::util::{synth, tmp};

/// Options every member shares: small, with every schedule explicit (so that a run resumed
/// with more steps is the longer run exactly), a held-out tail, and checkpoints.
fn shared(data: &Path, device: &str, steps: u64) -> serde_json::Map<String, Value> {
    let v = json!({
        "data": [data],
        "d_sae": 96,
        "batch": 64,
        "steps": steps,
        "lr_warmup": 2,
        "sparsity_warmup": 2,
        "dead_tokens": 256,
        "log_every": 2,
        "eval_every": 4,
        "eval_fraction": 0.1,
        "eval_rows": 200,
        "checkpoint_every": 3,
        "shuffle_rows": 500,
        "init_rows": 256,
        "device": device,
    });
    v.as_object().unwrap().clone()
}

/// Three members: topk k=4, topk k=8 with its own lr, relu with an L1 coefficient.
fn parts(data: &Path, device: &str, steps: u64) -> SpecParts {
    let mut p = SpecParts {
        shared: shared(data, device, steps),
        ..Default::default()
    };
    p.grid.insert("k".into(), vec![json!(4), json!(8)]);
    let mut relu = serde_json::Map::new();
    relu.insert("arch".into(), json!("relu"));
    relu.insert("l1".into(), json!(0.5));
    p.members.push((Some("relu".into()), relu));
    p
}

fn spec(data: &Path, device: &str, steps: u64) -> Result<SweepSpec, Failed> {
    parts(data, device, steps).expand().map_err(fail)
}

fn opts(out: &Path) -> SweepOptions {
    SweepOptions {
        out: out.to_path_buf(),
        ..Default::default()
    }
}

/// The solo run of a member: the same options through `saeforge train`.
fn solo(spec: &SweepSpec, name: &str, out: &Path) -> Result<(), Failed> {
    let m = spec.members.iter().find(|m| m.name == name).unwrap();
    let args: TrainArgs = serde_json::from_value(Value::Object(spec.merged(m))).map_err(fail)?;
    let args = TrainArgs {
        out: Some(out.to_path_buf()),
        ..args
    };
    train::run(&args).map_err(fail)?;
    Ok(())
}

fn bytes(p: &Path) -> Result<Vec<u8>, Failed> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()).into())
}

/// training.jsonl without the timing field.
fn log_of(dir: &Path) -> Result<Vec<Value>, Failed> {
    let text = std::fs::read_to_string(dir.join("training.jsonl")).map_err(fail)?;
    Ok(text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v
        })
        .collect())
}

/// A member's folder against a solo run's: the exported weights and sparsity byte for
/// byte, the checkpoint's state, and (`with_log`) the log but its timings.
fn same_run(member: &Path, solo: &Path, with_log: bool) -> Result<(), Failed> {
    for f in ["sae_weights.safetensors", "sparsity.safetensors"] {
        if bytes(&member.join(f))? != bytes(&solo.join(f))? {
            return Err(format!("{}: {f} differs from the solo run's", member.display()).into());
        }
    }
    let a = Checkpoint::load(member).map_err(fail)?;
    let b = Checkpoint::load(solo).map_err(fail)?;
    if a.state != b.state || a.batches != b.batches || a.scale.to_bits() != b.scale.to_bits() {
        return Err(format!(
            "{}: checkpoint state differs from the solo run's",
            member.display()
        )
        .into());
    }
    let mut ca = a.config.clone();
    ca.out = b.config.out.clone();
    if ca != b.config {
        return Err(format!("{}: config differs from the solo run's", member.display()).into());
    }
    if with_log && log_of(member)? != log_of(solo)? {
        return Err(format!(
            "{}: training.jsonl differs from the solo run's",
            member.display()
        )
        .into());
    }
    Ok(())
}

fn equals_solo(device: &str) -> Result<(), Failed> {
    let dir = tmp(&format!("solo-{device}"));
    let data = dir.join("data");
    synth(&data)?;
    // And a fourth member with another seed: it shares the data order (the sweep's
    // smallest seed, 0) and so the stream; its solo run is `train --seed 3 --data-seed 0`.
    let mut p = parts(&data, device, 9);
    let mut seeded = serde_json::Map::new();
    seeded.insert("seed".into(), json!(3));
    p.members.push((Some("seed3".into()), seeded));
    let spec = p.expand().map_err(fail)?;
    let m = spec.members.iter().find(|m| m.name == "seed3").unwrap();
    if spec.merged(m).get("data_seed") != Some(&json!(0)) {
        return Err(format!("seed3: data_seed not the sweep's smallest seed: {m:?}").into());
    }
    let out = dir.join("sweep");
    let o = run_until(Some(spec.clone()), &opts(&out), &StopToken::new()).map_err(fail)?;
    if o.interrupted {
        return Err("interrupted".into());
    }
    // One stream for the four members: 9 batches of 64 rows drawn once.
    let g = &o.state.groups;
    if g.len() != 1 || g[0].streams_opened != 1 || g[0].rows_drawn != 9 * 64 {
        return Err(format!("expected one stream of 576 rows, got {g:?}").into());
    }
    for m in &spec.members {
        let s = dir.join(format!("solo-{}", m.name));
        solo(&spec, &m.name, &s)?;
        same_run(&out.join(&m.name), &s, true)?;
    }
    Ok(())
}

/// A sweep stopped (Ctrl-C) somewhere, then resumed; another stopped at step 5 of 9 and
/// resumed with --steps 9; a third with one member ahead of the others: all end bitwise
/// equal to the uninterrupted sweep, on either engine (the GPU members over two devices on
/// a software adapter of a 2-core machine).
fn resume_exact(device: &str) -> Result<(), Failed> {
    let dir = tmp(&format!("resume-{device}"));
    let data = dir.join("data");
    synth(&data)?;
    let full = dir.join("full");
    run_until(
        Some(spec(&data, device, 9)?),
        &opts(&full),
        &StopToken::new(),
    )
    .map_err(fail)?;

    // Stopped at 5 of 9 steps, resumed to 9.
    let part = dir.join("part");
    run_until(
        Some(spec(&data, device, 5)?),
        &opts(&part),
        &StopToken::new(),
    )
    .map_err(fail)?;
    let again = SweepOptions {
        resume: true,
        steps: Some(9),
        ..opts(&part)
    };
    run_until(None, &again, &StopToken::new()).map_err(fail)?;

    // Members whose checkpoints are at different batches (as after a crash between two
    // members' checkpoints): k4 trained on alone to step 7, the others at 5; the resumed
    // sweep replays the stream from batch 5 and k4 skips what it has.
    let skew = dir.join("skew");
    run_until(
        Some(spec(&data, device, 5)?),
        &opts(&skew),
        &StopToken::new(),
    )
    .map_err(fail)?;
    let ahead = SweepOptions {
        resume: true,
        steps: Some(7),
        only: Some(vec!["k4".into()]),
        ..opts(&skew)
    };
    run_until(None, &ahead, &StopToken::new()).map_err(fail)?;
    let all = SweepOptions {
        resume: true,
        steps: Some(9),
        ..opts(&skew)
    };
    run_until(None, &all, &StopToken::new()).map_err(fail)?;

    // Interrupted by a stop (as Ctrl-C) once the first log line is written.
    let cut = dir.join("cut");
    let stop = StopToken::new();
    let watch = {
        let stop = stop.clone();
        let log = cut.join("k4").join("training.jsonl");
        std::thread::spawn(move || {
            for _ in 0..20000 {
                if std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            stop.stop();
        })
    };
    let o = run_until(Some(spec(&data, device, 9)?), &opts(&cut), &stop).map_err(fail)?;
    watch.join().unwrap();
    if !o.interrupted {
        return Err("the stopped sweep did not say interrupted".into());
    }
    let st = SweepState::load(&cut).map_err(fail)?;
    if st.members.values().any(|m| m.status != Status::Interrupted) {
        return Err(format!("after the stop: {:?}", st.members).into());
    }
    run_until(
        None,
        &SweepOptions {
            resume: true,
            ..opts(&cut)
        },
        &StopToken::new(),
    )
    .map_err(fail)?;

    for m in ["k4", "k8", "relu"] {
        // The 5-step run logged (and evaluated) at its last step, 5: its log has one more
        // record than the 9-step run's.
        same_run(&part.join(m), &full.join(m), false)?;
        same_run(&skew.join(m), &full.join(m), false)?;
        same_run(&cut.join(m), &full.join(m), true)?;
    }
    Ok(())
}

/// One member with a learning rate that blows up stops alone (status diverged, with its
/// line); the others finish and equal their solo runs.
fn divergence_stops_one() -> Result<(), Failed> {
    let dir = tmp("diverge");
    let data = dir.join("data");
    synth(&data)?;
    let mut p = SpecParts {
        shared: shared(&data, "cpu", 9),
        ..Default::default()
    };
    p.grid.insert("lr".into(), vec![json!(1e-3), json!(1e30)]);
    let spec = p.expand().map_err(fail)?;
    let out = dir.join("sweep");
    let o = run_until(Some(spec.clone()), &opts(&out), &StopToken::new()).map_err(fail)?;
    let bad = &o.state.members["lr1e+30"];
    if bad.status != Status::Diverged || !bad.message.as_deref().unwrap_or("").contains("diverged")
    {
        return Err(format!("the diverging member: {bad:?}").into());
    }
    if o.state.members["lr0.001"].status != Status::Done {
        return Err("the healthy member did not finish".into());
    }
    let s = dir.join("solo");
    solo(&spec, "lr0.001", &s)?;
    same_run(&out.join("lr0.001"), &s, true)?;
    crate::report::check_report(&out, &data, &["lr0.001"], "lr1e+30")
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("cpu_members_equal_solo_runs", |_| equals_solo("cpu")),
        gpu_test("gpu_members_equal_solo_runs", |_, _| equals_solo("gpu")),
        cpu_test("resume_and_interrupt_exact", |_| resume_exact("cpu")),
        gpu_test("gpu_resume_and_interrupt_exact", |_, _| resume_exact("gpu")),
        cpu_test("one_diverging_member_stops_alone", |_| {
            divergence_stops_one()
        }),
    ]
}
