//! The shim's error type and its mapping onto ttrpc status codes.
//!
//! containerd reads the code, not just the message: `NotFound` on `Delete`
//! means "already gone" and is treated as success, so it is only used where
//! that reading is right. Everything the shim does not implement answers
//! `Unimplemented` (runc's shim does the same).

use std::io;
use std::path::PathBuf;

use containerd_shim_protos::ttrpc::{self, Code};

/// Errors returned by the task service and the container lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed (missing id, bad process spec, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The bundle's spec asks for something this runtime cannot honour.
    #[error("unsupported spec field `{field}`: {reason}")]
    UnsupportedSpec { field: &'static str, reason: String },
    /// No container or exec process with this id.
    #[error("not found: {0}")]
    NotFound(String),
    /// A container or exec process with this id already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The process is not in a state that allows the operation.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The task API method is not implemented by this shim.
    #[error("unimplemented: {0}")]
    Unimplemented(&'static str),
    /// libcontainer (run in the helper process) refused or failed.
    #[error("libcontainer: {0}")]
    Runtime(String),
    /// The recording hook refused the container.
    #[error("observer: {0}")]
    Observer(String),
    /// A file or syscall operation on a known path failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A syscall not tied to a path failed.
    #[error("{context}: {source}")]
    Sys {
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Result alias used throughout the shim.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Sys`] for a syscall not tied to a path.
    pub(crate) fn sys(context: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Sys {
            context,
            source: source.into(),
        }
    }

    /// The ttrpc status code containerd receives for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::UnsupportedSpec { .. } => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Runtime(_) => Code::UNKNOWN,
            Error::Observer(_) | Error::Io { .. } | Error::Sys { .. } => Code::INTERNAL,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(err: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(err: Error) -> (Code, String) {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message),
            other => panic!("expected an RPC status, got {other:?}"),
        }
    }

    #[test]
    fn maps_each_variant_to_its_code() {
        let cases = [
            (Error::InvalidArgument("id".into()), Code::INVALID_ARGUMENT),
            (
                Error::UnsupportedSpec {
                    field: "process.rlimits",
                    reason: "x".into(),
                },
                Code::INVALID_ARGUMENT,
            ),
            (Error::NotFound("c1".into()), Code::NOT_FOUND),
            (Error::AlreadyExists("c1".into()), Code::ALREADY_EXISTS),
            (
                Error::FailedPrecondition("c1".into()),
                Code::FAILED_PRECONDITION,
            ),
            (Error::Unimplemented("Pause"), Code::UNIMPLEMENTED),
            (Error::Runtime("boom".into()), Code::UNKNOWN),
            (Error::Observer("no".into()), Code::INTERNAL),
            (
                Error::io("mount", "/x", io::Error::from_raw_os_error(libc::EPERM)),
                Code::INTERNAL,
            ),
            (
                Error::sys("kill", io::Error::from_raw_os_error(libc::ESRCH)),
                Code::INTERNAL,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(status_of(err).0, code);
        }
    }

    #[test]
    fn message_names_the_spec_field() {
        let (_, message) = status_of(Error::UnsupportedSpec {
            field: "linux.intelRdt",
            reason: "not available on this host".into(),
        });
        assert!(message.contains("linux.intelRdt"), "{message}");
    }

    #[test]
    fn io_errors_carry_the_path() {
        let err = Error::io(
            "rmdir cgroup",
            "/sys/fs/cgroup/unified/x",
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert!(err.to_string().contains("/sys/fs/cgroup/unified/x"));
    }
}
