//! `containerd-shim-diffkeeper-v1`: the containerd runtime
//! `io.containerd.diffkeeper.v1`, running containers with youki's
//! libcontainer and giving each one a cgroup v2 directory a recorder can
//! filter on ([`ContainerObserver`]).
//!
//! Layout: [`bootstrap`](crate::bootstrap) (command line, both task API
//! versions), `service` (the task API), `instance` (containers and their
//! processes), `helper` (the single-threaded process libcontainer runs
//! in), `reaper`, `stdio`, `logging` (containerd's log URIs), `events`,
//! `cgroup`, `spec` and `error`.

mod bootstrap;
mod cgroup;
mod error;
mod events;
mod helper;
mod instance;
mod logging;
mod observer;
mod reaper;
mod service;
mod spec;
mod stdio;

pub use bootstrap::main;
pub use error::{Error, Result};
pub use events::{EventSink, RemoteEvents};
pub use observer::{ContainerInfo, ContainerObserver, ExitInfo, NoopObserver, ObserverError};
pub use service::TaskService;
