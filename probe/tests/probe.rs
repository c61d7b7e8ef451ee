//! The probe against the real kernel: real cgroups, real eBPF, as root.
//!
//! Every test shares the host's pinned programs (the production path) and
//! watches a cgroup of its own, so they run in parallel threads.

mod support;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use diffkeeper_probe::{ChildCgroup, Event, Op, Probe, ProbeConfig, Record};
use support::{
    e2e_ready, events, records_until_exit, unique_cgroup, watched_cgroup, workload, Reaped,
};

/// Directory levels of the script's deep-path step (src/bin/dk-probe-workload.rs).
const DEEP_LEVELS: usize = 70;

/// One expected event: operation, path, second path, and for writes and
/// truncates the byte range, as one comparable line.
fn line(op: Op, path: &Path, path2: Option<&Path>, range: Option<(u64, u64)>) -> String {
    let mut line = format!(
        "{op:?} {}",
        String::from_utf8_lossy(path.as_os_str().as_bytes())
    );
    if let Some(path2) = path2 {
        line += &format!(
            " -> {}",
            String::from_utf8_lossy(path2.as_os_str().as_bytes())
        );
    }
    if let Some((offset, len)) = range {
        line += &format!(" @{offset}+{len}");
    }
    line
}

fn got_line(event: &Event) -> String {
    let range = match event.op {
        Op::Write => Some((event.offset, event.len)),
        Op::Truncate => Some((0, event.len)),
        _ => None,
    };
    line(event.op, &event.path, event.path2.as_deref(), range)
}

/// What `dk-probe-workload script dir` does, in order (see its source).
fn expected_script(dir: &Path) -> Vec<String> {
    let exe = std::fs::canonicalize(workload()).expect("workload binary");
    let d = |rel: &str| dir.join(rel);
    let sub = |rel: &str| dir.join("sub").join(rel);
    let mut out = vec![line(Op::Exec, &exe, Some(Path::new(workload())), None)];
    let mut push = |op, path: PathBuf| out.push(line(op, &path, None, None));
    push(Op::Open, d("a.txt"));
    let a = d("a.txt");
    // The pwrite at 10 is folded into the first write (same fd); the
    // others go through fresh fds, each closed after.
    let mut lines = vec![line(Op::Write, &a, None, Some((0, 5)))];
    for (offset, len) in [(5, 4), (20, 2), (9, 1)] {
        lines.push(line(Op::Write, &a, None, Some((offset, len))));
        lines.push(line(Op::Close, &a, None, None));
    }
    lines.push(line(Op::Fsync, &a, None, None));
    lines.push(line(Op::Fsync, &a, None, None));
    lines.push(line(Op::Truncate, &a, None, Some((0, 8))));
    for op in [Op::Fallocate, Op::Chmod, Op::Chown, Op::Mmap] {
        lines.push(line(op, &a, None, None));
    }
    lines.push(line(Op::Msync, Path::new(""), None, None));
    lines.push(line(Op::Close, &a, None, None));
    lines.push(line(Op::Mkdir, &d("sub"), None, None));
    for (op, path) in [
        (Op::Open, d("b.txt")),
        (Op::Close, d("b.txt")),
        (Op::Open, sub("c.txt")),
    ] {
        lines.push(line(op, &path, None, None));
    }
    lines.push(line(Op::Write, &sub("c.txt"), None, Some((0, 1))));
    lines.push(line(Op::Close, &sub("c.txt"), None, None));
    lines.push(line(Op::Truncate, &sub("c.txt"), None, Some((0, 0))));
    let pairs = [
        (Op::Rename, sub("c.txt"), sub("d.txt")),
        (Op::Rename, d("a.txt"), sub("a2.txt")),
        (Op::Rename, sub("a2.txt"), d("a.txt")),
        (Op::Link, sub("hard.txt"), sub("d.txt")),
        (Op::Link, sub("hard2.txt"), d("a.txt")),
        (Op::Symlink, sub("sym"), PathBuf::from("d.txt")),
        (Op::Symlink, d("sym2"), PathBuf::from("/etc/hostname")),
    ];
    for (op, path, path2) in pairs {
        lines.push(line(op, &path, Some(&path2), None));
    }
    for (op, path) in [
        (Op::Chmod, sub("d.txt")),
        (Op::Chmod, d("a.txt")),
        (Op::Chmod, d("a.txt")),
        (Op::Chown, sub("d.txt")),
        (Op::Chown, sub("sym")),
        (Op::Chown, d("a.txt")),
    ] {
        lines.push(line(op, &path, None, None));
    }
    let odd = dir
        .join("sub")
        .join(std::ffi::OsStr::from_bytes(b"n\xffame"));
    let long = sub(&"L".repeat(255));
    for path in [odd, long] {
        lines.push(line(Op::Open, &path, None, None));
        lines.push(line(Op::Close, &path, None, None));
    }
    let mut deep = sub("");
    for _ in 0..DEEP_LEVELS {
        deep.push("x");
        lines.push(line(Op::Mkdir, &deep, None, None));
    }
    lines.push(line(Op::Open, &deep.join("deep.txt"), None, None));
    lines.push(line(Op::Close, &deep.join("deep.txt"), None, None));
    for (op, path) in [
        (Op::Unlink, sub("d.txt")),
        (Op::Unlink, d("sym2")),
        (Op::Mkdir, sub("e")),
        (Op::Rmdir, sub("e")),
        (Op::Mkdir, d("f")),
        (Op::Rmdir, d("f")),
        (Op::Open, sub("copy.txt")),
    ] {
        lines.push(line(op, &path, None, None));
    }
    lines.push(line(Op::Write, &sub("copy.txt"), None, Some((0, 1))));
    for range in [(1, 1), (2, 3)] {
        lines.push(line(Op::Write, &sub("copy.txt"), None, Some(range)));
        lines.push(line(Op::Close, &sub("copy.txt"), None, None));
    }
    for (op, path) in [
        (Op::Close, sub("copy.txt")),
        (Op::Open, sub("o2.txt")),
        (Op::Close, sub("o2.txt")),
    ] {
        lines.push(line(op, &path, None, None));
    }
    out.extend(lines);
    out.push(line(Op::Exit, Path::new(""), None, None));
    out
}

/// Compares received events with the script, accepting a walk-truncated path
/// (flagged) where it is a suffix of the expected one.
fn assert_script(events: &[&Event], dir: &Path) {
    let expected = expected_script(dir);
    let mut got = Vec::new();
    let mut truncated = 0;
    for (i, event) in events.iter().enumerate() {
        let line = got_line(event);
        let want = expected.get(i).cloned().unwrap_or_default();
        if event.path_flags.truncated {
            truncated += 1;
            let suffix = line.split_once(' ').map_or("", |(_, rest)| rest);
            assert!(
                want.ends_with(suffix),
                "event {i}: {line:?} is not a suffix of {want:?}"
            );
            got.push(want);
        } else {
            got.push(line);
        }
    }
    if got != expected {
        let first = got.iter().zip(&expected).position(|(g, e)| g != e);
        let at = first.unwrap_or(got.len().min(expected.len()));
        let show = |lines: &[String]| -> Vec<String> {
            lines
                .iter()
                .skip(at.saturating_sub(2))
                .take(6)
                .cloned()
                .collect()
        };
        panic!(
            "{} events received, {} expected; first difference at {at}:\n got:  {:#?}\n want: {:#?}",
            got.len(),
            expected.len(),
            show(&got),
            show(&expected),
        );
    }
    let deep_open = events
        .iter()
        .find(|e| e.op == Op::Open && e.path.ends_with("deep.txt"))
        .expect("the deep open");
    assert!(
        deep_open.path_flags.truncated,
        "a 74-component path must be flagged: {deep_open:?}"
    );
    assert!(truncated >= 1);
    assert!(
        events.iter().all(|e| !e.path_flags.outside_root),
        "{events:#?}"
    );
}

fn script_command(dir: &Path) -> Command {
    let mut command = Command::new(workload());
    command
        .arg("script")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_in_a_cgroup_reports_every_operation_in_order_with_full_paths() {
    if !e2e_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (cgroup, mut watch) = watched_cgroup("script", ProbeConfig::default());

    let mut command = script_command(dir.path());
    cgroup.spawn_inside(&mut command);
    let mut child = Reaped(command.spawn().expect("spawn the script"));
    let pid = child.0.id();
    let records = records_until_exit(&mut watch, pid).await;
    assert!(child.0.wait().expect("wait").success(), "the script failed");

    assert!(
        records.iter().all(|r| matches!(r, Record::Event(_))),
        "gaps: {records:?}"
    );
    let events = events(&records);
    assert!(events
        .iter()
        .all(|e| e.pid == pid && e.cgroup_id == cgroup.id()));
    assert_script(&events, dir.path());
    let exit = events.last().expect("events");
    assert_eq!((exit.op, exit.ret), (Op::Exit, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_outside_the_watched_cgroup_produces_no_events() {
    if !e2e_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (cgroup, mut watch) = watched_cgroup("outside", ProbeConfig::default());

    // The same script, in the test's own cgroup: nothing may arrive.
    let outside = script_command(dir.path()).status().expect("run the script");
    assert!(outside.success());

    // A marker inside the cgroup: everything before it would have been outside.
    let marker = dir.path().join("marker");
    let mut command = Command::new(workload());
    command.arg("writes").arg(&marker).arg("1").arg("1");
    cgroup.spawn_inside(&mut command);
    let mut child = Reaped(command.spawn().expect("spawn the marker"));
    let pid = child.0.id();
    let records = records_until_exit(&mut watch, pid).await;
    assert!(child.0.wait().expect("wait").success());
    let events = events(&records);
    assert!(
        events.iter().all(|e| e.pid == pid),
        "events from outside the cgroup: {events:#?}"
    );
    let ops: Vec<Op> = events.iter().map(|e| e.op).collect();
    assert_eq!(ops, [Op::Exec, Op::Open, Op::Write, Op::Close, Op::Exit]);
    assert_eq!(events[1].path, marker);
}

/// Writes through an fd after a reported one are folded into it until the
/// reader asks for the next one (`MergedWrites`), which is then reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_reported_one_are_folded_until_the_reader_asks() {
    if !e2e_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("log");
    let (cgroup, mut watch) = watched_cgroup("merged", ProbeConfig::default());
    let merged = watch.merged_writes();
    let mut command = Command::new(workload());
    command.arg("relay").arg(&file).stdin(Stdio::piped());
    cgroup.spawn_inside(&mut command);
    let mut child = Reaped(command.spawn().expect("spawn"));
    let pid = child.0.id();
    let mut stdin = child.0.stdin.take().expect("stdin");
    let mut relay = |line: &[u8], content: &[u8]| {
        std::io::Write::write_all(&mut stdin, line).expect("tell the child");
        let written = (0..250).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::read(&file).is_ok_and(|c| c == content)
        });
        assert!(written, "{file:?} never held {content:?}");
    };
    relay(b"a\n", b"a\n");
    relay(b"b\n", b"a\nb\n");
    let early = records_so_far(&mut watch);
    let writes = |records: &[Record]| -> Vec<(u64, u64)> {
        events(records)
            .iter()
            .filter(|e| e.op == Op::Write && e.path == file)
            .map(|e| (e.offset, e.len))
            .collect()
    };
    assert_eq!(writes(&early), [(0, 2)], "b is folded into a");
    let fd = events(&early)
        .iter()
        .find(|e| e.op == Op::Write)
        .expect("the first write is reported")
        .fd;
    // As a recorder does before reading the file.
    merged
        .report_next_write(pid, fd)
        .expect("report the next write");
    relay(b"c\n", b"a\nb\nc\n");
    drop(stdin);
    let records = records_until_exit(&mut watch, pid).await;
    assert!(child.0.wait().expect("wait").success());
    assert_eq!(writes(&records), [(4, 2)], "asked for, c is reported");
}

/// A write through a new fd is reported even if the fd's number last
/// belonged to a file closed unseen, whose `struct file` the new one may
/// reuse: the open clears what the probe knew about the number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_fd_under_a_reused_number_reports_its_first_write() {
    if !e2e_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let [a, b] = ["a", "b"].map(|name| dir.path().join(name));
    let (cgroup, mut watch) = watched_cgroup("reopen", ProbeConfig::default());
    let mut command = Command::new(workload());
    command.arg("reopen").arg(&a).arg(&b);
    cgroup.spawn_inside(&mut command);
    let mut child = Reaped(command.spawn().expect("spawn"));
    let pid = child.0.id();
    let records = records_until_exit(&mut watch, pid).await;
    assert!(child.0.wait().expect("wait").success());
    let written: Vec<&Path> = events(&records)
        .iter()
        .filter(|e| e.op == Op::Write)
        .map(|e| e.path.as_path())
        .collect();
    assert_eq!(written, [a.as_path(), b.as_path()]);
}

/// The records waiting now.
fn records_so_far(watch: &mut diffkeeper_probe::Watch) -> Vec<Record> {
    std::iter::from_fn(|| watch.try_next()).collect()
}

/// Parses `dk-probe-workload watch` output: (child pid, cgroup id, event lines).
fn parse_watcher(output: &str) -> (u32, u64, Vec<(u64, u32)>) {
    let mut lines = output.lines();
    let header: Vec<&str> = lines.next().expect("header").split(' ').collect();
    let (pid, cgroup) = match header.as_slice() {
        ["child", pid, "cgroup", id] => (pid.parse().unwrap(), id.parse().unwrap()),
        other => panic!("unexpected header {other:?}"),
    };
    let mut events = Vec::new();
    let mut ended = false;
    for line in lines {
        let fields: Vec<&str> = line.splitn(5, ' ').collect();
        match fields.as_slice() {
            ["event", cgroup, pid, ..] => {
                events.push((cgroup.parse().unwrap(), pid.parse().unwrap()))
            }
            ["end"] => ended = true,
            other => panic!("unexpected line {other:?} in\n{output}"),
        }
    }
    assert!(ended, "watcher did not finish:\n{output}");
    (pid, cgroup, events)
}

#[test]
fn two_watchers_in_two_processes_each_receive_only_their_own_events() {
    if !e2e_ready() {
        return;
    }
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Both run at once; each removes its own cgroup when its script is done.
    let watchers: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            Command::new(workload())
                .arg("watch")
                .arg(unique_cgroup(&format!("pair{i}")))
                .arg("--")
                .arg(workload())
                .arg("script")
                .arg(dir.path())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a watcher")
        })
        .collect();
    let mut seen = Vec::new();
    for (watcher, dir) in watchers.into_iter().zip(&dirs) {
        let output = watcher.wait_with_output().expect("watcher output");
        assert!(output.status.success(), "watcher failed");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (pid, cgroup, events) = parse_watcher(&text);
        assert!(
            events.iter().all(|&(c, p)| c == cgroup && p == pid),
            "foreign events in\n{text}"
        );
        assert_eq!(events.len(), expected_script(dir.path()).len(), "{text}");
        seen.push((pid, cgroup));
    }
    assert_ne!(seen[0], seen[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ring_buffer_is_reported_as_gaps_and_nothing_is_invented() {
    if !e2e_ready() {
        return;
    }
    const APPENDS: u64 = 7_000;
    let config = ProbeConfig {
        ring_buffer_bytes: 4096,
        ..ProbeConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (cgroup, mut watch) = watched_cgroup("overflow", config);

    let file = dir.path().join("burst");
    let mut command = Command::new(workload());
    command.arg("appends").arg(&file).arg(APPENDS.to_string());
    cgroup.spawn_inside(&mut command);
    // Nobody reads while the burst runs: the 4 KiB ring must overflow.
    let status = Reaped(command.spawn().expect("spawn"))
        .0
        .wait()
        .expect("wait");
    assert!(status.success());

    let mut records = Vec::new();
    while let Some(record) = watch.try_next() {
        records.push(record);
    }
    let lost: u64 = records
        .iter()
        .map(|r| match r {
            Record::Gap(gap) => {
                assert!(gap.count > 0 && gap.from_ns <= gap.to_ns, "{gap:?}");
                gap.count
            }
            Record::Event(_) => 0,
        })
        .sum();
    let events = events(&records);
    assert!(lost > 0, "no gap reported for {APPENDS} appends into 4 KiB");
    // exec, (open, write, close) per append, exit: each either received or
    // counted lost.
    assert_eq!(
        events.len() as u64 + lost,
        3 * APPENDS + 2,
        "received {} + lost {lost}",
        events.len()
    );
    let mut offsets: Vec<u64> = events
        .iter()
        .filter(|e| e.op == Op::Write)
        .map(|e| {
            assert_eq!((e.path.as_path(), e.len), (file.as_path(), 1));
            e.offset
        })
        .collect();
    let received = offsets.len();
    offsets.dedup();
    assert_eq!(offsets.len(), received, "a write was reported twice");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]) && offsets.iter().all(|&o| o < APPENDS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_relative_to_the_task_root_and_fds_from_outside_it_are_flagged() {
    if !e2e_ready() {
        return;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        support::skip("no /bin/busybox (apt package busybox-static)");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("bin")).unwrap();
    std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
    let logs = tempfile::tempdir().expect("tempdir");
    let stdout = std::fs::File::create(logs.path().join("stdout")).unwrap();
    let (cgroup, mut watch) = watched_cgroup("chroot", ProbeConfig::default());

    // A container in miniature: its root is `root`, its stdout a host file.
    let mut command = Command::new("chroot");
    command
        .arg(root.path())
        .args(["/bin/busybox", "sh", "-c"])
        .arg("cd /; echo data > f; /bin/busybox mkdir d; /bin/busybox mv f d/g; echo out")
        .stdout(stdout);
    cgroup.spawn_inside(&mut command);
    let mut child = Reaped(command.spawn().expect("spawn chroot"));
    let pid = child.0.id();
    let records = records_until_exit(&mut watch, pid).await;
    assert!(child.0.wait().expect("wait").success());
    let events = events(&records);

    let inside: Vec<String> = events
        .iter()
        .filter(|e| !e.path_flags.outside_root && e.op != Op::Exec && e.op != Op::Exit)
        .map(|e| got_line(e))
        .collect();
    // The shell's redirection dup2()s the file onto stdout and closes the
    // original fd first, so its Close comes before the Write: not asserted.
    let wanted = ["Open /f", "Write /f @0+5", "Mkdir /d", "Rename /f -> /d/g"];
    let mut position = 0;
    for want in wanted {
        position += inside[position..]
            .iter()
            .position(|line| line == want)
            .unwrap_or_else(|| panic!("{want:?} missing or out of order in {inside:#?}"))
            + 1;
    }
    let host = root.path().to_string_lossy().into_owned();
    assert!(
        inside.iter().all(|line| !line.contains(&host)),
        "host paths: {inside:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.op == Op::Write && e.path_flags.outside_root && e.len == 4),
        "the write to the inherited host stdout must be flagged: {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_has_one_watcher_and_a_dead_watchers_claim_is_released() {
    if !e2e_ready() {
        return;
    }
    let probe = Probe::load(ProbeConfig::default()).expect("load the probe");
    let cgroup = ChildCgroup::create(unique_cgroup("claim")).expect("cgroup");
    let first = probe.watch(cgroup.id()).expect("watch");
    let second = probe.watch(cgroup.id());
    assert!(
        matches!(second, Err(diffkeeper_probe::Error::AlreadyWatched(id)) if id == cgroup.id()),
        "{second:?}"
    );
    drop(first);
    drop(probe.watch(cgroup.id()).expect("watch again after drop"));

    // A watcher killed without dropping its Watch leaves its route behind;
    // the next load sees the owner is dead and releases the cgroup.
    let relative = unique_cgroup("killed");
    let mut watcher = Reaped(
        Command::new(workload())
            .args(["watch", &relative, "--", "sleep", "60"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a watcher"),
    );
    let mut header = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(watcher.0.stdout.as_mut().expect("stdout")),
        &mut header,
    )
    .expect("header");
    let fields: Vec<&str> = header.split_whitespace().collect();
    let (sleeper, id): (i32, u64) = match fields.as_slice() {
        ["child", pid, "cgroup", id] => (pid.parse().unwrap(), id.parse().unwrap()),
        other => panic!("unexpected header {other:?}"),
    };
    let rings = ring_buffers_of(watcher.0.id());
    assert_eq!(
        rings.len(),
        1,
        "the watcher holds one ring buffer: {rings:?}"
    );
    drop(watcher); // SIGKILL: no destructor runs
                   // SAFETY: kill(2) on a pid we were just told about; ESRCH is fine.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    let orphan = diffkeeper_probe::cgroup2_root().unwrap().join(&relative);
    let removed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::remove_dir(&orphan).is_ok()
    });
    assert!(removed, "could not remove {orphan:?}");
    let probe = Probe::load(ProbeConfig::default()).expect("load again");
    drop(
        probe
            .watch(id)
            .expect("the dead watcher's claim was released"),
    );
    // Its ring buffer was unregistered too: the kernel frees it (after an
    // RCU grace period) once nothing holds it.
    let freed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        aya::maps::MapInfo::from_id(rings[0]).is_err()
    });
    assert!(
        freed,
        "the dead watcher's ring buffer (map id {}) is still held",
        rings[0]
    );
}

/// A reader that went quiet tells the programs it sleeps (`dk_sleepers` = 1);
/// the next close takes that flag (and wakes it), and it reads the close.
#[test]
fn a_sleeping_reader_is_woken_by_the_next_close_and_reads_it() {
    if !e2e_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("written");
    // The watched child writes the file when told on stdin, then waits again.
    let mut watcher = Reaped(
        Command::new(workload())
            .args(["watch", &unique_cgroup("sleeper"), "--", "sh", "-c"])
            .arg(format!("read go; echo x > {}; read done", file.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a watcher"),
    );
    let mut stdout = std::io::BufReader::new(watcher.0.stdout.take().expect("stdout"));
    let mut header = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut header).expect("header");
    let watcher_pid = watcher.0.id();
    let rings = ring_buffers_of(watcher_pid);
    assert_eq!(rings.len(), 1, "{rings:?}");
    let key = u64::from(watcher_pid) << 32 | u64::from(rings[0]);
    let pin_dir = Probe::load(ProbeConfig::default())
        .expect("load the probe")
        .pin_dir()
        .to_path_buf();
    let flag = || -> u32 {
        let map = aya::maps::MapData::from_pin(pin_dir.join("dk_sleepers"))
            .and_then(aya::maps::Map::from_map_data)
            .expect("open dk_sleepers");
        let sleepers = aya::maps::HashMap::<_, u64, u32>::try_from(map).expect("a hash map");
        sleepers.get(&key, 0).expect("the watcher's sleep flag")
    };
    let wait_for = |want: u32| {
        (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            flag() == want
        })
    };
    assert!(wait_for(1), "a quiet reader announces that it sleeps");

    // Stopped, the reader cannot announce again: what the close leaves is
    // the programs' doing.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(watcher_pid as i32, libc::SIGSTOP) };
    let mut stdin = watcher.0.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"go\n").expect("tell the child");
    let written = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read(&file).is_ok_and(|c| c == b"x\n")
    });
    assert!(written, "the child did not write {file:?}");
    // The child closes the file right after writing it.
    assert!(
        wait_for(0),
        "the close took the sleep flag to wake the reader"
    );
    // SAFETY: as above.
    unsafe { libc::kill(watcher_pid as i32, libc::SIGCONT) };
    std::io::Write::write_all(&mut stdin, b"done\n").expect("tell the child");
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("watcher output");
    assert!(watcher.0.wait().expect("wait").success(), "{rest}");
    let close = format!("Close {}", file.display());
    assert!(
        rest.lines().any(|l| l.ends_with(&close)),
        "no close of {file:?} in\n{rest}"
    );
}

/// Kernel map ids of the ring buffers process `pid` holds open (from the
/// `map_type` and `map_id` lines of its fds' fdinfo).
fn ring_buffers_of(pid: u32) -> Vec<u32> {
    const BPF_MAP_TYPE_RINGBUF: &str = "27";
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo");
    fds.flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| {
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            (field("map_type:")? == BPF_MAP_TYPE_RINGBUF)
                .then(|| field("map_id:")?.parse().ok())
                .flatten()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_a_retired_set_is_refused_not_silent() {
    if !e2e_ready() {
        return;
    }
    // A set of our own, so retiring it disturbs no other test.
    let pin_root = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/diffkeeper-test-retired-{}",
        std::process::id()
    ));
    let config = ProbeConfig {
        pin_root: pin_root.clone(),
        ..ProbeConfig::default()
    };
    let probe = Probe::load(config.clone()).expect("load the probe");
    let cgroup = ChildCgroup::create(unique_cgroup("retired")).expect("cgroup");
    drop(
        probe
            .watch(cgroup.id())
            .expect("watch while the set is live"),
    );
    // What another build's load does to a set nobody watches with.
    Probe::remove_pinned(&pin_root).expect("retire the set");
    let refused = probe.watch(cgroup.id());
    assert!(
        matches!(&refused, Err(diffkeeper_probe::Error::Retired(dir)) if dir.starts_with(&pin_root)),
        "{refused:?}"
    );
    // Loading again installs the set afresh, at the same path: the old
    // probe's maps are still not the pinned ones.
    let again = Probe::load(config).expect("load again");
    drop(again.watch(cgroup.id()).expect("watch through the new set"));
    let stale = probe.watch(cgroup.id());
    assert!(
        matches!(&stale, Err(diffkeeper_probe::Error::Retired(_))),
        "{stale:?}"
    );
    Probe::remove_pinned(&pin_root).expect("clean up");
}
