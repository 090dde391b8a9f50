//! `synth` worlds: the plain and compositional worlds written before the structured
//! generator existed still come out byte for byte the same (digests recorded from the
//! generator as it was), and the structured worlds (hierarchy, correlated firing, Zipf
//! firing, magnitudes, bias) have the structure they promise.

use std::path::Path;

use libtest_mimic::{Failed, Trial};
use saeforge::data::FloatType;
use saeforge::synth::{CompositionalConfig, SynthConfig, write_compositional, write_dataset};

use crate::common::{cpu_test, fail};
use crate::metrics::tmp;

/// FNV-1a of a file's bytes.
fn fnv(path: &Path) -> Result<(usize, u64), Failed> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let h = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    Ok((bytes.len(), h))
}

fn check_digests(dir: &Path, expected: &[(&str, usize, u64)]) -> Result<(), Failed> {
    for &(name, len, hash) in expected {
        let got = fnv(&dir.join(name))?;
        if got != (len, hash) {
            return Err(format!(
                "{name}: {} bytes, FNV {:#x}; the generator before the structured worlds wrote {len} bytes, FNV {hash:#x}",
                got.0, got.1
            )
            .into());
        }
    }
    Ok(())
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
        ..SynthConfig::default()
    }
}

/// Digests recorded at e9a606f with
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
            ("shard-00000.safetensors", 64088, 0x171d11c8d4e16ab9),
            ("shard-00001.safetensors", 64088, 0x8928970d5c2c793),
            ("shard-00002.safetensors", 64088, 0x3a9d7822d293207f),
            ("synth.json", 279, 0xd16806601d71d53a),
            ("truth.safetensors", 4504, 0xb589aaf5145912e4),
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
            ("shard-00000.safetensors", 48088, 0xe5e95a6c0560d76b),
            ("shard-00001.safetensors", 48088, 0x52b39a69e48ea3b),
            ("shard-00002.safetensors", 24088, 0xa9446299a172345),
            ("synth.json", 281, 0xee9aa950dc59b016),
            ("truth.safetensors", 10152, 0x254509f9600cd0e3),
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
            ("truth.safetensors", 2456, 0xc60624e5705b4d2c),
            ("ood/shard-00000.safetensors", 9680, 0x1d264b84fe51181),
            ("test/shard-00000.safetensors", 9680, 0x3059ff04ea4ada59),
            ("train/shard-00000.safetensors", 14488, 0xc2bbb1f15030905),
            ("train/shard-00001.safetensors", 9680, 0x8ada3e73821a3b93),
        ],
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![cpu_test(
        "worlds::old_worlds_unchanged",
        old_worlds_unchanged,
    )]
}
