//! What a sweep keeps on disk besides its members' folders: OUT/sweep-spec.json (what to
//! train) and OUT/sweep-state.json (each member's standing and each group's reads; a
//! job-array task writes its own file under OUT/sweep-state.d/, merged when read), and the
//! options of a run. `run` writes them; `report` and `sweep report` read them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::SweepSpec;
use crate::{Error, Result};

pub const SPEC_FILE: &str = "sweep-spec.json";
pub const STATE_FILE: &str = "sweep-state.json";
/// States of the tasks of a job array (`--only`), one file each, merged when read.
pub const STATE_DIR: &str = "sweep-state.d";

/// How the sweep runs (besides its spec).
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    pub out: PathBuf,
    pub overwrite: bool,
    /// Continue the sweep in `out` from its members' checkpoints.
    pub resume: bool,
    /// Train only these members (a job-array task); the others are left as they are.
    pub only: Option<Vec<String>>,
    pub allow_data_change: bool,
    /// With `resume`: train every member on to this many steps (as `train --resume --steps`).
    pub steps: Option<u64>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Interrupted,
    Done,
    Diverged,
}

/// A member's standing, kept in OUT/sweep-state.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberState {
    pub status: Status,
    pub steps: u64,
    pub group: usize,
    pub engine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One pass over the data shared by a group of members: how much it read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct GroupStats {
    pub members: Vec<String>,
    /// Training streams opened (1 per process that trained the group: a resume opens one
    /// more, starting where the checkpoints are).
    pub streams_opened: u64,
    /// Row ids drawn from the training stream (all processes together).
    pub rows_drawn: u64,
    /// Rows available for training.
    pub train_rows: u64,
    /// Rows drawn for the normalisation / initialisation estimate (once per group).
    pub init_rows_drawn: u64,
    /// Training-loop wall time, seconds (all processes together).
    pub wall_s: f64,
}

/// OUT/sweep-state.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct SweepState {
    pub members: BTreeMap<String, MemberState>,
    pub groups: Vec<GroupStats>,
    /// Shard files read in full to fingerprint them, per process (once per data set).
    pub fingerprint_reads: u64,
    /// Where this process writes its state (a job-array task: its own file).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl SweepState {
    /// The state of the sweep in `out`: its own file and those of its job-array tasks.
    pub fn load(out: &Path) -> Result<SweepState> {
        let main = out.join(STATE_FILE);
        let mut st: SweepState = if main.is_file() {
            read_json(&main)?
        } else {
            SweepState::default()
        };
        let mut tasks: Vec<PathBuf> = std::fs::read_dir(out.join(STATE_DIR))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        tasks.sort();
        for t in tasks
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let more: SweepState = read_json(t)?;
            let base = st.groups.len();
            for (name, mut m) in more.members {
                m.group += base;
                st.members.insert(name, m);
            }
            st.groups.extend(more.groups);
            st.fingerprint_reads += more.fingerprint_reads;
        }
        Ok(st)
    }
    pub(super) fn save(&self, out: &Path) -> Result<()> {
        let p = self.file.clone().unwrap_or_else(|| out.join(STATE_FILE));
        crate::io::write_json(&p, self)
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let bytes = crate::data::read_input(p)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(format!("{}: not a saeforge sweep file ({e})", p.display())))
}

/// The spec of the sweep in `out`.
pub fn load_spec(out: &Path) -> Result<SweepSpec> {
    let p = out.join(SPEC_FILE);
    if !p.is_file() {
        return Err(Error::input(format!(
            "{}: not a sweep folder (no {SPEC_FILE})",
            out.display()
        )));
    }
    read_json(&p)
}
