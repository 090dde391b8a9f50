//! Transcoders in a sweep: members sharing the paired stream (the same --data and
//! --target-data) train from one loader, and each member's folder equals its solo
//! `saeforge train --target-data` run bitwise.

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::sae::{Arch, TrainArgs, train};
use saeforge::stop::StopToken;
use saeforge::sweep::{SpecParts, SweepOptions, run_until};
use serde_json::{Value, json};

use crate::common::{cpu_test, fail};
use crate::{args, tmp, write_pairs};

fn members_equal_solo(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("sweep");
    let (inp, outd) = write_pairs(&dir, rng, &[400, 300]);
    // The small transcoder run's options, shared; k and the seed as the grid.
    let mut shared = serde_json::to_value(args(&inp, &outd, &dir.join("unused"), Arch::Topk, 6))
        .map_err(fail)?;
    let shared = shared.as_object_mut().ok_or("options")?;
    shared.retain(|k, v| k != "out" && !v.is_null());
    let mut p = SpecParts {
        shared: shared.clone(),
        ..Default::default()
    };
    p.grid.insert("k".into(), vec![json!(4), json!(8)]);
    p.grid.insert("seed".into(), vec![json!(0), json!(2)]);
    let spec = p.expand().map_err(fail)?;
    let out = dir.join("sweep");
    let opts = SweepOptions {
        out: out.clone(),
        ..Default::default()
    };
    let o = run_until(Some(spec.clone()), &opts, &StopToken::new()).map_err(fail)?;
    let g = &o.state.groups;
    if o.interrupted || g.len() != 1 || g[0].streams_opened != 1 {
        return Err(format!("expected the four members on one stream, got {g:?}").into());
    }
    for m in &spec.members {
        let solo = dir.join(format!("solo-{}", m.name));
        let a: TrainArgs = serde_json::from_value(Value::Object(spec.merged(m))).map_err(fail)?;
        train::run(&TrainArgs {
            out: Some(solo.clone()),
            ..a
        })
        .map_err(fail)?;
        let w = |d: &std::path::Path| std::fs::read(d.join("sae_weights.safetensors"));
        if w(&out.join(&m.name)).map_err(fail)? != w(&solo).map_err(fail)? {
            return Err(
                format!("{}: the sweep's weights differ from the solo run's", m.name).into(),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![cpu_test(
        "sweep_members_equal_solo_runs",
        members_equal_solo,
    )]
}
