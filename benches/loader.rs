//! The host side of training: how fast the loader turns shards on disk into shuffled f32
//! batches, and whether the prefetch thread hides it behind the training step.
//!
//!     cargo bench --bench loader [-- FILTER ...]
//!
//! FILTER words keep the parts whose name contains one of them: "f16", "f32" (loader
//! throughput per dtype), "gpu", "cpu" (the step fed from memory against the step fed by
//! the loader, per engine). Environment: SAEFORGE_ADAPTER picks the adapter;
//! SAEFORGE_BENCH_BATCH (default 4096) the rows per batch.
//!
//! 1. Loader throughput: 4 shards x 32768 rows x d 512 written once to a scratch folder
//!    (target/bench/loader-data), f16 and f32; a `BatchStream` (seeded shard order, a
//!    shuffle buffer of 2^20 row ids, one random row gathered at a time from the memory
//!    maps inside the SIGBUS guard,
//!    converted to f32, finite-checked and scaled) reads 240 batches in this thread. The
//!    figures are GB/s of input bytes and rows/s, by wall clock and by this thread's CPU
//!    time (the loader runs on one core). The files were just written, so they are read
//!    from the page cache (the case for a dataset that fits in RAM; from disk the drive
//!    sets the rate).
//! 2. Prefetch: a topk SAE (d 512, n 16384, k 32) steps on batches already in memory,
//!    then on batches from a `Prefetcher` over the f16 shards (as `saeforge train` does),
//!    in alternating blocks of 3 steps (each block: submit 3 steps, wait), so that other
//!    load on the machine hits both alike (8 blocks of each on the GPU engine, 2 on the
//!    slower CPU engine). Reports the mean step time of each and the
//!    ratio (loader / memory).
//!
//! 3. Fingerprints (only when "fingerprint" is given as a filter): the start-up cost of
//!    hashing every shard, on SAEFORGE_BENCH_FINGERPRINT_GB (default 2) GB of f16 shards,
//!    from the page cache and (SAEFORGE_BENCH_DROP_CACHES=1, root) from the drive.
//!
//! Writes target/bench/loader.json (under CARGO_TARGET_DIR when set).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use saeforge::data::{BatchStream, FloatType, Prefetcher, open_shards};
use saeforge::gpu::Gpu;
use saeforge::io::{OutTensor, write_safetensors};
use saeforge::sae::cpu::CpuEngine;
use saeforge::sae::engine::{StepEngine, TrainState};
use saeforge::sae::gpu::GpuEngine;

use saeforge::sae::{Arch, SaeParams, TrainArgs, TrainConfig};
use serde_json::json;

const D: usize = 512;
const SHARDS: usize = 4;
const SHARD_ROWS: usize = 32768;
const BATCHES: usize = 240;

/// CPU nanoseconds of the calling thread (Linux), or None.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn write_shards(dir: &Path, dtype: FloatType) -> saeforge::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| saeforge::Error::io(dir, e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut paths = Vec::new();
    for s in 0..SHARDS {
        let path = dir.join(format!("shard-{s:05}.safetensors"));
        let data: Vec<f32> = (0..SHARD_ROWS * D)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        write_safetensors(
            &path,
            &[OutTensor::float(
                "activations",
                &[SHARD_ROWS, D],
                &data,
                dtype.safetensors(),
            )],
            None,
        )?;
        paths.push(path);
    }
    Ok(paths)
}

/// Read BATCHES batches in this thread: (wall s, thread CPU s, rows).
fn loader_rate(paths: &[PathBuf], batch: usize) -> saeforge::Result<(f64, Option<f64>, usize)> {
    let shards = Arc::new(open_shards(paths, None)?);
    let ranges = shards.iter().map(|s| (0, s.rows as u64)).collect();
    let mut st = BatchStream::new(shards, ranges, 1, batch, 1 << 20)?;
    st.scale = 0.5;
    // Warm-up: one batch (first touch of the maps).
    st.next_batch()?;
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    let mut rows = 0;
    let mut check = 0.0f32;
    for _ in 0..BATCHES {
        let b = st.next_batch()?;
        rows += b.rows;
        check += b.data[0];
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = c0
        .zip(thread_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a) as f64 * 1e-9);
    std::hint::black_box(check);
    Ok((wall, cpu, rows))
}

fn config(batch: usize, data: &Path) -> TrainConfig {
    let args = TrainArgs {
        data: Some(vec![data.to_path_buf()]),
        out: Some("unused".into()),
        arch: Some(Arch::Topk),
        d_sae: Some(16384),
        k: Some(32),
        batch: Some(batch),
        steps: Some(100_000),
        ..Default::default()
    };
    TrainConfig::resolve(&args, D, 1 << 30).expect("bench config")
}

/// Mean step time (s) from memory and from the prefetching loader, alternating blocks.
fn prefetch_run(
    eng: &mut dyn StepEngine,
    wait: &dyn Fn() -> saeforge::Result<()>,
    cfg: &TrainConfig,
    paths: &[PathBuf],
    blocks: usize,
    per_block: usize,
) -> saeforge::Result<(f64, f64)> {
    let shards = Arc::new(open_shards(paths, None)?);
    let ranges = shards.iter().map(|s| (0, s.rows as u64)).collect();
    let mut mem_stream = BatchStream::new(shards.clone(), ranges, 7, cfg.batch, 1 << 20)?;
    let memory: Vec<Vec<f32>> = (0..per_block)
        .map(|_| mem_stream.next_batch().map(|b| b.data))
        .collect::<saeforge::Result<_>>()?;
    let ranges = shards.iter().map(|s| (0, s.rows as u64)).collect();
    let stream = BatchStream::new(shards, ranges, 9, cfg.batch, 1 << 20)?;
    let mut pf = Prefetcher::new(stream, cfg.prefetch);
    // Warm-up: one step of each.
    eng.step(cfg, &memory[0], cfg.batch)?;
    let b = pf.next()?;
    eng.step(cfg, &b.data, b.rows)?;
    wait()?;
    let (mut t_mem, mut t_pf) = (0.0, 0.0);
    for _ in 0..blocks {
        let t0 = Instant::now();
        for x in &memory {
            eng.step(cfg, x, cfg.batch)?;
        }
        wait()?;
        t_mem += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        for _ in 0..per_block {
            let b = pf.next()?;
            eng.step(cfg, &b.data, b.rows)?;
        }
        wait()?;
        t_pf += t0.elapsed().as_secs_f64();
    }
    let steps = (blocks * per_block) as f64;
    Ok((t_mem / steps, t_pf / steps))
}

/// Start-up cost of the shard fingerprints (`open_shards` hashes every byte of every
/// shard): `gb` GB of f16 shards of 512 MiB written to `dir`, then `open_shards` timed from
/// the page cache (twice, the faster kept) and, with SAEFORGE_BENCH_DROP_CACHES=1 (root,
/// Linux), once after dropping the page cache (from the drive). The shards are removed.
fn fingerprint_cost(dir: &Path, gb: f64) -> saeforge::Result<serde_json::Value> {
    use saeforge::io::StreamWriter;
    const SHARD_BYTES: usize = 512 << 20;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| saeforge::Error::io(dir, e))?;
    let total = (gb * 1e9) as usize;
    let shards = total.div_ceil(SHARD_BYTES);
    let mut paths = Vec::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 8 << 20];
    let clock = Instant::now();
    for s in 0..shards {
        let bytes = SHARD_BYTES.min(total - s * SHARD_BYTES) / (2 * D) * (2 * D);
        let path = dir.join(format!("shard-{s:05}.safetensors"));
        let decl = vec![(
            "activations".to_string(),
            safetensors::Dtype::F16,
            vec![bytes / (2 * D), D],
        )];
        let mut w = StreamWriter::create(&path, &decl, None)?;
        let mut left = bytes;
        while left > 0 {
            for c in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // f16 values in [-2, 2): sign, exponent 0..=15 (never Inf / NaN), mantissa.
                let v = x & 0xBBFF_BBFF_BBFF_BBFF;
                c.copy_from_slice(&v.to_le_bytes());
            }
            let n = left.min(buf.len());
            w.write(&buf[..n])?;
            left -= n;
        }
        w.finish()?;
        paths.push(path);
    }
    let written: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "fingerprint: wrote {} shards, {:.2} GB, in {:.1} s",
        paths.len(),
        written as f64 / 1e9,
        clock.elapsed().as_secs_f64()
    );
    let time = || -> saeforge::Result<f64> {
        let t = Instant::now();
        let s = open_shards(&paths, None)?;
        assert!(s.iter().all(|s| s.content_digest.is_some()));
        Ok(t.elapsed().as_secs_f64())
    };
    let warm = time()?.min(time()?);
    println!(
        "fingerprint: open_shards over {:.2} GB from the page cache: {warm:.2} s ({:.2} GB/s, {} threads)",
        written as f64 / 1e9,
        written as f64 / 1e9 / warm,
        rayon::current_num_threads()
    );
    let mut out = json!({ "bytes": written, "shards": paths.len(), "warm_s": warm });
    if std::env::var("SAEFORGE_BENCH_DROP_CACHES").is_ok_and(|v| v == "1") {
        let _ = std::process::Command::new("sync").status();
        if std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok() {
            let cold = time()?;
            println!(
                "fingerprint: open_shards over {:.2} GB after dropping the page cache: {cold:.2} s ({:.2} GB/s)",
                written as f64 / 1e9,
                written as f64 / 1e9 / cold
            );
            out["cold_s"] = json!(cold);
        } else {
            println!("fingerprint: cannot drop the page cache (not root?); cold read not measured");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    saeforge::gpu::quiet_headless_probe();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let keep = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let batch: usize = std::env::var("SAEFORGE_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench");
    let load_before = loadavg();
    let started = Instant::now();
    println!("load average {load_before}; batch {batch}, d {D}");

    let mut report = json!({ "d": D, "batch": batch, "load_average_before": load_before });
    // Only when asked by name: it writes SAEFORGE_BENCH_FINGERPRINT_GB (default 2) GB.
    if filters.iter().any(|f| f == "fingerprint") {
        let gb: f64 = std::env::var("SAEFORGE_BENCH_FINGERPRINT_GB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2.0);
        report["fingerprint"] = fingerprint_cost(&dir.join("fingerprint-data"), gb)?;
    }
    let mut f16_paths = None;
    let mut loader_rows = Vec::new();
    for dtype in [FloatType::F16, FloatType::F32] {
        let name = format!("{dtype:?}").to_lowercase();
        let need_f16 = dtype == FloatType::F16 && (keep("gpu") || keep("cpu"));
        if !keep(&name) && !need_f16 {
            continue;
        }
        let paths = write_shards(&dir.join("loader-data").join(&name), dtype)?;
        if dtype == FloatType::F16 {
            f16_paths = Some(paths.clone());
        }
        if !keep(&name) {
            continue;
        }
        let (wall, cpu, rows) = loader_rate(&paths, batch)?;
        let bytes = (rows * D * dtype.bytes()) as f64;
        let gbps = bytes / wall / 1e9;
        let gbps_cpu = cpu.map(|c| bytes / c / 1e9);
        println!(
            "loader {name}: {rows} rows in {:.3} s: {gbps:.2} GB/s of input, {:.0} rows/s{}",
            wall,
            rows as f64 / wall,
            match (cpu, gbps_cpu) {
                (Some(c), Some(g)) => format!(
                    "; per thread CPU time ({c:.3} s): {g:.2} GB/s, {:.0} rows/s",
                    rows as f64 / c
                ),
                _ => String::new(),
            }
        );
        loader_rows.push(json!({
            "dtype": name,
            "rows": rows,
            "input_bytes": bytes,
            "seconds": wall,
            "gbps": gbps,
            "rows_per_s": rows as f64 / wall,
            "thread_cpu_seconds": cpu,
            "gbps_cpu": gbps_cpu,
            "rows_per_s_cpu": cpu.map(|c| rows as f64 / c),
        }));
    }
    report["loader"] = json!(loader_rows);

    let mut pf_rows = Vec::new();
    if let Some(paths) = &f16_paths {
        let data_dir = dir.join("loader-data").join("f16");
        let cfg = config(batch, &data_dir);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let sample: Vec<f32> = (0..512 * D)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        let st = TrainState::new(SaeParams::init(&cfg, &sample));
        if keep("gpu") {
            match Gpu::new(std::env::var("SAEFORGE_ADAPTER").ok().as_deref()) {
                Ok(gpu) => {
                    let gpu = Arc::new(gpu);
                    // The engine splits a batch whose (batch, 16384) pre-activations
                    // exceed one storage binding into chunks of rows (lavapipe: 2 x 2048).
                    let mut eng = GpuEngine::new(gpu.clone(), &cfg, &st)?;
                    let g2 = gpu.clone();
                    let (mem, pf) = prefetch_run(&mut eng, &move || g2.wait(), &cfg, paths, 8, 3)?;
                    println!(
                        "gpu topk step (batch {}): {:.1} ms from memory, {:.1} ms from the loader (ratio {:.3}) on {}",
                        cfg.batch,
                        mem * 1e3,
                        pf * 1e3,
                        pf / mem,
                        gpu.info.name
                    );
                    pf_rows.push(json!({"engine": "gpu", "adapter": gpu.info.name, "batch": cfg.batch,
                        "step_ms_memory": mem * 1e3, "step_ms_loader": pf * 1e3, "ratio": pf / mem}));
                }
                Err(e) => eprintln!("no adapter ({e}); skipping the GPU prefetch run"),
            }
        }
        if keep("cpu") {
            let mut eng = CpuEngine::new(st.clone());
            let (mem, pf) = prefetch_run(&mut eng, &|| Ok(()), &cfg, paths, 2, 2)?;
            println!(
                "cpu topk step: {:.1} ms from memory, {:.1} ms from the loader (ratio {:.3})",
                mem * 1e3,
                pf * 1e3,
                pf / mem
            );
            pf_rows.push(json!({"engine": "cpu", "step_ms_memory": mem * 1e3,
                "step_ms_loader": pf * 1e3, "ratio": pf / mem}));
        }
    }
    report["prefetch"] = json!(pf_rows);
    let load_after = loadavg();
    report["load_average_after"] = json!(load_after);
    println!("load average: before {load_before}, after {load_after}");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("loader.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!(
        "wrote {} ({:.1} s in all)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
