//! One writer per folder. Every command that writes into a folder it owns (`train`, `train
//! --resume`, `--overwrite`, `synth --out`, `demo`) holds an exclusive advisory lock
//! (`flock` through the `fs4` crate) on `DIR/.saeforge.lock` for its whole run, and writes
//! who it is into that file: pid, host, start time and command line. A second writer is
//! refused before it touches anything, with one line naming the holder.
//!
//! The kernel drops a lock when its process dies, however it dies, so a lock can never be
//! left held by a dead process; what such a process leaves is its record in the file. A
//! clean end removes the file (so a refused or finished run leaves the folder as it was);
//! a writer that finds a record it can lock knows the previous holder ended without
//! releasing it (killed, or a second Ctrl-C), takes over and says so. Removing a lock file
//! races with a process that opened it just before: so a writer, once it holds the lock,
//! checks that the path still names the file it locked, and starts again if not.
//!
//! Readers (`eval`, `info`, `encode`, `steer`) take no lock, but say when a live run is
//! writing the folder they read ([`note_if_writing`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The lock file inside a locked folder.
pub const LOCK_FILE: &str = ".saeforge.lock";

/// How long a writer retries when the lock is held but no live holder is recorded (a reader
/// probing it, or a writer between locking and writing its record).
const RETRY: Duration = Duration::from_secs(3);

/// Who holds (or held) a folder's lock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// UTC, e.g. "2026-12-04 15:20:01 UTC".
    pub started: String,
    pub command: String,
    /// The process's start time in clock ticks after boot, and the boot id (Linux): with
    /// them a reused pid is not mistaken for the holder.
    #[serde(default)]
    pub proc_start: Option<u64>,
    #[serde(default)]
    pub boot: Option<String>,
}

impl Holder {
    fn me() -> Holder {
        // args_os: env::args panics on an argument that is not UTF-8.
        let mut command: String = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { a })
            .collect::<Vec<_>>()
            .join(" ");
        if command.len() > 300 {
            let mut end = 300;
            while !command.is_char_boundary(end) {
                end -= 1;
            }
            command.truncate(end);
            command.push_str(" ...");
        }
        Holder {
            pid: std::process::id(),
            host: hostname(),
            started: utc_now(),
            command,
            proc_start: proc_start(std::process::id()),
            boot: boot_id(),
        }
    }

    /// "pid 1234 on host h, started 2026-12-04 15:20:01 UTC: saeforge train ..."
    pub fn describe(&self) -> String {
        format!(
            "pid {} on host {}, started {}: {}",
            self.pid, self.host, self.started, self.command
        )
    }

    /// Is this holder a process running now on this machine? False for another host (it
    /// cannot be checked from here) and for a pid now used by another process.
    pub fn alive_here(&self) -> bool {
        if self.host != hostname() || (self.boot.is_some() && self.boot != boot_id()) {
            return false;
        }
        match (self.proc_start, proc_start(self.pid)) {
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
            (None, _) => pid_exists(self.pid),
        }
    }
}

/// Folders this process holds, with how many guards hold each (a command that locks a
/// folder and then calls another that locks it again, e.g. a sweep and its members).
static HELD: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

/// The exclusive lock on a folder, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    /// The lock file, for the outermost guard of this process; None for nested guards.
    file: Option<File>,
    path: PathBuf,
    key: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|(k, _)| *k == self.key) {
            held[i].1 -= 1;
            if held[i].1 == 0 {
                held.remove(i);
            }
        }
        if let Some(f) = self.file.take() {
            // A clean end: the file goes while still locked (a process that opened it
            // meanwhile sees, once it locks it, that the path no longer names it), then the
            // lock (closing drops it too).
            let _ = std::fs::remove_file(&self.path);
            let _ = FileExt::unlock(&f);
        }
    }
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Take the exclusive lock on `dir` (created if missing) for this process, or refuse with
/// one line naming the run that holds it. `flag` names the folder in messages ("--out",
/// "--resume"). A record left by a holder that died is taken over, with a line on stderr.
pub fn acquire(dir: &Path, flag: &str) -> Result<RunLock> {
    let bad = |e: std::io::Error| {
        Error::input(format!(
            "{flag} {}: cannot write the output folder ({e})",
            dir.display()
        ))
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::input(format!(
            "{flag} {}: is a file, expected a folder",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(bad)?;
    let key = canonical(dir);
    {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = held.iter_mut().find(|(k, _)| *k == key) {
            e.1 += 1;
            return Ok(RunLock {
                file: None,
                path: PathBuf::new(),
                key,
            });
        }
    }
    let path = dir.join(LOCK_FILE);
    let deadline = Instant::now() + RETRY;
    let (file, locked) = loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(bad)?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(true) if same_file(&file, &path) => break (file, true),
            // Removed (or replaced) by its holder's clean end after we opened it: again.
            Ok(true) => continue,
            Ok(false) => {
                let holder = read_record(&file);
                if holder.as_ref().is_some_and(Holder::alive_here) || Instant::now() > deadline {
                    return Err(refusal(dir, flag, holder.as_ref()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if unsupported(&e) => break (file, false),
            Err(e) => return Err(bad(e)),
        }
    };
    let previous = read_record(&file);
    if let Some(p) = &previous {
        if p.alive_here() && p.pid != std::process::id() {
            // A live process on this machine, yet the lock was free: the file system does
            // not enforce locks, or the holder lost it. Refuse rather than interleave.
            return Err(refusal(dir, flag, Some(p)));
        }
        eprintln!(
            "saeforge: {}: took over the lock of a run that ended without releasing it ({}); it is no longer running",
            dir.display(),
            p.describe()
        );
    }
    if !locked {
        eprintln!(
            "saeforge: {}: the file system does not support file locks; a second run writing this folder would not be stopped",
            dir.display()
        );
    }
    let record = serde_json::to_string(&Holder::me()).expect("plain data") + "\n";
    (|| {
        file.set_len(0)?;
        crate::io::write_all_at(&file, record.as_bytes(), 0)?;
        file.sync_data()
    })()
    .map_err(bad)?;
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key.clone(), 1));
    Ok(RunLock {
        file: Some(file),
        path,
        key,
    })
}

/// Does `path` still name the open file `file`?
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

/// Take the lock on `dir` if it is a folder already (so that a run refused for its lock
/// is refused before anything else is checked or written); None when it does not exist.
pub fn acquire_existing(dir: &Path, flag: &str) -> Result<Option<RunLock>> {
    if dir.is_dir() {
        acquire(dir, flag).map(Some)
    } else {
        Ok(None)
    }
}

fn refusal(dir: &Path, flag: &str, holder: Option<&Holder>) -> Error {
    let who = match holder {
        Some(h) => format!(
            "{}; wait for it to end, or stop it first (kill {} checkpoints and stops it)",
            h.describe(),
            h.pid
        ),
        None => "its holder is not recorded in the lock file yet; try again in a moment".into(),
    };
    Error::input(format!(
        "{flag} {}: another saeforge run is writing this folder ({who})",
        dir.display()
    ))
}

fn unsupported(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        )
    }
    #[cfg(not(unix))]
    {
        e.kind() == std::io::ErrorKind::Unsupported
    }
}

fn read_record(mut file: &File) -> Option<Holder> {
    use std::io::Seek;
    let mut s = String::new();
    file.seek(std::io::SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    serde_json::from_str(s.trim()).ok()
}

/// The run writing `dir` now, if one is: Some(record) while another process holds the
/// lock (Some(None) when it has not written its record yet), None otherwise (no lock
/// file, or nobody holds it, or this process does).
pub fn writer_of(dir: &Path) -> Option<Option<Holder>> {
    let key = canonical(dir);
    if HELD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(k, _)| *k == key)
    {
        return None;
    }
    let file = File::open(dir.join(LOCK_FILE)).ok()?;
    match FileExt::try_lock_shared(&file) {
        Ok(true) => {
            let _ = FileExt::unlock(&file);
            None
        }
        Ok(false) => Some(read_record(&file)),
        Err(_) => None,
    }
}

/// Say on stderr (one line) when a live run is writing the folder a reader is about to read:
/// what is read is the folder as it is now, and the run may replace it.
pub fn note_if_writing(dir: &Path) {
    if let Some(h) = writer_of(dir) {
        eprintln!(
            "saeforge: note: {} is being written by a live run ({}); reading the files as they are now",
            dir.display(),
            h.map(|h| h.describe())
                .unwrap_or_else(|| "its holder not yet recorded".into())
        );
    }
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Field 22 of /proc/PID/stat (start time in ticks after boot); None where unavailable.
fn proc_start(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

fn pid_exists(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Now as "YYYY-MM-DD HH:MM:SS UTC".
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_nested_locks_share_one_file() {
        assert!(Holder::me().alive_here());
        let dir = std::env::temp_dir().join(format!("saeforge-lock-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = acquire(&dir, "--out").unwrap();
        let b = acquire(&dir, "--out").unwrap();
        assert!(writer_of(&dir).is_none(), "this process holds it");
        drop(b);
        assert!(
            dir.join(LOCK_FILE).exists(),
            "the outer guard still holds it"
        );
        drop(a);
        assert!(
            !dir.join(LOCK_FILE).exists(),
            "a clean release removes the file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn utc_format() {
        let s = utc_now();
        assert_eq!(s.len(), 23, "{s}");
        assert!(s.ends_with(" UTC"));
    }
}
