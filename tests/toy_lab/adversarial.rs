//! adversarial: n = 40 -> m = 10, importance 0.95^i, at densities 1, 0.1 and 0.01: the optimal L2 attack's
//! vulnerability (its drop of x'_i over that of -ε e_i) is 1 without superposition (dense:
//! one feature per dimension) and rises with features per dimension. Also the attack is
//! optimal: no random direction of the same norm lowers an output more. Test size: 3
//! densities, 3,000 steps (README default: 8 densities, 10,000 steps).

use libtest_mimic::{Failed, Trial};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use saeforge::gpu::Engine;
use saeforge::toy::lab::adversarial::{Config, forward, run, vulnerability};

use crate::common::cpu_test;
use crate::util::{both, recipe, verdict};

fn check(engine: &Engine) -> Result<(), Failed> {
    let cfg = Config {
        n: 40,
        m: 10,
        density: vec![1.0, 0.1, 0.01],
        importance_decay: 0.95,
        epsilon: 0.05,
        recipe: recipe(3_000, 1024),
    };
    let r = run(engine, &cfg, &mut |_| {}).map_err(|e| e.to_string())?;
    for i in &r.instances {
        eprintln!(
            "  1-S {:<5} D* {:.3} features/dim {:.3} vulnerability {:.3} (max {:.3})",
            i.density, i.dstar, i.features_per_dim, i.vulnerability, i.vulnerability_max
        );
    }
    let v: Vec<f64> = r.instances.iter().map(|i| i.vulnerability).collect();
    let f: Vec<f64> = r.instances.iter().map(|i| i.features_per_dim).collect();
    let mut errors = Vec::new();
    if (v[0] - 1.0).abs() > 0.1 {
        errors.push(format!(
            "dense: vulnerability {:.3}, expected 1 +- 0.1",
            v[0]
        ));
    }
    if !(f[0] < f[1] && f[1] < f[2]) {
        errors.push(format!("features per dimension {f:.3?}: expected to rise"));
    }
    if !(v[0] < v[1] && v[1] < v[2]) {
        errors.push(format!(
            "vulnerability {v:.3?}: expected to rise with features per dim"
        ));
    }
    verdict(errors)
}

/// On a random W and b, δ* lowers x'_i at least as much as 2,000 random directions.
fn optimal() -> Result<(), Failed> {
    let (n, m, eps) = (12, 4, 0.05);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w: Vec<f32> = (0..n * m)
        .map(|_| StandardNormal.sample(&mut rng))
        .map(|v: f32| v * 0.6)
        .collect();
    let b = vec![0.2f32; n];
    let vul = vulnerability(&w, &b, n, m, eps);
    let mut errors = Vec::new();
    for i in 0..n {
        let Some(v) = vul[i] else { continue };
        let mut x = vec![0.0; n];
        x[i] = 1.0;
        let clean = forward(&w, &b, n, m, &x)[i];
        let mut own = x.clone();
        own[i] -= eps;
        let drop_own = clean - forward(&w, &b, n, m, &own)[i];
        let best_random = (0..2000)
            .map(|_| {
                let d: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
                let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt();
                let y: Vec<f64> = (0..n).map(|j| x[j] + eps * d[j] / norm).collect();
                (clean - forward(&w, &b, n, m, &y)[i]) / drop_own
            })
            .fold(f64::NEG_INFINITY, f64::max);
        if best_random > v * (1.0 + 1e-9) {
            errors.push(format!(
                "feature {i}: a random direction reaches {best_random:.4}, δ* only {v:.4}"
            ));
        }
    }
    verdict(errors)
}

pub fn trials() -> Vec<Trial> {
    let mut v = both("lab::adversarial", check);
    v.push(cpu_test("lab::adversarial/optimal", |_| optimal()));
    v
}
