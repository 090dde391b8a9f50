//! Where a run's options come from besides its flags: a TOML file (`--config`) overlaid by
//! the command line, and the run being resumed (`--resume`), which admits only the flags in
//! [`RESUME_FLAGS`]. Kept apart from the option list and its defaults (`config.rs`).

use std::path::Path;

use super::TrainArgs;
use crate::{Error, Result};

/// Pairs of options that set the same thing, with how: given together, the first would
/// silently win, so a run (or a sweep member) may give only one of each.
pub const EXCLUSIVE: [(&str, &str, &str); 2] = [
    ("d_sae", "expansion", "d_sae = expansion x d"),
    ("steps", "tokens", "steps = tokens / batch"),
];

/// Options that only mean something for some architectures: given for an architecture
/// that ignores them (by a sweep member, or on `train`'s command line), they are a mistake.
pub const ARCH_ONLY: [(&str, &[&str]); 10] = [
    ("k", &["topk", "batchtopk", "matryoshka"]),
    ("k_aux", &["topk", "batchtopk", "matryoshka"]),
    ("aux_coef", &["topk", "batchtopk", "matryoshka"]),
    ("k_anneal_steps", &["topk", "batchtopk", "matryoshka"]),
    ("k_anneal_start", &["topk", "batchtopk", "matryoshka"]),
    ("matryoshka_widths", &["matryoshka"]),
    ("l1", &["relu"]),
    ("l0", &["jumprelu"]),
    ("threshold_init", &["jumprelu"]),
    ("bandwidth", &["jumprelu"]),
];

impl TrainArgs {
    /// Refuse two options of an [`EXCLUSIVE`] pair given by one source (`None`: the command
    /// line; else the config file).
    pub fn check_exclusive(&self, file: Option<&Path>) -> Result<()> {
        let v = serde_json::to_value(self).expect("plain data");
        let set = |k: &str| v.get(k).is_some_and(|x| !x.is_null());
        for (a, b, what) in EXCLUSIVE {
            if set(a) && set(b) {
                return Err(Error::input(match file {
                    None => format!(
                        "--{} {} and --{} {}: give one of them ({what})",
                        a.replace('_', "-"),
                        v[a],
                        b.replace('_', "-"),
                        v[b]
                    ),
                    Some(p) => format!(
                        "--config {}: `{a}` and `{b}` are both set; give one of them ({what})",
                        p.display()
                    ),
                }));
            }
        }
        Ok(())
    }

    /// Overlay: values set here win over `file`'s (an option of an [`EXCLUSIVE`] pair set
    /// here also clears the other one of the file's).
    pub fn merged_over(&self, file: &TrainArgs) -> Result<TrainArgs> {
        for a in [self, file] {
            if let Some((flag, v)) = a.nonfinite() {
                return Err(Error::input(format!(
                    "--{flag} {v}: expected a finite number"
                )));
            }
        }
        self.check_exclusive(None)?;
        file.check_exclusive(Some(self.config.as_deref().unwrap_or(Path::new("-"))))?;
        let mut base = serde_json::to_value(file).expect("plain data");
        let top = serde_json::to_value(self).expect("plain data");
        if let (Some(b), Some(t)) = (base.as_object_mut(), top.as_object()) {
            for (x, y, _) in EXCLUSIVE {
                if t.get(x).is_some_and(|v| !v.is_null()) || t.get(y).is_some_and(|v| !v.is_null())
                {
                    b.remove(x);
                    b.remove(y);
                }
            }
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
        self.check_exclusive(None)?;
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
