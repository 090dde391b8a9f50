//! Fuzz-style: thousands of randomly corrupted files fed to the readers (shards, SAE
//! weights, checkpoints). Whatever the bytes, a reader returns Ok or a one-line error; it
//! never panics. A shard that opens is streamed row by row (NaN checks included).

use std::path::Path;
use std::sync::Arc;

use libtest_mimic::{Failed, Trial};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use saeforge::data::{BatchStream, Shard};
use saeforge::sae::checkpoint::Checkpoint;
use saeforge::sae::export::SaeModel;

use crate::common::cpu_test;
use crate::{fx, tmp};

/// One random corruption of `base`: truncate, flip bytes, rewrite the header length,
/// overwrite header characters (digits, quotes, brackets), insert or drop bytes.
fn corrupt(base: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    let header_end = (8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize).min(b.len());
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            break;
        }
        match rng.random_range(0..7) {
            0 => {
                let n = rng.random_range(0..b.len());
                b.truncate(n);
            }
            1 => {
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..b.len());
                    b[i] ^= 1 << rng.random_range(0..8);
                }
            }
            2 if b.len() >= 8 => {
                let v: u64 = match rng.random_range(0..4) {
                    0 => rng.random(),
                    1 => rng.random_range(0..b.len() as u64 * 2),
                    2 => (header_end as u64)
                        .wrapping_sub(10)
                        .wrapping_add(rng.random_range(0..5)),
                    _ => u64::MAX,
                };
                b[..8].copy_from_slice(&v.to_le_bytes());
            }
            3 if header_end > 9 => {
                // Header text: a digit, a quote, a bracket or a letter somewhere.
                let i = rng.random_range(8..header_end.min(b.len()).max(9));
                if i < b.len() {
                    let chars = b"0123456789\"[]{},:-eFIUB ";
                    b[i] = chars[rng.random_range(0..chars.len())];
                }
            }
            4 => {
                let i = rng.random_range(0..=b.len());
                let n = rng.random_range(1..16);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, junk);
            }
            5 => {
                let i = rng.random_range(0..b.len());
                let j = (i + rng.random_range(1..16)).min(b.len());
                b.drain(i..j);
            }
            _ => {
                // Data: NaN / Inf / huge values in place of some floats.
                if b.len() > header_end + 4 {
                    let i = rng.random_range(header_end..b.len() - 3);
                    let v =
                        [f32::NAN, f32::INFINITY, -f32::INFINITY, f32::MAX][rng.random_range(0..4)];
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    b
}

/// Replace a file by a new one (unlink, then create): truncating or renaming over a file
/// makes ext4 flush it to disk on close, which would make this test wait on the disk.
fn write_fresh(p: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(p);
    std::fs::write(p, bytes).unwrap();
}

fn one_line(what: &str, e: &saeforge::Error) -> Result<(), Failed> {
    let s = e.to_string();
    if s.is_empty() || s.contains('\n') {
        return Err(format!("{what}: error is not one line: {s:?}").into());
    }
    Ok(())
}

/// Open a (maybe corrupt) shard; if it opens, stream all its rows.
fn read_shard(p: &Path) -> Result<(), Failed> {
    match Shard::open(p, None) {
        Err(e) => one_line("shard", &e),
        Ok(s) => {
            let rows = s.rows as u64;
            let shards = Arc::new(vec![s]);
            let mut st = BatchStream::new(shards, vec![(0, rows)], 0, rows.min(4096) as usize, 0)
                .map_err(|e| e.to_string())?;
            match st.next_batch() {
                Ok(b) if b.data.iter().all(|v| v.is_finite()) => Ok(()),
                Ok(_) => Err("a batch with NaN/Inf was handed out".into()),
                Err(e) => one_line("stream", &e),
            }
        }
    }
}

/// Base files: shards of every dtype and rank, one with two tensors and metadata.
fn shard_bases() -> Vec<Vec<u8>> {
    let v = fx::randn(24 * 8, 11);
    let f16: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    vec![
        fx::st_bytes(&[("x", "F32", vec![24, 8], fx::f32_bytes(&v))], None),
        fx::st_bytes(&[("acts", "F16", vec![3, 8, 8], f16)], None),
        fx::st_bytes(
            &[
                ("acts", "BF16", vec![24, 8], bf16),
                ("ids", "I64", vec![24], vec![0u8; 192]),
            ],
            Some(r#"{"model":"pythia-70m","layer":"3"}"#),
        ),
    ]
}

fn fuzz_shards() -> Result<(), Failed> {
    let dir = tmp("fuzz-shards");
    let bases = shard_bases();
    let mut rng = ChaCha8Rng::seed_from_u64(crate::common::seed());
    let p = dir.join("shard.safetensors");
    for i in 0..3000 {
        let bytes = corrupt(&bases[i % bases.len()], &mut rng);
        write_fresh(&p, &bytes);
        let r = std::panic::catch_unwind(|| read_shard(&p));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let keep = dir.join("panic.safetensors");
                std::fs::write(&keep, &bytes).unwrap();
                return Err(format!("the shard reader panicked on {}", keep.display()).into());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn fuzz_sae_and_checkpoint() -> Result<(), Failed> {
    let dir = tmp("fuzz-sae");
    let sae = dir.join("sae");
    fx::sae(&sae, 8, 16, 4);
    let weights = sae.join("sae_weights.safetensors");
    let base_w = std::fs::read(&weights).unwrap();
    // A real checkpoint: two CPU steps of a small run.
    let data = dir.join("data.safetensors");
    fx::shard(&data, 64, 8, 3);
    let run = dir.join("run");
    let o = crate::run(&crate::words(&format!(
        "train --data {} --out {} --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
        data.display(),
        run.display()
    )));
    crate::ok("a small run", &o)?;
    let state = saeforge::sae::checkpoint::path(&run);
    let base_c = std::fs::read(&state).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(crate::common::seed());
    for i in 0..1000 {
        let (path, base) = if i % 2 == 0 {
            (&weights, &base_w)
        } else {
            (&state, &base_c)
        };
        let bytes = corrupt(base, &mut rng);
        write_fresh(path, &bytes);
        let r = std::panic::catch_unwind(|| {
            if i % 2 == 0 {
                SaeModel::load(&sae).err()
            } else {
                Checkpoint::load(&run).err()
            }
        });
        match r {
            Ok(None) => {}
            Ok(Some(e)) => one_line("reader", &e)?,
            Err(_) => {
                let keep = dir.join("panic.safetensors");
                std::fs::write(&keep, &bytes).unwrap();
                return Err(format!("a reader panicked on {}", keep.display()).into());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("fuzz::corrupted_shards_never_panic", |_| fuzz_shards()),
        cpu_test(
            "fuzz::corrupted_sae_weights_and_checkpoints_never_panic",
            |_| fuzz_sae_and_checkpoint(),
        ),
    ]
}
