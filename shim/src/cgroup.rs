//! The container's cgroup v2 directory: what recording filters on.
//!
//! On a pure cgroup v2 host libcontainer already puts the container in its
//! own cgroup and the shim just looks it up. On a hybrid host (v1
//! controllers, v2 mounted at `/sys/fs/cgroup/unified` without controllers)
//! libcontainer only uses v1, so every container would share the v2 root
//! (cgroup id 1). There the shim creates
//! `/sys/fs/cgroup/unified/diffkeeper/<namespace>/<id>` itself and moves the
//! init process in; its children inherit it. Metrics still come from the
//! controllers libcontainer manages, through libcgroups.

use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageDyn;
use libcgroups::common::{CgroupConfig, CgroupManager};
use libcgroups::stats::Stats;

use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";
/// Directory (under the v2 mount) holding the cgroups the shim creates.
const SHIM_PREFIX: &str = "diffkeeper";
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// cgroup v2 only, mounted at `/sys/fs/cgroup`.
    Unified,
    /// v1 controllers plus a controller-less v2 at `/sys/fs/cgroup/unified`.
    Hybrid,
}

impl Layout {
    /// Detects the layout from the filesystem types of the mount points.
    pub(crate) fn detect() -> Result<Self> {
        if is_cgroup2(Path::new(CGROUP_ROOT)) {
            Ok(Layout::Unified)
        } else if is_cgroup2(Path::new(HYBRID_UNIFIED)) {
            Ok(Layout::Hybrid)
        } else {
            Err(Error::io(
                "no cgroup v2 hierarchy (needed to tell containers apart) at",
                HYBRID_UNIFIED,
                io::Error::from(ErrorKind::NotFound),
            ))
        }
    }

    /// Where the v2 hierarchy is mounted.
    fn mount_point(self) -> &'static Path {
        match self {
            Layout::Unified => Path::new(CGROUP_ROOT),
            Layout::Hybrid => Path::new(HYBRID_UNIFIED),
        }
    }
}

fn is_cgroup2(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|fs| fs.f_type as u64 == CGROUP2_SUPER_MAGIC)
}

/// A container's cgroup v2 directory and its id.
#[derive(Debug, Clone)]
pub(crate) struct ContainerCgroup {
    path: PathBuf,
    id: u64,
    /// Whether the shim created the directory (and so must remove it).
    owned: bool,
}

impl ContainerCgroup {
    /// The directory the shim creates for a container when libcontainer
    /// does not give it its own v2 cgroup.
    pub(crate) fn shim_path(layout: Layout, namespace: &str, id: &str) -> PathBuf {
        layout
            .mount_point()
            .join(SHIM_PREFIX)
            .join(namespace)
            .join(id)
    }

    /// Gives `pid` (the container's init, blocked before exec) its own v2
    /// cgroup and returns it.
    pub(crate) fn attach(layout: Layout, namespace: &str, id: &str, pid: i32) -> Result<Self> {
        if layout == Layout::Unified {
            let own = current_v2_path(pid)?;
            if own != Path::new("/") {
                let path = layout
                    .mount_point()
                    .join(own.strip_prefix("/").unwrap_or(&own));
                return Self::open(path, false);
            }
        }
        let path = Self::shim_path(layout, namespace, id);
        fs::create_dir_all(&path).map_err(|e| Error::io("create cgroup", &path, e))?;
        let cgroup = Self::open(path, true)?;
        if let Err(err) = cgroup.add(pid) {
            cgroup.remove();
            return Err(err);
        }
        Ok(cgroup)
    }

    fn open(path: PathBuf, owned: bool) -> Result<Self> {
        let id = fs::metadata(&path)
            .map_err(|e| Error::io("stat cgroup", &path, e))?
            .ino();
        Ok(Self { path, id, owned })
    }

    /// The cgroup id: the directory's inode.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The `cgroup.procs` file processes join through.
    pub(crate) fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Moves `pid` into the cgroup.
    pub(crate) fn add(&self, pid: i32) -> Result<()> {
        let procs = self.procs_file();
        fs::write(&procs, pid.to_string()).map_err(|e| Error::io("join cgroup", procs, e))
    }

    /// Every process in the cgroup and its descendants.
    pub(crate) fn pids(&self) -> Result<Vec<i32>> {
        let mut pids = Vec::new();
        collect_pids(&self.path, &mut pids)?;
        Ok(pids)
    }

    /// Removes the directory the shim would have created for a container
    /// whose shim is gone (containerd's `delete` action).
    pub(crate) fn remove_shim_dir(layout: Layout, namespace: &str, id: &str) {
        let path = Self::shim_path(layout, namespace, id);
        if path.exists() {
            Self {
                path,
                id: 0,
                owned: true,
            }
            .remove();
        }
    }

    /// Removes the directory if the shim created it. Processes the kernel
    /// has not finished tearing down are killed first (`cgroup.kill`), as
    /// runc does for containers without their own pid namespace; the empty
    /// namespace directory above goes too.
    pub(crate) fn remove(&self) {
        if !self.owned {
            return;
        }
        for attempt in 0..50 {
            match fs::remove_dir(&self.path) {
                Ok(()) => break,
                Err(err) if err.kind() == ErrorKind::NotFound => break,
                Err(err) if attempt == 49 => {
                    tracing::warn!(path = ?self.path, %err, "cgroup left behind");
                    return;
                }
                Err(_) => {
                    let _ = fs::write(self.path.join("cgroup.kill"), "1");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if let Some(namespace_dir) = self.path.parent() {
            // Fails while other containers of the namespace still run: fine.
            let _ = fs::remove_dir(namespace_dir);
        }
    }
}

/// Reads the v2 (`0::`) entry of `/proc/<pid>/cgroup`.
fn current_v2_path(pid: i32) -> Result<PathBuf> {
    let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let content = fs::read_to_string(&file).map_err(|e| Error::io("read", &file, e))?;
    parse_v2_entry(&content).ok_or_else(|| {
        Error::io(
            "no cgroup v2 entry in",
            file,
            io::Error::from(ErrorKind::InvalidData),
        )
    })
}

fn parse_v2_entry(content: &str) -> Option<PathBuf> {
    content
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(PathBuf::from)
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let content = match fs::read_to_string(&procs) {
        Ok(content) => content,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io("read", procs, err)),
    };
    pids.extend(
        content
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok()),
    );
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list cgroup", dir, e))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), pids)?;
        }
    }
    Ok(())
}

/// Metrics of the container's resource-controlling cgroup (`cgroups_path`
/// as libcontainer resolved it), as containerd's cgroups v1 or v2 message.
pub(crate) fn metrics(layout: Layout, cgroups_path: &Path, id: &str) -> Result<Any> {
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: cgroups_path.to_path_buf(),
        systemd_cgroup: false,
        container_name: id.to_owned(),
    })
    .map_err(|e| {
        Error::Runtime(format!(
            "cgroup manager for {}: {e}",
            cgroups_path.display()
        ))
    })?;
    let stats = manager
        .stats()
        .map_err(|e| Error::Runtime(format!("cgroup stats for {}: {e}", cgroups_path.display())))?;
    let message: Box<dyn MessageDyn> = match layout {
        Layout::Unified => Box::new(to_v2(&stats)),
        Layout::Hybrid => Box::new(to_v1(&stats)),
    };
    containerd_shim::util::convert_to_any(message)
        .map_err(|e| Error::Runtime(format!("encode metrics: {e}")))
}

fn to_v1(stats: &Stats) -> v1::Metrics {
    let mut metrics = v1::Metrics::new();
    let pids = metrics.pids.mut_or_insert_default();
    pids.current = stats.pids.current;
    pids.limit = stats.pids.limit;
    let usage = metrics
        .cpu
        .mut_or_insert_default()
        .usage
        .mut_or_insert_default();
    usage.total = stats.cpu.usage.usage_total;
    usage.user = stats.cpu.usage.usage_user;
    usage.kernel = stats.cpu.usage.usage_kernel;
    usage.per_cpu = stats.cpu.usage.per_core_usage_total.clone();
    let memory = metrics.memory.mut_or_insert_default();
    memory.cache = stats.memory.cache;
    let entry = memory.usage.mut_or_insert_default();
    entry.usage = stats.memory.memory.usage;
    entry.max = stats.memory.memory.max_usage;
    entry.limit = stats.memory.memory.limit;
    entry.failcnt = stats.memory.memory.fail_count;
    metrics
}

fn to_v2(stats: &Stats) -> v2::Metrics {
    let mut metrics = v2::Metrics::new();
    let pids = metrics.pids.mut_or_insert_default();
    pids.current = stats.pids.current;
    pids.limit = stats.pids.limit;
    let cpu = metrics.cpu.mut_or_insert_default();
    // libcgroups reports nanoseconds; the v2 message carries microseconds.
    cpu.usage_usec = stats.cpu.usage.usage_total / 1000;
    cpu.user_usec = stats.cpu.usage.usage_user / 1000;
    cpu.system_usec = stats.cpu.usage.usage_kernel / 1000;
    let memory = metrics.memory.mut_or_insert_default();
    memory.usage = stats.memory.memory.usage;
    memory.usage_limit = stats.memory.memory.limit;
    memory.max_usage = stats.memory.memory.max_usage;
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_entry_among_v1_lines() {
        let content = "12:memory:/default/c1\n1:name=systemd:/default/c1\n0::/\n";
        assert_eq!(parse_v2_entry(content), Some(PathBuf::from("/")));
        assert_eq!(
            parse_v2_entry("0::/default/c1\n"),
            Some(PathBuf::from("/default/c1"))
        );
        assert_eq!(parse_v2_entry("3:cpu:/x\n"), None);
    }

    #[test]
    fn shim_cgroups_live_under_the_v2_mount() {
        assert_eq!(
            ContainerCgroup::shim_path(Layout::Hybrid, "default", "c1"),
            Path::new("/sys/fs/cgroup/unified/diffkeeper/default/c1")
        );
        assert_eq!(
            ContainerCgroup::shim_path(Layout::Unified, "k8s.io", "c1"),
            Path::new("/sys/fs/cgroup/diffkeeper/k8s.io/c1")
        );
    }

    #[test]
    fn v1_metrics_carry_memory_and_pids() {
        let mut stats = Stats::default();
        stats.pids.current = 3;
        stats.memory.memory.usage = 4096;
        stats.cpu.usage.usage_total = 7;
        let metrics = to_v1(&stats);
        assert_eq!(metrics.pids.current, 3);
        assert_eq!(metrics.memory.usage.usage, 4096);
        assert_eq!(metrics.cpu.usage.total, 7);
    }
}
