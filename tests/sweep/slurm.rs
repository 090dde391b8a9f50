//! `saeforge sweep --emit slurm`: the job array's content, and (where Debian's slurm-wlm and
//! munge are installed and we are root) the array run end to end on a single-node Slurm the
//! test starts: slurmctld + slurmd on their own ports and folders, munged if none runs. The
//! gathered sweep must equal the same sweep run in one process, member by member, bitwise.
//! Without Slurm the end-to-end trial is ignored with the reason, or fails under
//! SAEFORGE_REQUIRE_SLURM=1 (set by .ci/run, which installs slurm-wlm).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Failed, Trial};
use saeforge::stop::StopToken;
use saeforge::sweep::{SpecParts, SweepOptions, SweepSpec, run_until, slurm};
use serde_json::json;

use crate::common::fail;
use crate::util::{synth, tmp};

fn spec(data: &Path) -> Result<SweepSpec, Failed> {
    let mut p = SpecParts::default();
    let shared = json!({"data": [data], "d_sae": 48, "batch": 32, "steps": 6, "device": "cpu",
        "log_every": 2, "eval_fraction": 0.1});
    p.shared = shared.as_object().unwrap().clone();
    p.grid
        .insert("k".into(), vec![json!(2), json!(4), json!(8)]);
    // A member with another seed shares the others' data order (data_seed 0, the
    // smallest seed); one with a data order of its own is another stream, so a task of
    // its own.
    let mut m = serde_json::Map::new();
    m.insert("seed".into(), json!(7));
    p.members.push((Some("seed7".into()), m));
    let mut m = serde_json::Map::new();
    m.insert("data_seed".into(), json!(7));
    p.members.push((Some("order7".into()), m));
    p.expand().map_err(fail)
}

fn content() -> Result<(), Failed> {
    let dir = tmp("slurm-content");
    let data = dir.join("data");
    let spec = spec(&data)?;
    // Two per task: k2+k4, k8+seed7, order7 (its own stream).
    let t = slurm::tasks(&spec, 2);
    if t != [vec!["k2", "k4"], vec!["k8", "seed7"], vec!["order7"]] {
        return Err(format!("tasks {t:?}").into());
    }
    let out = dir.join("out");
    let msg = slurm::emit(&spec, &out, 2, false).map_err(fail)?;
    let s = std::fs::read_to_string(out.join("slurm/sweep.sbatch")).map_err(fail)?;
    for x in [
        "#SBATCH --array=0-2",
        "'k2,k4'",
        "'k8,seed7'",
        "'order7'",
        "sweep --resume",
        "--only \"${TASKS[$SLURM_ARRAY_TASK_ID]}\"",
    ] {
        if !s.contains(x) {
            return Err(format!("sweep.sbatch lacks {x}:\n{s}").into());
        }
    }
    let g = std::fs::read_to_string(out.join("slurm/gather.sbatch")).map_err(fail)?;
    if !g.contains("sweep report") || !msg.contains("--dependency=afterany") {
        return Err(format!("gather:\n{g}\n{msg}").into());
    }
    if slurm::emit(&spec, &out, 2, false).is_ok() {
        return Err("emitting over a sweep was not refused".into());
    }
    Ok(())
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sh(cmd: &str, env: &[(&str, &Path)]) -> Result<String, Failed> {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().map_err(fail)?;
    if !o.status.success() {
        return Err(format!(
            "`{cmd}` failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Why the end-to-end run cannot happen here, if it cannot.
fn missing() -> Option<String> {
    for c in [
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "munged",
        "runuser",
    ] {
        if !which(c) {
            return Some(format!("no {c} (apt-get install slurm-wlm)"));
        }
    }
    if unsafe { libc::geteuid() } != 0 {
        return Some("slurmd needs root".into());
    }
    None
}

/// slurmctld and slurmd of one test, stopped (by their pids) when dropped.
struct Cluster {
    dir: PathBuf,
    /// munged, when this test started it.
    munged: Option<i32>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in ["slurmd.pid", "slurmctld.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(p))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        if let Some(pid) = self.munged {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

fn start_cluster(dir: &Path) -> Result<(Cluster, PathBuf), Failed> {
    // munge: the system's daemon if one answers, else one started as the munge user. A
    // socket file alone proves nothing: a machine restored from a snapshot keeps
    // /run/munge/munge.socket.2 with no daemon behind it (the CI failure of stop 33), so
    // the daemon is asked, and a new one is started with --force over stale files.
    let mut munged = None;
    if sh("munge -n >/dev/null", &[]).is_err() {
        sh(
            "mkdir -p /run/munge && chown munge:munge /run/munge && \
             runuser -u munge -- munged --force",
            &[],
        )?;
        sh("munge -n >/dev/null", &[]).map_err(|e| {
            format!(
                "munged was started but does not answer: {}",
                e.message().unwrap_or_default()
            )
        })?;
        munged = std::fs::read_to_string("/run/munge/munged.pid")
            .ok()
            .and_then(|p| p.trim().parse().ok());
    }
    let cluster = Cluster {
        dir: dir.to_path_buf(),
        munged,
    };
    let host = sh("hostname -s", &[])?;
    for d in ["state", "spool", "log"] {
        std::fs::create_dir_all(dir.join(d)).map_err(fail)?;
    }
    let [port, port2] = free_ports()?;
    let d = dir.display();
    let conf = format!(
        "ClusterName=saeforgetest\nSlurmctldHost={host}\nAuthType=auth/munge\nCredType=cred/munge\n\
         SlurmUser=root\nSlurmdUser=root\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
         SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
         SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
         SlurmctldPort={port}\nSlurmdPort={port2}\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
         SchedulerType=sched/builtin\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
         ReturnToService=2\nMpiDefault=none\nJobCompType=jobcomp/none\n\
         AccountingStorageType=accounting_storage/none\n\
         NodeName={host} CPUs=1 RealMemory=1000 State=UNKNOWN\n\
         PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
    );
    let conf_path = dir.join("slurm.conf");
    std::fs::write(&conf_path, conf).map_err(fail)?;
    let env = [("SLURM_CONF", conf_path.as_path())];
    sh("slurmctld -f \"$SLURM_CONF\"", &env)?;
    sh("slurmd -f \"$SLURM_CONF\"", &env)?;
    // The node comes up when slurmd registers; on a loaded 2-core machine (the rest of the
    // suite runs beside this test) that can take a while, so the wait is generous and a
    // failure says what Slurm said.
    let t0 = Instant::now();
    loop {
        let state = sh("sinfo -h -o %T", &env);
        if state.as_ref().is_ok_and(|s| s == "idle") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let tail = |f: &str| {
                let log = std::fs::read_to_string(dir.join("log").join(f)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(8)..].join("\n")
            };
            let state = match state {
                Ok(s) => s,
                Err(e) => e.message().unwrap_or_default().to_string(),
            };
            return Err(format!(
                "the test's Slurm node did not come up in 120 s; sinfo: {state}\n\
                 slurmctld.log:\n{}\nslurmd.log:\n{}",
                tail("slurmctld.log"),
                tail("slurmd.log")
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok((cluster, conf_path))
}

/// Two distinct TCP ports nobody listens on now (the kernel's picks for port 0, both held
/// until both are known).
fn free_ports() -> Result<[u16; 2], Failed> {
    let bind = || std::net::TcpListener::bind("0.0.0.0:0").map_err(fail);
    let (a, b) = (bind()?, bind()?);
    let port = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).map_err(fail);
    Ok([port(&a)?, port(&b)?])
}

fn end_to_end() -> Result<(), Failed> {
    let dir = tmp("slurm-e2e");
    let data = dir.join("data");
    synth(&data)?;
    let spec = spec(&data)?;
    let (_cluster, conf) = start_cluster(&dir.join("slurm"))?;
    let out = dir.join("out");
    slurm::emit(&spec, &out, 2, false).map_err(fail)?;
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_saeforge"));
    let env = [("SLURM_CONF", conf.as_path()), ("SAEFORGE", bin.as_path())];
    let jid = sh(
        &format!("sbatch --parsable {}/slurm/sweep.sbatch", out.display()),
        &env,
    )?;
    let gid = sh(
        &format!(
            "sbatch --parsable --dependency=afterany:{jid} {}/slurm/gather.sbatch",
            out.display()
        ),
        &env,
    )?;
    let t0 = Instant::now();
    loop {
        let q = sh(&format!("squeue -h -j {jid},{gid}"), &env).unwrap_or_default();
        if q.is_empty() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(format!("the array did not finish in 120 s: {q}").into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("sweep.json")).map_err(|e| {
            format!(
                "no sweep.json after the gather job ({e}); logs in {}/slurm",
                out.display()
            )
        })?,
    )
    .map_err(fail)?;
    let members = j["members"].as_array().ok_or("no members")?;
    if members.len() != 5 || members.iter().any(|m| m["status"] != "done") {
        return Err(format!("after the array: {}", j["members"]).into());
    }
    // The same sweep in one process: the same dictionaries.
    let local = dir.join("local");
    let o = SweepOptions {
        out: local.clone(),
        ..Default::default()
    };
    run_until(Some(spec.clone()), &o, &StopToken::new()).map_err(fail)?;
    for m in &spec.members {
        let f = |d: &Path| std::fs::read(d.join(&m.name).join("sae_weights.safetensors"));
        if f(&out).map_err(fail)? != f(&local).map_err(fail)? {
            return Err(format!(
                "{}: the array's weights differ from the local sweep's",
                m.name
            )
            .into());
        }
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("slurm_array_content", content),
        Trial::ignorable_test("slurm_array_end_to_end", || match missing() {
            Some(why) if std::env::var("SAEFORGE_REQUIRE_SLURM").is_ok_and(|v| v == "1") => {
                Err(format!("SAEFORGE_REQUIRE_SLURM=1 but {why}").into())
            }
            Some(why) => Ok(Completion::ignored_with(why)),
            None => end_to_end().map(|()| Completion::Completed),
        }),
    ]
}
