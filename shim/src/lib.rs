//! `containerd-shim-diffkeeper-v1`: the containerd runtime
//! `io.containerd.diffkeeper.v1`, running containers with youki's
//! libcontainer and recording each one ([`FlightRecorder`], a
//! [`ContainerObserver`] told about every container's lifecycle).
//!
//! Layout: [`bootstrap`](crate::bootstrap) (command line, both task API
//! versions), `service` (the task API), `recording` (the recorder thread
//! of each container, the move to the recordings root), `restore`
//! (starting from a recorded moment), `instance` (containers and their
//! processes), `helper` (the single-threaded process libcontainer runs
//! in), `reaper`, `stdio`, `logging` (containerd's log URIs), `events`,
//! `options` (containerd's runtime options), `cri` (what Kubernetes says
//! about a pod's containers), `cgroup`, `spec` and `error`.

mod bootstrap;
mod cgroup;
mod cri;
mod error;
mod events;
mod helper;
mod instance;
mod logging;
mod observer;
mod options;
mod reaper;
mod recording;
mod restore;
mod service;
mod spec;
mod stdio;

pub use bootstrap::main;
pub use error::{Error, Result};
pub use events::{EventSink, RemoteEvents};
pub use observer::{
    ContainerInfo, ContainerObserver, ContainerProcess, ExitInfo, NoopObserver, ObserverError,
};
pub use recording::FlightRecorder;
pub use service::TaskService;
