//! Where a run's options come from besides its flags: a TOML file (`--config`) overlaid by
//! the command line, and the run being resumed (`--resume`), which admits only the flags in
//! [`RESUME_FLAGS`]. Kept apart from the option list and its defaults (`config.rs`).

use std::path::Path;

use super::TrainArgs;
use crate::{Error, Result};

impl TrainArgs {
    /// Overlay: values set here win over `file`'s.
    pub fn merged_over(&self, file: &TrainArgs) -> Result<TrainArgs> {
        for a in [self, file] {
            if let Some((flag, v)) = a.nonfinite() {
                return Err(Error::input(format!(
                    "--{flag} {v}: expected a finite number"
                )));
            }
        }
        let mut base = serde_json::to_value(file).expect("plain data");
        let top = serde_json::to_value(self).expect("plain data");
        if let (Some(b), Some(t)) = (base.as_object_mut(), top.as_object()) {
            for (k, v) in t {
                if !v.is_null() {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        let mut merged: TrainArgs = serde_json::from_value(base)
            .map_err(|e| Error::Internal(format!("merging config: {e}")))?;
        merged.config = self.config.clone();
        merged.resume = self.resume.clone();
        Ok(merged)
    }

    /// Read a TOML config file.
    pub fn from_toml(path: &Path) -> Result<TrainArgs> {
        if !path.is_file() {
            return Err(Error::input(format!(
                "--config {}: no such file",
                path.display()
            )));
        }
        let bytes = crate::data::read_input(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input(format!("--config {}: not UTF-8 text", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            let msg = msg.lines().next().unwrap_or("invalid TOML");
            // serde lists every known key after ", expected one of"; --help says it better.
            let msg = match msg.split_once(", expected one of") {
                Some((head, _)) => format!(
                    "{head} (the keys are the long flags of `saeforge train --help`, with _ for -)"
                ),
                None => msg.to_string(),
            };
            Error::input(format!("--config {}: {msg}", path.display()))
        })
    }
}

/// Flags that may be given with --resume: they change how long or how fast the run goes on,
/// or where, never what it trains on. Anything else would silently train something other
/// than the run being resumed, so it is refused.
pub const RESUME_FLAGS: [&str; 7] = [
    "steps",
    "tokens",
    "lr",
    "skip_nonfinite",
    "device",
    "adapter",
    "prefetch",
];

impl TrainArgs {
    /// Refuse flags that --resume would otherwise ignore.
    pub fn check_resume(&self) -> Result<()> {
        let dir = self.resume.as_ref().expect("called with --resume");
        if self.config.is_some() {
            return Err(Error::input(format!(
                "--config cannot be combined with --resume (the run's own config is in {})",
                dir.join("config.json").display()
            )));
        }
        if self.overwrite == Some(true) {
            return Err(Error::input(
                "--overwrite cannot be combined with --resume (pick one: replace the run, or continue it)",
            ));
        }
        let v = serde_json::to_value(self).expect("plain data");
        for (k, val) in v.as_object().expect("struct") {
            if !val.is_null() && !RESUME_FLAGS.contains(&k.as_str()) && k != "overwrite" {
                return Err(Error::input(format!(
                    "--{} cannot be changed on --resume (the run's config is in {}; with --resume only --{} may be given)",
                    k.replace('_', "-"),
                    dir.join("config.json").display(),
                    RESUME_FLAGS.map(|f| f.replace('_', "-")).join(", --")
                )));
            }
        }
        Ok(())
    }
}
