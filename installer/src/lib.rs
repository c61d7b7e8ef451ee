//! Installs DiffKeeper on a Kubernetes node, the way kata-deploy and
//! runwasi's node-installer do: a privileged DaemonSet pod with the host's
//! root mounted copies the binaries onto the host, registers the runtime in
//! containerd's config and restarts containerd. `docs/kubernetes.md`
//! describes what it changes.
//!
//! Every step reports an [`Outcome`] and changes nothing it finds already
//! in place, so running the installer again is harmless.

mod atomic_file;
mod binaries;
mod containerd_config;
mod outcome;
mod restart;

pub use binaries::{install_binary, remove_binary, BinaryError, BINARIES};
pub use containerd_config::{add_runtime, remove_runtime, ConfigError, Edit, RuntimeEntry};
pub use outcome::Outcome;
pub use restart::{restart_containerd, Restart, RestartError};
