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
use super::group::{Built, Group, devices_of, run_group};
use super::spec::SweepSpec;
use super::state::{
    GroupStats, MemberState, SPEC_FILE, STATE_DIR, Status, SweepOptions, SweepState, load_spec,
    read_json,
};
use crate::data::{Shard, discover, open_shards};
use crate::gpu::Engine;
use crate::sae::TrainConfig;
use crate::sae::checkpoint::{self, Checkpoint};
use crate::sae::export::CFG_FILE;
use crate::sae::train::{self, RunData};
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
