//! Training a sweep: every member resolved and checked (options, data, engine, memory)
//! before anything is written; then members that read the same stream (same data, data
//! seed, batch, shuffle, normalisation: a "group") train together from ONE loader, one read
//! of the data and one normalisation estimate, each as a [`Member`] of `saeforge train`'s
//! own loop, so that OUT/<member>/ equals the member's solo run bitwise. Members whose
//! seeds differ share the data seed (`spec`: the smallest seed unless the sweep sets
//! data_seed), so a seed grid is one pass too; members that differ in what they read (data,
//! batch, a data_seed of their own, ...) form groups of their own, trained one after the
//! other.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::Named;
use super::spec::SweepSpec;
use super::state::{
    GroupStats, MemberState, SPEC_FILE, STATE_DIR, Status, SweepOptions, SweepState, load_spec,
    read_json,
};
use crate::data::{Batch, Shard, discover, open_shards};
use crate::gpu::{Engine, Gpu};
use crate::report::progress::Progress;
use crate::sae::TrainConfig;
use crate::sae::checkpoint::{self, Checkpoint};
use crate::sae::export::CFG_FILE;
use crate::sae::train::{self, Member, RunData};
use crate::stop::StopToken;
use crate::{Error, Result};

/// How a sweep ended.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub out: PathBuf,
    pub state: SweepState,
    pub interrupted: bool,
    pub wall_s: f64,
}

/// A member before its loop starts.
struct Prepared {
    name: String,
    cfg: TrainConfig,
    resume: Option<Checkpoint>,
    engine: Engine,
}

/// What makes two members read the same stream.
fn stream_key(c: &TrainConfig) -> String {
    serde_json::json!([
        c.data,
        c.target_data,
        c.tensor,
        c.eval_data,
        c.eval_fraction,
        c.eval_rows,
        c.batch,
        c.data_seed(),
        c.shuffle_rows,
        c.init_rows,
        c.normalize,
        c.skip_nonfinite,
        c.prefetch,
        c.d_in
    ])
    .to_string()
}

/// Whether a member's folder holds its finished run (exported at its last step).
fn finished(cfg_dir: &Path, steps: Option<u64>) -> Option<u64> {
    if !cfg_dir.join(CFG_FILE).is_file() || !checkpoint::path(cfg_dir).is_file() {
        return None;
    }
    let ck = Checkpoint::load(cfg_dir).ok()?;
    (ck.state.step >= steps.unwrap_or(ck.config.steps)).then_some(ck.state.step)
}

/// `saeforge sweep`: train `spec` into `opts.out` (or, with `opts.resume`, continue the
/// sweep there), stopping at the next step boundary once `stop` is stopped.
pub fn run_until(
    spec: Option<SweepSpec>,
    opts: &SweepOptions,
    stop: &StopToken,
) -> Result<SweepOutcome> {
    let out = &opts.out;
    let clock = Instant::now();
    let merge = super::merge::Policy::from_env()?;
    // A job-array task (--only) shares OUT with the other tasks: it locks its members'
    // folders only, and keeps its state in a file of its own.
    let task = opts.only.is_some();
    let _lock = if task {
        None
    } else {
        crate::lock::acquire_existing(out, "--out")? // reliability
    };
    let (spec, mut state) = if opts.resume {
        let all = SweepState::load(out).unwrap_or_default();
        let mine = if task {
            let only = opts.only.as_ref().expect("task");
            let file = out.join(STATE_DIR).join(format!("{}.json", only.join("+")));
            let mut st: SweepState = if file.is_file() {
                read_json(&file)?
            } else {
                SweepState::default()
            };
            // What other processes learnt (a diverged member) still counts.
            for (n, m) in all.members {
                if only.contains(&n) && m.status == Status::Diverged {
                    st.members.insert(n, m);
                }
            }
            st.file = Some(file);
            st
        } else {
            all
        };
        (load_spec(out)?, mine)
    } else {
        let spec = spec.ok_or_else(|| Error::input("sweep: no members given"))?;
        crate::io::check_foreign_output("--out", out, "a sweep")?;
        if out.join(SPEC_FILE).exists() && !opts.overwrite {
            return Err(Error::input(format!(
                "--out {}: already holds a sweep (use --overwrite to replace it, or saeforge sweep --resume {} to continue it)",
                out.display(),
                out.display()
            )));
        }
        (spec, SweepState::default())
    };
    if let Some(only) = &opts.only {
        for n in only {
            if !spec.members.iter().any(|m| &m.name == n) {
                return Err(Error::input(format!(
                    "--only {n}: no such member (members: {})",
                    spec.members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }

    // Every member resolved, its data opened once per data set, before anything is written.
    let mut opened: BTreeMap<String, Arc<Vec<Shard>>> = BTreeMap::new();
    let mut open = |data: &[PathBuf], tensor: Option<&str>| -> Result<Arc<Vec<Shard>>> {
        let k = serde_json::json!([data, tensor]).to_string();
        if let Some(s) = opened.get(&k) {
            return Ok(s.clone());
        }
        let s = Arc::new(open_shards(&discover(data)?, tensor)?);
        opened.insert(k, s.clone());
        Ok(s)
    };
    let mut prepared: Vec<Prepared> = Vec::new();
    for m in &spec.members {
        if opts.only.as_ref().is_some_and(|o| !o.contains(&m.name)) {
            continue;
        }
        let named = |e: Error| e.with_prefix(&format!("member `{}`", m.name));
        let dir = out.join(&m.name);
        let st = state.members.get(&m.name).map(|s| s.status);
        if opts.resume && st == Some(Status::Diverged) {
            continue;
        }
        if opts.resume
            && let Some(steps) = finished(&dir, opts.steps)
        {
            let e = state.members.entry(m.name.clone()).or_insert(MemberState {
                status: Status::Done,
                steps,
                group: 0,
                engine: String::new(),
                message: None,
            });
            e.status = Status::Done;
            continue;
        }
        let (cfg, resume) = if opts.resume && checkpoint::path(&dir).is_file() {
            let ck = Checkpoint::load(&dir).map_err(named)?;
            let mut cfg = ck.config.clone();
            cfg.out = dir.clone();
            let over = crate::sae::TrainArgs {
                steps: opts.steps,
                ..Default::default()
            };
            cfg.apply_resume_overrides(&over, ck.state.step)
                .map_err(named)?;
            (cfg, Some(ck))
        } else {
            let args = spec.train_args(m, out, opts.overwrite || opts.resume)?;
            let data = args.data.clone().unwrap_or_default();
            if data.is_empty() {
                return Err(named(Error::input(
                    "--data: missing (give data in [shared] or with --data)",
                )));
            }
            let shards = open(&data, args.tensor.as_deref()).map_err(named)?;
            let cfg = train::resolve_on(&args, &shards).map_err(named)?;
            train::check_new_out(&cfg, opts.overwrite || opts.resume, "--out").map_err(named)?;
            (cfg, None)
        };
        prepared.push(Prepared {
            name: m.name.clone(),
            engine: Engine::Cpu,
            cfg,
            resume,
        });
    }

    // Engines, and whether each member fits. GPU members share one device per adapter; on
    // a software adapter (lavapipe), whose compute runs on about one core per device, they
    // take turns over as many devices as the machine has cores (`devices_of`).
    let mut gpus: Vec<Arc<crate::gpu::Gpu>> = Vec::new();
    let mut turn: HashMap<String, usize> = HashMap::new();
    let mut whys: Vec<String> = Vec::new();
    for p in prepared.iter_mut() {
        let named = |e: Error| e.with_prefix(&format!("member `{}`", p.name));
        let (mut kind, why) = train::choose_engine(&p.cfg).map_err(named)?;
        if let Engine::Gpu(g) = &kind {
            let same: Vec<&Arc<crate::gpu::Gpu>> =
                gpus.iter().filter(|h| h.info.name == g.info.name).collect();
            let t = turn.entry(g.info.name.clone()).or_default();
            if same.len() < devices_of(g) {
                gpus.push(g.clone());
            } else {
                kind = Engine::Gpu(same[*t % same.len()].clone());
            }
            *t += 1;
        }
        train::check_fits(&kind, &p.cfg).map_err(named)?;
        if !whys.contains(&why) {
            whys.push(why);
        }
        p.engine = kind;
    }
    super::memory::check_together(
        &prepared
            .iter()
            .map(|p| (p.name.as_str(), &p.cfg, &p.engine))
            .collect::<Vec<_>>(),
    )?;

    // Groups: members reading the same stream, in spec order.
    let mut keys: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<Prepared>> = Vec::new();
    for p in prepared {
        let k = stream_key(&p.cfg);
        match keys.iter().position(|x| *x == k) {
            Some(i) => groups[i].push(p),
            None => {
                keys.push(k);
                groups.push(vec![p]);
            }
        }
    }

    // Per group: the data checked (against every resumed member's fingerprints), the
    // held-out rows, the one initialisation sample, and each member's engine at its state.
    let mut ready: Vec<Group> = Vec::new();
    for g in groups {
        let c0 = g[0].cfg.clone();
        let shards = open(&c0.data, c0.tensor.as_deref())?;
        let data = RunData::from_shards(&c0, shards, None, false)?;
        for p in &g {
            if let Some(ck) = &p.resume {
                checkpoint::ShardPrint::check_same(
                    &ck.data,
                    &data.prints,
                    &p.cfg.out,
                    opts.allow_data_change,
                )
                .map_err(|e| e.with_prefix(&format!("member `{}`", p.name)))?;
            }
        }
        let eval_x = data.eval_rows(&c0)?;
        let needs_init = g.iter().any(|p| p.resume.is_none());
        // Transcoders: the targets' own scale too (`target_scale`, the same for the group).
        let (scale, target_scale, scaled, skipped, init_rows) = match (needs_init, c0.d_out) {
            (false, _) => (1.0, None, Vec::new(), 0, 0),
            (true, None) => {
                let (s, x, k) = data.init_sample(&c0)?;
                (s, None, x, k, c0.init_rows as u64)
            }
            (true, Some(_)) => {
                let (s, s_out, y, k) = data.init_sample_paired(&c0)?;
                (s, Some(s_out), y, k, c0.init_rows as u64)
            }
        };
        let mut built = Vec::new();
        for mut p in g {
            let (st, sc, consumed, resuming) = match p.resume {
                Some(ck) => (ck.state, ck.scale, ck.batches, true),
                None => {
                    if let Some(s_out) = target_scale {
                        p.cfg.target_scale = s_out;
                    }
                    (train::fresh_state(&p.cfg, &scaled), scale, 0, false)
                }
            };
            let step = st.step;
            let engine = train::make_engine(&p.engine, &p.cfg, st)
                .map_err(|e| e.with_prefix(&format!("member `{}`", p.name)))?;
            built.push(Built {
                name: p.name,
                cfg: p.cfg,
                kind: p.engine,
                engine,
                step,
                consumed,
                scale: sc,
                resuming,
            });
        }
        ready.push(Group {
            data,
            eval_x,
            built,
            init_rows,
            skipped,
        });
    }
    stop.check(|| {
        format!(
            "interrupted before training started; nothing was written to {}",
            out.display()
        )
    })?;

    // Only now write: the sweep folder, its spec and state, every member's folder.
    let _lock = match _lock {
        Some(l) => Some(l),
        None if task => None,
        None => Some(crate::lock::acquire(out, "--out")?), // reliability
    };
    crate::io::create_dir(out)?;
    if !opts.resume {
        crate::io::write_json(&out.join(SPEC_FILE), &spec)?;
    }
    if let Some(f) = &state.file {
        crate::io::create_dir(f.parent().expect("in OUT"))?;
    }
    let mut locks = Vec::new();
    for (gi, g) in ready.iter().enumerate() {
        for b in &g.built {
            locks.push(crate::lock::acquire(&b.cfg.out, "--out")?);
            train::prepare_out(&b.cfg, !b.resuming && opts.overwrite)?;
            state.members.insert(
                b.name.clone(),
                MemberState {
                    status: Status::Pending,
                    steps: b.step,
                    group: gi,
                    engine: b.kind.name(),
                    message: None,
                },
            );
        }
    }
    let fingerprinted: usize = opened.values().map(|s| s.len()).sum();
    state.fingerprint_reads += fingerprinted as u64;
    if state.groups.len() < ready.len() {
        state.groups.resize(ready.len(), GroupStats::default());
    }
    state.save(out)?;
    for why in &whys {
        eprintln!("saeforge: {why}");
    }

    let mut interrupted = false;
    for (gi, g) in ready.into_iter().enumerate() {
        if interrupted {
            break;
        }
        interrupted = run_group(gi, g, out, &mut state, stop, merge)?;
    }
    drop(locks);
    Ok(SweepOutcome {
        out: out.clone(),
        state,
        interrupted,
        wall_s: clock.elapsed().as_secs_f64(),
    })
}

/// A member ready to train, before its folder is written.
struct Built {
    name: String,
    cfg: TrainConfig,
    kind: Engine,
    engine: Box<dyn crate::sae::engine::StepEngine>,
    step: u64,
    consumed: u64,
    scale: f32,
    resuming: bool,
}

/// The members of one stream.
struct Group {
    data: RunData,
    eval_x: Option<train::EvalRows>,
    built: Vec<Built>,
    init_rows: u64,
    skipped: u64,
}

/// Train one group over its stream. Returns whether it was interrupted.
fn run_group(
    gi: usize,
    g: Group,
    out: &Path,
    state: &mut SweepState,
    stop: &StopToken,
    merge: super::merge::Policy,
) -> Result<bool> {
    let clock = Instant::now();
    let mut members: Vec<(String, Member)> = Vec::new();
    let longest = g.built.iter().map(|b| b.cfg.steps).max().unwrap_or(0);
    let mut shown = false;
    for b in g.built {
        let mut m = Member::new(
            b.cfg,
            b.kind,
            b.engine,
            b.step,
            b.consumed,
            b.scale,
            g.data.prints.clone(),
            g.eval_x.clone(),
            b.resuming,
        )?;
        if !shown && m.cfg.steps == longest {
            m.progress = Some(Progress::new(longest, b.step));
            shown = true;
        }
        members.push((b.name, m));
    }
    let shared = super::merge::plan(&mut members, merge)?;
    let stats = &mut state.groups[gi];
    stats.members = members.iter().map(|(n, _)| n.clone()).collect();
    stats.train_rows = g.data.train_rows();
    stats.init_rows_drawn += g.init_rows;
    let start = members.iter().map(|(_, m)| m.consumed).min().unwrap_or(0);
    let c0 = members.first().map(|(_, m)| m.cfg.clone());
    let Some(c0) = c0 else {
        return Ok(false);
    };
    let scale = members[0].1.scale;
    let mut prefetch = g.data.stream(&c0, scale, start)?;
    stats.streams_opened += 1;
    let mut drawn = start;
    let mut skipped = g.skipped;
    let mut interrupted = false;
    let resume_cmd = format!("saeforge sweep --resume {}", out.display());
    // Members still training; finished and diverged ones leave the list.
    while !members.is_empty() {
        let batch = match prefetch.next() {
            Ok(b) => b,
            Err(e) => {
                // Keep every member's training (a checkpoint each), then say how to go on.
                let mut err = None;
                for (_, m) in members.iter_mut() {
                    let e2 = m.checkpoint();
                    if let Err(e2) = e2 {
                        err.get_or_insert(e2);
                    }
                    m.finish_progress();
                }
                let steps: Vec<String> = members
                    .iter()
                    .map(|(n, m)| format!("{n} at step {}", m.step))
                    .collect();
                state.groups[gi].rows_drawn += drawn - start;
                state.save(out)?;
                return Err(err.unwrap_or(e).with_hint(format!(
                    "the sweep stopped with a checkpoint for every member ({}); fix the data, then continue with: {resume_cmd}",
                    steps.join(", ")
                )));
            }
        };
        drawn = batch.drawn;
        skipped += batch.skipped as u64;
        let mut results = step_all(&mut members, &batch, &shared).into_iter();
        let mut i = 0;
        while i < members.len() {
            let (name, _) = &mut members[i];
            match results.next().unwrap_or(Ok(())) {
                Ok(()) => i += 1,
                Err(Error::Diverged(msg)) => {
                    eprintln!("saeforge: member `{name}`: {msg}");
                    diverged(state, name, msg);
                    members.remove(i);
                    state.save(out)?;
                }
                Err(e) => return Err(e.with_prefix(&format!("member `{name}`"))),
            }
        }
        if stop.is_stopped() {
            interrupted = true;
            break;
        }
        let mut i = 0;
        while i < members.len() {
            let (name, m) = &mut members[i];
            if m.done() {
                let (name, m) = members.remove(i);
                let secs = clock.elapsed().as_secs_f64();
                let o = m.finish(false, secs, skipped)?;
                let s = state.members.get_mut(&name).expect("registered");
                s.status = Status::Done;
                s.steps = o.steps;
                state.save(out)?;
                continue;
            }
            match m.checkpoint_if_due() {
                Ok(()) => i += 1,
                Err(Error::Diverged(msg)) => {
                    eprintln!("saeforge: member `{name}`: {msg}");
                    let name = name.clone();
                    diverged(state, &name, msg);
                    members.remove(i);
                    state.save(out)?;
                }
                Err(e) => return Err(e.with_prefix(&format!("member `{name}`"))),
            }
        }
    }
    drop(prefetch);
    let secs = clock.elapsed().as_secs_f64();
    for (name, m) in members {
        let o = m.finish(true, secs, skipped)?;
        let s = state.members.get_mut(&name).expect("registered");
        s.status = Status::Interrupted;
        s.steps = o.steps;
    }
    let stats = &mut state.groups[gi];
    stats.rows_drawn += drawn - start;
    stats.wall_s += secs;
    state.save(out)?;
    Ok(interrupted)
}

/// Devices a sweep opens on `gpu`'s adapter for its members: one on a hardware adapter,
/// as many as the machine has cores on a software one (lavapipe runs a device's compute on
/// about one core: two processes training side by side took 0.64 of the time of the two
/// one after the other; the sweep bench's gain from a second device is in README).
fn devices_of(gpu: &Gpu) -> usize {
    if gpu.is_software() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

/// Every member that wants `batch` steps on it: the GPU engine's members on one device are
/// recorded into ONE encoder per device, each submitted once (the members of a `shared`
/// group around their one encoder launch, `merge`); CPU members step side by side (see
/// [`step_cpu_members`]). The result of each member, in order.
fn step_all(
    members: &mut [(String, Member)],
    batch: &Batch,
    shared: &[super::merge::Shared],
) -> Vec<Result<()>> {
    let mut res: Vec<Result<()>> = members.iter().map(|_| Ok(())).collect();
    // One encoder per device, in the order the devices first come.
    let mut encs: Vec<(Arc<Gpu>, wgpu::CommandEncoder)> = Vec::new();
    let (mut recorded, mut on_cpu) = (Vec::new(), Vec::new());
    // Per shared group: its members recorded up to the product.
    let mut until: Vec<Vec<usize>> = shared.iter().map(|_| Vec::new()).collect();
    for (i, (name, m)) in members.iter_mut().enumerate() {
        let group = shared.iter().position(|s| s.names.contains(name));
        if !m.wants(batch) || !m.begin(batch) {
            continue;
        }
        let cfg = &m.cfg;
        if m.engine.as_cpu().is_some() {
            on_cpu.push(i);
            continue;
        }
        match m.engine.as_gpu() {
            Some(g) => {
                let e = encoder_of(&mut encs, g.gpu());
                let (x, rows) = (&batch.data, batch.rows);
                let r = match group {
                    Some(s) => g
                        .record_until_product(cfg, x, rows, e)
                        .map(|()| &mut until[s]),
                    None => g
                        .record_full_step(cfg, x, rows, e, &mut |_, _| Ok(()))
                        .map(|()| &mut recorded),
                };
                match r {
                    Ok(list) => list.push(i),
                    Err(e) => res[i] = Err(e),
                }
            }
            // Any other engine steps on its own.
            None => {
                res[i] = match m.engine.step(cfg, &batch.data, batch.rows) {
                    Ok(()) => m.stepped(batch),
                    Err(e) => Err(e.with_hint(m.note())),
                }
            }
        }
    }
    for (s, idx) in shared.iter().zip(until).filter(|(_, idx)| !idx.is_empty()) {
        let e = encoder_of(&mut encs, s.gpu());
        {
            let launched = s.record(e);
            for i in idx {
                let g = members[i].1.engine.as_gpu().expect("a GPU member");
                res[i] = match &launched {
                    Ok(()) => g.record_after_product(e),
                    Err(err) => Err(Error::Internal(format!(
                        "the members' encoder launch: {err}"
                    ))),
                };
                if res[i].is_ok() {
                    recorded.push(i);
                }
            }
        }
    }
    // Each device's submission from a thread of its own, so that a software adapter that
    // runs a submission in the submitting thread still runs its devices side by side (a
    // hardware adapter's submission returns at once either way).
    std::thread::scope(|s| {
        for (gpu, e) in encs {
            s.spawn(move || gpu.submit(e));
        }
    });
    for (i, r) in step_cpu_members(members, &on_cpu, batch) {
        res[i] = r;
    }
    for i in recorded {
        let m = &mut members[i].1;
        let r = m.engine.as_gpu().map_or(Ok(()), |g| g.submitted());
        res[i] = match r {
            Ok(()) => m.stepped(batch),
            Err(e) => Err(e.with_hint(m.note())),
        };
    }
    res
}

/// The encoder of `gpu` among `encs`, begun on first use.
fn encoder_of<'a>(
    encs: &'a mut Vec<(Arc<Gpu>, wgpu::CommandEncoder)>,
    gpu: &Arc<Gpu>,
) -> &'a mut wgpu::CommandEncoder {
    let i = match encs.iter().position(|(d, _)| Arc::ptr_eq(d, gpu)) {
        Some(i) => i,
        None => {
            encs.push((gpu.clone(), gpu.encoder()));
            encs.len() - 1
        }
    };
    &mut encs[i].1
}

/// The CPU engine's members at `idx` (ascending) step on `batch` side by side, as tasks on
/// rayon's pool: one member's serial stages (selection bookkeeping, small loops) then run
/// while another's parallel products fill the cores. A solo CPU run keeps ~1.5 of 2 cores
/// busy at 128 -> 1024, and a sweep stepping its members in turn took as long as the solo
/// runs together. Each member's step is the same computation whatever runs beside it (the
/// engine's parallel loops split their work by size, not by which threads are free), so a
/// member still equals its solo run bitwise. Then each member's bookkeeping, in turn.
fn step_cpu_members(
    members: &mut [(String, Member)],
    idx: &[usize],
    batch: &Batch,
) -> Vec<(usize, Result<()>)> {
    use crate::sae::engine::StepEngine;
    use rayon::prelude::*;
    let mut engines: Vec<(usize, &TrainConfig, &mut crate::sae::cpu::CpuEngine)> = Vec::new();
    for (i, (_, m)) in members.iter_mut().enumerate() {
        if idx.binary_search(&i).is_ok()
            && let Some(e) = m.engine.as_cpu()
        {
            engines.push((i, &m.cfg, e));
        }
    }
    let stepped: Vec<(usize, Result<()>)> = engines
        .into_par_iter()
        .map(|(i, cfg, e)| (i, e.step(cfg, &batch.data, batch.rows)))
        .collect();
    stepped
        .into_iter()
        .map(|(i, r)| {
            let m = &mut members[i].1;
            let r = match r {
                Ok(()) => m.stepped(batch),
                Err(e) => Err(e.with_hint(m.note())),
            };
            (i, r)
        })
        .collect()
}

fn diverged(state: &mut SweepState, name: &str, msg: String) {
    if let Some(s) = state.members.get_mut(name) {
        s.status = Status::Diverged;
        s.message = Some(format!(
            "{msg} (the sweep went on without it; change its options in a new sweep, or train it alone with saeforge train)"
        ));
    }
}
