//! `eval --truth` against SAELens's own evaluator (`eval_sae_on_synthetic_data`) on the same
//! SAE and the same rows: a structured synth world (SynthSAEBench's structure, written with
//! its true codes) and a topk SAE near its dictionary, scored by both. Runs when
//! SAEFORGE_PEER_PYTHON names a python with sae_lens installed (e.g.
//! /work/peer-env/bin/python); otherwise it is reported as ignored, with that reason.

use std::process::Command;

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::eval::run::{EvalConfig, run_eval};
use saeforge::gpu::Engine;
use saeforge::sae::export::{SaeKind, SaeModel};
use saeforge::synth::{
    CorrelationSettings, HierarchySettings, PerFeature, Structure, SynthConfig, read_truth,
    write_world,
};
use serde_json::Value;

use crate::common::{fail, randn, tolerance};
use crate::metrics::tmp;

fn compare(rng: &mut ChaCha8Rng, py: &str) -> Result<(), Failed> {
    let dir = tmp("peer-truth");
    let data = dir.join("data");
    let (n, d, k) = (256, 48, 6);
    let cfg = SynthConfig {
        features: n,
        d_in: d,
        density_decay: 0.5,
        tokens: 6000,
        shard_tokens: 2500,
        seed: rng.random(),
        ..SynthConfig::default()
    };
    let structure = Structure {
        hierarchy: Some(HierarchySettings {
            roots: 8,
            branching: (3, 8),
            depth: 1,
            exclusive: 0.5,
            compensate: true,
        }),
        correlation: Some(CorrelationSettings {
            rank: 8,
            scale: 0.1,
        }),
        firing_range: Some((0.002, 0.3)),
        magnitude_mean: Some(PerFeature::Constant(1.0)),
        magnitude_std: Some(PerFeature::Constant(0.15)),
        bias: 1.0,
    };
    write_world(&data, cfg, structure, true).map_err(fail)?;
    let truth = read_truth(&data.join("truth.safetensors")).map_err(fail)?;
    // 300 latents: noisy copies of 240 features (some twice), the rest random directions.
    let nl = 300;
    let (w_enc, w_dec) = crate::truth::noisy_copies(rng, &truth.features, d, nl, 240, 13, 0.3);
    let model = SaeModel {
        kind: SaeKind::Topk { k },
        d,
        n: nl,
        w_enc,
        b_enc: randn(rng, nl, 0.05),
        w_dec,
        b_dec: truth.bias.clone(),
        threshold: Vec::new(),
        skip: None,
        d_out: None,
    };
    let sae = dir.join("sae");
    model
        .save(&sae, None, serde_json::json!({}))
        .map_err(fail)?;
    let (rows, batch) = (5000, 1000);
    let ours = run_eval(
        &Engine::Cpu,
        "cpu",
        &EvalConfig {
            sae: sae.clone(),
            data: vec![data.clone()],
            ood: Vec::new(),
            tensor: None,
            truth: Some(data.join("truth.safetensors")),
            rows,
            batch,
            fista: None,
            plots: None,
        },
    )
    .map_err(fail)?
    .to_json();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/eval/saelens_truth.py");
    let out = Command::new(py)
        .arg(script)
        .arg(&sae)
        .arg(&data)
        .arg(rows.to_string())
        .arg(batch.to_string())
        .output()
        .map_err(fail)?;
    if !out.status.success() {
        return Err(format!(
            "SAELens's evaluator failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().ok_or("SAELens printed nothing")?;
    let peer: Value = serde_json::from_str(line).map_err(fail)?;
    let get = |j: &Value, key: &str| {
        j.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| Failed::from(format!("no {key:?} in {j}")))
    };
    // (our key, SAELens's key, tolerance)
    let checks = [
        ("mcc", "mcc", tolerance::PEER_TRUTH_DICTIONARY),
        ("uniqueness", "uniqueness", tolerance::PEER_TRUTH_DICTIONARY),
        ("precision", "precision", tolerance::PEER_TRUTH_FIRING),
        ("recall", "recall", tolerance::PEER_TRUTH_FIRING),
        ("f1", "f1", tolerance::PEER_TRUTH_FIRING),
        ("accuracy", "accuracy", tolerance::PEER_TRUTH_FIRING),
        ("true_l0", "true_l0", tolerance::PEER_TRUTH_DICTIONARY),
        ("l0", "l0", tolerance::PEER_TRUTH_FIRING),
        (
            "explained_variance",
            "explained_variance",
            tolerance::PEER_TRUTH_FIRING,
        ),
        ("shrinkage", "shrinkage", tolerance::PEER_TRUTH_FIRING),
        ("dead", "dead", tolerance::PEER_TRUTH_DICTIONARY),
    ];
    let mut table = String::from("metric              saeforge      SAELens   |difference|\n");
    let mut worst = Vec::new();
    for (ours_key, peer_key, tol) in checks {
        let (a, b) = (get(&ours, ours_key)?, get(&peer, peer_key)?);
        table.push_str(&format!(
            "{ours_key:<18} {a:>9.6}    {b:>9.6}    {:.2e}\n",
            (a - b).abs()
        ));
        if (a - b).abs() > tol.atol as f64 + tol.rtol as f64 * b.abs() {
            worst.push(format!(
                "{ours_key}: saeforge {a}, SAELens {b} ({})",
                tol.name
            ));
        }
    }
    eprintln!("eval --truth vs SAELens eval_sae_on_synthetic_data, same SAE and rows:\n{table}");
    if !worst.is_empty() {
        return Err(worst.join("; ").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![crate::common::peer_test(
        "peer::saelens_evaluator_agrees",
        "import sae_lens.synthetic.evals",
        compare,
    )]
}
