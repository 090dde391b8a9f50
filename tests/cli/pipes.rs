//! Output into a pipe whose reader has gone (`saeforge info acts/ | head -1`): the command
//! ends as any Unix tool does (quietly, by SIGPIPE), never with a failed print reported as
//! an internal error.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use libtest_mimic::{Failed, Trial};

use crate::{command, fx, tmp, trial, words};

/// Run `args` with stdout into a pipe whose read end is already closed.
fn into_closed_pipe(what: &str, args: &[String]) -> Result<(), Failed> {
    let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    drop(reader);
    let out = command(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let quiet = out.status.success() || out.status.signal() == Some(libc::SIGPIPE);
    if !quiet || stderr.contains("internal error") {
        return Err(format!(
            "{what} into a closed pipe: expected exit 0 or SIGPIPE and no internal error, got {:?}:\n{stderr}",
            out.status
        )
        .into());
    }
    Ok(())
}

fn readers_into_a_closed_pipe() -> Result<(), Failed> {
    let dir = tmp("closed_pipe");
    let shard = dir.join("a.safetensors");
    fx::shard(&shard, 64, 8, 1);
    let sae = dir.join("sae");
    fx::sae(&sae, 8, 16, 4);
    let p = |x: &Path| x.display().to_string();
    into_closed_pipe("info SHARD", &words(&format!("info {}", p(&shard))))?;
    into_closed_pipe("info SAE", &words(&format!("info {}", p(&sae))))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "pipes::readers_into_a_closed_pipe_end_quietly".into(),
        false,
        readers_into_a_closed_pipe,
    )]
}
