//! Integrity at the library level: shards changed after they were opened (truncated,
//! rewritten, replaced, removed) are errors naming the file from every read path (the
//! batch stream of `train`, the sequential reads of `eval`, `encode` and `steer`);
//! digests written by `write_safetensors` and by the streaming writer verify, catch a
//! flipped bit in data or header, and are absent (and not required) in other tools' files;
//! shard fingerprints equal the recorded tensor digests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use saeforge::Error;
use saeforge::data::{BatchStream, FloatType, Shard, open_shards, parse_safetensors};
use saeforge::digest::{self, Seal};
use saeforge::io::{OutTensor, StreamWriter, write_safetensors};
use saeforge::sae::checkpoint::ShardPrint;
use safetensors::Dtype;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("saeforge-integrity-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn shard(path: &Path, rows: usize, d: usize, seed: u32) {
    let v: Vec<f32> = (0..rows * d)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 100.0)
        .collect();
    write_safetensors(
        path,
        &[OutTensor::float("x", &[rows, d], &v, Dtype::F16)],
        None,
    )
    .unwrap();
}

fn changed(e: Error, path: &Path, words: &str) {
    let msg = e.to_string();
    assert!(
        matches!(e, Error::DataChanged(_))
            && msg.contains(&path.display().to_string())
            && msg.contains(words),
        "expected DataChanged naming {} with {words:?}, got {msg:?}",
        path.display()
    );
    assert_eq!(e.exit_code(), 1);
}

/// Every way a shard changes after `open_shards`, against every read path.
#[test]
fn a_shard_changed_after_open_is_an_error_naming_it() {
    let dir = tmp("changed");
    type Change = fn(&Path, &Path);
    let cases: [(&str, Change, &str); 4] = [
        (
            "truncated",
            |p, _| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(300)
                    .unwrap();
            },
            "truncated while being read",
        ),
        (
            "rewritten",
            |p, _| {
                std::thread::sleep(Duration::from_millis(20));
                shard(p, 64, 8, 77);
            },
            "while being read",
        ),
        (
            "replaced",
            |p, dir| {
                let other = dir.join("other.safetensors");
                shard(&other, 64, 8, 5);
                std::fs::rename(&other, p).unwrap();
            },
            "replaced by another file while being read",
        ),
        (
            "removed",
            |p, _| std::fs::remove_file(p).unwrap(),
            "removed while being read",
        ),
    ];
    for (what, change, words) in cases {
        for reader in ["read_rows", "read_raw", "stream"] {
            let p = dir.join(format!("{what}-{reader}.safetensors"));
            shard(&p, 64, 8, 1);
            let shards = open_shards(std::slice::from_ref(&p), None).unwrap();
            change(&p, &dir);
            let e = match reader {
                "read_rows" => shards[0].read_rows(60, 4, &mut [0.0; 32]).unwrap_err(),
                "read_raw" => shards[0].read_raw(0, 64, &mut Vec::new()).unwrap_err(),
                _ => {
                    let mut st =
                        BatchStream::new(Arc::new(shards), vec![(0, 64)], 1, 16, 0).unwrap();
                    st.next_batch().map(|_| ()).unwrap_err()
                }
            };
            changed(
                e,
                &p,
                if what == "rewritten" && reader != "stream" {
                    ""
                } else {
                    words
                },
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shard saeforge wrote (synth, steer) carries its tensor's digest: a flipped bit is
/// refused by `open_shards` (every command that reads shards) naming the tensor; the
/// fingerprint equals the recorded digest.
#[test]
fn a_flipped_bit_in_a_saeforge_shard_is_refused_naming_the_tensor() {
    let dir = tmp("flip");
    let p = dir.join("s.safetensors");
    shard(&p, 64, 8, 3);
    let s = &open_shards(std::slice::from_ref(&p), None).unwrap()[0];
    let recorded = s.header().metadata().as_ref().unwrap()[&digest::key("x")].clone();
    assert_eq!(s.content_digest.as_deref(), Some(recorded.as_str()));
    let mut raw = Vec::new();
    s.read_raw(0, 64, &mut raw).unwrap();
    assert_eq!(digest::of(&raw), recorded);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 10] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let e = open_shards(std::slice::from_ref(&p), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("tensor \"x\" does not match its digest"), "{e}");
    assert!(Shard::open(&p, None).unwrap().verified().is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The streaming writer (encode, steer) computes digests as bytes go by, in any chunking,
/// empty tensors included, and replaces digests carried over from an input's metadata.
#[test]
fn streamed_files_carry_digests_that_verify_and_catch_damage() {
    let dir = tmp("stream");
    let p = dir.join("o.safetensors");
    let a: Vec<u8> = (0..4000u32)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let b: Vec<u8> = (0..33u16).flat_map(|i| i.to_le_bytes()).collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("note".to_string(), "kept".to_string());
    meta.insert(digest::key("a"), "0123456789abcdef".to_string()); // stale, replaced
    let decls = vec![
        ("a".to_string(), Dtype::F32, vec![1000, 4]),
        ("e".to_string(), Dtype::F32, vec![0, 4]),
        ("b".to_string(), Dtype::U16, vec![33]),
    ];
    let mut w = StreamWriter::create(&p, &decls, Some(meta)).unwrap();
    let mut all = a.clone();
    all.extend_from_slice(&b);
    for chunk in all.chunks(777) {
        w.write(chunk).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let st = parse_safetensors(&p, &bytes).unwrap();
    assert_eq!(
        digest::verify_file(&p, &bytes, &st).unwrap(),
        Seal::Verified(3)
    );
    assert_eq!(st.tensor("a").unwrap().data(), a.as_slice());
    // A flipped data bit names its tensor; a changed metadata value is a header mismatch.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x40;
    let e = parse_safetensors(&p, &bad).err().unwrap().to_string();
    assert!(e.contains("tensor \"b\" does not match its digest"), "{e}");
    let mut edited = bytes.clone();
    let at = edited.windows(6).position(|w| w == b"\"kept\"").unwrap();
    edited[at + 4] = b'T';
    let e = parse_safetensors(&p, &edited).err().unwrap().to_string();
    assert!(e.contains("the header"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Files from other tools (no metadata, or metadata without digests) read as before.
#[test]
fn files_without_digests_read_as_before() {
    let dir = tmp("foreign");
    let p = dir.join("f.safetensors");
    let data: Vec<u8> = (0..32u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    for meta in [
        None,
        Some([("format".to_string(), "pt".to_string())].into()),
    ] {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![4, 8], &data).unwrap();
        let bytes = safetensors::serialize([("x", view)], meta).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        let st = parse_safetensors(&p, &bytes).unwrap();
        assert_eq!(digest::verify_file(&p, &bytes, &st).unwrap(), Seal::Absent);
        let s = &open_shards(std::slice::from_ref(&p), None).unwrap()[0];
        assert_eq!(s.dtype, FloatType::F32);
        assert_eq!(
            s.content_digest.as_deref(),
            Some(digest::of(&data).as_str())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint's shard prints: contents compared when both sides have them; an older
/// checkpoint (no digests) compares path, tensor, dtype, shape and size only.
#[test]
fn shard_prints_name_the_first_changed_shard() {
    let dir = tmp("prints");
    let (p, q) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    shard(&p, 16, 4, 1);
    shard(&q, 16, 4, 2);
    let before: Vec<ShardPrint> = open_shards(&[p.clone(), q.clone()], None)
        .unwrap()
        .iter()
        .map(ShardPrint::of)
        .collect();
    shard(&q, 16, 4, 9);
    let after: Vec<ShardPrint> = open_shards(&[p.clone(), q.clone()], None)
        .unwrap()
        .iter()
        .map(ShardPrint::of)
        .collect();
    let e = ShardPrint::check_same(&before, &after, &dir, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&q.display().to_string()) && e.contains("other contents"),
        "{e}"
    );
    ShardPrint::check_same(&before, &after, &dir, true).unwrap();
    let old: Vec<ShardPrint> = before
        .iter()
        .map(|s| ShardPrint {
            header: String::new(),
            content: String::new(),
            ..s.clone()
        })
        .collect();
    ShardPrint::check_same(&old, &after, &dir, false).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
