//! Runs a `ctr` call with a time limit. A call that hangs is the failure
//! hardest to debug after the fact (it happened in CI, never locally), so
//! before killing it the harness prints what every process involved was
//! doing: kernel stacks of the shims and of `ctr`, containerd's goroutines
//! (`SIGUSR1` puts them in its log) and `ctr`'s (`SIGQUIT` puts them on its
//! stderr).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant};

use crate::leaks::shims_of;
use crate::CtrOutput;

/// How long one `ctr` call may take before the harness gives up on it.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// The containerd a `ctr` call talks to, for the hang report.
pub(crate) struct Hung<'a> {
    pub pid: u32,
    pub address: &'a Path,
    pub log: &'a Path,
}

/// A `ctr` process and the readers of its output.
pub(crate) struct Running {
    pub child: Child,
    pub stdout: JoinHandle<Vec<u8>>,
    pub stderr: Option<JoinHandle<Vec<u8>>>,
}

/// Reads `from` to its end (or its first error: a pty master reads `EIO`
/// once the terminal's last user has gone) on a thread.
pub(crate) fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        bytes
    })
}

/// Waits for `running` until [`CTR_TIMEOUT`]; a hung call is reported
/// (see the module docs) and killed, and its output says so.
pub(crate) fn finish(mut running: Running, containerd: &Hung) -> CtrOutput {
    let deadline = Instant::now() + CTR_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        match running.child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
            Ok(None) => {
                timed_out = true;
                report_hang(running.child.id(), containerd);
                signal(running.child.id(), libc::SIGQUIT);
                sleep(Duration::from_secs(2));
                let _ = running.child.kill();
                break running.child.wait().ok();
            }
            Err(_) => break None,
        }
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let stdout = text(running.stdout.join().unwrap_or_default());
    let mut stderr = running
        .stderr
        .map(|reader| text(reader.join().unwrap_or_default()))
        .unwrap_or_default();
    if timed_out {
        stderr.insert_str(
            0,
            &format!("harness: ctr killed after {} s\n", CTR_TIMEOUT.as_secs()),
        );
    }
    CtrOutput {
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        stdout,
        stderr,
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid this harness spawned and a valid signal.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Prints the state of `ctr`, containerd and every shim to stderr (the
/// test's captured output, shown when it fails).
fn report_hang(ctr_pid: u32, containerd: &Hung) {
    let (containerd_pid, containerd_log) = (containerd.pid, containerd.log);
    let mut report = format!("==== harness: ctr (pid {ctr_pid}) hung; process states ====\n");
    for pid in interesting_pids(ctr_pid, containerd) {
        report.push_str(&describe(pid));
    }
    let log_before = fs::metadata(containerd_log).map_or(0, |m| m.len());
    signal(containerd_pid, libc::SIGUSR1);
    sleep(Duration::from_secs(1));
    if let Ok(mut log) = File::open(containerd_log) {
        let mut dump = String::new();
        let _ = std::io::Seek::seek(&mut log, std::io::SeekFrom::Start(log_before));
        let _ = log.read_to_string(&mut dump);
        report.push_str("==== containerd goroutines (SIGUSR1) ====\n");
        report.push_str(&dump.replace("\\n", "\n").replace("\\t", "\t"));
    }
    eprintln!("{report}==== end of hang report ====");
}

/// `ctr`, containerd, and the shims this containerd started.
fn interesting_pids(ctr_pid: u32, containerd: &Hung) -> Vec<u32> {
    let mut pids = vec![ctr_pid, containerd.pid];
    pids.extend(
        shims_of(containerd.address)
            .iter()
            .map(|shim| shim.pid as u32),
    );
    pids
}

/// One process: command line, and per thread its state, wait channel and
/// kernel stack.
fn describe(pid: u32) -> String {
    let proc = Path::new("/proc").join(pid.to_string());
    let cmdline = fs::read(proc.join("cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_else(|_| "(gone)".into());
    let mut text = format!("-- pid {pid}: {cmdline}\n");
    let Ok(tasks) = fs::read_dir(proc.join("task")) else {
        return text;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let read = |name: &str| fs::read_to_string(path.join(name)).unwrap_or_default();
        let stat = read("stat");
        // The state follows the parenthesised comm, which may hold spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?");
        let wchan = read("wchan");
        let wchan = wchan.trim();
        text.push_str(&format!(
            "   tid {} {} state {state} wchan {wchan}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
        ));
        // Threads parked in futex or epoll waits are idle Go or tokio
        // workers; anything else (a pipe, a FIFO open, a mount) is news.
        if !matches!(
            wchan,
            "futex_do_wait" | "do_epoll_wait" | "hrtimer_nanosleep"
        ) {
            for frame in read("stack").lines() {
                text.push_str(&format!("      {frame}\n"));
            }
        }
    }
    text
}
