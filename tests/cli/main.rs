//! The real binary against bad inputs and faults: a corpus of bad inputs (each: exit code,
//! ONE line on stderr naming the problem, nothing left behind), kill -9 / SIGINT / SIGTERM
//! and resume to bitwise-identical parameters on both engines, NaN injection, divergence,
//! a full disk, device faults, and a fuzz of the readers with corrupted files.
//!
//! GPU cases are reported as ignored (with the reason) when there is no adapter, and fail
//! under SAEFORGE_REQUIRE_GPU=1, as everywhere in this crate.

#[path = "../common/mod.rs"]
mod common;

mod auto;
mod corpus;
mod faults;
mod fuzz;
mod pipes;
mod reliability;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtest_mimic::{Completion, Failed, Trial};

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(corpus::trials());
    trials.extend(faults::trials());
    trials.extend(fuzz::trials());
    trials.extend(reliability::trials());
    trials.extend(pipes::trials());
    trials.extend(auto::trials());
    libtest_mimic::run(&args, trials).exit();
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_saeforge")
}

/// A fresh, empty folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    common::tmp_dir("cli", name)
}

/// What a finished run of the binary printed.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The environment every spawned binary gets: no backtraces (the user's default), no log
/// filter, and a private XDG_RUNTIME_DIR so that Mesa's Wayland probe stays quiet.
pub fn command(args: &[String]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .env("XDG_RUNTIME_DIR", xdg_dir())
        .stdin(Stdio::null());
    c
}

fn xdg_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("saeforge-cli-{}-xdg", std::process::id()));
    if !d.exists() {
        let _ = std::fs::create_dir_all(&d);
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
    }
    d
}

/// Run the binary to completion.
pub fn run(args: &[String]) -> Output {
    run_command(command(args))
}

/// Run a [`command`] (with whatever it was given besides) to completion.
pub fn run_command(mut c: Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin()));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Split a command line written with single spaces (test paths hold none).
pub fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Expect exit code 0, else fail with what the binary said.
pub fn ok(what: &str, o: &Output) -> Result<(), Failed> {
    if o.code != Some(0) {
        return Err(format!(
            "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
            o.code, o.stdout, o.stderr
        )
        .into());
    }
    Ok(())
}

/// Every file under `dir` with its length and content hash: equal snapshots mean nothing
/// was written, removed or left behind.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.insert(p.clone(), (u64::MAX, 0));
                walk(&p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let h = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
                    (h ^ b as u64).wrapping_mul(0x100000001b3)
                });
                out.insert(p, (bytes.len() as u64, h));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// The GPU the tests may use, or the outcome for a test that needs one when there is none.
pub fn need_gpu() -> Result<(), Completion> {
    match common::gpu() {
        Ok(_) => Ok(()),
        Err(why) if std::env::var("SAEFORGE_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("SAEFORGE_REQUIRE_GPU=1 but {why}")
        }
        Err(why) => Err(Completion::ignored_with(why)),
    }
}

/// A test that runs the binary; `gpu` ones are ignored (with the reason) without an adapter.
pub fn trial<F>(name: String, gpu: bool, body: F) -> Trial
where
    F: FnOnce() -> Result<(), Failed> + Send + 'static,
{
    Trial::ignorable_test(name, move || {
        if gpu {
            match common::gpu() {
                Ok(_) => {}
                Err(why) if std::env::var("SAEFORGE_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
                    return Err(format!("SAEFORGE_REQUIRE_GPU=1 but {why}").into());
                }
                Err(why) => return Ok(Completion::ignored_with(why)),
            }
        }
        body().map(|()| Completion::Completed)
    })
}

/// Fixtures: safetensors files written byte by byte (so that they can be wrong in every
/// way), good shards, and a good SAE folder.
pub mod fx {
    use std::path::Path;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use saeforge::sae::export::SaeModel;

    /// A safetensors file from (name, dtype, shape, bytes) in this order, offsets packed.
    pub fn st_bytes(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)], meta: Option<&str>) -> Vec<u8> {
        let mut header = String::from("{");
        let mut data = Vec::new();
        if let Some(m) = meta {
            header.push_str(&format!("\"__metadata__\":{m},"));
        }
        for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&format!(
                "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{},{}]}}",
                data.len(),
                data.len() + bytes.len()
            ));
            data.extend_from_slice(bytes);
        }
        header.push('}');
        raw(&header, &data)
    }

    /// Header text and data as they are, with the header length in front.
    pub fn raw(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// `n` normal values, seeded.
    pub fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        crate::common::randn(&mut rng, n, 1.0)
    }

    /// A good f32 shard [rows, d] with one tensor "x".
    pub fn shard(path: &Path, rows: usize, d: usize, seed: u64) {
        write(
            path,
            &[("x", "F32", vec![rows, d], f32_bytes(&randn(rows * d, seed)))],
        );
    }

    pub fn write(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
        std::fs::write(path, st_bytes(tensors, None)).unwrap();
    }

    /// A topk SAE (d, n, k) in the SAELens layout, random weights.
    pub fn sae_model(d: usize, n: usize, k: usize) -> SaeModel {
        SaeModel {
            kind: saeforge::sae::export::SaeKind::Topk { k },
            d,
            n,
            w_enc: randn(d * n, 1),
            b_enc: vec![0.0; n],
            w_dec: randn(n * d, 2),
            b_dec: vec![0.0; d],
            threshold: Vec::new(),
            skip: None,
            d_out: None,
        }
    }

    pub fn sae(dir: &Path, d: usize, n: usize, k: usize) {
        sae_model(d, n, k)
            .save(dir, None, serde_json::json!({}))
            .unwrap();
    }

    /// The tensors of `sae_model(d, n, k)` in the raw form, to be edited.
    pub fn sae_tensors(
        d: usize,
        n: usize,
    ) -> Vec<(&'static str, &'static str, Vec<usize>, Vec<u8>)> {
        let m = sae_model(d, n, 1);
        vec![
            ("W_enc", "F32", vec![d, n], f32_bytes(&m.w_enc)),
            ("W_dec", "F32", vec![n, d], f32_bytes(&m.w_dec)),
            ("b_enc", "F32", vec![n], f32_bytes(&m.b_enc)),
            ("b_dec", "F32", vec![d], f32_bytes(&m.b_dec)),
        ]
    }

    /// cfg.json of a topk SAE with these fields.
    pub fn cfg(dir: &Path, d: usize, n: usize, arch: &str, k: usize) {
        std::fs::create_dir_all(dir).unwrap();
        let v = serde_json::json!({
            "architecture": arch, "d_in": d, "d_sae": n, "k": k,
            "dtype": "float32", "normalize_activations": "none",
        });
        std::fs::write(dir.join("cfg.json"), v.to_string()).unwrap();
    }
}
