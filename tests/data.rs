//! Shard reading (every dtype, both ranks, tensor choice), the batch stream (determinism,
//! exact fast-forward), the SAELens export (names, shapes, cfg keys, round trip).

use std::path::Path;
use std::sync::Arc;

use saeforge::data::{BatchStream, FloatType, Shard, discover, open_shards};
use saeforge::io::{OutTensor, write_safetensors};
use saeforge::sae::SaeParams;
use saeforge::sae::export::SaeModel;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("saeforge-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn values(n: usize) -> Vec<f32> {
    // Exactly representable in f16 and bf16 (multiples of 1/8 below 16).
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
        .collect()
}

fn write(path: &Path, name: &str, shape: &[usize], data: &[f32], dtype: FloatType) {
    write_safetensors(
        path,
        &[OutTensor::float(name, shape, data, dtype.safetensors())],
        None,
    )
    .unwrap();
}

#[test]
fn every_dtype_and_both_ranks_read_back_exactly() {
    let dir = tmp("dtypes");
    for dtype in [FloatType::F32, FloatType::F16, FloatType::Bf16] {
        for shape in [vec![6usize, 5], vec![2, 3, 5]] {
            let v = values(30);
            let p = dir.join(format!("{dtype:?}-{}.safetensors", shape.len()));
            write(&p, "acts", &shape, &v, dtype);
            let s = Shard::open(&p, None).unwrap();
            assert_eq!((s.rows, s.d, s.dtype), (6, 5, dtype));
            let mut out = vec![f32::NAN; 30];
            s.read_rows(0, 6, &mut out).unwrap();
            assert_eq!(out, v, "{dtype:?} {shape:?}");
            let mut row = vec![0.0; 5];
            s.read_rows(4, 1, &mut row).unwrap();
            assert_eq!(row, v[20..25]);
        }
    }
}

#[test]
fn tensor_choice_and_refusals() {
    let dir = tmp("choice");
    let p = dir.join("two.safetensors");
    write_safetensors(
        &p,
        &[
            OutTensor::f32("a", &[4, 3], &values(12)),
            OutTensor::f32("b", &[4, 3], &values(12)),
        ],
        None,
    )
    .unwrap();
    let e = Shard::open(&p, None).err().unwrap().to_string();
    assert!(e.contains("--tensor") && e.contains("a, b"), "{e}");
    assert_eq!(Shard::open(&p, Some("b")).unwrap().tensor, "b");
    let e = Shard::open(&p, Some("c")).err().unwrap().to_string();
    assert!(e.contains("\"c\" not found"), "{e}");
    let one = dir.join("one.safetensors");
    write(&one, "acts", &[4, 3], &values(12), FloatType::F32);
    let q = dir.join("other-d.safetensors");
    write(&q, "acts", &[4, 7], &values(28), FloatType::F32);
    let e = open_shards(&[one, q.clone()], None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("d = 7") && e.contains("d = 3"), "{e}");
    assert!(discover(&[dir.join("missing")]).is_err());
}

/// A folder and a glob over it read the same shards: saeforge's own non-shard files (a
/// synth folder's truth.safetensors) are skipped by both; a file named itself is read.
#[test]
fn folder_and_glob_skip_the_same_files() {
    let dir = tmp("glob");
    for name in [
        "shard-0.safetensors",
        "shard-1.safetensors",
        "truth.safetensors",
    ] {
        write(&dir.join(name), "x", &[4, 3], &values(12), FloatType::F32);
    }
    let shards = vec![
        dir.join("shard-0.safetensors"),
        dir.join("shard-1.safetensors"),
    ];
    assert_eq!(discover(std::slice::from_ref(&dir)).unwrap(), shards);
    assert_eq!(discover(&[dir.join("*.safetensors")]).unwrap(), shards);
    let truth = dir.join("truth.safetensors");
    assert_eq!(discover(std::slice::from_ref(&truth)).unwrap(), [truth]);
    let e = discover(&[dir.join("t*.safetensors")])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("glob matches only") && e.contains("truth.safetensors"),
        "{e}"
    );
}

fn stream_shards(dir: &Path) -> Arc<Vec<Shard>> {
    for i in 0..3 {
        let rows = 50 + i * 7;
        let v: Vec<f32> = (0..rows * 4).map(|j| (i * 1000 + j / 4) as f32).collect();
        write(
            &dir.join(format!("s{i}.safetensors")),
            "x",
            &[rows, 4],
            &v,
            FloatType::F32,
        );
    }
    Arc::new(open_shards(&discover(&[dir.to_path_buf()]).unwrap(), None).unwrap())
}

#[test]
fn stream_is_deterministic_covers_every_row_and_fast_forwards_exactly() {
    let dir = tmp("stream");
    let shards = stream_shards(&dir);
    let ranges: Vec<(u64, u64)> = shards.iter().map(|s| (0, s.rows as u64)).collect();
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mk = || BatchStream::new(shards.clone(), ranges.clone(), 7, 10, 64).unwrap();
    let mut a = mk();
    let mut b = mk();
    let mut seen = std::collections::HashSet::new();
    let mut batches = Vec::new();
    for _ in 0..40 {
        let x = a.next_batch().unwrap();
        assert_eq!(x.data, b.next_batch().unwrap().data);
        for r in x.data.chunks_exact(4) {
            seen.insert(r[0] as u64);
        }
        batches.push(x);
    }
    // 400 draws from 171 rows with a 64-row buffer: every row has been seen.
    assert_eq!(seen.len() as u64, total);
    // Fast-forward to batch 25 and continue identically.
    let mut c = mk();
    c.skip_ids(batches[24].drawn);
    for want in &batches[25..] {
        assert_eq!(c.next_batch().unwrap().data, want.data);
    }
    // A different seed gives a different order.
    let mut d = BatchStream::new(shards.clone(), ranges, 8, 10, 64).unwrap();
    assert_ne!(d.next_batch().unwrap().data, batches[0].data);
}

/// A transcoder's paired stream: a pair with NaN on either side is an error naming that
/// side's file, or with skip_nonfinite dropped from both sides, the pairs staying aligned.
#[test]
fn nonfinite_pairs_are_reported_or_dropped_whole() {
    let dir = tmp("nan-pairs");
    // Input row r holds r, target row r holds 1000 + r; NaN in input row 3, target row 6.
    let mut x: Vec<f32> = (0..12 * 4).map(|j| (j / 4) as f32).collect();
    let mut y: Vec<f32> = (0..12 * 3).map(|j| (1000 + j / 3) as f32).collect();
    x[4 * 3 + 1] = f32::NAN;
    y[3 * 6 + 2] = f32::INFINITY;
    let (px, py) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    write(&px, "x", &[12, 4], &x, FloatType::F32);
    write(&py, "y", &[12, 3], &y, FloatType::F32);
    let open = |p: &Path| Arc::new(open_shards(&[p.to_path_buf()], None).unwrap());
    let stream = |skip: bool| {
        let mk = |p: &Path| {
            let mut s = BatchStream::new(open(p), vec![(0, 12)], 0, 10, 0).unwrap();
            s.skip_nonfinite = skip;
            s
        };
        let mut s = mk(&px);
        s.target = Some(Box::new(mk(&py)));
        s
    };
    let e = stream(false).next_batch().err().unwrap().to_string();
    assert!(e.contains("in.safetensors") && e.contains("row 3"), "{e}");
    x[4 * 3 + 1] = 3.0;
    write(&px, "x", &[12, 4], &x, FloatType::F32);
    let e = stream(false).next_batch().err().unwrap().to_string();
    assert!(e.contains("out.safetensors") && e.contains("row 6"), "{e}");
    x[4 * 3 + 1] = f32::NAN;
    write(&px, "x", &[12, 4], &x, FloatType::F32);
    let b = stream(true).next_batch().unwrap();
    assert_eq!((b.rows, b.skipped), (10, 2));
    let (xs, ys) = b.data.split_at(10 * 4);
    let rows: Vec<f32> = xs.chunks_exact(4).map(|r| r[0]).collect();
    assert_eq!(rows, [0., 1., 2., 4., 5., 7., 8., 9., 10., 11.]);
    for (r, t) in xs.chunks_exact(4).zip(ys.chunks_exact(3)) {
        assert!(r.iter().all(|&v| v == r[0]) && t.iter().all(|&v| v == 1000.0 + r[0]));
    }
}

#[test]
fn nonfinite_rows_are_reported_or_skipped() {
    let dir = tmp("nan");
    let mut v = values(40);
    v[4 * 3 + 1] = f32::NAN; // row 3
    let p = dir.join("nan.safetensors");
    write(&p, "x", &[10, 4], &v, FloatType::F32);
    let shards = Arc::new(open_shards(&[p], None).unwrap());
    let mut s = BatchStream::new(shards.clone(), vec![(0, 10)], 0, 10, 0).unwrap();
    let e = s.next_batch().err().unwrap().to_string();
    assert!(e.contains("row 3") && e.contains("nan.safetensors"), "{e}");
    let mut s = BatchStream::new(shards, vec![(0, 10)], 0, 10, 0).unwrap();
    s.skip_nonfinite = true;
    let b = s.next_batch().unwrap();
    assert_eq!((b.rows, b.skipped), (10, 1));
    assert!(b.data.iter().all(|v| v.is_finite()));
}

#[test]
fn export_has_exactly_the_saelens_tensors_and_keys_and_round_trips() {
    let dir = tmp("export");
    use saeforge::sae::{Arch, TrainArgs, TrainConfig};
    for arch in [Arch::Relu, Arch::Topk, Arch::Batchtopk, Arch::Jumprelu] {
        let args = TrainArgs {
            out: Some(dir.join(format!("{arch:?}"))),
            arch: Some(arch),
            d_sae: Some(24),
            k: Some(3),
            ..Default::default()
        };
        let cfg = TrainConfig::resolve(&args, 8, 1000).unwrap();
        let sample: Vec<f32> = values(8 * 16);
        let p = SaeParams::init(&cfg, &sample);
        let m = SaeModel::from_training(&p, &cfg, 2.0, 0.25);
        m.save(
            &cfg.out,
            Some(&[-3.0; 24]),
            serde_json::json!({"note": "test"}),
        )
        .unwrap();
        // Weights: exactly these names and shapes.
        let bytes = std::fs::read(cfg.out.join("sae_weights.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec()))
            .collect();
        names.sort();
        let mut want = vec![
            ("W_dec".to_string(), vec![24, 8]),
            ("W_enc".to_string(), vec![8, 24]),
            ("b_dec".to_string(), vec![8]),
            ("b_enc".to_string(), vec![24]),
        ];
        if matches!(arch, Arch::Batchtopk | Arch::Jumprelu) {
            want.push(("threshold".to_string(), vec![24]));
        }
        want.sort();
        assert_eq!(names, want, "{arch:?}");
        let cfg_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cfg.out.join("cfg.json")).unwrap())
                .unwrap();
        let arch_name = match arch {
            Arch::Relu => "standard",
            Arch::Topk => "topk",
            _ => "jumprelu",
        };
        assert_eq!(cfg_json["architecture"], arch_name);
        assert_eq!(cfg_json["d_in"], 8);
        assert_eq!(cfg_json["d_sae"], 24);
        assert_eq!(cfg_json["apply_b_dec_to_input"], true);
        assert_eq!(cfg_json["normalize_activations"], "none");
        assert_eq!(cfg_json["metadata"]["sae_lens_version"], "6.0.0");
        assert_eq!(cfg_json["dtype"], "float32");
        if arch == Arch::Topk {
            assert_eq!(cfg_json["k"], 3);
        }
        // Round trip.
        let back = SaeModel::load(&cfg.out).unwrap();
        assert_eq!(
            (
                back.w_enc.clone(),
                back.w_dec.clone(),
                back.b_enc.clone(),
                back.b_dec.clone(),
                back.threshold.clone()
            ),
            (
                m.w_enc.clone(),
                m.w_dec.clone(),
                m.b_enc.clone(),
                m.b_dec.clone(),
                m.threshold.clone()
            )
        );
        // Folding: on raw x the exported model computes what the trained one did on 2x.
        let x: Vec<f32> = values(8 * 3).iter().map(|v| v / 4.0).collect();
        let pre_raw = back.pre(&x, 3);
        let trained = SaeModel::from_training(&p, &cfg, 1.0, 0.25);
        let x2: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        let pre_scaled = trained.pre(&x2, 3);
        for (a, b) in pre_raw.iter().zip(&pre_scaled) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

/// A SAELens folder with apply_b_dec_to_input = false encodes x W_enc + b_enc (no b_dec
/// subtraction); loading folds that into b_enc, so the model computes exactly that function
/// (checked in f64 from the stored tensors), and a bad value of the key is refused.
#[test]
fn apply_b_dec_to_input_false_is_folded_into_b_enc() {
    use saeforge::sae::{Arch, TrainArgs, TrainConfig};
    let dir = tmp("no-b-dec");
    let args = TrainArgs {
        out: Some(dir.clone()),
        arch: Some(Arch::Relu),
        d_sae: Some(24),
        ..Default::default()
    };
    let cfg = TrainConfig::resolve(&args, 8, 1000).unwrap();
    let mut p = SaeParams::init(&cfg, &values(8 * 16));
    // A b_dec far from 0, so that subtracting it or not changes every pre-activation.
    p.b_dec
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = 1.5 - 0.4 * i as f32);
    let m = SaeModel::from_training(&p, &cfg, 1.0, 0.25);
    m.save(&dir, None, serde_json::json!({})).unwrap();
    let cfg_path = dir.join("cfg.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    j["apply_b_dec_to_input"] = serde_json::json!(false);
    // As another tool's folder: a hand-edited cfg.json no longer matches saeforge's digest
    // of it, so the digests go too (saeforge then reads it as any SAELens folder).
    j["saeforge"].as_object_mut().unwrap().remove("digests");
    std::fs::write(&cfg_path, j.to_string()).unwrap();
    let back = SaeModel::load(&dir).unwrap();
    let x: Vec<f32> = values(8 * 5);
    let pre = back.pre(&x, 5);
    let (d, n) = (8, 24);
    let mut worst = 0.0f64;
    for r in 0..5 {
        for c in 0..n {
            let want: f64 = m.b_enc[c] as f64
                + (0..d)
                    .map(|i| x[r * d + i] as f64 * m.w_enc[i * n + c] as f64)
                    .sum::<f64>();
            worst = worst.max((pre[r * n + c] as f64 - want).abs() / (1.0 + want.abs()));
        }
    }
    // f32 pre-activations of 8 terms: a few ulp; not subtracting b_dec would be off by O(1).
    assert!(worst < 1e-5, "worst relative error {worst}");
    j["apply_b_dec_to_input"] = serde_json::json!("yes");
    std::fs::write(&cfg_path, j.to_string()).unwrap();
    let e = SaeModel::load(&dir).expect_err("a string value is refused");
    assert!(e.to_string().contains("apply_b_dec_to_input"), "{e}");
}
