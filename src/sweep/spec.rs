//! What a sweep trains: shared options once, then members from a grid (the cartesian
//! product of option lists) and / or an explicit list, read from a TOML file and the
//! command line. Every member is a set of `saeforge train` options; everything about the
//! spec is checked here, before any data is read or anything written, and a bad one is
//! refused with one line naming the member and the option.
//!
//! ```toml
//! [shared]                 # any `saeforge train` option, for every member
//! data = ["acts/"]
//! arch = "topk"
//! steps = 2000
//! [grid]                   # one member per combination; names like k16_lr0.001
//! k = [16, 32, 64]
//! lr = [1e-3, 2e-3]
//! [[member]]               # more members, each with its own options (and a name)
//! name = "relu-l1-5"
//! arch = "relu"
//! l1 = 5.0
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sae::TrainArgs;
use crate::sae::config::{ARCH_ONLY, EXCLUSIVE};
use crate::{Error, Result};

/// Options a sweep sets itself (per member, or once for the whole sweep): a member may not.
const SWEEP_OWNED: [(&str, &str); 5] = [
    (
        "out",
        "each member writes OUT/<member name>; give the sweep's --out",
    ),
    ("overwrite", "give --overwrite to the sweep"),
    (
        "resume",
        "resume the whole sweep with saeforge sweep --resume OUT",
    ),
    ("config", "the sweep file holds the options"),
    ("allow_data_change", "give it to the sweep"),
];

/// One member: its name and the options it sets itself (over the shared ones).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberSpec {
    pub name: String,
    pub options: Map<String, Value>,
}

/// A whole sweep, as written to OUT/sweep-spec.json (and read back by --resume / report).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct SweepSpec {
    pub shared: Map<String, Value>,
    pub members: Vec<MemberSpec>,
}

/// The raw parts of a spec before expansion: a file's and the command line's.
#[derive(Clone, Debug, Default)]
pub struct SpecParts {
    pub shared: Map<String, Value>,
    /// option -> values, in the order given.
    pub grid: BTreeMap<String, Vec<Value>>,
    /// explicit members: name (if given) and options.
    pub members: Vec<(Option<String>, Map<String, Value>)>,
    /// where the parts came from, for messages ("sweep.toml", "the command line").
    pub source: String,
}

/// `d-sae` and `d_sae` are the same option.
pub fn key(k: &str) -> String {
    k.trim().replace('-', "_")
}

fn to_json(v: toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl SpecParts {
    /// Read a sweep file: [shared], [grid], [[member]] (and a top-level `out`).
    pub fn from_toml(path: &Path) -> Result<(SpecParts, Option<PathBuf>)> {
        let at = path.display().to_string();
        if !path.is_file() {
            return Err(Error::input(format!("{at}: no such sweep file")));
        }
        let bytes = crate::data::read_input(path)?;
        let text =
            String::from_utf8(bytes).map_err(|_| Error::input(format!("{at}: not UTF-8 text")))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let m = e.message().to_string();
            Error::input(format!(
                "{at}: {}",
                m.lines().next().unwrap_or("invalid TOML")
            ))
        })?;
        let mut parts = SpecParts {
            source: at.clone(),
            ..Default::default()
        };
        let mut out = None;
        for (section, v) in table {
            match (section.as_str(), v) {
                ("out", toml::Value::String(s)) => out = Some(PathBuf::from(s)),
                ("shared", toml::Value::Table(t)) => {
                    for (k, v) in t {
                        parts.shared.insert(key(&k), to_json(v));
                    }
                }
                ("grid", toml::Value::Table(t)) => {
                    for (k, v) in t {
                        let values = match v {
                            toml::Value::Array(a) => a.into_iter().map(to_json).collect(),
                            _ => {
                                return Err(Error::input(format!(
                                    "{at}: grid option `{k}`: expected a list of values, e.g. {k} = [1, 2]"
                                )));
                            }
                        };
                        parts.grid.insert(key(&k), values);
                    }
                }
                ("member", toml::Value::Array(a)) => {
                    for (i, m) in a.into_iter().enumerate() {
                        let toml::Value::Table(t) = m else {
                            return Err(Error::input(format!(
                                "{at}: member {}: expected a table ([[member]])",
                                i + 1
                            )));
                        };
                        let mut name = None;
                        let mut opts = Map::new();
                        for (k, v) in t {
                            if k == "name" {
                                match v {
                                    toml::Value::String(s) => name = Some(s),
                                    _ => {
                                        return Err(Error::input(format!(
                                            "{at}: member {}: `name` must be a string",
                                            i + 1
                                        )));
                                    }
                                }
                            } else {
                                opts.insert(key(&k), to_json(v));
                            }
                        }
                        parts.members.push((name, opts));
                    }
                }
                (s, _) => {
                    return Err(Error::input(format!(
                        "{at}: unknown or malformed entry `{s}` (a sweep file has out = \"...\", [shared], [grid] and [[member]])"
                    )));
                }
            }
        }
        // In a file, a grid axis would silently replace the same key in [shared] (library
        // callers may rely on that order; a file's author did not mean it).
        if let Some(k) = parts.shared.keys().find(|k| parts.grid.contains_key(*k)) {
            return Err(Error::input(format!(
                "{}: option `{k}` is both shared and a grid axis; the grid's values would silently replace the shared one (give it in one place)",
                parts.source
            )));
        }
        Ok((parts, out))
    }

    /// Overlay `top` (the command line) on these parts: its shared options and grid lists
    /// replace the same keys here; its members are added.
    pub fn overlay(mut self, top: SpecParts) -> SpecParts {
        // A key the command line sets replaces the file's, in [shared] or [grid] alike.
        for k in top.shared.keys().chain(top.grid.keys()) {
            self.shared.remove(k);
            self.grid.remove(k);
        }
        self.shared.extend(top.shared);
        self.grid.extend(top.grid);
        self.members.extend(top.members);
        if self.source.is_empty() {
            self.source = top.source;
        }
        self
    }

    /// Expand into members and check everything that can be checked without the data.
    pub fn expand(self) -> Result<SweepSpec> {
        let src = if self.source.is_empty() {
            "the command line".to_string()
        } else {
            self.source.clone()
        };
        for (k, v) in &self.shared {
            check_option(&format!("{src}: shared option"), k, v)?;
        }
        let mut members = Vec::new();
        if !self.grid.is_empty() {
            for (k, vs) in &self.grid {
                if vs.is_empty() {
                    return Err(Error::input(format!(
                        "{src}: grid option `{k}`: empty list (the grid would have no members)"
                    )));
                }
                for v in vs {
                    check_option(&format!("{src}: grid option"), k, v)?;
                }
            }
            let mut combos: Vec<Vec<(String, Value)>> = vec![vec![]];
            for (k, vs) in &self.grid {
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        vs.iter().map(move |v| {
                            let mut c = c.clone();
                            c.push((k.clone(), v.clone()));
                            c
                        })
                    })
                    .collect();
            }
            for c in combos {
                let name = c
                    .iter()
                    .map(|(k, v)| format!("{k}{}", value_text(v)))
                    .collect::<Vec<_>>()
                    .join("_");
                members.push(MemberSpec {
                    name: safe_name(&name),
                    options: c.into_iter().collect(),
                });
            }
        }
        for (i, (name, opts)) in self.members.into_iter().enumerate() {
            let name = match name {
                Some(n) => {
                    check_name(&src, &n)?;
                    n
                }
                None => format!("member{}", i + 1),
            };
            members.push(MemberSpec {
                name,
                options: opts,
            });
        }
        if members.is_empty() {
            return Err(Error::input(format!(
                "{src}: the sweep has no members (give a [grid] of option lists, e.g. --k 16,32, or [[member]] entries)"
            )));
        }
        let mut seen = BTreeSet::new();
        for m in &members {
            if !seen.insert(m.name.clone()) {
                return Err(Error::input(format!(
                    "{src}: member `{}`: duplicate member name (every member writes OUT/<name>)",
                    m.name
                )));
            }
        }
        // Members that differ in --seed share one pass over the data: when the seeds
        // differ, every member that is not given a data_seed (shared or its own) reads in
        // the order of the sweep's smallest seed (so it equals `saeforge train --seed S
        // --data-seed D`).
        let shared = self.shared;
        let seed_of = |m: &MemberSpec| {
            let s = m.options.get("seed").or(shared.get("seed"));
            s.and_then(Value::as_u64).unwrap_or(0)
        };
        let seeds: BTreeSet<u64> = members.iter().map(seed_of).collect();
        if let (2.., Some(&first), false) =
            (seeds.len(), seeds.first(), shared.contains_key("data_seed"))
        {
            for m in &mut members {
                if !m.options.contains_key("data_seed") {
                    m.options.insert("data_seed".into(), Value::from(first));
                }
            }
        }
        let spec = SweepSpec { shared, members };
        for m in &spec.members {
            for (k, v) in &m.options {
                check_option(&format!("{src}: member `{}`: option", m.name), k, v)?;
            }
            spec.check_member(&src, m)?;
        }
        Ok(spec)
    }
}

/// One value as a name part: 16, 0.001, topk.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A file-name-safe member name.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn check_name(src: &str, n: &str) -> Result<()> {
    if n.is_empty() || n == "." || n == ".." || ["plots", "slurm"].contains(&n) || safe_name(n) != n
    {
        return Err(Error::input(format!(
            "{src}: member `{n}`: name must be a plain folder name (letters, digits, . _ - +; not `plots` or `slurm`)"
        )));
    }
    Ok(())
}

/// One option: one the sweep sets itself, or one `saeforge train` does not know, or a
/// value of the wrong type, is refused naming `what` and the option.
fn check_option(what: &str, k: &str, v: &Value) -> Result<()> {
    if let Some((_, why)) = SWEEP_OWNED.iter().find(|(o, _)| *o == k) {
        return Err(Error::input(format!(
            "{what} `{k}`: set by the sweep ({why})"
        )));
    }
    let mut one = Map::new();
    one.insert(k.to_string(), v.clone());
    serde_json::from_value::<TrainArgs>(Value::Object(one)).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(", expected one of").next().unwrap_or(&msg).to_string();
        Error::input(format!(
            "{what} `{k}`: {msg} (options are the long flags of `saeforge train --help`, with _ for -)"
        ))
    })?;
    Ok(())
}

impl SweepSpec {
    /// A member's options over the shared ones.
    pub fn merged(&self, m: &MemberSpec) -> Map<String, Value> {
        let mut all = self.shared.clone();
        all.extend(m.options.clone());
        all
    }

    /// The train options of a member (out and overwrite are the sweep's).
    pub fn train_args(&self, m: &MemberSpec, out: &Path, overwrite: bool) -> Result<TrainArgs> {
        let mut a: TrainArgs = serde_json::from_value(Value::Object(self.merged(m)))
            .map_err(|e| Error::input(format!("member `{}`: {e}", m.name)))?;
        a.out = Some(out.join(&m.name));
        a.overwrite = Some(overwrite);
        Ok(a)
    }

    /// Options of a member that conflict: two that exclude each other, or one its
    /// architecture ignores (given by the member itself).
    fn check_member(&self, src: &str, m: &MemberSpec) -> Result<()> {
        let all = self.merged(m);
        let given = |k: &str| all.get(k).is_some_and(|v| !v.is_null());
        for (a, b, _) in EXCLUSIVE {
            if given(a) && given(b) && (m.options.contains_key(a) || m.options.contains_key(b)) {
                let (mine, other) = if m.options.contains_key(a) {
                    (a, b)
                } else {
                    (b, a)
                };
                return Err(Error::input(format!(
                    "{src}: member `{}`: option `{mine}` conflicts with `{other}` (give one of them)",
                    m.name
                )));
            }
        }
        let arch = all
            .get("arch")
            .and_then(|v| v.as_str())
            .unwrap_or("topk")
            .to_string();
        for (k, archs) in ARCH_ONLY {
            if m.options.contains_key(k) && !archs.contains(&arch.as_str()) {
                return Err(Error::input(format!(
                    "{src}: member `{}`: option `{k}` has no effect with arch {arch} (it is for {})",
                    m.name,
                    archs.join(" / ")
                )));
            }
        }
        Ok(())
    }
}

/// A command-line value: a TOML scalar (16, 1e-3, true, "x") or else a plain string.
pub fn parse_value(s: &str) -> Value {
    let s = s.trim();
    match toml::from_str::<toml::Table>(&format!("v = {s}")) {
        Ok(mut t) => t.remove("v").map(to_json).unwrap_or(Value::Null),
        Err(_) => Value::String(s.to_string()),
    }
}
