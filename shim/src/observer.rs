//! The recording hook: what the shim tells a recorder about each container.
//!
//! `prepare` runs as `Create` begins, beside libcontainer's `build()`, so
//! that a recorder's slow setup costs the container's start nothing.
//! `before_start` runs after `build()` returned (the init
//! process exists, sits in its own cgroup v2 directory and is blocked before
//! `exec`) and before `start()` lets it run the workload. Nothing the
//! workload does can happen before the hook returns, so a recorder that
//! attaches its cgroup filter here sees every write from the first one.
//! Events from the runtime's own setup happened before the hook and are not
//! the workload's.

use std::collections::HashMap;
use std::path::PathBuf;

/// What a recorder knows about a container from `Create` on: its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The containerd task id.
    pub id: String,
    /// The containerd namespace (`default`, `k8s.io`, ...).
    pub namespace: String,
    /// The OCI bundle directory containerd created for the task.
    pub bundle: PathBuf,
    /// The container's root filesystem as seen from the host (mounted
    /// by the time of `before_start`, maybe not yet at `prepare`).
    pub rootfs: PathBuf,
    /// `annotations` from the bundle's spec (`io.diffkeeper.*` and others).
    pub annotations: HashMap<String, String>,
    /// The node config file containerd's runtime options name, if any.
    pub config_path: Option<PathBuf>,
}

/// The container once built: its init process, blocked before `exec`, in
/// its own cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProcess {
    /// Inode of the container's cgroup v2 directory: the value
    /// `bpf_get_current_cgroup_id()` returns for its processes.
    pub cgroup_id: u64,
    /// The cgroup v2 directory itself.
    pub cgroup_path: PathBuf,
    /// Host pid of the container's init process.
    pub init_pid: i32,
}

/// Why an observer refused a container.
pub type ObserverError = Box<dyn std::error::Error + Send + Sync>;

/// How a container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code as containerd reports it (128 + signal for signals).
    pub exit_status: u32,
}

/// Receives the lifecycle of every container the shim runs.
///
/// The methods run on the shim's (single-threaded) async runtime: heavy
/// work belongs on threads of the observer's own. `before_start` delays
/// the container's start and `after_exit` the exit containerd sees.
#[async_trait::async_trait]
pub trait ContainerObserver: Send + Sync + 'static {
    /// Called as `Create` begins, while the runtime builds the container:
    /// nothing of it runs yet. Must return at once; setup that needs no
    /// process or cgroup starts here on the observer's own threads, beside
    /// the build. `on_delete` follows even if the build fails.
    fn prepare(&self, _info: &ContainerInfo) {}

    /// Called once the container's cgroup exists and before its workload
    /// runs. An error fails `Create` and the container is torn down.
    async fn before_start(
        &self,
        info: &ContainerInfo,
        process: &ContainerProcess,
    ) -> Result<(), ObserverError>;

    /// Called once the init process has exited and been reaped, before
    /// containerd sees the exit.
    async fn after_exit(&self, info: &ContainerInfo, exit: ExitInfo);

    /// Called on `Delete`, before the rootfs is unmounted and containerd
    /// removes the bundle. Also called for a container that never started.
    async fn on_delete(&self, info: &ContainerInfo);
}

/// An observer that does nothing (shim tests, and recording switched off
/// for the whole shim).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

#[async_trait::async_trait]
impl ContainerObserver for NoopObserver {
    async fn before_start(
        &self,
        _info: &ContainerInfo,
        _process: &ContainerProcess,
    ) -> Result<(), ObserverError> {
        Ok(())
    }

    async fn after_exit(&self, _info: &ContainerInfo, _exit: ExitInfo) {}

    async fn on_delete(&self, _info: &ContainerInfo) {}
}
