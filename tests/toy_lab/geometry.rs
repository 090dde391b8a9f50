//! geometry: the feature geometry graph (edges |W_i_hat . W_j| > 0.3) of a uniform sweep.
//! At 1 - S = 0.3, the antipodal-pair plateau of D*: most represented features in digons
//! (D_i = 1/2), and most components one of the paper's polytopes. Test size: n = 100 ->
//! m = 10 (README default: n = 400 -> m = 30), 1 density (default 5), 4,000 steps of 256
//! rows (as the default).

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::toy::lab::graph::{Config, classify, run};

use crate::common::cpu_test;
use crate::util::{both, recipe, verdict};

fn check(engine: &Engine) -> Result<(), Failed> {
    let cfg = Config {
        n: 100,
        m: 10,
        density: vec![0.3],
        threshold: 0.3,
        recipe: recipe(4_000, 256),
    };
    let r = run(engine, &cfg, &mut |_| {}).map_err(|e| e.to_string())?;
    for l in &r.levels {
        eprintln!(
            "  1-S {:<4} D* {:.3} represented {} components {:?} classes {:?}",
            l.density, l.dstar, l.represented, l.components, l.classes
        );
    }
    let mut errors = Vec::new();
    let sparse = &r.levels[0];
    let in_digons = 2 * sparse.classes.get("digon").copied().unwrap_or(0);
    if (in_digons as f64) < 0.7 * sparse.represented as f64 {
        errors.push(format!(
            "1-S = 0.3: {in_digons} of {} represented features in digons, expected >= 70%",
            sparse.represented
        ));
    }
    let named: usize = sparse.list.iter().filter(|c| c.class != "other").count();
    if (named as f64) < 0.8 * sparse.list.len() as f64 {
        errors.push(format!(
            "1-S = 0.3: {named} of {} components are a known polytope, expected >= 80%",
            sparse.list.len()
        ));
    }
    verdict(errors)
}

fn classes() -> Result<(), Failed> {
    let cases = [
        (1, 0.98, "dedicated"),
        (2, 0.52, "digon"),
        (3, 0.66, "triangle"),
        (4, 0.74, "tetrahedron"),
        (5, 0.41, "pentagon"),
        (8, 0.38, "square antiprism"),
        (2, 0.8, "other"),
        (6, 0.5, "other"),
    ];
    let mut errors = Vec::new();
    for (size, d, want) in cases {
        let got = classify(size, d);
        if got != want {
            errors.push(format!("classify({size}, {d}) = {got}, expected {want}"));
        }
    }
    verdict(errors)
}

pub fn trials() -> Vec<Trial> {
    let mut v = both("lab::geometry", check);
    v.push(cpu_test("lab::geometry/classify", |_| classes()));
    v
}
