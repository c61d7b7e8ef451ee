//! The fanotify fallback on real directory trees, as root: a plain one and
//! an overlay mount like a container's root (whose file handles cannot be
//! decoded, so every directory gets a mark of its own).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use diffkeeper_probe::{FanotifyWatch, Op, Record};

/// What became ready after `action`, as (operation, path, second path,
/// whether it names this process: every event does but those of a scan).
type Seen = (Op, String, Option<String>, bool);

fn step(watch: &mut FanotifyWatch, action: impl FnOnce()) -> Vec<Seen> {
    action();
    let mut seen = Vec::new();
    while let Some(record) = watch.try_next() {
        let Record::Event(event) = record else {
            panic!("unexpected gap: {record:?}");
        };
        let ours = event.pid != 0;
        if ours {
            assert_eq!(event.pid, std::process::id(), "{event:?}");
            assert_eq!(event.ns_pid, std::process::id(), "{event:?}");
            assert!(!event.comm.is_empty(), "{event:?}");
        }
        let text = |p: &Path| p.to_string_lossy().into_owned();
        seen.push((
            event.op,
            text(&event.path),
            event.path2.as_deref().map(text),
            ours,
        ));
    }
    seen
}

fn op(op: Op, path: &str) -> Seen {
    (op, path.to_owned(), None, true)
}

/// Found by scanning a directory that came with its entries: by whoever.
fn found(op: Op, path: &str) -> Seen {
    (op, path.to_owned(), None, false)
}

/// The same workload as the inotify fallback's documented translation:
/// creations (a directory made and filled before its mark included),
/// writes, a mode change, a rename, removals.
fn check_workload(root: &Path) {
    fs::create_dir(root.join("w")).unwrap();
    let mut watch = FanotifyWatch::start(root, &[PathBuf::from("/w")], &[]).unwrap();
    let w = root.join("w");
    assert_eq!(
        step(&mut watch, || fs::create_dir(w.join("d")).unwrap()),
        [op(Op::Mkdir, "/w/d")]
    );
    assert_eq!(
        step(&mut watch, || fs::write(w.join("d/f"), b"one").unwrap()),
        [
            op(Op::Open, "/w/d/f"),
            op(Op::Write, "/w/d/f"),
            op(Op::Close, "/w/d/f")
        ]
    );
    assert_eq!(
        step(&mut watch, || fs::set_permissions(
            w.join("d/f"),
            fs::Permissions::from_mode(0o600)
        )
        .unwrap()),
        [op(Op::Chmod, "/w/d/f")]
    );
    assert_eq!(
        step(&mut watch, || fs::rename(w.join("d/f"), w.join("g"))
            .unwrap()),
        [(Op::Rename, "/w/d/f".into(), Some("/w/g".into()), true)]
    );
    // A tree moved in at once: found by scanning it, then watched.
    let outside = root.join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/h"), b"h").unwrap();
    assert_eq!(
        step(&mut watch, || fs::rename(&outside, w.join("moved"))
            .unwrap()),
        [
            op(Op::Mkdir, "/w/moved"),
            found(Op::Mkdir, "/w/moved/sub"),
            found(Op::Open, "/w/moved/sub/h"),
            found(Op::Write, "/w/moved/sub/h"),
            found(Op::Close, "/w/moved/sub/h"),
        ]
    );
    // Made, filled and renamed before the watcher looked (how cargo makes
    // `target`): gone under its first name, so found under its last.
    assert_eq!(
        step(&mut watch, || {
            fs::create_dir(w.join("target.tmp")).unwrap();
            fs::write(w.join("target.tmp/tag"), b"t").unwrap();
            fs::rename(w.join("target.tmp"), w.join("target")).unwrap();
        }),
        [
            op(Op::Mkdir, "/w/target"),
            found(Op::Open, "/w/target/tag"),
            found(Op::Write, "/w/target/tag"),
            found(Op::Close, "/w/target/tag"),
        ]
    );
    assert_eq!(
        step(&mut watch, || fs::write(w.join("target/new"), b"n")
            .unwrap()),
        [
            op(Op::Open, "/w/target/new"),
            op(Op::Write, "/w/target/new"),
            op(Op::Close, "/w/target/new")
        ]
    );
    // A hard link made in a directory renamed at once (rustc's incremental
    // session directory): found under the directory's new name.
    assert_eq!(
        step(&mut watch, || fs::create_dir(w.join("s-working")).unwrap()),
        [op(Op::Mkdir, "/w/s-working")]
    );
    assert_eq!(
        step(&mut watch, || {
            fs::hard_link(w.join("target/new"), w.join("s-working/a.o")).unwrap();
            fs::rename(w.join("s-working"), w.join("s-done")).unwrap();
        }),
        [
            (
                Op::Rename,
                "/w/s-working".into(),
                Some("/w/s-done".into()),
                true
            ),
            found(Op::Open, "/w/s-done/a.o"),
            found(Op::Write, "/w/s-done/a.o"),
            found(Op::Close, "/w/s-done/a.o"),
        ]
    );
    assert_eq!(
        step(&mut watch, || fs::write(w.join("moved/sub/h"), b"hh")
            .unwrap()),
        [
            op(Op::Write, "/w/moved/sub/h"),
            op(Op::Close, "/w/moved/sub/h")
        ]
    );
    assert_eq!(
        step(&mut watch, || {
            fs::remove_file(w.join("g")).unwrap();
        }),
        [op(Op::Unlink, "/w/g")]
    );
    assert_eq!(
        step(&mut watch, || fs::remove_dir(w.join("d")).unwrap()),
        [op(Op::Rmdir, "/w/d")]
    );
    // Moved out: gone for us, and nothing reported under the old path.
    let away = root.join("away");
    assert_eq!(
        step(&mut watch, || fs::rename(w.join("moved"), &away).unwrap()),
        [op(Op::Rename, "/w/moved")]
    );
    assert_eq!(
        step(&mut watch, || fs::write(away.join("sub/h"), b"x").unwrap()),
        []
    );
}

#[tokio::test]
async fn a_plain_tree_is_recorded_with_pids() {
    if diffkeeper_test_support::lacks_root("fanotify (CAP_SYS_ADMIN)") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    check_workload(root.path());
}

#[tokio::test]
async fn an_overlay_root_is_recorded_with_pids() {
    if diffkeeper_test_support::lacks_root("fanotify and an overlay mount (CAP_SYS_ADMIN)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| {
        let path = dir.path().join(d);
        fs::create_dir(&path).unwrap();
        path
    });
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::empty(),
        std::ffi::CString::new(options).unwrap().as_c_str(),
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| check_workload(&merged));
    rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH).unwrap();
    result.unwrap();
}
