//! A real process in a real cgroup under the real probe, recorded into a
//! real store: the recording must hold exactly what the process did.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diffkeeper_probe::{ChildCgroup, Event, InotifyWatch, Op, Probe, ProbeConfig, Record};
use diffkeeper_recorder::{run, PathFilter, RootView, Session, SessionOptions};
use diffkeeper_store::{
    monotonic_now_ns, unix_now_ns, Actor, Capture, ExportOptions, Moment, NodeKind, OpKind,
    RecPath, Recorder, RecorderOptions, Recording, RecordingMeta, Subject, TimelineFilter,
};

/// The sleeps give the recorder time to read a file before the script
/// renames or deletes it: content is read after the fact, so a file created
/// and removed within the recorder's lag shows up only as its removal
/// (docs/recording.md).
const SCRIPT: &str = r#"
echo one > status.log
sleep 0.3
echo two > status.log
echo line1 >> app.log
echo line2 >> app.log
echo x > a
echo y > b
sleep 0.05
mv a b
echo z > gone
sleep 0.05
rm gone
mkdir d
ln -s ../b d/link
chmod 600 b
exit 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_what_a_real_process_did() {
    if diffkeeper_test_support::lacks_root("recording with eBPF") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let work_path = work.path().canonicalize().unwrap();
    let file = out.path().join("rec.redb");

    let probe = Probe::load(ProbeConfig::default()).unwrap();
    let cgroup =
        ChildCgroup::create(format!("diffkeeper-test/recorder-{}", std::process::id())).unwrap();
    let mut watch = probe.watch(cgroup.id()).unwrap();
    let meta = RecordingMeta {
        subject: Subject {
            kind: "command".into(),
            id: "sh -c SCRIPT".into(),
            ..Default::default()
        },
        started_unix_ns: unix_now_ns(),
        mono_base_ns: monotonic_now_ns(),
        capture: Capture {
            backend: "ebpf".into(),
            limits: vec![],
        },
        ..Default::default()
    };
    let store = Recorder::create(&file, &meta, RecorderOptions::default()).unwrap();
    let options = SessionOptions {
        filter: PathFilter::new(&[format!("{}/**", work_path.display())], &[]).unwrap(),
        max_file_size: 1 << 20,
        debounce: Duration::from_millis(100),
        wait_for_exec: true,
    };
    let session = Session::new(store, RootView::open(Path::new("/")).unwrap(), options);

    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(SCRIPT).current_dir(&work_path);
    cgroup.spawn_inside(&mut command);
    let mut child = command.spawn().unwrap();
    let child_pid = child.id();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let status = child.wait().unwrap();
        let _ = done_tx.send(status);
    });
    let (status_tx, status_rx) = std::sync::mpsc::channel();
    let session = run(&mut watch, session, None, async move {
        let status = done_rx.await.unwrap();
        status_tx.send(status).unwrap();
    })
    .await;
    let status = status_rx.recv().unwrap();
    assert_eq!(status.code(), Some(3), "signal: {:?}", status.signal());
    let finished = session.finish(monotonic_now_ns(), status.code()).unwrap();
    assert!(finished.incomplete.is_empty(), "{:?}", finished.incomplete);

    let recording = Recording::open(&file).unwrap();
    assert!(recording.verify().unwrap().is_ok());
    let p = |rel: &str| RecPath::new(format!("{}/{rel}", work_path.display())).unwrap();
    let files = TimelineFilter::default()
        .with_path_globs(&[format!("{}/**", work_path.display())])
        .unwrap();
    let events = recording.timeline(&files).unwrap();
    let summary: Vec<(OpKind, String)> = events
        .iter()
        .map(|e| {
            let rel: Vec<String> =
                e.op.paths()
                    .iter()
                    .map(|p| {
                        p.to_string()
                            .trim_start_matches(&format!("{}/", work_path.display()))
                            .to_string()
                    })
                    .collect();
            (e.op.kind(), rel.join(" -> "))
        })
        .collect();
    // Content is read at close, or after the debounce for fds the shell
    // closed implicitly (dup2), so how many versions a file gets depends on
    // timing; what is not written, and its order, does not.
    let not_writes: Vec<(OpKind, String)> = summary
        .iter()
        .filter(|(k, _)| *k != OpKind::Write)
        .cloned()
        .collect();
    let expected: Vec<(OpKind, String)> = [
        (OpKind::Create, "status.log"),
        (OpKind::Create, "app.log"),
        (OpKind::Create, "a"),
        (OpKind::Create, "b"),
        (OpKind::Rename, "a -> b"),
        (OpKind::Create, "gone"),
        (OpKind::Unlink, "gone"),
        (OpKind::Mkdir, "d"),
        (OpKind::Symlink, "d/link"),
        (OpKind::Chmod, "b"),
    ]
    .into_iter()
    .map(|(k, p)| (k, p.to_string()))
    .collect();
    assert_eq!(not_writes, expected, "all events: {summary:?}");
    // Every recorded write changed the file.
    let mut last: std::collections::HashMap<RecPath, diffkeeper_store::ContentRef> =
        Default::default();
    for event in &events {
        if let Some(content) = event.op.content() {
            let path = event.op.paths()[0].clone();
            assert_ne!(
                last.insert(path, *content),
                Some(*content),
                "no-op write: {event:?}"
            );
        }
    }
    // Every file event is the shell's or one of its children's.
    for event in &events {
        let Actor::Process { pid, .. } = &event.actor else {
            panic!("{event:?}")
        };
        assert!(*pid >= child_pid, "{event:?}");
    }
    let all = recording.timeline(&TimelineFilter::default()).unwrap();
    let execs = all.iter().filter(|e| e.op.kind() == OpKind::Exec).count();
    assert!(
        execs >= 6,
        "sh, sleep, mv, rm, mkdir, ln, chmod: {execs} execs"
    );
    assert!(all
        .iter()
        .any(|e| matches!(e.op, diffkeeper_store::Op::Exit { code: 3 })));

    // The first status.log is what a reader sees between the two writes.
    let between = recording.moment("150ms").unwrap();
    assert_eq!(recording.cat(&p("status.log"), &between).unwrap(), b"one\n");
    let latest = Moment::latest();
    assert_eq!(recording.cat(&p("status.log"), &latest).unwrap(), b"two\n");
    assert_eq!(
        recording.cat(&p("app.log"), &latest).unwrap(),
        b"line1\nline2\n"
    );
    assert_eq!(recording.cat(&p("b"), &latest).unwrap(), b"x\n");
    let state = recording.state_at(&latest).unwrap().state;
    assert_eq!(state.get(&p("b")).unwrap().mode, 0o600);
    assert!(state.get(&p("a")).is_none() && state.get(&p("gone")).is_none());
    assert_eq!(
        state.get(&p("d/link")).unwrap().kind,
        NodeKind::Symlink(b"../b".to_vec())
    );

    // And the export matches the directory the process left behind.
    let export = out.path().join("export");
    recording
        .export(&latest, &export, &ExportOptions::default())
        .unwrap();
    let exported = export.join(work_path.strip_prefix("/").unwrap());
    for name in ["status.log", "app.log", "b"] {
        assert_eq!(
            std::fs::read(exported.join(name)).unwrap(),
            std::fs::read(work_path.join(name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read_link(exported.join("d/link")).unwrap(),
        Path::new("../b")
    );
}

/// A session recording what happens below `work` into `out`/rec.redb (the
/// file returned), for tests that hand it records themselves: its
/// debounce is long enough that only what they hand over is read.
fn session_below(work: &Path, out: &Path) -> (Session, PathBuf) {
    let file = out.join("rec.redb");
    let meta = RecordingMeta {
        started_unix_ns: unix_now_ns(),
        mono_base_ns: monotonic_now_ns(),
        ..Default::default()
    };
    let store = Recorder::create(&file, &meta, RecorderOptions::default()).unwrap();
    let options = SessionOptions {
        filter: PathFilter::new(&[format!("{}/**", work.display())], &[]).unwrap(),
        max_file_size: 1 << 20,
        debounce: Duration::from_secs(60),
        wait_for_exec: false,
    };
    let root = RootView::open(Path::new("/")).unwrap();
    (Session::new(store, root, options), file)
}

/// Content is read after the fact: a file written, closed and renamed
/// before the recorder reads it must get its last content under the new
/// name, and one that vanishes without any event saying so must leave the
/// recording marked incomplete, never silently holding the older content.
#[tokio::test]
async fn a_file_renamed_before_it_was_read_is_read_under_its_new_name() {
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let work_path = work.path().canonicalize().unwrap();
    let mut watch =
        InotifyWatch::start(Path::new("/"), std::slice::from_ref(&work_path), &[]).unwrap();
    let (mut session, file) = session_below(&work_path, out.path());
    // Hands over what inotify reported, catching up (reading what closes
    // asked for) after each close, as the driver does when a batch ends
    // there; `until` stops before a record.
    let mut feed = |session: &mut Session, until: &dyn Fn(&Event) -> bool| {
        while let Some(record) = watch.try_next() {
            if matches!(&record, Record::Event(e) if until(e)) {
                return;
            }
            let close = matches!(&record, Record::Event(e) if e.op == Op::Close);
            session.handle(record);
            if close {
                session.flush_due();
            }
        }
    };
    let state = work_path.join("state");
    std::fs::write(&state, "one\n").unwrap();
    std::fs::write(work_path.join("lost"), "first\n").unwrap();
    feed(&mut session, &|_| false);

    std::fs::write(&state, "two\n").unwrap();
    std::fs::rename(&state, work_path.join("final")).unwrap();
    std::fs::write(work_path.join("lost"), "second\n").unwrap();
    std::fs::remove_file(work_path.join("lost")).unwrap();
    // The removal of `lost` is never handed over, as if it had been lost.
    feed(&mut session, &|e| e.op == Op::Unlink);
    let finished = session.finish(monotonic_now_ns(), Some(0)).unwrap();

    let lost = format!("{}/lost: written, then gone", work_path.display());
    assert!(
        finished.incomplete.len() == 1 && finished.incomplete[0].starts_with(&lost),
        "{:?}",
        finished.incomplete
    );
    let recording = Recording::open(&file).unwrap();
    let p = |rel: &str| RecPath::new(format!("{}/{rel}", work_path.display())).unwrap();
    let latest = Moment::latest();
    assert_eq!(recording.cat(&p("final"), &latest).unwrap(), b"two\n");
    let state = recording.state_at(&latest).unwrap().state;
    assert!(state.get(&p("state")).is_none());
}

/// An event as the probe reports it, for the sequences a test replays.
fn event(op: Op, pid: u32, path: &Path) -> Event {
    Event {
        ts_ns: monotonic_now_ns(),
        cgroup_id: 0,
        pid,
        tid: pid,
        ns_pid: pid,
        ns_tid: pid,
        comm: b"ld".to_vec(),
        op,
        path: path.to_path_buf(),
        path_flags: Default::default(),
        path2: None,
        path2_flags: Default::default(),
        fd: 3,
        mode: 0o644,
        op_flags: 0,
        offset: 0,
        len: 0,
        uid: None,
        gid: None,
        ret: 0,
        syscall_nr: None,
    }
}

/// A linker's output (rust-lld's, seen recording `cargo build`): a temp
/// file created, sized and mapped shared, then either removed at once or
/// renamed to the output while still mapped, the last stores landing
/// after the rename. munmap is not traced, so the mapper's exit is when the
/// file is read: it must be read under its new name, and a removed temp
/// file must leave no "gone" note behind. The same holds at an exec, which
/// drops the address space too.
#[test]
fn a_mapped_file_is_read_under_its_current_name_when_its_mapper_exits() {
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let work_path = work.path().canonicalize().unwrap();
    let (mut session, file) = session_below(&work_path, out.path());
    let (discarded, temp, output, other) = (
        work_path.join("out.tmp1"),
        work_path.join("out.tmp2"),
        work_path.join("out"),
        work_path.join("other"),
    );
    let mapped = |session: &mut Session, pid: u32, path: &Path, address: u64| {
        for op in [Op::Open, Op::Truncate, Op::Mmap] {
            let mut ev = event(op, pid, path);
            if op == Op::Open {
                ev.op_flags = (libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64;
            }
            ev.offset = address;
            session.handle(Record::Event(ev));
        }
    };

    std::fs::write(&discarded, [0u8; 64]).unwrap();
    mapped(&mut session, 10, &discarded, 0x1000);
    session.handle(Record::Event(event(Op::Close, 10, &discarded)));
    session.flush_due();
    std::fs::remove_file(&discarded).unwrap();
    session.handle(Record::Event(event(Op::Unlink, 10, &discarded)));

    std::fs::write(&temp, "v1").unwrap();
    mapped(&mut session, 10, &temp, 0x2000);
    std::fs::rename(&temp, &output).unwrap();
    let mut rename = event(Op::Rename, 10, &temp);
    rename.path2 = Some(output.clone());
    session.handle(Record::Event(rename));
    std::fs::write(&output, "v2").unwrap();
    session.handle(Record::Event(event(Op::Exit, 10, Path::new(""))));

    std::fs::write(&other, "o1").unwrap();
    mapped(&mut session, 11, &other, 0x1000);
    session.flush_due();
    std::fs::write(&other, "o2").unwrap();
    session.handle(Record::Event(event(Op::Exec, 11, Path::new("/bin/true"))));
    session.flush_due();
    std::fs::write(&other, "o3, after the exec: not through the mapping").unwrap();

    let finished = session.finish(monotonic_now_ns(), Some(0)).unwrap();
    assert!(finished.incomplete.is_empty(), "{:?}", finished.incomplete);
    let recording = Recording::open(&file).unwrap();
    let p = |path: &Path| RecPath::new(path.as_os_str().as_bytes()).unwrap();
    let latest = Moment::latest();
    assert_eq!(recording.cat(&p(&output), &latest).unwrap(), b"v2");
    assert_eq!(recording.cat(&p(&other), &latest).unwrap(), b"o2");
    let state = recording.state_at(&latest).unwrap().state;
    assert!(state.get(&p(&discarded)).is_none() && state.get(&p(&temp)).is_none());
}
