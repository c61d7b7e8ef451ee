//! What the containerd suites need from the machine; the skip rule itself
//! is `diffkeeper_test_support::skip`.

use std::path::Path;
use std::process::Command;

pub use diffkeeper_test_support::skip;

/// Why containerd end-to-end tests cannot run here, if they cannot.
pub fn e2e_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (mounts, cgroups, containerd)".into());
    }
    for tool in ["containerd", "ctr", "busybox", "tar", "sha256sum"] {
        if !on_path(tool) {
            return Some(format!("`{tool}` not found on PATH"));
        }
    }
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        && !Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
    {
        return Some("no cgroup v2 hierarchy mounted".into());
    }
    None
}

/// Whether `tool` is an executable on `PATH`.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|out| out.status.success())
}
