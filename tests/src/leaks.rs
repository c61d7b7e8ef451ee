//! What a container can leave behind on the host, for leak assertions.

use std::fs;
use std::path::{Path, PathBuf};

/// A shim process serving a given containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimProcess {
    pub pid: i32,
    /// Its ttrpc socket file, when on its command line (ours; runc's
    /// server derives it).
    pub socket: Option<PathBuf>,
}

/// Shim processes started by the containerd listening on `address`.
pub fn shims_of(address: &Path) -> Vec<ShimProcess> {
    let address = address.to_string_lossy();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let value = |flag: &str| {
                let at = args.iter().position(|a| a == flag)?;
                args.get(at + 1).cloned()
            };
            if value("-address")? != address {
                return None;
            }
            let socket = value("-socket").map(|s| PathBuf::from(s.trim_start_matches("unix://")));
            Some(ShimProcess { pid, socket })
        })
        .collect()
}

/// The shim sockets of a namespace's tasks, from the `address` file each
/// shim writes into its bundle (`<state>/io.containerd.runtime.v2.task`).
pub fn task_sockets(state: &Path, namespace: &str) -> Vec<PathBuf> {
    list(&state.join("io.containerd.runtime.v2.task").join(namespace))
        .iter()
        .filter_map(|bundle| fs::read_to_string(bundle.join("address")).ok())
        .map(|address| PathBuf::from(address.trim().trim_start_matches("unix://")))
        .collect()
}

/// Mount points at or below `dir` in the host mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(dir))
        .collect()
}

/// cgroup directories the DiffKeeper shim created for `namespace`.
pub fn shim_cgroups(namespace: &str) -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/unified/diffkeeper",
        "/sys/fs/cgroup/diffkeeper",
    ]
    .iter()
    .map(|root| Path::new(root).join(namespace))
    .flat_map(|dir| list(&dir))
    .filter(|path| path.is_dir())
    .collect()
}

/// libcontainer state directories left for `namespace`.
pub fn libcontainer_states(namespace: &str) -> Vec<PathBuf> {
    list(&Path::new("/run/diffkeeper/libcontainer").join(namespace))
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

fn list(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}
