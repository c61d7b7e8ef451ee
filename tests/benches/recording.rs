//! The cost of recording a write-heavy container (bench/workload.sh: small
//! file churn, an appending log, in-place rewrites of a 64 MiB file) under
//! our runtime, against runc's shim in the same run. Prints a table:
//! workload time ratio, shim (and recorder) CPU relative to the workload's,
//! bytes stored per byte written, events and gaps.
//!
//! `cargo bench -p diffkeeper-tests --bench recording` (root, containerd).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diffkeeper_tests::{
    cli_binary, containerd_with_state_or_skip, leaks, Containerd, DIFFKEEPER_RUNTIME, RUNC_RUNTIME,
    RUNTIMES,
};

const ROUNDS: usize = 9;
const WORKLOAD: &str = include_str!("../../bench/workload.sh");

/// One container run of the workload.
struct Sample {
    /// The workload's own run time, timed inside the container (container
    /// start is `--bench startup`'s subject).
    wall: Duration,
    /// CPU of the workload's processes.
    workload_cpu: Duration,
    /// CPU of the shim process (for ours: with its recorder threads).
    shim_cpu: Duration,
    bytes_written: u64,
    recording_bytes: u64,
    events: usize,
    gaps: usize,
}

fn main() {
    let state = mounted_or_say("tmpfs for containerd's state", Mounted::tmpfs());
    let Some(ctrd) = containerd_with_state_or_skip(state.as_ref().map(|s| s.mount.as_path()))
    else {
        return;
    };
    let scratch = mounted_or_say("scratch ext4", Mounted::ext4());
    let rootfs = match &scratch {
        Some(scratch) => {
            let copy = scratch.mount.join("rootfs");
            run("cp", &[Path::new("-a"), &ctrd.rootfs, &copy]).unwrap();
            copy
        }
        None => ctrd.rootfs.clone(),
    };
    let rootfs = rootfs.as_path();
    std::fs::create_dir_all(rootfs.join("bench")).unwrap();
    std::fs::write(rootfs.join("bench/workload.sh"), WORKLOAD).unwrap();

    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        // Alternate, first one runtime then the other going first, so that
        // drift on a shared machine, and what a run leaves behind for the
        // next (dirty pages, freed inodes), hit both alike.
        let mut order = [0, 1];
        if round % 2 == 1 {
            order.reverse();
        }
        for slot in order {
            let id = format!("w{slot}-{round}");
            samples[slot].push(run_once(&ctrd, rootfs, RUNTIMES[slot], &id));
        }
    }
    let [ours, runc] = &samples;
    let wall = |s: &[Sample]| median(s.iter().map(|s| s.wall.as_secs_f64()).collect());
    let cpu = |s: &[Sample]| median(s.iter().map(|s| s.workload_cpu.as_secs_f64()).collect());
    let shim_share = |s: &[Sample]| {
        median(
            s.iter()
                .map(|s| s.shim_cpu.as_secs_f64() / s.workload_cpu.as_secs_f64())
                .collect(),
        )
    };
    let last = ours.last().expect("a sample");
    println!();
    println!(
        "| metric ({ROUNDS} rounds, medians) | {DIFFKEEPER_RUNTIME} | {RUNC_RUNTIME} | ratio |"
    );
    println!("|---|---|---|---|");
    println!(
        "| workload wall time (goal ratio ≤ 1.10) | {:.2} s | {:.2} s | {:.2} |",
        wall(ours),
        wall(runc),
        wall(ours) / wall(runc)
    );
    println!(
        "| workload CPU | {:.2} s | {:.2} s | {:.2} |",
        cpu(ours),
        cpu(runc),
        cpu(ours) / cpu(runc)
    );
    println!(
        "| shim CPU (ours: with the recorder) / workload CPU | {:.3} | {:.3} | |",
        shim_share(ours),
        shim_share(runc)
    );
    println!(
        "| recording bytes / bytes written (baseline of the rootfs included) | {:.3} | | |",
        last.recording_bytes as f64 / last.bytes_written as f64
    );
    println!(
        "| events recorded / gaps (goal 0) | {} / {} | | |",
        last.events, last.gaps
    );
}

/// A file system mounted for the bench's lifetime, on a directory of its own.
struct Mounted {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    /// A fresh journaled ext4 (a loop-mounted sparse image), where the
    /// containers write. On an ext4 without a journal (this machine's root
    /// file system), allocating an inode skips the ones deleted in the last
    /// minutes, scanning past each (`recently_deleted` in fs/ext4/ialloc.c:
    /// a quarter of the workload's samples), so every run's 2,000 creates
    /// got slower with the deletions of the runs before it (plain workload:
    /// 3.2, 4.2, 5.7 s in a row), which swamped what is measured.
    fn ext4() -> Result<Mounted, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("ext4.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(2 << 30))
            .map_err(|e| e.to_string())?;
        run("mkfs.ext4", &[Path::new("-qF"), &image])?;
        Mounted::at(dir, &[Path::new("-oloop"), &image])
    }

    /// A tmpfs, for containerd's state directory: the bundles, and in them
    /// the live recordings, are in memory on a typical node (`/run` is a
    /// tmpfs under systemd; not on this VM). On disk, each `sync` of the
    /// workload also waits for the recording's writes (`diffkeeper record`
    /// of the workload: 1.15x its plain time with the recording on this
    /// disk, 1.05x on a tmpfs).
    fn tmpfs() -> Result<Mounted, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        Mounted::at(dir, &[Path::new("-ttmpfs"), Path::new("tmpfs")])
    }

    fn at(dir: tempfile::TempDir, source: &[&Path]) -> Result<Mounted, String> {
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let mut args = source.to_vec();
        args.push(&mount);
        run("mount", &args)?;
        Ok(Mounted { mount, _dir: dir })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn run(program: &str, args: &[&Path]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(err) => Err(format!("{program}: {err}")),
    }
}

/// `what` mounted, or `None` (the reason printed) where this machine cannot.
fn mounted_or_say(what: &str, mounted: Result<Mounted, String>) -> Option<Mounted> {
    mounted
        .inspect_err(|err| println!("no {what} ({err}): measured without it"))
        .ok()
}

fn run_once(ctrd: &Containerd, root: &Path, runtime: &str, id: &str) -> Sample {
    let rootfs = root.to_string_lossy().into_owned();
    // The outer shell's children CPU (cutime, cstime) is the workload's;
    // /proc/uptime times it (10 ms resolution; busybox's date has no %N).
    let script = format!(
        "rm -rf /{id}; read start _ < /proc/uptime; sh /bench/workload.sh /{id} > /{id}.out; \
         read end _ < /proc/uptime; echo $start $end > /{id}.time; cat /proc/$$/stat > /{id}.stat"
    );
    ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        runtime,
        "--rootfs",
        &rootfs,
        id,
        "/bin/sh",
        "-c",
        &script,
    ])
    .expect_ok("ctr run -d");
    let shims = leaks::shims_of(&ctrd.address);
    assert_eq!(shims.len(), 1, "{shims:?}");
    let shim = shims[0].pid;
    // Asked rarely: every `ctr` run costs CPU the workload would share.
    assert!(
        ctrd.poll_status(
            id,
            "STOPPED",
            Duration::from_secs(600),
            Duration::from_millis(500)
        ),
        "{runtime}: the workload did not finish\n{}",
        ctrd.log()
    );
    let shim_cpu = cpu_of(
        &std::fs::read_to_string(format!("/proc/{shim}/stat")).unwrap(),
        USER_TIME,
    );
    ctrd.remove(id);

    let workload_cpu = cpu_of(
        &std::fs::read_to_string(root.join(format!("{id}.stat"))).unwrap(),
        CHILDREN_TIME,
    );
    let times = std::fs::read_to_string(root.join(format!("{id}.time"))).unwrap();
    let [start, end] = [0, 1].map(|i| {
        times
            .split_whitespace()
            .nth(i)
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("workload times: {times:?}"))
    });
    let wall = Duration::from_secs_f64(end - start);
    let out = std::fs::read_to_string(root.join(format!("{id}.out"))).unwrap();
    let bytes_written = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("workload output: {out:?}"));
    for leftover in [
        id.to_string(),
        format!("{id}.out"),
        format!("{id}.stat"),
        format!("{id}.time"),
    ] {
        let path = root.join(leftover);
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
    let (recording_bytes, events, gaps) = if runtime == DIFFKEEPER_RUNTIME {
        recording_figures(ctrd, id)
    } else {
        (0, 0, 0)
    };
    Sample {
        wall,
        workload_cpu,
        shim_cpu,
        bytes_written,
        recording_bytes,
        events,
        gaps,
    }
}

/// Size, event count and gap count of container `id`'s recording.
fn recording_figures(ctrd: &Containerd, id: &str) -> (u64, usize, usize) {
    let dir = ctrd.recordings.join(&ctrd.namespace).join(id);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "redb"))
        .unwrap_or_else(|| panic!("no recording in {}", dir.display()));
    let count = |extra: &[&str]| -> usize {
        let out = Command::new(cli_binary().unwrap())
            .arg("timeline")
            .arg(&file)
            .args(extra)
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let events: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        events.len()
    };
    (
        std::fs::metadata(&file).unwrap().len(),
        count(&[]),
        count(&["--op", "gap"]),
    )
}

/// `/proc/*/stat` fields 14 and 15 (utime, stime: `USER_TIME`) or 16 and
/// 17 (cutime, cstime: `CHILDREN_TIME`), added.
fn cpu_of(stat: &str, first_field: usize) -> Duration {
    // Fields are numbered from 1; the text after the command name starts
    // with field 3.
    let after_comm = &stat[stat.rfind(')').expect("stat line") + 2..];
    let fields: Vec<u64> = after_comm
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields[first_field - 3] + fields[first_field - 2];
    // SAFETY: sysconf has no memory effects.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

const USER_TIME: usize = 14;
const CHILDREN_TIME: usize = 16;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
