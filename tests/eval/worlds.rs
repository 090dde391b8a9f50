//! `synth` worlds: the plain and compositional worlds written before the structured
//! generator existed still come out byte for byte the same (digests recorded from the
//! generator as it was), and the structured worlds (hierarchy, correlated firing, Zipf
//! firing, magnitudes, bias) have the structure they promise.

use std::path::Path;

use clap::Parser;
use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::cli::{Cli, run};
use saeforge::data::FloatType;
use saeforge::synth::{
    CompositionalConfig, CorrelationSettings, Generator, HierarchySettings, PerFeature, Structure,
    SynthConfig, read_codes, read_truth, write_compositional, write_dataset,
};

use crate::common::{cpu_test, fail};
use crate::metrics::tmp;

/// FNV-1a of a file's bytes.
/// FNV-1a of a file's content: for a safetensors file, of its tensors (name, dtype, shape,
/// data, in name order) rather than its bytes, so metadata that later versions add to the
/// header (the per-tensor digests) leaves it unchanged; the length is the data's.
fn fnv(path: &Path) -> Result<(usize, u64), Failed> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hash = |h: u64, b: &[u8]| {
        b.iter()
            .fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    };
    let seed = 0xcbf29ce484222325u64;
    if path.extension().is_some_and(|e| e == "safetensors") {
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut names: Vec<String> = st.names().iter().map(|n| n.to_string()).collect();
        names.sort();
        let (mut h, mut len) = (seed, 0);
        for name in names {
            let t = st.tensor(&name).map_err(|e| format!("{name}: {e}"))?;
            h = hash(h, name.as_bytes());
            h = hash(h, format!("{:?}{:?}", t.dtype(), t.shape()).as_bytes());
            h = hash(h, t.data());
            len += t.data().len();
        }
        return Ok((len, h));
    }
    Ok((bytes.len(), hash(seed, &bytes)))
}

fn check_digests(dir: &Path, expected: &[(&str, usize, u64)]) -> Result<(), Failed> {
    let mut bad = Vec::new();
    for &(name, len, hash) in expected {
        let got = fnv(&dir.join(name))?;
        if got != (len, hash) {
            bad.push(format!(
                "{name}: {} bytes, FNV {:#x}; the generator before the structured worlds wrote {len} bytes, FNV {hash:#x}",
                got.0, got.1
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; ").into())
    }
}

fn plain(features: usize, d_in: usize, tokens: usize, seed: u64, dtype: FloatType) -> SynthConfig {
    SynthConfig {
        features,
        d_in,
        active: 4.0,
        density_decay: 0.0,
        magnitude: (0.0, 1.0),
        correlated_groups: 0,
        anticorrelated_groups: 0,
        group_size: 4,
        noise: 0.0,
        tokens,
        shard_tokens: 1000,
        dtype,
        seed,
    }
}

/// Digests of the worlds e9a606f wrote (safetensors files: of their tensors, see `fnv`;
/// recomputed when digests entered the headers, after checking with numpy that e9a606f's
/// binary and this one write equal tensors for all three commands) with
/// `saeforge synth --out a --features 64 --d-in 16 --tokens 3000 --shard-tokens 1000 --seed 3`,
/// `saeforge synth --out b --features 100 --d-in 24 --tokens 2500 --shard-tokens 1000
/// --active 3 --density-decay 0.8 --magnitude 0.5:2 --correlated-groups 2
/// --anticorrelated-groups 3 --group-size 3 --noise 0.05 --dtype f16 --seed 7` and
/// `saeforge synth --out c --compositional --features 40 --d-in 12 --k 3 --tokens 500
/// --test-tokens 200 --ood-tokens 200 --shard-tokens 300 --seed 5`.
fn old_worlds_unchanged(_: &mut rand_chacha::ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("old-worlds");
    let a = dir.join("a");
    write_dataset(&a, plain(64, 16, 3000, 3, FloatType::F32)).map_err(fail)?;
    check_digests(
        &a,
        &[
            ("shard-00000.safetensors", 64000, 0xb34f8ae30b50845d),
            ("shard-00001.safetensors", 64000, 0xee30495db1e1942f),
            ("shard-00002.safetensors", 64000, 0x154a9bea87929b2b),
            ("synth.json", 279, 0xd16806601d71d53a),
            ("truth.safetensors", 4352, 0x985591c333b7f8a4),
        ],
    )?;
    let b = dir.join("b");
    let mut cfg = plain(100, 24, 2500, 7, FloatType::F16);
    cfg.active = 3.0;
    cfg.density_decay = 0.8;
    cfg.magnitude = (0.5, 2.0);
    cfg.correlated_groups = 2;
    cfg.anticorrelated_groups = 3;
    cfg.group_size = 3;
    cfg.noise = 0.05;
    write_dataset(&b, cfg).map_err(fail)?;
    check_digests(
        &b,
        &[
            ("shard-00000.safetensors", 48000, 0x40f1a93a6b0013bb),
            ("shard-00001.safetensors", 48000, 0x6e24142cbce63d2b),
            ("shard-00002.safetensors", 24000, 0x70e41aa920257af5),
            ("synth.json", 281, 0xee9aa950dc59b016),
            ("truth.safetensors", 10000, 0xb69d3e5178ca96d4),
        ],
    )?;
    let c = dir.join("c");
    write_compositional(
        &c,
        CompositionalConfig {
            features: 40,
            d_in: 12,
            k: 3,
            ood_features: 20,
            ood_unseen: false,
            train_tokens: 500,
            test_tokens: 200,
            ood_tokens: 200,
            shard_tokens: 300,
            dtype: FloatType::F32,
            seed: 5,
        },
    )
    .map_err(fail)?;
    check_digests(
        &c,
        &[
            ("synth.json", 362, 0xebfe6a6fe42eedf),
            ("truth.safetensors", 2240, 0x6fd6663c117ab0f2),
            ("ood/shard-00000.safetensors", 9600, 0x73595184a2cc424a),
            ("test/shard-00000.safetensors", 9600, 0x8cc01ad2e2b64e2a),
            ("train/shard-00000.safetensors", 14400, 0xe124a2d3ad9ce600),
            ("train/shard-00001.safetensors", 9600, 0x97b8cd273670ccf4),
        ],
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A world like SynthSAEBench's (scaled down): every structural promise holds row by row.
fn structured_cfg(seed: u64) -> (SynthConfig, Structure) {
    (
        SynthConfig {
            features: 256,
            d_in: 32,
            density_decay: 0.5,
            tokens: 20_000,
            shard_tokens: 7000,
            seed,
            ..SynthConfig::default()
        },
        Structure {
            hierarchy: Some(HierarchySettings {
                roots: 8,
                branching: (3, 6),
                depth: 2,
                exclusive: 0.5,
                compensate: true,
            }),
            correlation: Some(CorrelationSettings {
                rank: 4,
                scale: 0.3,
            }),
            firing_range: Some((0.004, 0.4)),
            magnitude_mean: Some(PerFeature::Linear(2.0, 1.0)),
            magnitude_std: Some(PerFeature::Constant(0.1)),
            bias: 1.5,
        },
    )
}

/// Children fire only with their parent; exclusive siblings never fire together; the forest
/// is breadth first from the roots; Zipf ends, bias, magnitudes and x = sum c f + b hold.
fn structured_rows(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let (cfg, st) = structured_cfg(rng.random());
    let (n, d) = (cfg.features, cfg.d_in);
    let mut g = Generator::with_structure(cfg, st).map_err(fail)?;
    let t = g.truth.clone();
    if t.parent.len() != n || t.parent[..8].iter().any(|&p| p != -1) {
        return Err(format!("roots 0..8 must have no parent: {:?}", &t.parent[..8]).into());
    }
    // Breadth first: a parent's index is below its children's.
    for f in 0..n {
        let p = t.parent[f];
        if p >= 0 && p as usize >= f {
            return Err(format!("feature {f} has parent {p}").into());
        }
    }
    if (t.probability[0] - 0.4).abs() > 1e-6 || (t.probability[n - 1] - 0.004).abs() > 1e-6 {
        return Err(format!("Zipf ends {} .. {}", t.probability[0], t.probability[n - 1]).into());
    }
    let bias_norm = t.bias.iter().map(|v| v * v).sum::<f32>().sqrt();
    if (bias_norm - 1.5).abs() > 1e-5 {
        return Err(format!("bias norm {bias_norm}").into());
    }
    if (t.magnitude_mean[0] - 2.0).abs() > 1e-6 || (t.magnitude_mean[n - 1] - 1.0).abs() > 1e-6 {
        return Err("linear magnitude means".into());
    }
    let exclusive: Vec<usize> = (0..n).filter(|&f| t.exclusive_children[f] == 1).collect();
    if exclusive.is_empty() {
        return Err("no exclusive parent in the test world".into());
    }
    let rows = 4000;
    let (x, z) = g.rows(rows);
    let (mut together, mut fired) = (0usize, vec![0usize; n]);
    let mut sum = vec![0.0f64; n];
    for r in 0..rows {
        let zr = &z[r * n..(r + 1) * n];
        for f in 0..n {
            if zr[f] > 0.0 {
                fired[f] += 1;
                sum[f] += zr[f] as f64;
                let p = t.parent[f];
                if p >= 0 && zr[p as usize] <= 0.0 {
                    return Err(format!("row {r}: feature {f} fired without its parent {p}").into());
                }
            }
        }
        for &p in &exclusive {
            let on = (0..n)
                .filter(|&c| t.parent[c] == p as i32 && zr[c] > 0.0)
                .count();
            if on > 1 {
                return Err(format!("row {r}: {on} exclusive children of {p} fired").into());
            }
            together += on;
        }
        // x = sum c_i f_i + bias.
        for k in 0..d {
            let mut v = t.bias[k] as f64;
            for (f, &c) in zr.iter().enumerate() {
                v += c as f64 * t.features[f * d + k] as f64;
            }
            if (x[r * d + k] as f64 - v).abs() > 1e-4 {
                return Err(format!("row {r} coordinate {k}: {} vs {v}", x[r * d + k]).into());
            }
        }
    }
    if together == 0 {
        return Err("exclusive children never fired".into());
    }
    // Root 0 fires with probability 0.4 (a root is not gated): within 5 sigma.
    let sigma = (0.4f64 * 0.6 / rows as f64).sqrt();
    if (fired[0] as f64 / rows as f64 - 0.4).abs() > 5.0 * sigma {
        return Err(format!("root 0 fired on {} of {rows} rows", fired[0]).into());
    }
    // Magnitudes: mean of feature 0's values near 2 (std 0.1).
    if (sum[0] / fired[0] as f64 - 2.0).abs() > 0.02 {
        return Err(format!("feature 0 magnitude mean {}", sum[0] / fired[0] as f64).into());
    }
    Ok(())
}

/// Low-rank copula: marginals are the sampling probabilities, and the pair of features
/// with the largest factor correlation fires together more often than independence says.
fn correlated_firing(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let cfg = SynthConfig {
        features: 64,
        d_in: 8,
        active: 8.0,
        tokens: 1,
        seed: rng.random(),
        ..SynthConfig::default()
    };
    let st = Structure {
        correlation: Some(CorrelationSettings {
            rank: 2,
            scale: 0.6,
        }),
        ..Structure::default()
    };
    let mut g = Generator::with_structure(cfg, st).map_err(fail)?;
    let (rank, factor, _) = g
        .truth
        .correlation
        .clone()
        .ok_or("no correlation in the truth")?;
    let n = 64;
    let mut best = (0.0f32, 0, 1);
    for a in 0..n {
        for b in a + 1..n {
            let c: f32 = (0..rank)
                .map(|k| factor[a * rank + k] * factor[b * rank + k])
                .sum();
            if c > best.0 {
                best = (c, a, b);
            }
        }
    }
    let rows = 20_000;
    let (_, z) = g.rows(rows);
    let p = g.truth.probability.clone();
    let rate = |f: usize| (0..rows).filter(|&r| z[r * n + f] > 0.0).count() as f64 / rows as f64;
    for f in [0, 10, 63] {
        let sigma = (p[f] as f64 * (1.0 - p[f] as f64) / rows as f64).sqrt();
        if (rate(f) - p[f] as f64).abs() > 5.0 * sigma {
            return Err(format!("feature {f}: rate {} vs p {}", rate(f), p[f]).into());
        }
    }
    let (_, a, b) = best;
    let both = (0..rows)
        .filter(|&r| z[r * n + a] > 0.0 && z[r * n + b] > 0.0)
        .count() as f64
        / rows as f64;
    let indep = rate(a) * rate(b);
    if both < 1.2 * indep {
        return Err(format!(
            "features {a}, {b} (factor correlation {}): together {both}, independent {indep}",
            best.0
        )
        .into());
    }
    Ok(())
}

fn cli(args: &[&str]) -> saeforge::Result<()> {
    let mut v = vec!["saeforge"];
    v.extend_from_slice(args);
    run(Cli::try_parse_from(v).map_err(|e| saeforge::Error::input(e.to_string()))?)
}

/// Same flags and seed, same bytes (codes included); the CLI writes the structure and the
/// hierarchy; bad structure flags are refused with one line naming the flag.
fn cli_worlds(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("structured-cli");
    let seed = rng.random::<u32>().to_string();
    let flags = |out: &str| -> Vec<String> {
        [
            "synth",
            "--out",
            out,
            "--features",
            "200",
            "--d-in",
            "24",
            "--tokens",
            "1500",
            "--shard-tokens",
            "600",
            "--seed",
            &seed,
            "--density-decay",
            "0.5",
            "--firing-range",
            "0.01:0.4",
            "--hierarchy",
            "5",
            "--branching",
            "3:5",
            "--mutually-exclusive",
            "0.5",
            "--correlation-rank",
            "3",
            "--magnitude-mean",
            "exponential:2:0.5",
            "--magnitude-std",
            "folded-normal:0.1:0.05",
            "--bias",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        let f = flags(out.to_str().unwrap());
        cli(&f.iter().map(String::as_str).collect::<Vec<_>>()).map_err(fail)?;
    }
    for name in [
        "shard-00000.safetensors",
        "shard-00002.safetensors",
        "codes/shard-00001.safetensors",
        "truth.safetensors",
        "synth.json",
    ] {
        let (x, y) = (fnv(&a.join(name))?, fnv(&b.join(name))?);
        if x != y {
            return Err(format!("{name} differs between two runs of the same flags").into());
        }
    }
    let t = read_truth(&a.join("truth.safetensors")).map_err(fail)?;
    if t.parent.len() != 200 || t.bias.len() != 24 {
        return Err("truth.safetensors lacks the hierarchy or the bias".into());
    }
    let c = read_codes(&a.join("codes/shard-00002.safetensors"), 200, 300).map_err(fail)?;
    if c.rows() != 300 {
        return Err("codes of the last shard".into());
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("synth.json")).map_err(fail)?)
            .map_err(fail)?;
    if j["structure"]["hierarchy"]["roots"] != 5 || j["structure"]["bias"] != 1.0 {
        return Err(format!("synth.json structure: {}", j["structure"]).into());
    }
    // --overwrite replaces the codes too; --no-codes leaves them out.
    let f = flags(a.to_str().unwrap());
    let mut v: Vec<&str> = f.iter().map(String::as_str).collect();
    v.extend(["--overwrite", "--no-codes"]);
    cli(&v).map_err(fail)?;
    if a.join("codes").exists() {
        return Err("--overwrite --no-codes left the old codes/ behind".into());
    }
    let out = dir.join("bad");
    let o = out.to_str().unwrap();
    for (args, flag) in [
        (vec!["--branching", "3:5"], "--branching"),
        (vec!["--hierarchy", "0"], "--hierarchy"),
        (
            vec!["--hierarchy", "4", "--branching", "1:3"],
            "--branching",
        ),
        (
            vec!["--hierarchy", "4", "--mutually-exclusive", "1.5"],
            "--mutually-exclusive",
        ),
        (vec!["--correlation-scale", "0.1"], "--correlation-scale"),
        (vec!["--correlation-rank", "0"], "--correlation-rank"),
        (
            vec!["--firing-range", "0.5:0.1", "--density-decay", "1"],
            "--firing-range",
        ),
        (vec!["--firing-range", "0.01:0.5"], "--firing-range"),
        (
            vec![
                "--firing-range",
                "0.01:0.5",
                "--density-decay",
                "1",
                "--active",
                "3",
            ],
            "--active",
        ),
        (vec!["--magnitude-mean", "linear:1"], "--magnitude-mean"),
        (
            vec!["--magnitude-std", "folded-normal:1:0"],
            "--magnitude-std",
        ),
        (
            vec!["--magnitude-mean", "1", "--magnitude", "0:1"],
            "--magnitude",
        ),
        (vec!["--bias=-1"], "--bias"),
        (
            vec!["--hierarchy", "4", "--correlated-groups", "2"],
            "--correlated-groups",
        ),
        (vec!["--compositional", "--bias", "1"], "--bias"),
    ] {
        let mut v = vec!["synth", "--out", o, "--tokens", "10"];
        v.extend(args.iter().copied());
        match cli(&v) {
            Ok(()) => return Err(format!("accepted {args:?}").into()),
            Err(e) => {
                let m = e.to_string();
                if !m.contains(flag) || m.contains('\n') {
                    return Err(format!("{args:?}: {m:?} should be one line naming {flag}").into());
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("worlds::old_worlds_unchanged", old_worlds_unchanged),
        cpu_test("worlds::structured_rows", structured_rows),
        cpu_test("worlds::correlated_firing", correlated_firing),
        cpu_test("worlds::cli_worlds", cli_worlds),
    ]
}
