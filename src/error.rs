//! Typed errors for the library. The binary maps them to exit codes: bad input is 2
//! (the user can fix it), everything else 1. Messages are one line and name the file,
//! tensor or flag at fault, because researchers read them in a log hours after the start.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's input (a file, a flag, a config value) is not what was expected.
    #[error("{0}")]
    Input(String),
    /// No usable wgpu adapter, or the adapter cannot hold what was asked.
    #[error("{0}")]
    Device(String),
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Stopped by SIGINT / SIGTERM after writing a checkpoint.
    #[error("{0}")]
    Interrupted(String),
    /// Training diverged (a non-finite loss, gradient or parameter); the last good
    /// checkpoint was kept.
    #[error("{0}")]
    Diverged(String),
    /// An input file changed while it was being read (truncated, rewritten, replaced or
    /// removed under the reader).
    #[error("{0}")]
    DataChanged(String),
    /// The device failed while working (lost, out of memory, a driver error).
    #[error("{0}")]
    DeviceFault(String),
    /// Something the program itself got wrong, or the driver reported.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// Exit code for the binary: 2 for bad input (including a model too large for the
    /// device), 130 after SIGINT / SIGTERM, 1 for everything else (an input changed under
    /// a running command included: the input was fine when checked).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            Error::Device(_) => 2,
            Error::Interrupted(_) => 130,
            Error::Io { .. }
            | Error::Internal(_)
            | Error::Diverged(_)
            | Error::DeviceFault(_)
            | Error::DataChanged(_) => 1,
        }
    }

    /// The same error (same kind, same exit code) with `; hint` appended to its message.
    pub fn with_hint(self, hint: impl std::fmt::Display) -> Error {
        match self {
            Error::Input(m) => Error::Input(format!("{m}; {hint}")),
            Error::Device(m) => Error::Device(format!("{m}; {hint}")),
            Error::Interrupted(m) => Error::Interrupted(format!("{m}; {hint}")),
            Error::Diverged(m) => Error::Diverged(format!("{m}; {hint}")),
            Error::DeviceFault(m) => Error::DeviceFault(format!("{m}; {hint}")),
            Error::DataChanged(m) => Error::DataChanged(format!("{m}; {hint}")),
            Error::Internal(m) => Error::Internal(format!("{m}; {hint}")),
            Error::Io { path, source } => Error::Io {
                path,
                source: std::io::Error::new(source.kind(), format!("{source}; {hint}")),
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
