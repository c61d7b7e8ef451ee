//! The `diffkeeper` binary against real recordings on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diffkeeper_store::{
    Actor, KubernetesIdentity, Op, RecPath, Recorder, RecorderOptions, RecordingMeta, Subject,
};

const BASE: u64 = 5_000_000_000;

fn ms(n: u64) -> u64 {
    BASE + n * 1_000_000
}

fn meta(id: &str, ns: &str) -> RecordingMeta {
    RecordingMeta {
        subject: Subject {
            kind: "container".into(),
            id: id.into(),
            namespace: ns.into(),
            ..Default::default()
        },
        started_unix_ns: 1_763_000_000_000_000_000,
        mono_base_ns: BASE,
        ..Default::default()
    }
}

/// `<root>/<ns>/<id>/<name>.redb` with a small scripted history.
fn recording(root: &Path, ns: &str, id: &str, name: &str) -> PathBuf {
    let dir = root.join(ns).join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.redb"));
    let mut rec = Recorder::create(&file, &meta(id, ns), RecorderOptions::default()).unwrap();
    let sh = Actor::Process {
        pid: 42,
        tid: 42,
        comm: "sh".into(),
    };
    let write = |rec: &mut Recorder, t, path: &str, data: &[u8]| {
        let path = RecPath::new(path).unwrap();
        let content = rec.store_content(&path, data).unwrap();
        rec.record(ms(t), sh.clone(), Op::Write { path, content })
            .unwrap();
    };
    write(&mut rec, 100, "/app/status.log", b"starting\n");
    write(&mut rec, 1100, "/app/status.log", b"starting\nready\n");
    rec.record_gap(3, ms(1200), ms(1300), "ring buffer full")
        .unwrap();
    write(&mut rec, 2100, "/app/config", b"debug=true\n");
    rec.record(
        ms(2200),
        sh.clone(),
        Op::Unlink {
            path: RecPath::new("/app/config").unwrap(),
        },
    )
    .unwrap();
    rec.finish(Some(1)).unwrap();
    file
}

fn diffkeeper(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffkeeper"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ls_finds_recordings_by_namespace() {
    let root = tempfile::tempdir().unwrap();
    recording(root.path(), "default", "web-1", "2026-11-21T10-00-00Z");
    recording(root.path(), "k8s.io", "db-7f3a", "2026-11-21T11-00-00Z");
    let out = diffkeeper(root.path(), &["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("web-1") && text.contains("db-7f3a") && text.contains("exited 1"),
        "{text}"
    );
    assert!(
        text.contains("incomplete"),
        "the gap makes it incomplete: {text}"
    );

    let out = diffkeeper(root.path(), &["ls", "--namespace", "k8s.io", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["container"], "db-7f3a");
    assert_eq!(rows[0]["events"], 5);
}

#[test]
fn timeline_shows_pids_paths_and_gaps() {
    let root = tempfile::tempdir().unwrap();
    recording(root.path(), "default", "web-1", "a");
    let out = diffkeeper(root.path(), &["timeline", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].contains("100ms")
            && lines[0].contains("42 (sh)")
            && lines[0].contains("/app/status.log")
    );
    assert!(
        lines[2].contains("gap") && lines[2].contains("3 events lost"),
        "{}",
        lines[2]
    );
    assert!(
        text.contains("# INCOMPLETE: 3 events lost: ring buffer full"),
        "{text}"
    );

    let out = diffkeeper(
        root.path(),
        &["timeline", "web-1", "--op", "unlink", "--json"],
    );
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["gap", "unlink"], "gaps are always shown");

    let out = diffkeeper(root.path(), &["timeline", "web-1", "--op", "frobnicate"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("expected one of: create, write"),
        "{}",
        stderr(&out)
    );
}

/// `diffkeeper timeline | head`: once the reader is gone, the output stops
/// the way a Unix filter's does (SIGPIPE), not with a panic.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let root = tempfile::tempdir().unwrap();
    recording(root.path(), "default", "web-1", "a");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_diffkeeper"))
        .arg("--root")
        .arg(root.path())
        .args(["timeline", "web-1"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn cat_diff_export_verify() {
    let root = tempfile::tempdir().unwrap();
    let file = recording(root.path(), "default", "web-1", "a");
    let file_arg = file.to_str().unwrap();

    let out = diffkeeper(
        root.path(),
        &["cat", file_arg, "/app/status.log", "--time", "1s"],
    );
    assert_eq!(stdout(&out), "starting\n");
    let out = diffkeeper(
        root.path(),
        &["cat", "web-1", "/app/config", "--time", "latest"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("does not exist at latest"),
        "{}",
        stderr(&out)
    );

    let out = diffkeeper(
        root.path(),
        &["diff", "web-1", "--from", "1s", "--to", "2150ms"],
    );
    assert_eq!(out.status.code(), Some(1), "differences exit 1");
    let text = stdout(&out);
    assert!(
        text.contains("added    /app/config") && text.contains("+ready"),
        "{text}"
    );
    let out = diffkeeper(
        root.path(),
        &["diff", "web-1", "--from", "#0", "--to", "#0"],
    );
    assert_eq!(out.status.code(), Some(0));

    let target = root.path().join("export");
    let target_arg = target.to_str().unwrap();
    let out = diffkeeper(
        root.path(),
        &["export", "web-1", "--time", "2150ms", "--out", target_arg],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(target.join("app/config")).unwrap(),
        b"debug=true\n"
    );
    assert!(
        stderr(&out).contains("lost events 1 time(s)"),
        "{}",
        stderr(&out)
    );
    let out = diffkeeper(root.path(), &["export", "web-1", "--out", target_arg]);
    assert_eq!(out.status.code(), Some(3), "refuses a non-empty target");

    let out = diffkeeper(root.path(), &["verify", "web-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // Damage the recording: verify says so with exit code 1.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(9).position(|w| w == b"starting\n").unwrap();
    bytes[at] = b'S';
    std::fs::write(&file, &bytes).unwrap();
    let out = diffkeeper(root.path(), &["verify", file_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("BAD  version"), "{}", stdout(&out));
}

#[test]
fn ambiguous_and_unknown_ids_are_explained() {
    let root = tempfile::tempdir().unwrap();
    recording(root.path(), "default", "web-1", "a");
    recording(root.path(), "default", "web-2", "a");
    let out = diffkeeper(root.path(), &["timeline", "web"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("matches several containers (default/web-1, default/web-2)"),
        "{}",
        stderr(&out)
    );
    // An exact id is not ambiguous with the longer ids it begins.
    recording(root.path(), "default", "web", "a");
    let out = diffkeeper(root.path(), &["timeline", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = diffkeeper(root.path(), &["timeline", "nope"]);
    assert!(
        stderr(&out).contains("no recording file, directory or container \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn gc_keeps_the_newest_per_container() {
    let root = tempfile::tempdir().unwrap();
    let old = recording(root.path(), "default", "web-1", "2026-11-20T00-00-00Z");
    let new = recording(root.path(), "default", "web-1", "2026-11-21T00-00-00Z");
    let other = recording(root.path(), "default", "db", "2026-11-19T00-00-00Z");
    let out = diffkeeper(root.path(), &["gc", "--keep", "1", "--dry-run"]);
    assert!(stdout(&out).contains("would delete") && old.exists());
    let out = diffkeeper(root.path(), &["gc", "--keep", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!old.exists() && new.exists() && other.exists());
    let absent = root.path().join("no-config.toml");
    let out = diffkeeper(root.path(), &["gc", "--config", absent.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "gc without a rule or config refuses"
    );
    let config = root.path().join("config.toml");
    std::fs::write(&config, "[retention]\nkeep = 1\nmax-age = \"0s\"\n").unwrap();
    let out = diffkeeper(root.path(), &["gc", "--config", config.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("applying the retention in"),
        "{}",
        stdout(&out)
    );
    assert!(
        !new.exists() && !other.exists(),
        "max-age 0s deletes everything"
    );
}

#[test]
fn a_recording_is_readable_while_written() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("live.redb");
    let mut rec =
        Recorder::create(&file, &meta("live", "default"), RecorderOptions::default()).unwrap();
    let path = RecPath::new("/tmp/x").unwrap();
    let content = rec.store_content(&path, b"1").unwrap();
    rec.record(ms(1), Actor::Recorder, Op::Write { path, content })
        .unwrap();
    rec.flush().unwrap();
    let out = diffkeeper(root.path(), &["timeline", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("/tmp/x"));
    drop(rec);
}

/// A recording of a Kubernetes container that wrote `/attempt`.
fn pod_recording(root: &Path, pod: &str, container: &str, restart: u32, started_s: i64) {
    let id = format!("{pod}-{container}-{restart}");
    // Where the shim keeps it: one directory per pod container.
    let dir = root.join("k8s.io").join(format!("shop_{pod}_{container}"));
    std::fs::create_dir_all(&dir).unwrap();
    let started_unix_ns = 1_763_000_000_000_000_000 + started_s * 1_000_000_000;
    let meta = RecordingMeta {
        started_unix_ns,
        kubernetes: Some(KubernetesIdentity {
            pod_namespace: "shop".into(),
            pod_name: pod.into(),
            pod_uid: format!("{pod}-uid"),
            container_name: container.into(),
            sandbox_id: format!("{pod}-sandbox"),
            restart_count: Some(restart),
        }),
        ..meta(&id, "k8s.io")
    };
    let started = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(started_unix_ns as u64);
    let file = dir.join(diffkeeper_recorder::recording_file_name(started));
    let mut rec = Recorder::create(&file, &meta, RecorderOptions::default()).unwrap();
    let path = RecPath::new("/attempt").unwrap();
    let content = rec
        .store_content(&path, format!("{container} {restart}\n").as_bytes())
        .unwrap();
    rec.record(ms(100), Actor::Unknown, Op::Write { path, content })
        .unwrap();
    rec.finish(Some(1)).unwrap();
}

#[test]
fn pod_recordings_are_selected_by_pod_container_and_previous() {
    let root = tempfile::tempdir().unwrap();
    pod_recording(root.path(), "web", "app", 0, 10);
    pod_recording(root.path(), "web", "sidecar", 0, 11);
    pod_recording(root.path(), "web", "app", 1, 20);
    pod_recording(root.path(), "db", "app", 0, 30);
    let cat = |args: &[&str]| {
        let out = diffkeeper(root.path(), &[&["cat"][..], args, &["/attempt"]].concat());
        (out.status.code(), stdout(&out), stderr(&out))
    };
    let web_app = ["--pod", "shop/web", "--container", "app"];
    assert_eq!(cat(&web_app).1, "app 1\n", "the newest instance");
    assert_eq!(cat(&[&web_app[..], &["--previous"]].concat()).1, "app 0\n");
    assert_eq!(
        cat(&["--pod", "shop/db"]).1,
        "app 0\n",
        "one container: no --container needed"
    );
    let (code, _, err) = cat(&["--pod", "shop/web"]);
    assert_eq!(code, Some(3));
    assert!(
        err.contains("app, sidecar") && err.contains("--container"),
        "{err}"
    );
    let (code, _, err) = cat(&["--pod", "shop/db", "--previous"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("one recording only"), "{err}");
    let (code, _, err) = cat(&["--pod", "shop"]);
    assert_eq!(code, Some(2), "a pod is NAMESPACE/NAME");
    assert!(err.contains("NAMESPACE/NAME"), "{err}");

    let ls = |args: &[&str]| -> Vec<String> {
        let out = diffkeeper(root.path(), &[&["ls", "--json"][..], args].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["container"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ls(&["--pod", "shop/web"]),
        ["web-app-0", "web-sidecar-0", "web-app-1"]
    );
    assert_eq!(
        ls(&["--pod", "shop/web", "--container", "app"]),
        ["web-app-0", "web-app-1"]
    );
    assert_eq!(ls(&["--pod", "shop/web", "--previous"]), ["web-app-0"]);
    assert_eq!(
        ls(&["--previous"]),
        ["web-app-0"],
        "only web/app was restarted"
    );
    let text = stdout(&diffkeeper(root.path(), &["ls", "--pod", "shop/web"]));
    assert!(
        text.contains("POD/CONTAINER") && text.contains("shop/web/app#1"),
        "{text}"
    );
}
