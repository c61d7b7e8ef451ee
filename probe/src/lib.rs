//! eBPF capture of every file change made inside a cgroup.
//!
//! One set of tracepoint programs per host ([`Probe::load`]) routes each
//! watched cgroup's events to that watcher's own ring buffer
//! ([`Probe::watch`] → [`Watch`], or [`Probe::ring`] ahead of time →
//! [`Ring::watch`]); unwatched tasks pay one map lookup per
//! traced syscall. Events carry full paths relative to the container's root,
//! resolved in the kernel; losses arrive as [`Gap`]s, never silently.
//! Where eBPF is not available, [`InotifyWatch`] yields the same records
//! with less in them; both are a [`Source`].
//! docs/probe.md describes the design, the record layout and what is not seen.

mod abi;
mod cgroup;
mod error;
mod event;
mod fanotify;
mod inotify;
mod probe;
mod ring;
mod source;
mod sys;
mod tree;
mod watch;

pub use abi::EVENT_VERSION;
pub use cgroup::{cgroup2_root, cgroup_id_of, ChildCgroup};
pub use error::Error;
pub use event::{Event, Gap, Op, PathFlags, Record};
pub use fanotify::FanotifyWatch;
pub use inotify::InotifyWatch;
pub use probe::{Probe, ProbeConfig, DEFAULT_PIN_ROOT};
pub use ring::Ring;
pub use source::{AnyWatch, Source};
pub use watch::{MergedWrites, Watch};

// A recorder moves its Watch into a tokio task and shares the Probe.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_and_sync::<Probe>();
    send::<Watch>();
    send_and_sync::<MergedWrites>();
    send::<Ring>();
    send::<InotifyWatch>();
};
