//! The project-wide skip convention for end-to-end tests.
//!
//! A test that cannot run because the machine lacks a capability prints
//! `SKIP: <reason>` and returns, unless `DIFFKEEPER_REQUIRE_E2E=1` (set by
//! CI), in which case it fails.

use std::path::Path;
use std::process::Command;

/// Reports a skipped test, or panics when end-to-end tests are required.
pub fn skip(reason: &str) {
    if std::env::var("DIFFKEEPER_REQUIRE_E2E").is_ok_and(|v| v == "1") {
        panic!("DIFFKEEPER_REQUIRE_E2E=1 but the test cannot run: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Why containerd end-to-end tests cannot run here, if they cannot.
pub fn e2e_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (mounts, cgroups, containerd)".into());
    }
    for tool in ["containerd", "ctr", "busybox", "script", "tar", "sha256sum"] {
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
