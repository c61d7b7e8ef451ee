//! `diffkeeper record -- CMD` end to end: a real command, the real probe
//! (and the inotify fallback), then the reading commands on what it left.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn diffkeeper(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffkeeper"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// `diffkeeper record` of `sh -c script` in `cwd`, into `trace`, watching `cwd`.
fn record_script(cwd: &Path, backend: &str, options: &[&str], script: &str) -> Output {
    let mut args = vec!["record", "--backend", backend];
    args.extend(options);
    args.extend(["--out", "trace", "--watch", ".", "--", "sh", "-c", script]);
    diffkeeper(cwd, &args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn records_a_command_and_reads_it_back_with_ebpf() {
    if diffkeeper_test_support::lacks_root("recording with eBPF") {
        return;
    }
    record_and_read_back("ebpf");
}

#[test]
fn records_a_command_and_reads_it_back_with_fanotify() {
    if diffkeeper_test_support::lacks_root("recording with fanotify") {
        return;
    }
    record_and_read_back("fanotify");
}

#[test]
fn records_a_command_and_reads_it_back_with_inotify() {
    record_and_read_back("inotify");
}

/// The same scripted workload and the same answers from each backend,
/// within its documented limits (docs/probe.md): inotify names no process
/// and sees no exit, fanotify sees no exit and names a process only while
/// it lives (the shell does; `mkdir` and `rm` may be gone).
fn record_and_read_back(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().canonicalize().unwrap().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("config"), "old config\n").unwrap();
    std::fs::write(work.join("keep.txt"), "original\n").unwrap();

    // The trace directory sits inside the watched one: it must not record
    // itself. The baseline scan runs alongside the command; the first sleep
    // lets it finish before `config` changes (a file changed before the scan
    // reaches it has no recorded starting content: docs/recording.md). The
    // last keeps the shell alive until fanotify's events are read: a
    // process gone by then is unknown (a loaded CI machine lost that race).
    let script = "sleep 0.3; echo new > config; echo data > out.bin; mkdir sub; echo hi > sub/x; rm keep.txt; sleep 0.3; exit 7";
    let out = record_script(&work, backend, &[], script);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sh exited 7"),
        "{}",
        text(&out.stderr)
    );
    let trace = work.join("trace");
    assert_eq!(
        std::fs::metadata(&trace).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let file = std::fs::read_dir(&trace)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = diffkeeper(&work, &["timeline", "trace", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = events.as_array().unwrap();
    let w = work.display().to_string();
    let file_ops: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["paths"].as_array().is_some_and(|p| !p.is_empty()))
        .map(|e| {
            (
                e["op"].as_str().unwrap().to_string(),
                e["paths"][0].as_str().unwrap().replace(&w, ""),
            )
        })
        .collect();
    // How many versions a file gets depends on when the recorder reads it
    // (docs/recording.md); which operations happened, in what order, does not.
    let not_writes: Vec<(&str, &str)> = file_ops
        .iter()
        .filter(|(op, _)| op != "write")
        .map(|(op, path)| (op.as_str(), path.as_str()))
        .collect();
    assert_eq!(
        not_writes,
        [
            ("create", "/out.bin"),
            ("mkdir", "/sub"),
            ("create", "/sub/x"),
            ("unlink", "/keep.txt")
        ],
        "nothing under trace/ either: {file_ops:?}"
    );
    // config was in the baseline, so its change is a write, not a create.
    let config: Vec<&str> = file_ops
        .iter()
        .filter(|(_, p)| p == "/config")
        .map(|(op, _)| op.as_str())
        .collect();
    assert_eq!(config, ["write"]);
    let exit = events
        .iter()
        .any(|e| e["op"] == "exit" && e["detail"] == "code 7");
    let changes_by: Vec<&str> = events
        .iter()
        .filter(|e| e["op"] != "exec" && e["op"] != "exit")
        .map(|e| e["by"].as_str().unwrap())
        .collect();
    if backend == "inotify" {
        assert!(!exit, "{events:?}");
        assert!(
            changes_by.iter().all(|by| *by == "unknown"),
            "{changes_by:?}"
        );
    } else if backend == "fanotify" {
        assert!(!exit, "{events:?}");
        let config_by = events
            .iter()
            .find(|e| e["op"] == "write" && e["paths"][0].as_str() == Some(&format!("{w}/config")))
            .map(|e| (e["by"].as_str(), e["comm"].as_str()));
        assert_eq!(config_by, Some((Some("process"), Some("sh"))), "{events:?}");
    } else {
        assert!(exit, "{events:?}");
        assert!(
            changes_by.iter().all(|by| *by == "process"),
            "{changes_by:?}"
        );
    }
    let header = text(&diffkeeper(&work, &["timeline", "trace"]).stdout);
    assert!(
        header.contains(&format!("# captured by {backend}")),
        "{header}"
    );

    // At the start: the baseline. At the end: what the command left.
    let out = diffkeeper(
        &work,
        &["export", "trace", "--time", "10ms", "--out", "../start"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let start = dir
        .path()
        .join("start")
        .join(work.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(start.join("config")).unwrap(),
        "old config\n"
    );
    assert_eq!(
        std::fs::read_to_string(start.join("keep.txt")).unwrap(),
        "original\n"
    );
    let out = diffkeeper(&work, &["export", "trace", "--out", "../end"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let end = dir.path().join("end").join(work.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(end.join("config")).unwrap(),
        "new\n"
    );
    assert_eq!(std::fs::read_to_string(end.join("sub/x")).unwrap(), "hi\n");
    assert!(!end.join("keep.txt").exists() && !end.join("trace").exists());

    let out = diffkeeper(&work, &["verify", "trace"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

/// Storing a large version takes the recorder a while; the ring buffer
/// must still be drained meanwhile. Here a 64 MiB file is stored while a
/// burst of ~12,000 events (twice what the 1 MiB ring holds) arrives.
#[test]
fn a_burst_while_a_large_version_is_stored_loses_nothing() {
    if diffkeeper_test_support::lacks_root("recording with eBPF") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Then one page of `big` rewritten in place: its version takes over the
    // untouched chunks (the write's range comes from the probe) and must
    // still read back exactly.
    let script = "head -c 67108864 /dev/urandom > big; \
                  i=0; while [ $i -lt 4000 ]; do echo $i >> log; i=$((i + 1)); done; \
                  dd if=/dev/urandom of=big bs=4096 count=1 seek=1000 conv=notrunc 2> /dev/null";
    let options = ["--ring-buffer", "1Mi", "--no-baseline"];
    let out = record_script(dir.path(), "ebpf", &options, script);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = diffkeeper(dir.path(), &["timeline", "trace", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gaps: Vec<&serde_json::Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "gap")
        .collect();
    assert!(gaps.is_empty(), "{gaps:?}");
    let log = dir.path().canonicalize().unwrap().join("log");
    let out = diffkeeper(dir.path(), &["cat", "trace", log.to_str().unwrap()]);
    let expected: String = (0..4000).map(|i| format!("{i}\n")).collect();
    assert!(text(&out.stdout) == expected, "{}", text(&out.stderr));
    let big = dir.path().canonicalize().unwrap().join("big");
    let out = diffkeeper(dir.path(), &["cat", "trace", big.to_str().unwrap()]);
    assert!(
        out.stdout == std::fs::read(&big).unwrap(),
        "{}",
        text(&out.stderr)
    );
}

/// The probe folds writes through an fd into the first one it reported,
/// until the recorder reads the file (docs/probe.md, "Folded writes"). A
/// file held open and written again after the debounce read it must get a
/// second version: the read asked the probe to report the next write.
#[test]
fn a_file_written_again_after_it_was_read_gets_a_new_version() {
    if diffkeeper_test_support::lacks_root("recording with eBPF") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `exec >out`: every echo writes through the same fd, never closed
    // before the shell exits (an exit is no close the probe sees).
    let script = "exec > out; echo a; sleep 0.4; echo b; sleep 0.4";
    let out = record_script(dir.path(), "ebpf", &["--no-baseline"], script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = dir.path().canonicalize().unwrap().join("out");
    let path = path.to_str().unwrap();
    let out = diffkeeper(dir.path(), &["cat", "trace", path]);
    assert_eq!(text(&out.stdout), "a\nb\n", "{}", text(&out.stderr));
    let out = diffkeeper(dir.path(), &["timeline", "trace", "--json", "--path", path]);
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sizes: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["size"].as_u64())
        .collect();
    assert_eq!(sizes, [2, 4], "{events:#?}");
}

#[test]
fn a_killed_command_exits_128_plus_signal() {
    if diffkeeper_test_support::lacks_root("recording with eBPF") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = diffkeeper(
        dir.path(),
        &[
            "record",
            "--out",
            "t",
            "--watch",
            ".",
            "--",
            "sh",
            "-c",
            "echo x > f; kill -9 $$",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let out = diffkeeper(
        dir.path(),
        &[
            "cat",
            "t",
            &format!("{}/f", dir.path().canonicalize().unwrap().display()),
        ],
    );
    assert_eq!(text(&out.stdout), "x\n", "{}", text(&out.stderr));
}

#[test]
fn a_missing_command_is_a_clear_error() {
    if diffkeeper_test_support::lacks_root("recording with eBPF") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = diffkeeper(
        dir.path(),
        &["record", "--out", "t", "--", "/no/such/program"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("starting \"/no/such/program\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_ebpf_auto_falls_back_and_require_ebpf_refuses() {
    if diffkeeper_test_support::lacks_root("switching to an unprivileged user") {
        return;
    }
    // An unprivileged user cannot load eBPF programs: the real reason the
    // fallback exists. Its own copy of the binary, in case the build tree
    // is not reachable by others.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = dir.path().join("diffkeeper");
    std::fs::copy(env!("CARGO_BIN_EXE_diffkeeper"), &exe).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let script = "echo one > f; echo two >> f";
    let out = as_nobody(&[
        "record", "--out", "t", "--watch", ".", "--", "sh", "-c", script,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // fanotify's inode marks need no privilege since Linux 5.13; inotify
    // where it is older. The recording says which.
    let stderr = text(&out.stderr);
    let backend = ["fanotify", "inotify"]
        .into_iter()
        .find(|b| stderr.contains(&format!("recording with {b}")));
    assert!(
        stderr.contains("eBPF unavailable") && backend.is_some(),
        "{stderr}"
    );
    let header = text(&as_nobody(&["timeline", "t"]).stdout);
    assert!(
        header.contains(&format!("# captured by {}", backend.unwrap())),
        "{header}"
    );
    let file = format!("{}/f", dir.path().canonicalize().unwrap().display());
    let out = as_nobody(&["cat", "t", &file]);
    assert_eq!(text(&out.stdout), "one\ntwo\n", "{}", text(&out.stderr));

    let out = as_nobody(&["record", "--require-ebpf", "--out", "u", "--", "true"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("eBPF probe could not be used"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_github_action_step_records_and_passes_the_exit_code() {
    if diffkeeper_test_support::lacks_root("recording with eBPF") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("github-output");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/action.sh");
    let out = Command::new("bash")
        .args([script, "record"])
        .current_dir(dir.path())
        .env("DIFFKEEPER", env!("CARGO_BIN_EXE_diffkeeper"))
        .env("INPUT_RUN", "echo flaky > result; exit 3")
        .env("INPUT_WATCH", ".\n")
        .env("INPUT_OUT", "trace")
        .env("INPUT_ARGS", "--debounce=50ms\n--exclude=**/*.tmp\n")
        .env("GITHUB_OUTPUT", &outputs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&outputs).unwrap(),
        "exit-code=3\nrecording=trace\n"
    );
    let result = format!("{}/result", dir.path().canonicalize().unwrap().display());
    let cat = diffkeeper(dir.path(), &["cat", "trace", &result]);
    assert_eq!(text(&cat.stdout), "flaky\n", "{}", text(&cat.stderr));
}
