//! dynamics: one n = 20 -> m = 5 model at density 0.3, D_i and the loss recorded every 25
//! steps: at least one energy-level jump of a feature's D_i, with the loss lower after it
//! than before. Test size: 3,000 steps (the jumps end by step 2,200) (README default: 10,000).

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::toy::lab::dynamics::{Config, run};

use crate::util::{both, recipe, verdict};

fn check(engine: &Engine) -> Result<(), Failed> {
    let cfg = Config {
        n: 20,
        m: 5,
        density: 0.3,
        record_every: 25,
        recipe: recipe(3_000, 1024),
    };
    let r = run(engine, &cfg, &mut |_| {}).map_err(|e| e.to_string())?;
    for j in &r.jumps {
        eprintln!(
            "  step {:>5} feature {:>2}: D {:.3} -> {:.3}, loss drop {:.5}",
            j.step, j.feature, j.from, j.to, j.loss_drop
        );
    }
    let mut errors = Vec::new();
    if r.steps.len() != 120 || r.dims.len() != 120 || r.loss.len() != 120 {
        errors.push(format!(
            "{} recorded steps ({} dims, {} losses), expected 120",
            r.steps.len(),
            r.dims.len(),
            r.loss.len()
        ));
    }
    if !r.jumps.iter().any(|j| j.loss_drop > 0.0) {
        errors.push(format!(
            "{} jumps, none with a loss drop; expected at least one",
            r.jumps.len()
        ));
    }
    verdict(errors)
}

pub fn trials() -> Vec<Trial> {
    both("lab::dynamics", check)
}
