//! Everything the probe can fail at, with the path, program or map involved.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel rejected the object; aya's error carries the verifier log.
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),

    /// A program failed to load or attach. For load failures the source
    /// message ends with the verifier's full output.
    #[error("eBPF program {program}: {source}")]
    Program {
        program: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },

    #[error("the eBPF object has no {kind} named {name}")]
    Missing { kind: &'static str, name: String },

    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// bpffs/tracefs mounts, the pin directory, the load lock.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {0:#x} is already watched (by this or another process)")]
    AlreadyWatched(u64),

    /// Another build's `Probe::load` retired this probe's programs while
    /// nothing watched through them: load the probe again.
    #[error("the probe set {0} was retired (detached) by another build; load the probe again")]
    Retired(PathBuf),

    #[error(
        "polling the ring buffer of cgroup {cgroup_id:#x} (is a tokio runtime running?): {source}"
    )]
    Poll {
        cgroup_id: u64,
        #[source]
        source: io::Error,
    },

    #[error("ring buffer size {0} must be a power of two of at least one page")]
    RingBufferSize(u32),

    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} is not a cgroup v2 directory")]
    NotCgroup2 { path: PathBuf },

    #[error("no cgroup v2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")]
    NoCgroup2,
}

impl From<aya::EbpfError> for Error {
    fn from(err: aya::EbpfError) -> Self {
        Self::Load(Box::new(err))
    }
}
