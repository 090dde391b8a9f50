//! correlated: two sets of two features in m = 2, density 0.05. Correlated sets: the
//! features of a set orthogonal (there is room), the two sets antipodal to each other;
//! anticorrelated sets: the features of a set antipodal. Test size: 2 restarts, 3,000
//! steps (README default: 4 restarts, 10,000 steps).

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::reference::toy::SetMode;
use saeforge::toy::lab::correlated::{Config, run};

use crate::util::{both, recipe, verdict};

fn config(mode: SetMode) -> Config {
    Config {
        sets: 2,
        set_size: 2,
        correlation: mode,
        m: 2,
        density: 0.05,
        restarts: 2,
        recipe: recipe(3_000, 1024),
    }
}

fn correlated(engine: &Engine) -> Result<(), Failed> {
    let r = run(engine, &config(SetMode::Correlated), &mut |_| {}).map_err(|e| e.to_string())?;
    let b = &r.best;
    eprintln!(
        "  correlated: within |cos| {:.3}, across |cos| {:.3}, norms {:.2?}",
        b.within_set_mean_abs_cos, b.across_set_mean_abs_cos, b.norms
    );
    let mut errors = Vec::new();
    if b.within_set_mean_abs_cos > 0.1 {
        errors.push(format!(
            "correlated: within-set mean |cos| {:.3}, expected orthogonal (< 0.1)",
            b.within_set_mean_abs_cos
        ));
    }
    if b.norms.iter().any(|&v| v < 0.5) {
        errors.push(format!(
            "correlated: a feature not learned, norms {:.2?}",
            b.norms
        ));
    }
    verdict(errors)
}

fn anticorrelated(engine: &Engine) -> Result<(), Failed> {
    let r =
        run(engine, &config(SetMode::Anticorrelated), &mut |_| {}).map_err(|e| e.to_string())?;
    let b = &r.best;
    eprintln!(
        "  anticorrelated: within min cos {:.3}, across |cos| {:.3}",
        b.within_set_min_cos, b.across_set_mean_abs_cos
    );
    let mut errors = Vec::new();
    if b.within_set_min_cos > -0.95 {
        errors.push(format!(
            "anticorrelated: within-set min cos {:.3}, expected antipodal (< -0.95)",
            b.within_set_min_cos
        ));
    }
    verdict(errors)
}

pub fn trials() -> Vec<Trial> {
    let mut v = both("lab::correlated/correlated", correlated);
    v.extend(both("lab::correlated/anticorrelated", anticorrelated));
    v
}
