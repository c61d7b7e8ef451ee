//! The recorder: probe events in, a recording out.
//!
//! - [`Session`] turns each probe [`Record`](diffkeeper_probe::Record) into
//!   store events. Metadata operations are recorded as they happen; file
//!   content is read at the natural moments (close after a write, fsync,
//!   msync, rename over, exec of a written file) or after a debounce for
//!   files held open, and stored through the store's delta engines.
//! - [`RootView`] reads a path's content inside the recorded root without
//!   ever leaving it (symlinks resolve inside the root).
//! - [`PathFilter`] applies the include/exclude globs.
//! - [`BaselineScan`] reads the starting tree on its own thread, so the
//!   workload's start is never delayed; entries a workload changed before
//!   the scan reached them are left out (their start state is unknown).
//! - [`Archive`] is the recordings root: where finished recordings are
//!   kept and which of them retention deletes.
//! - [`run`] drives a session from a probe [`Watch`](diffkeeper_probe::Watch)
//!   until told to stop, then drains what the kernel already reported.
//!
//! docs/recording.md says what consistency a recorded version has.

mod archive;
mod baseline;
mod driver;
mod filter;
mod root;
mod session;

pub use archive::{
    container_key, create_private_dir, pod_container_of, recording_file_name, recordings_in,
    Archive, ArchiveError, Archived,
};
pub use baseline::{BaselineItem, BaselineScan, EntryKind};
pub use driver::run;
pub use filter::PathFilter;
pub use root::{RootView, Snapshot};
pub use session::{Session, SessionOptions};

/// How a recording made with `watch`'s backend is captured, with what it
/// cannot see (docs/probe.md, docs/recording.md); kept in each recording's
/// metadata and shown by `diffkeeper timeline`.
pub fn capture_of(watch: &diffkeeper_probe::AnyWatch) -> diffkeeper_store::Capture {
    let (backend, blind_spots) = match watch {
        diffkeeper_probe::AnyWatch::Ebpf(_) => ("ebpf", EBPF_BLIND_SPOTS),
        diffkeeper_probe::AnyWatch::Fanotify(_) => ("fanotify", FANOTIFY_BLIND_SPOTS),
        diffkeeper_probe::AnyWatch::Inotify(_) => ("inotify", INOTIFY_BLIND_SPOTS),
    };
    diffkeeper_store::Capture {
        backend: backend.into(),
        limits: blind_spots.iter().map(|s| s.to_string()).collect(),
    }
}

const INOTIFY_BLIND_SPOTS: &[&str] = &[
    "no pids: every change is by an unknown process",
    "no exec or exit events",
    "writes are coalesced: content is read at close or after the debounce",
    "stores through a shared mapping until close or the debounce",
    "entries of a directory created and filled before its watch existed appear at the scan, not when made",
    "losses are counted only as \"some\" (the kernel's queue overflowed)",
];

const FANOTIFY_BLIND_SPOTS: &[&str] = &[
    "a process is named only if the recorder runs as root and it still exists when its change is read; threads are not told apart",
    "no exec or exit events",
    "writes are coalesced: content is read at close or after the debounce",
    "stores through a shared mapping until close or the debounce",
    "entries of a directory created and filled before its mark existed appear at the scan, not when made",
    "losses are counted only as \"some\" (the kernel's queue overflowed)",
];

const EBPF_BLIND_SPOTS: &[&str] = &[
    "writes through io_uring",
    "stores through a shared mapping until msync, close or the debounce",
    "a file created and removed faster than the recorder can read it (only the removal)",
];
