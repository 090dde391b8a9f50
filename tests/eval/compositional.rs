//! The compositional split: its construction row by row, and `saeforge synth
//! --compositional` -> `train` -> `eval --ood --truth --fista` on a small topk SAE, whose
//! table must show the out-of-distribution gap.

use clap::Parser;
use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::cli::{Cli, run};
use saeforge::data::FloatType;
use saeforge::synth::{Compositional, CompositionalConfig, CompositionalRow};
use serde_json::Value;

use crate::common::{cpu_test, fail};
use crate::metrics::tmp;

fn config(seed: u64, ood_unseen: bool) -> CompositionalConfig {
    CompositionalConfig {
        features: 40,
        d_in: 16,
        k: 3,
        ood_features: 16,
        ood_unseen,
        train_tokens: 100,
        test_tokens: 10,
        ood_tokens: 10,
        shard_tokens: 64,
        dtype: FloatType::F32,
        seed,
    }
}

/// Every row has exactly k features with values in (0, 1) and x = sum z_i f_i; OOD rows are
/// the probe plus OOD-pool features; in-distribution rows never pair the probe with the
/// OOD pool, and use it (without the probe) only when allowed.
fn construction(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    for ood_unseen in [false, true] {
        let cfg = config(rng.random(), ood_unseen);
        let (n, d, start) = (cfg.features, cfg.d_in, cfg.ood_start());
        let mut g = Compositional::new(cfg).map_err(fail)?;
        let norms_ok = g
            .features
            .chunks_exact(d)
            .all(|f| (f.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
        if !norms_ok {
            return Err("features are not unit vectors".into());
        }
        let mut seen_ood_pool = false;
        for kind in [CompositionalRow::InDistribution, CompositionalRow::Ood] {
            let rows = 2000;
            let (x, z) = g.rows(kind, rows);
            for r in 0..rows {
                let zr = &z[r * n..(r + 1) * n];
                let on: Vec<usize> = (0..n).filter(|&i| zr[i] != 0.0).collect();
                if on.len() != 3 || on.iter().any(|&i| !(zr[i] > 0.0 && zr[i] < 1.0)) {
                    return Err(format!("{kind:?} row {r}: support {on:?}").into());
                }
                let probe = on.contains(&0);
                let ood = on.iter().filter(|&&i| i >= start).count();
                let ok = match kind {
                    CompositionalRow::Ood => probe && ood == 2,
                    // The probe only with the in-distribution pool; the OOD pool only
                    // without the probe, and only when training may use it.
                    CompositionalRow::InDistribution if probe => ood == 0,
                    CompositionalRow::InDistribution => ood == 0 || !ood_unseen,
                };
                if !ok {
                    return Err(format!(
                        "{kind:?} row {r} (ood_unseen {ood_unseen}): support {on:?}, OOD pool from {start}"
                    )
                    .into());
                }
                seen_ood_pool |= kind == CompositionalRow::InDistribution && ood > 0;
                for j in 0..d {
                    let want: f32 = on.iter().map(|&i| zr[i] * g.features[i * d + j]).sum();
                    if (x[r * d + j] - want).abs() > 1e-5 {
                        return Err(format!("{kind:?} row {r}: x != sum z_i f_i").into());
                    }
                }
            }
        }
        if seen_ood_pool == ood_unseen {
            return Err(format!(
                "ood_unseen {ood_unseen}: training rows used the OOD pool: {seen_ood_pool}"
            )
            .into());
        }
    }
    Ok(())
}

fn cli(args: &[&str]) -> Result<(), Failed> {
    let mut v = vec!["saeforge"];
    v.extend_from_slice(args);
    run(Cli::try_parse_from(v).map_err(fail)?).map_err(fail)
}

/// Flags that do not apply are refused.
fn refuses_flags() -> Result<(), Failed> {
    let dir = tmp("synth-flags");
    let out = dir.join("x");
    let out = out.to_str().unwrap();
    for args in [
        vec!["synth", "--out", out, "--compositional", "--noise", "0.1"],
        vec!["synth", "--out", out, "--compositional", "--active", "3"],
        vec!["synth", "--out", out, "--k", "3"],
        vec!["synth", "--out", out, "--ood-unseen"],
        vec!["synth", "--out", out, "--compositional", "--k", "1"],
    ] {
        if cli(&args).is_ok() {
            return Err(format!("accepted {args:?}").into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn metric(j: &Value, path: &[&str]) -> Result<f64, Failed> {
    let mut v = j;
    for p in path {
        v = v.get(p).ok_or_else(|| format!("JSON has no {path:?}"))?;
    }
    v.as_f64()
        .ok_or_else(|| format!("{path:?} is not a number").into())
}

/// 64 features in 32 dims, k = 3 (the paper's construction; seed fixed so that the
/// trained SAE, and the figures printed, are the same every run), a 128-latent topk SAE
/// trained for 1500 steps on train/, then eval on test/ and ood/ with FISTA and the truth.
fn ood_table() -> Result<(), Failed> {
    let dir = tmp("ood-table");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (data, sae) = (dir.join("data"), dir.join("sae"));
    let (json, plots) = (dir.join("eval.json"), dir.join("plots"));
    cli(&[
        "synth",
        "--compositional",
        "--out",
        &s(&data),
        "--features",
        "64",
        "--d-in",
        "32",
        "--k",
        "3",
        "--tokens",
        "60000",
        "--test-tokens",
        "2000",
        "--ood-tokens",
        "2000",
        "--seed",
        "1",
    ])?;
    for part in ["train", "test", "ood"] {
        if !data.join(part).join("shard-00000.safetensors").exists() {
            return Err(format!("synth wrote no {part}/ shards").into());
        }
    }
    cli(&[
        "train",
        "--data",
        &s(&data.join("train")),
        "--out",
        &s(&sae),
        "--arch",
        "topk",
        "--d-sae",
        "128",
        "--k",
        "3",
        "--batch",
        "256",
        "--steps",
        "1500",
        "--lr",
        "3e-3",
        "--device",
        "cpu",
    ])?;
    cli(&[
        "eval",
        "--sae",
        &s(&sae),
        "--data",
        &s(&data.join("test")),
        "--ood",
        &s(&data.join("ood")),
        "--truth",
        &s(&data.join("truth.safetensors")),
        "--fista",
        "--iters",
        "300",
        "--device",
        "cpu",
        "--json",
        &s(&json),
        "--plots",
        &s(&plots),
    ])?;
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).map_err(fail)?).map_err(fail)?;
    for key in [
        "mse",
        "nmse",
        "explained_variance",
        "cosine",
        "l0",
        "l1",
        "dead_fraction",
        "dense_fraction",
        "relative_reconstruction_bias",
        "shrinkage",
        "mmcs",
        "recovered_0_9",
        "recovered_0_7",
        "unique_best_matches",
        "mcc",
        "uniqueness",
        "f1",
        "precision",
        "recall",
        "true_l0",
    ] {
        metric(&j, &[key])?;
    }
    for name in ["feature_density", "feature_density_ood_oracle"] {
        for ext in ["png", "svg"] {
            if !plots.join(format!("{name}.{ext}")).exists() {
                return Err(format!("no plots/{name}.{ext}").into());
            }
        }
    }
    let enc = (
        metric(&j, &["mse"])?,
        metric(&j, &["ood", "encoder", "mse"])?,
    );
    let fista = (
        metric(&j, &["fista", "mse"])?,
        metric(&j, &["ood", "fista", "mse"])?,
    );
    let oracle = (
        metric(&j, &["oracle", "mse"])?,
        metric(&j, &["ood", "oracle", "mse"])?,
    );
    eprintln!(
        "MSE in-distribution / OOD: encoder {:.4} / {:.4}, FISTA on the SAE dictionary {:.5} / {:.5}, FISTA on the true dictionary {:.6} / {:.6}",
        enc.0, enc.1, fista.0, fista.1, oracle.0, oracle.1
    );
    // The encoder's OOD error is well above its in-distribution error; the oracle has no
    // gap and beats both on OOD rows.
    if enc.1 < 1.5 * enc.0 {
        return Err(format!("no OOD gap for the encoder: MSE {} -> {}", enc.0, enc.1).into());
    }
    if (oracle.1 - oracle.0).abs() > 0.1 * oracle.0 + 1e-5 || oracle.1 > 0.1 * enc.1 {
        return Err(format!(
            "oracle MSE {} -> {} (encoder OOD {})",
            oracle.0, oracle.1, enc.1
        )
        .into());
    }
    if fista.1 > enc.1 {
        return Err(format!(
            "FISTA on the SAE dictionary OOD {} > encoder {}",
            fista.1, enc.1
        )
        .into());
    }
    // --truth may name the synth folder itself: the same truth metrics.
    let json2 = dir.join("eval-folder.json");
    #[rustfmt::skip]
    cli(&["eval", "--sae", &s(&sae), "--data", &s(&data.join("test")), "--truth", &s(&data), "--device", "cpu", "--json", &s(&json2)])?;
    let j2: Value =
        serde_json::from_str(&std::fs::read_to_string(&json2).map_err(fail)?).map_err(fail)?;
    for key in ["mmcs", "mcc", "uniqueness", "f1"] {
        let (a, b) = (metric(&j, &[key])?, metric(&j2, &[key])?);
        if a != b {
            return Err(format!("--truth FOLDER gave {key} {b}, the file {a}").into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("compositional::construction", construction),
        cpu_test("compositional::refuses_flags", |_| refuses_flags()),
        cpu_test("compositional::ood_table_cpu", |_| ood_table()),
    ]
}
