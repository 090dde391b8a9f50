//! Other trainers' dictionaries (`saeforge::sae::formats`): each reader against an
//! independent numpy encoding of the same weights, on both engines; `convert` round trips
//! between the layouts; the refusals.
//!
//! `numpy_ref.py` (beside this file) writes a random SAE as its trainer writes it (sparsify's
//! cfg.json + sae.safetensors in f32 or bf16, with or without W_skip; Gemma Scope's params.npz
//! stored or deflated) with rows and that trainer's own encoding of them in float64. It needs
//! a python with numpy: SAEFORGE_PYTHON, else `python3`, else /usr/bin/python3 (CI installs
//! python3-numpy); without one the tests fail with that reason.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use saeforge::gpu::Engine;
use saeforge::sae::export::{SaeKind, SaeModel};
use saeforge::sae::infer::Encoder;

use common::{assert_close, cpu_test, fail, gpu_test, randn, tolerance};

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    let cases: [(&str, &str, &[&str]); 5] = [
        ("sparsify_f32", "sparsify", &[]),
        ("sparsify_bf16", "sparsify", &["--bf16"]),
        ("sparsify_skip", "sparsify", &["--skip"]),
        ("gemma_scope", "gemma", &[]),
        ("gemma_scope_compressed", "gemma", &["--compressed"]),
    ];
    for (name, kind, flags) in cases {
        trials.push(cpu_test(format!("formats::{name}_cpu"), move |rng| {
            against_numpy(rng.random(), kind, flags, None)
        }));
        trials.push(gpu_test(format!("formats::{name}_gpu"), move |_, rng| {
            let gpu = common::gpu().map_err(fail)?;
            against_numpy(rng.random(), kind, flags, Some(Engine::Gpu(gpu)))
        }));
    }
    trials.extend([
        cpu_test("formats::convert_round_trips", convert_round_trips),
        Trial::test("formats::refusals", refusals),
        Trial::test("formats::convert_cli", convert_cli),
    ]);
    libtest_mimic::run(&args, trials).exit();
}

/// A fresh folder for one test.
fn tmp(name: &str) -> PathBuf {
    common::tmp_dir("formats", name)
}

/// A python that imports numpy.
fn python() -> Result<String, Failed> {
    let mut tried = Vec::new();
    let env = std::env::var("SAEFORGE_PYTHON").ok();
    for py in env
        .iter()
        .map(String::as_str)
        .chain(["python3", "/usr/bin/python3"])
    {
        let ok = Command::new(py).args(["-c", "import numpy"]).output();
        if ok.is_ok_and(|o| o.status.success()) {
            return Ok(py.to_string());
        }
        tried.push(py.to_string());
    }
    Err(format!(
        "no python with numpy among {tried:?} (set SAEFORGE_PYTHON, or apt-get install python3-numpy)"
    )
    .into())
}

/// A (rows, cols) float32 array of a .npy file numpy_ref.py wrote.
fn npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), Failed> {
    let bytes = std::fs::read(path).map_err(fail)?;
    let f = npyz::NpyFile::new(&bytes[..]).map_err(fail)?;
    let shape = f.shape().iter().map(|&s| s as usize).collect();
    Ok((shape, f.into_vec::<f32>().map_err(fail)?))
}

/// Codes (dense) and reconstructions of the rows numpy_ref.py wrote, by saeforge's reader
/// and encoder on `engine` (the CPU engine when None), against numpy's.
fn against_numpy(
    seed: u32,
    kind: &str,
    flags: &[&str],
    engine: Option<Engine>,
) -> Result<(), Failed> {
    let dir = tmp(&format!("{kind}-{}-{seed}", flags.join("")));
    let out = Command::new(python()?)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/formats/numpy_ref.py"))
        .args([
            kind,
            dir.to_str().expect("utf-8 temp path"),
            &seed.to_string(),
        ])
        .args(flags)
        .output()
        .map_err(fail)?;
    if !out.status.success() {
        return Err(format!("numpy_ref.py: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let model = SaeModel::load(&dir).map_err(fail)?;
    let (xs, x) = npy(&dir.join("x.npy"))?;
    let (_, want_codes) = npy(&dir.join("codes.npy"))?;
    let (_, want_xhat) = npy(&dir.join("xhat.npy"))?;
    let rows = xs[0];
    let engine = engine.unwrap_or(Engine::Cpu);
    let enc = Encoder::new(&model, &engine, rows).map_err(fail)?;
    let got = enc.run(&x, rows, true).map_err(fail)?;
    let codes = got.codes.ok_or("the encoder returned no codes")?;
    let mut dense = vec![0.0f32; rows * model.n];
    for r in 0..rows {
        for s in codes.row_ptr[r]..codes.row_ptr[r + 1] {
            dense[r * model.n + codes.idx[s] as usize] = codes.val[s];
        }
    }
    let what = format!("{kind} {flags:?} (seed {seed})");
    let tol = tolerance::FORMATS_NUMPY;
    assert_close(&format!("{what}: codes"), &dense, &want_codes, tol)?;
    assert_close(&format!("{what}: x_hat"), &got.x_hat, &want_xhat, tol)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A random SAE of `kind` with d 16, n 40.
fn random_model(rng: &mut impl Rng, kind: SaeKind, skip: bool) -> SaeModel {
    let (d, n) = (16, 40);
    SaeModel {
        kind,
        d,
        n,
        w_enc: randn(rng, d * n, 0.3),
        b_enc: randn(rng, n, 0.1),
        w_dec: randn(rng, n * d, 0.3),
        b_dec: randn(rng, d, 0.2),
        threshold: match kind {
            SaeKind::Jumprelu => (0..n).map(|_| rng.random_range(0.05..0.3f32)).collect(),
            _ => Vec::new(),
        },
        skip: skip.then(|| randn(rng, d * d, 0.1)),
        d_out: None,
    }
}

/// Every weight of two models bit for bit (convert writes f32, so nothing rounds).
fn same_model(what: &str, a: &SaeModel, b: &SaeModel) -> Result<(), Failed> {
    let pairs = [
        ("W_enc", &a.w_enc, &b.w_enc),
        ("b_enc", &a.b_enc, &b.b_enc),
        ("W_dec", &a.w_dec, &b.w_dec),
        ("b_dec", &a.b_dec, &b.b_dec),
        ("threshold", &a.threshold, &b.threshold),
    ];
    if a.kind != b.kind || a.d != b.d || a.n != b.n || a.skip != b.skip {
        return Err(format!(
            "{what}: {:?} d {} n {} became {:?} d {} n {}",
            a.kind, a.d, a.n, b.kind, b.d, b.n
        )
        .into());
    }
    for (name, x, y) in pairs {
        if x != y {
            return Err(format!("{what}: {name} changed").into());
        }
    }
    Ok(())
}

/// The `convert` command's library path: SAELens <-> sparsify (topk, with and without
/// W_skip) keeps every weight bit for bit.
fn convert_round_trips(rng: &mut rand_chacha::ChaCha8Rng) -> Result<(), Failed> {
    use saeforge::cli::convert::{ConvertArgs, To, run};
    let dir = tmp("round-trip");
    let topk = random_model(rng, SaeKind::Topk { k: 5 }, false);
    topk.save(&dir.join("a"), None, serde_json::json!({}))
        .map_err(fail)?;
    let convert = |input: &str, out: &str, to: To| {
        run(ConvertArgs {
            input: dir.join(input),
            out: dir.join(out),
            to,
        })
        .map_err(fail)
    };
    convert("a", "b", To::Sparsify)?;
    convert("b", "c", To::Saelens)?;
    for name in ["b", "c"] {
        let back = SaeModel::load(&dir.join(name)).map_err(fail)?;
        same_model(&format!("SAELens -> {name}"), &topk, &back)?;
    }
    // With a skip connection: sparsify <-> sparsify only.
    let skip = random_model(rng, SaeKind::Topk { k: 5 }, true);
    saeforge::sae::formats::sparsify::save(&skip, &dir.join("s")).map_err(fail)?;
    convert("s", "t", To::Sparsify)?;
    same_model(
        "sparsify with W_skip",
        &skip,
        &SaeModel::load(&dir.join("t")).map_err(fail)?,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Err unless `r` is an input error whose message contains every one of `parts`.
fn refused<T>(what: &str, r: saeforge::Result<T>, parts: &[&str]) -> Result<(), Failed> {
    match r {
        Ok(_) => Err(format!("{what}: accepted").into()),
        Err(saeforge::Error::Input(m)) if parts.iter().all(|p| m.contains(p)) => Ok(()),
        Err(e) => Err(format!(
            "{what}: refused with {e:?}, expected an input error naming {parts:?}"
        )
        .into()),
    }
}

/// Bad or foreign inputs get one line naming the file and what was expected.
fn refusals() -> Result<(), Failed> {
    use saeforge::cli::convert::{ConvertArgs, To, run};
    let dir = tmp("refusals");
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    // dictionary_learning's pickle, as a file and in a folder.
    std::fs::create_dir_all(dir.join("dl")).map_err(fail)?;
    std::fs::write(dir.join("dl/ae.pt"), b"\x80\x02pickle").map_err(fail)?;
    refused(
        "ae.pt folder",
        SaeModel::load(&dir.join("dl")),
        &["ae.pt", "tools/dl2saelens.py"],
    )?;
    refused(
        "ae.pt file",
        SaeModel::load(&dir.join("dl/ae.pt")),
        &["torch pickle"],
    )?;
    // sparsify: a transcoder, groupmax, a cfg.json that disagrees with the weights.
    let topk = random_model(&mut rng, SaeKind::Topk { k: 5 }, false);
    let sp = dir.join("sp");
    saeforge::sae::formats::sparsify::save(&topk, &sp).map_err(fail)?;
    let cfg_path = sp.join("cfg.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(fail)?).map_err(fail)?;
    let edits = [
        ("transcode", serde_json::json!(true), "transcoder"),
        ("activation", serde_json::json!("groupmax"), "groupmax"),
        ("num_latents", serde_json::json!(41), "num_latents"),
        ("k", serde_json::json!(0), "\"k\""),
    ];
    for (key, value, part) in edits {
        let mut c = cfg.clone();
        c[key] = value;
        std::fs::write(&cfg_path, c.to_string()).map_err(fail)?;
        refused(
            &format!("sparsify {key}"),
            SaeModel::load(&sp),
            &["cfg.json", part],
        )?;
    }
    std::fs::write(&cfg_path, cfg.to_string()).map_err(fail)?;
    SaeModel::load(&sp).map_err(fail)?;
    // convert: a jumprelu SAE has no sparsify layout; W_skip has no SAELens layout; an
    // existing OUT is not overwritten.
    let jr = random_model(&mut rng, SaeKind::Jumprelu, false);
    jr.save(&dir.join("jr"), None, serde_json::json!({}))
        .map_err(fail)?;
    let args = |input: &str, out: &str, to: To| ConvertArgs {
        input: dir.join(input),
        out: dir.join(out),
        to,
    };
    refused(
        "jumprelu to sparsify",
        run(args("jr", "x", To::Sparsify)),
        &["topk SAEs only"],
    )?;
    let skip = random_model(&mut rng, SaeKind::Topk { k: 5 }, true);
    saeforge::sae::formats::sparsify::save(&skip, &dir.join("sk")).map_err(fail)?;
    refused(
        "W_skip to SAELens",
        run(args("sk", "y", To::Saelens)),
        &["W_skip"],
    )?;
    refused(
        "existing OUT",
        run(args("jr", "sp", To::Saelens)),
        &["already exists"],
    )?;
    for out in ["x", "y"] {
        if dir.join(out).exists() {
            return Err(format!("a refused convert left {out} behind").into());
        }
    }
    // Gemma Scope: not a zip archive.
    std::fs::write(dir.join("params.npz"), b"not a zip").map_err(fail)?;
    refused(
        "bad npz",
        SaeModel::load(&dir.join("params.npz")),
        &["params.npz", "zip"],
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `saeforge convert` through the binary: exit 0 and a readable folder; exit 2 and one line
/// on stderr for a refusal.
fn convert_cli() -> Result<(), Failed> {
    let dir = tmp("cli");
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2);
    let m = random_model(&mut rng, SaeKind::Topk { k: 4 }, false);
    m.save(&dir.join("in"), None, serde_json::json!({}))
        .map_err(fail)?;
    let bin = env!("CARGO_BIN_EXE_saeforge");
    let run = |out: &str, to: &str| {
        Command::new(bin)
            .args([
                "convert",
                dir.join("in").to_str().expect("utf-8"),
                dir.join(out).to_str().expect("utf-8"),
                "--to",
                to,
            ])
            .output()
            .map_err(fail)
    };
    let ok = run("out", "sparsify")?;
    if !ok.status.success() {
        return Err(format!("convert failed: {}", String::from_utf8_lossy(&ok.stderr)).into());
    }
    same_model(
        "CLI convert",
        &m,
        &SaeModel::load(&dir.join("out")).map_err(fail)?,
    )?;
    let again = run("out", "sparsify")?;
    let stderr = String::from_utf8_lossy(&again.stderr);
    if again.status.code() != Some(2)
        || stderr.lines().count() != 1
        || !stderr.contains("already exists")
    {
        return Err(format!(
            "convert onto an existing folder: exit {:?}, stderr {stderr:?}",
            again.status.code()
        )
        .into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
