//! One group of a sweep (see `run`, which builds it): its members stepped together on the
//! one stream, batch by batch, the GPU engine's members recorded into one encoder per
//! device and the CPU engine's side by side on rayon's pool ([`step_all`]); each member's
//! checkpoints, divergence and end as in `saeforge train` ([`Member`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::Named;
use super::state::{Status, SweepState};
use crate::data::Batch;
use crate::gpu::{Engine, Gpu};
use crate::report::progress::Progress;
use crate::sae::TrainConfig;
use crate::sae::train::{self, Member, RunData};
use crate::stop::StopToken;
use crate::{Error, Result};

/// A member ready to train, before its folder is written.
pub(super) struct Built {
    pub(super) name: String,
    pub(super) cfg: TrainConfig,
    pub(super) kind: Engine,
    pub(super) engine: Box<dyn crate::sae::engine::StepEngine>,
    pub(super) step: u64,
    pub(super) consumed: u64,
    pub(super) scale: f32,
    pub(super) resuming: bool,
}

/// The members of one stream.
pub(super) struct Group {
    pub(super) data: RunData,
    pub(super) eval_x: Option<train::EvalRows>,
    pub(super) built: Vec<Built>,
    pub(super) init_rows: u64,
    pub(super) skipped: u64,
}

/// Train one group over its stream. Returns whether it was interrupted.
pub(super) fn run_group(
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
pub(super) fn devices_of(gpu: &Gpu) -> usize {
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
