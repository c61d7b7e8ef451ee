//! Shared by the probe's root-only suites: the project-wide e2e skip rule, the
//! workload helper binary, and cleanup guards.

use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diffkeeper_probe::{ChildCgroup, Event, Op, Probe, ProbeConfig, Record, Watch};

/// The e2e skip convention: without the capability a test prints
/// `SKIP: <reason>` and passes, unless `DIFFKEEPER_REQUIRE_E2E=1` (CI), where
/// it fails. Returns whether the test can run.
pub fn e2e_ready() -> bool {
    let Some(reason) = missing_capability() else {
        return true;
    };
    skip(&reason);
    false
}

pub use diffkeeper_test_support::skip;

fn missing_capability() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("eBPF and cgroup tests need root".into());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    diffkeeper_probe::cgroup2_root()
        .err()
        .map(|e| e.to_string())
}

/// The scripted-workload binary built alongside the tests.
pub fn workload() -> &'static str {
    env!("CARGO_BIN_EXE_dk-probe-workload")
}

/// A cgroup name unique to this test process and call, directly under the
/// cgroup v2 root so nothing is left behind.
pub fn unique_cgroup(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("diffkeeper-probe-test-{tag}-{}-{n}", std::process::id())
}

/// A fresh cgroup named after `tag`, watched through the host's probe set
/// (`config`: the default one unless a test needs its own ring size).
pub fn watched_cgroup(tag: &str, config: ProbeConfig) -> (ChildCgroup, Watch) {
    let probe = Probe::load(config).expect("load the probe");
    let cgroup = ChildCgroup::create(unique_cgroup(tag)).expect("cgroup");
    let watch = probe.watch(cgroup.id()).expect("watch");
    (cgroup, watch)
}

/// Kills and reaps the child if the test fails before it exits, so its
/// cgroup can be removed.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Records up to and including the exit of process `pid`, then whatever is
/// still buffered.
pub async fn records_until_exit(watch: &mut Watch, pid: u32) -> Vec<Record> {
    let mut records = Vec::new();
    loop {
        let record = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("no exit event within 30s")
            .expect("the watch ended");
        let done = matches!(&record, Record::Event(e) if e.op == Op::Exit && e.pid == pid);
        records.push(record);
        if done {
            break;
        }
    }
    while let Some(record) = watch.try_next() {
        records.push(record);
    }
    records
}

pub fn events(records: &[Record]) -> Vec<&Event> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            Record::Gap(_) => None,
        })
        .collect()
}
