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
    /// Exit code for the binary: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            Error::Device(_) => 2,
            Error::Interrupted(_) => 130,
            Error::Io { .. } | Error::Internal(_) => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
