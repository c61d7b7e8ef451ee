//! Recording under a real containerd: a container runs a script of file
//! changes, exits 1, is removed, and the `diffkeeper` CLI reads its past
//! back: exports at four times (whole filesystem and changes only), the
//! timeline with pids, verify and diff. Then the same on an imported OCI
//! image (overlayfs), a shim killed with SIGKILL, a bad annotation and
//! recording switched off.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diffkeeper_tests::{
    containerd_or_skip, leaks, readme, Containerd, CtrOutput, DIFFKEEPER_RUNTIME,
};

/// Where the script notes the pid behind each change: never recorded.
const PIDS_EXCLUDED: &str = "io.diffkeeper.exclude=/proc/**,/sys/**,/dev/**,/pids,/pids/**";

/// About one second per phase. Each child command notes its pid, then
/// `exec`s, so the pid that made the change is known.
const SCRIPT: &str = r#"
set -e
mkdir /pids
note() { sh -c "echo $1 \$\$ >> /pids/log; shift; exec \"\$@\"" -- "$@"; }
echo sh $$ >> /pids/log
note mkdir0 mkdir /work
cd /work
echo one > status.log
echo 'line 1' >> app.log
echo old > target.txt
echo new > incoming.txt
echo doomed > doomed.txt
echo hello > mode.txt
sleep 1
echo two > status.log
echo 'line 2' >> app.log
note mv mv incoming.txt target.txt
note rm rm doomed.txt
sleep 1
echo three > status.log
note mkdir mkdir /work/dir
note ln ln -s ../status.log /work/dir/link
note chmod chmod 600 mode.txt
cat /pids/log
exit 1
"#;

/// One file-system entry: what it is, its permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(PathBuf),
}

type Tree = BTreeMap<PathBuf, Entry>;

/// Every entry below `root`, keyed by its path inside (`skip` subtrees
/// are left out, their roots kept).
fn walk(root: &Path, skip_below: &[&str]) -> Tree {
    fn visit(root: &Path, dir: &Path, skip_below: &[&str], tree: &mut Tree) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                Entry::Symlink(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                if !skip_below.iter().any(|s| rel == Path::new(s)) {
                    visit(root, &path, skip_below, tree);
                }
                Entry::Dir(mode)
            } else {
                Entry::File(mode, std::fs::read(&path).unwrap())
            };
            tree.insert(rel, kind);
        }
    }
    let mut tree = Tree::new();
    visit(root, root, skip_below, &mut tree);
    tree
}

/// A readable account of how two trees differ.
fn tree_diff(want: &Tree, got: &Tree) -> String {
    let mut out = String::new();
    for (path, entry) in want {
        match got.get(path) {
            None => out.push_str(&format!("missing {}: {entry:?}\n", path.display())),
            Some(other) if other != entry => out.push_str(&format!(
                "differs {}: want {entry:?}, got {other:?}\n",
                path.display()
            )),
            _ => {}
        }
    }
    for (path, entry) in got {
        if !want.contains_key(path) {
            out.push_str(&format!("extra {}: {entry:?}\n", path.display()));
        }
    }
    out
}

fn file(mode: u32, text: &str) -> Entry {
    Entry::File(mode, text.as_bytes().to_vec())
}

/// `/work` as the script left it after phase `phase` (1, 2 or 3).
fn work_after(phase: u32) -> Tree {
    let mut tree = Tree::new();
    let mut put = |path: &str, entry: Entry| {
        tree.insert(PathBuf::from(path), entry);
    };
    put("work", Entry::Dir(0o755));
    put("work/mode.txt", file(0o644, "hello\n"));
    match phase {
        1 => {
            put("work/status.log", file(0o644, "one\n"));
            put("work/app.log", file(0o644, "line 1\n"));
            put("work/target.txt", file(0o644, "old\n"));
            put("work/incoming.txt", file(0o644, "new\n"));
            put("work/doomed.txt", file(0o644, "doomed\n"));
        }
        _ => {
            put(
                "work/status.log",
                file(0o644, if phase == 2 { "two\n" } else { "three\n" }),
            );
            put("work/app.log", file(0o644, "line 1\nline 2\n"));
            put("work/target.txt", file(0o644, "new\n"));
        }
    }
    if phase == 3 {
        put("work/dir", Entry::Dir(0o755));
        put("work/dir/link", Entry::Symlink("../status.log".into()));
        put("work/mode.txt", file(0o600, "hello\n"));
    }
    tree
}

struct Cli<'a> {
    ctrd: &'a Containerd,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> CtrOutput {
        self.ctrd.diffkeeper(args)
    }

    fn ok(&self, args: &[&str]) -> CtrOutput {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "diffkeeper {args:?}: {out:?}");
        out
    }

    fn export(&self, id: &str, time: &str, changes_only: bool) -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let out_arg = out.to_string_lossy().into_owned();
        let ns = self.ctrd.namespace.clone();
        let mut args = vec!["export", id, "-n", &ns, "--time", time, "--out", &out_arg];
        if changes_only {
            args.push("--changes-only");
        }
        self.ok(&args);
        let tree = walk(&out, &[]);
        (dir, tree)
    }
}

/// `ctr run --rm` under our runtime with one annotation: `source` is an
/// image reference, or `["--rootfs", dir]`; the command is `sh -c script`.
fn run_annotated(
    ctrd: &Containerd,
    annotation: &str,
    source: &[&str],
    id: &str,
    script: &str,
) -> CtrOutput {
    let mut args = vec![
        "run",
        "--rm",
        "--runtime",
        DIFFKEEPER_RUNTIME,
        "--annotation",
        annotation,
    ];
    args.extend_from_slice(source);
    args.extend_from_slice(&[id, "/bin/sh", "-c", script]);
    ctrd.ctr(&args)
}

/// Runs the script in container `id` (`ctr_run`: the rootfs or image
/// arguments), checks it exited 1, and checks what the CLI reads back.
/// `rootfs_after` gives the container's final tree (`/work` and `/pids`
/// are ignored).
fn check_scenario(ctrd: &Containerd, id: &str, ctr_run: &[&str], rootfs_after: impl Fn() -> Tree) {
    let out = run_annotated(ctrd, PIDS_EXCLUDED, ctr_run, id, SCRIPT);
    assert_eq!(out.code, Some(1), "{out:?}\n{}", ctrd.log());
    let cli = Cli { ctrd };
    let ns = ctrd.namespace.as_str();

    // After `ctr run --rm`, the recording is in the recordings root, 0600.
    let listed = cli.ok(&["ls", "-n", ns, "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["container"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {}", listed.stdout));
    assert_eq!(row["state"], "exited 1", "{row}");
    let file = PathBuf::from(row["path"].as_str().unwrap());
    assert!(file.starts_with(&ctrd.recordings), "{}", file.display());
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.is_file(), "the recording is a file, not a link");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let dir_mode = std::fs::metadata(file.parent().unwrap()).unwrap().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);

    // Whole filesystem at four times.
    // Excluded subtrees (the default /proc, /sys, /dev) are left out of
    // exports, their top directories too.
    let outside: Tree = rootfs_after()
        .into_iter()
        .filter(|(path, _)| {
            !["work", "pids", "proc", "sys", "dev"]
                .iter()
                .any(|top| path.starts_with(top))
        })
        .collect();
    let history = cli.ok(&["timeline", id, "-n", ns]).stdout;
    for (time, phase) in [("0.5s", 1), ("1.5s", 2), ("2.5s", 3), ("latest", 3)] {
        let mut want = outside.clone();
        want.extend(work_after(phase));
        let (_dir, got) = cli.export(id, time, false);
        let diff = tree_diff(&want, &got);
        assert!(diff.is_empty(), "export at {time}:\n{diff}\n{history}");

        let (_dir, got) = cli.export(id, time, true);
        let diff = tree_diff(&work_after(phase), &got);
        assert!(
            diff.is_empty(),
            "export --changes-only at {time}:\n{diff}\n{history}"
        );
    }

    // Every operation, with the pid that made it.
    let pids: BTreeMap<String, u64> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_owned(), pid.trim().parse().ok()?))
        })
        .collect();
    assert_eq!(pids.len(), 7, "the script noted its pids: {}", out.stdout);
    let timeline = cli.ok(&["timeline", id, "-n", ns, "--json"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&timeline.stdout).unwrap();
    let made = |op: &str, path: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["op"] == op && e["paths"][0] == path)
            .map(|e| e["pid"].as_u64().unwrap())
            .collect()
    };
    let sh = pids["sh"];
    assert_eq!(
        made("mkdir", "/work"),
        [pids["mkdir0"]],
        "{}",
        timeline.stdout
    );
    assert_eq!(made("create", "/work/status.log"), [sh]);
    assert_eq!(
        made("write", "/work/status.log"),
        [sh, sh],
        "{}",
        timeline.stdout
    );
    assert_eq!(made("create", "/work/app.log"), [sh]);
    assert_eq!(made("write", "/work/app.log"), [sh]);
    assert_eq!(made("rename", "/work/incoming.txt"), [pids["mv"]]);
    assert_eq!(made("unlink", "/work/doomed.txt"), [pids["rm"]]);
    assert_eq!(made("mkdir", "/work/dir"), [pids["mkdir"]]);
    assert_eq!(made("symlink", "/work/dir/link"), [pids["ln"]]);
    assert_eq!(made("chmod", "/work/mode.txt"), [pids["chmod"]]);
    assert!(
        events
            .iter()
            .all(|e| !e["paths"].to_string().contains("/pids")),
        "excluded paths are not recorded"
    );

    let verify = cli.run(&["verify", id, "-n", ns]);
    assert_eq!(verify.code, Some(0), "{verify:?}");

    let diff = cli.run(&[
        "diff", id, "-n", ns, "--from", "0.5s", "--to", "1.5s", "--json",
    ]);
    assert_eq!(diff.code, Some(1), "differences exit 1: {diff:?}");
    for expected in [
        "/work/status.log",
        "/work/app.log",
        "/work/target.txt",
        "/work/incoming.txt",
        "/work/doomed.txt",
    ] {
        assert!(
            diff.stdout.contains(expected),
            "diff lacks {expected}: {}",
            diff.stdout
        );
    }
    assert!(!diff.stdout.contains("/work/mode.txt"), "{}", diff.stdout);
}

#[test]
fn records_a_container_and_exports_its_past() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let rootfs = ctrd.rootfs.clone();
    let rootfs_arg = rootfs.to_string_lossy().into_owned();
    check_scenario(&ctrd, "flaky", &["--rootfs", &rootfs_arg], || {
        walk(&rootfs, &["proc", "sys", "dev"])
    });
    assert!(leaks::shims_of(&ctrd.address).is_empty());
}

#[test]
fn records_an_oci_image_container() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let image = ctrd.import_test_image();
    // The snapshot is gone after `--rm`; its tree was the image's (the
    // busybox rootfs and the image's marker) plus the mount point of
    // containerd's default /run tmpfs.
    let mut start = walk(&ctrd.rootfs, &["proc", "sys", "dev"]);
    start.insert(PathBuf::from("run"), Entry::Dir(0o755));
    start.insert(
        PathBuf::from("etc/diffkeeper-image"),
        file(0o644, "from-image\n"),
    );
    check_scenario(&ctrd, "img", &[&image.reference], move || start.clone());
}

#[test]
fn a_killed_shim_leaves_a_recording_that_verifies() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let rootfs = ctrd.rootfs.to_string_lossy().into_owned();
    let script = "mkdir /kept; for i in 1 2 3 4 5; do echo $i > /kept/$i; done; sleep 600";
    ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        DIFFKEEPER_RUNTIME,
        "--rootfs",
        &rootfs,
        "victim",
        "/bin/sh",
        "-c",
        script,
    ])
    .expect_ok("run -d");
    let cli = Cli { ctrd: &ctrd };
    // Wait until the writes are committed (the timeline reads the live file).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let timeline = cli.run(&["timeline", "victim", "-n", &ctrd.namespace, "--json"]);
        if timeline.code == Some(0) && timeline.stdout.contains("/kept/5") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recorded: {timeline:?}\n{}",
            ctrd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shims = leaks::shims_of(&ctrd.address);
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill(2) has no memory effects.
    assert_eq!(unsafe { libc::kill(shims[0].pid, libc::SIGKILL) }, 0);
    // containerd notices, runs `shim delete`, and reports the task gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctrd
        .tasks()
        .iter()
        .any(|(id, _, status)| id == "victim" && status == "RUNNING")
    {
        assert!(
            Instant::now() < deadline,
            "the task outlived its shim\n{}",
            ctrd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ctrd.remove("victim");

    let recordings = recording_files(&ctrd.recordings);
    assert_eq!(recordings.len(), 1, "{recordings:?}\n{}", ctrd.log());
    assert!(!recordings[0].is_symlink(), "moved out of the bundle");
    let verify = cli.run(&["verify", "victim", "-n", &ctrd.namespace]);
    assert_eq!(verify.code, Some(0), "{verify:?}");
    let (_dir, tree) = cli.export("victim", "latest", true);
    for i in 1..=5 {
        assert_eq!(
            tree.get(&PathBuf::from(format!("kept/{i}"))),
            Some(&file(0o644, &format!("{i}\n"))),
            "{tree:?}"
        );
    }
    let listed = cli.ok(&["ls", "-n", &ctrd.namespace]);
    assert!(listed.stdout.contains("cut short"), "{}", listed.stdout);
}

/// Every file or link under a recordings root.
fn recording_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for ns in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for container in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            for entry in std::fs::read_dir(container.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                found.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn annotations_and_runtime_options_configure_recording() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let rootfs = ctrd.rootfs.to_string_lossy().into_owned();
    let run = |id: &str, annotation: &str| {
        run_annotated(
            &ctrd,
            annotation,
            &["--rootfs", &rootfs],
            id,
            "echo ran > /ran; exit 0",
        )
    };
    let out = run("bad", "io.diffkeeper.debounce=soon");
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("io.diffkeeper.debounce") && out.stderr.contains("soon"),
        "the error names the key and the value: {}",
        out.stderr
    );
    assert!(
        !ctrd.rootfs.join("ran").exists(),
        "the container did not run"
    );
    let out = run("typo", "io.diffkeeper.recrod=false");
    assert_ne!(out.code, Some(0), "an unknown key is refused: {out:?}");
    assert!(
        out.stderr.contains("io.diffkeeper.recrod"),
        "{}",
        out.stderr
    );
    assert!(
        !ctrd.rootfs.join("ran").exists(),
        "the container did not run"
    );
    ctrd.remove("bad");
    ctrd.remove("typo");

    let out = run("quiet", "io.diffkeeper.record=false");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(ctrd.rootfs.join("ran").exists());
    assert!(
        recording_files(&ctrd.recordings).is_empty(),
        "no recording of a container with recording off"
    );

    // containerd's runtime options (`ctr --runtime-config-path`, `ConfigPath`
    // in containerd's config) name another node config.
    let elsewhere = ctrd.dir.join("elsewhere");
    let config = ctrd.dir.join("elsewhere.toml");
    std::fs::write(
        &config,
        format!("recordings-root = {:?}\n", elsewhere.display().to_string()),
    )
    .unwrap();
    let config_arg = config.to_string_lossy().into_owned();
    ctrd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        DIFFKEEPER_RUNTIME,
        "--runtime-config-path",
        &config_arg,
        "--rootfs",
        &rootfs,
        "other",
        "/bin/sh",
        "-c",
        "echo x > /x",
    ])
    .expect_ok("run with runtime options");
    assert_eq!(recording_files(&elsewhere).len(), 1, "{}", ctrd.log());
}

#[test]
fn a_container_restored_from_a_recording_starts_from_that_moment() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let image = ctrd.import_test_image();
    // Three states a second apart; the container dies in the third.
    let script = "echo v1 > /state; mkdir /data; echo one > /data/a; sleep 1; \
                  echo v2 > /state; rm /data/a; echo two > /data/b; sleep 1; \
                  echo v3 > /state; echo three > /data/b; sleep 600";
    ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        DIFFKEEPER_RUNTIME,
        &image.reference,
        "crashy",
        "/bin/sh",
        "-c",
        script,
    ])
    .expect_ok("run -d");
    std::thread::sleep(Duration::from_millis(2500));
    ctrd.remove("crashy");

    let run_restored = |id: &str, from: &str| {
        run_annotated(
            &ctrd,
            &format!("io.diffkeeper.restore-from={from}"),
            &[&image.reference],
            id,
            "cat /state; ls /data; cat /data/*",
        )
    };
    let out = run_restored("again", "crashy@1.5s");
    assert_eq!(out.code, Some(0), "{out:?}\n{}", ctrd.log());
    assert_eq!(out.stdout, "v2\nb\ntwo\n", "{out:?}");
    // The restored container has a recording of its own, starting from
    // the restored state.
    let cli = Cli { ctrd: &ctrd };
    let first = cli.ok(&[
        "cat",
        "again",
        "/state",
        "--time",
        "0s",
        "-n",
        &ctrd.namespace,
    ]);
    assert_eq!(first.stdout, "v2\n", "{first:?}");

    for (from, why) in [
        ("crashy@99s", "ends at"),
        ("nosuch@1s", "no recording of container \"nosuch\""),
        ("crashy", "expected <recording>@<time>"),
    ] {
        let out = run_restored("refused", from);
        assert_ne!(out.code, Some(0), "{from}: {out:?}");
        assert!(out.stderr.contains(why), "{from}: {out:?}");
        let _ = ctrd.ctr(&["container", "rm", "refused"]);
    }
}

/// Without eBPF: the same script under each fallback. inotify cannot tell
/// who changed a file; fanotify tells the pid of a process still alive when
/// its event is read (the shell, which lives on, is; `mkdir` may not be).
#[test]
fn the_fallbacks_record_a_container() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let image = ctrd.import_test_image();
    let script = "mkdir /app; echo one > /app/state; sleep 1; echo two > /app/state; \
                  sleep 0.5; mv /app/state /app/final; rm /etc/diffkeeper-image";
    for backend in ["inotify", "fanotify"] {
        let id = backend;
        let out = run_annotated(
            &ctrd,
            &format!("io.diffkeeper.capture={backend}"),
            &[&image.reference],
            id,
            script,
        );
        assert_eq!(out.code, Some(0), "{out:?}\n{}", ctrd.log());
        let cli = Cli { ctrd: &ctrd };
        let ns = ctrd.namespace.as_str();
        let timeline = cli.ok(&["timeline", id, "-n", ns]);
        assert!(
            timeline
                .stdout
                .contains(&format!("# captured by {backend}")),
            "{timeline:?}"
        );
        let json = cli.ok(&["timeline", id, "-n", ns, "--json"]);
        let events: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        let events = events.as_array().unwrap();
        let ops: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e["op"] != "write")
            .map(|e| (e["op"].as_str().unwrap(), e["paths"][0].as_str().unwrap()))
            .collect();
        assert_eq!(
            ops,
            [
                ("mkdir", "/app"),
                ("create", "/app/state"),
                ("rename", "/app/state"),
                ("unlink", "/etc/diffkeeper-image"),
            ],
            "{backend}: {json:?}"
        );
        let created = events.iter().find(|e| e["op"] == "create").unwrap();
        match backend {
            "inotify" => assert!(events.iter().all(|e| e["by"] == "unknown"), "{json:?}"),
            _ => {
                // The shell's second write, read at its close: the shell is
                // the container's pid 1, in its own namespace.
                let second = events
                    .iter()
                    .find(|e| e["op"] == "write" && e["paths"][0] == "/app/state")
                    .unwrap_or_else(|| panic!("{json:?}"));
                assert_eq!(
                    (&second["by"], &second["pid"], &second["comm"]),
                    (&"process".into(), &1.into(), &"sh".into()),
                    "{json:?}"
                );
            }
        }
        // Half-way through the sleep: the first content.
        let created_ms = created["offset_ms"].as_f64().unwrap();
        let time = format!("{}ms", created_ms as u64 + 500);
        let first = cli.ok(&["cat", id, "/app/state", "--time", &time, "-n", ns]);
        assert_eq!(first.stdout, "one\n", "{backend}");
        let last = cli.ok(&["cat", id, "/app/final", "-n", ns]);
        assert_eq!(last.stdout, "two\n", "{backend}");
        cli.ok(&["verify", id, "-n", ns]);
    }
}

/// The README's `diffkeeper` commands, as written, each block in a
/// directory of its own as a reader would type it: reading a container's
/// recording (`web-1`), and recording `cargo test` then exporting its
/// trace. The pod commands run in `cri_e2e`.
#[test]
fn the_readmes_commands_work_as_written() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let image = ctrd.import_test_image();
    let script = "echo 'listen 80' > /etc/app.conf; sleep 0.3; echo 'listen 8080' > /etc/app.conf";
    let out = run_annotated(
        &ctrd,
        "io.diffkeeper.debounce=100ms",
        &[&image.reference],
        "web-1",
        script,
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", ctrd.log());

    let blocks: Vec<_> = readme::diffkeeper_blocks()
        .into_iter()
        .filter(|block| !block.iter().any(|c| readme::by_pod(c)))
        .collect();
    let mut ran = Vec::new();
    for block in &blocks {
        let dir = tempfile::tempdir().unwrap();
        if block.iter().any(|c| c[0] == "record") {
            flaky_crate(dir.path());
        }
        for command in block {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            let out = ctrd.diffkeeper_in(dir.path(), &args);
            // `record` exits with the command's code: a failing `cargo test`'s.
            let expected = if args[0] == "record" { 101 } else { 0 };
            assert_eq!(out.code, Some(expected), "diffkeeper {args:?}: {out:?}");
            match args[0] {
                "timeline" => assert!(out.stdout.contains("/etc/app.conf"), "{out:?}"),
                "cat" => assert_eq!(out.stdout, "listen 8080\n"),
                _ => {}
            }
            ran.push(args[0].to_owned());
        }
        let debug_fs = dir.path().join("debug_fs");
        if block.iter().any(|c| c[0] == "record") {
            let work = dir.path().canonicalize().unwrap();
            let state = debug_fs
                .join(work.strip_prefix("/").unwrap())
                .join("state.txt");
            assert_eq!(std::fs::read_to_string(&state).unwrap(), "half-way\n");
        } else if block.iter().any(|c| c[0] == "export") {
            let conf = std::fs::read_to_string(debug_fs.join("etc/app.conf")).unwrap();
            assert_eq!(conf, "listen 8080\n");
        }
    }
    ran.sort();
    ran.dedup();
    assert_eq!(
        ran,
        ["cat", "diff", "export", "gc", "ls", "record", "timeline", "verify"],
        "the README's commands changed: {blocks:?}"
    );
    // `gc` kept the young recording.
    let cli = Cli { ctrd: &ctrd };
    cli.ok(&["verify", "web-1"]);
}

/// A crate whose test fails after writing a file: what a flaky test leaves.
fn flaky_crate(dir: &Path) {
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"flaky\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "#[test]\nfn flakes() {\n    std::fs::write(\"state.txt\", \"half-way\\n\").unwrap();\n    panic!(\"flaked\");\n}\n",
    )
    .unwrap();
}
