//! `saeforge sweep --emit slurm`: the sweep as a Slurm job array. The spec is written to
//! OUT (as a sweep that has not started), then OUT/slurm/sweep.sbatch runs one task per
//! member, or per `--per-task` members that share a pass over the data (the same stream
//! options), each task being `saeforge sweep --resume OUT --only NAMES`: it trains its
//! members from one pass, locks only their folders and keeps its state in a file of its own
//! (OUT/sweep-state.d/), so tasks run side by side; a task requeued after a preemption
//! continues from its members' checkpoints. OUT/slurm/gather.sbatch, run after the array,
//! is `saeforge sweep report OUT`.

use std::path::Path;

use serde_json::Value;

use super::SweepSpec;
use super::state::SPEC_FILE;
use crate::{Error, Result};

/// Options that decide a member's stream: members equal in all of them share a pass
/// ("data_seed": its --data-seed, else its --seed, else 0).
const STREAM: [&str; 13] = [
    "data",
    "target_data",
    "tensor",
    "eval_data",
    "eval_fraction",
    "eval_rows",
    "batch",
    "data_seed",
    "shuffle_rows",
    "init_rows",
    "normalize",
    "skip_nonfinite",
    "device",
];

/// The array's tasks: member names, `per_task` at most per task, members of a task
/// sharing a stream.
pub fn tasks(spec: &SweepSpec, per_task: usize) -> Vec<Vec<String>> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for m in &spec.members {
        let all = spec.merged(m);
        let key: Vec<Value> = STREAM
            .iter()
            .map(|&k| match k {
                "data_seed" => {
                    let seed = all.get("data_seed").or(all.get("seed"));
                    Value::from(seed.and_then(Value::as_u64).unwrap_or(0))
                }
                _ => all.get(k).cloned().unwrap_or(Value::Null),
            })
            .collect();
        let key = Value::Array(key).to_string();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(m.name.clone()),
            None => groups.push((key, vec![m.name.clone()])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(_, v)| {
            v.chunks(per_task.max(1))
                .map(|c| c.to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Write the spec and the scripts into `out`; returns the lines to print (how to submit).
pub fn emit(spec: &SweepSpec, out: &Path, per_task: usize, overwrite: bool) -> Result<String> {
    if out.join(SPEC_FILE).exists() && !overwrite {
        return Err(Error::input(format!(
            "--out {}: already holds a sweep (use --overwrite to replace it)",
            out.display()
        )));
    }
    crate::io::create_dir(out)?;
    crate::io::write_json(&out.join(SPEC_FILE), spec)?;
    let out = std::fs::canonicalize(out).map_err(|e| Error::io(out, e))?;
    let dir = out.join("slurm");
    crate::io::create_dir(&dir)?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "saeforge".into());
    let tasks = tasks(spec, per_task);
    let o = quote(&out.display().to_string());
    let list: Vec<String> = tasks
        .iter()
        .map(|t| format!("  {}", quote(&t.join(","))))
        .collect();
    let array = format!(
        "#!/bin/bash\n\
         # saeforge sweep as a Slurm job array: task i trains the members on line i of TASKS\n\
         # from one pass over the data (saeforge sweep --resume OUT --only NAMES). Add the\n\
         # partition / GPU / time directives of your cluster; SAEFORGE overrides the binary.\n\
         #SBATCH --job-name=saeforge-sweep\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={dir}/task-%a.log\n\
         #SBATCH --requeue\n\
         set -euo pipefail\n\
         SAEFORGE=${{SAEFORGE:-{exe}}}\n\
         TASKS=(\n{list}\n)\n\
         exec \"$SAEFORGE\" sweep --resume {o} --only \"${{TASKS[$SLURM_ARRAY_TASK_ID]}}\"\n",
        last = tasks.len() - 1,
        dir = dir.display(),
        exe = quote(&exe),
        list = list.join("\n"),
    );
    let gather = format!(
        "#!/bin/bash\n\
         # After the array: the sweep's report from its finished members.\n\
         #SBATCH --job-name=saeforge-sweep-report\n\
         #SBATCH --output={dir}/report.log\n\
         set -euo pipefail\n\
         SAEFORGE=${{SAEFORGE:-{exe}}}\n\
         exec \"$SAEFORGE\" sweep report {o}\n",
        dir = dir.display(),
        exe = quote(&exe),
    );
    let sbatch = dir.join("sweep.sbatch");
    let report = dir.join("gather.sbatch");
    crate::io::write_atomic(&sbatch, array.as_bytes())?;
    crate::io::write_atomic(&report, gather.as_bytes())?;
    Ok(format!(
        "wrote {} ({} tasks) and {}; submit with:\n  jid=$(sbatch --parsable {})\n  sbatch --dependency=afterany:$jid {}",
        sbatch.display(),
        tasks.len(),
        report.display(),
        sbatch.display(),
        report.display()
    ))
}
