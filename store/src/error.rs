//! The store's error type. Every variant names what was involved (a path, a
//! sequence number, a content id) so a message is actionable on its own.

use std::path::PathBuf;

use crate::content::ContentId;

/// Errors from writing or reading a recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: not a DiffKeeper recording ({detail})")]
    NotARecording { path: PathBuf, detail: String },

    #[error(
        "{path}: recording format version {found} is newer than this build understands \
         (up to {supported}); upgrade diffkeeper to read it"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("{path}: a recording already exists here; choose another path or remove it")]
    AlreadyExists { path: PathBuf },

    #[error("{path}: the disk is full; the recording is valid up to its last commit")]
    DiskFull { path: PathBuf },

    #[error("{path}: the recording is locked by another writer")]
    Locked { path: PathBuf },

    #[error("{path}: storage error: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },

    #[error("{path}: the recording is damaged ({detail}); run `diffkeeper verify` to see what is readable")]
    Damaged { path: PathBuf, detail: String },

    #[error("{path}: I/O error: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("event #{seq} is unreadable: {detail}")]
    CorruptEvent { seq: u64, detail: String },

    #[error("content {id} is corrupt or missing: {detail}")]
    CorruptContent { id: ContentId, detail: String },

    #[error("recording metadata is unreadable: {detail}")]
    CorruptMeta { detail: String },

    #[error("{path:?} does not exist at {at}")]
    NoSuchPath { path: String, at: String },

    #[error("{path:?} is not a regular file at {at}")]
    NotAFile { path: String, at: String },

    #[error("invalid time {input:?}: {reason}")]
    InvalidTime { input: String, reason: String },

    #[error("time {input:?} is outside the recording ({reason})")]
    TimeOutOfRange { input: String, reason: String },

    #[error("export target {path}: {reason}")]
    ExportTarget { path: PathBuf, reason: String },

    #[error("invalid glob {pattern:?}: {source}")]
    InvalidGlob {
        pattern: String,
        #[source]
        source: globset::Error,
    },

    #[error("the recorder stopped after an earlier failure: {reason}")]
    RecorderFailed { reason: String },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a redb error, recognising the conditions a user can act on.
    pub(crate) fn storage(path: &std::path::Path, err: impl Into<redb::Error>) -> Self {
        let err: redb::Error = err.into();
        let path = path.to_path_buf();
        match err {
            redb::Error::Io(io) if io.raw_os_error() == Some(libc_enospc()) => {
                Error::DiskFull { path }
            }
            redb::Error::DatabaseAlreadyOpen => Error::Locked { path },
            other => Error::Storage {
                path,
                source: other,
            },
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc_enospc()) {
            return Error::DiskFull {
                path: path.to_path_buf(),
            };
        }
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs a read against a recording file, turning a panic inside the storage
/// engine (which a damaged b-tree page can cause) into [`Error::Damaged`]:
/// a corrupt recording must produce an error, never a crash.
pub(crate) fn contained<T>(path: &std::path::Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "storage engine panicked".into());
        Err(Error::Damaged {
            path: path.to_path_buf(),
            detail,
        })
    })
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}
