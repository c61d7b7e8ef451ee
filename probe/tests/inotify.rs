//! The inotify fallback against a real directory tree (no root needed).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use diffkeeper_probe::{InotifyWatch, Op, Record};

/// Every record ready now, as (operation, path).
fn drain(watch: &mut InotifyWatch) -> Vec<(Op, PathBuf)> {
    let mut seen = Vec::new();
    while let Some(record) = watch.try_next() {
        if let Record::Event(event) = record {
            seen.push((event.op, event.path));
        }
    }
    seen
}

#[tokio::test]
async fn a_directory_moved_out_of_the_watched_tree_stops_reporting_under_its_old_path() {
    let root = tempfile::tempdir().unwrap();
    let (watched, outside) = (root.path().join("w"), root.path().join("out"));
    fs::create_dir_all(watched.join("build")).unwrap();
    fs::create_dir(&outside).unwrap();
    let mut watch = InotifyWatch::start(root.path(), &[PathBuf::from("/w")], &[]).unwrap();

    fs::rename(watched.join("build"), outside.join("moved")).unwrap();
    let moved = drain(&mut watch);
    assert!(
        moved.contains(&(Op::Rename, PathBuf::from("/w/build"))),
        "{moved:?}"
    );
    // Written where it went: outside, so not ours, and never as /w/build/f.
    fs::write(outside.join("moved/f"), b"x").unwrap();
    fs::create_dir(watched.join("build")).unwrap();
    fs::write(watched.join("build/g"), b"y").unwrap();
    let after = drain(&mut watch);
    assert!(
        !after
            .iter()
            .any(|(_, path)| path == Path::new("/w/build/f")),
        "a stale watch reported the moved directory's file: {after:?}"
    );
    assert!(
        after
            .iter()
            .any(|(_, path)| path == Path::new("/w/build/g")),
        "the new directory is watched: {after:?}"
    );
}

/// Directories renamed while their events wait in the queue, as a build
/// does: one made, filled and renamed before the watcher looked (how cargo
/// makes `target`) must be found, with its entries, under its last name,
/// and watched; one renamed just after an entry was made in it (rustc's
/// incremental session) reports that entry under its new path; and what
/// was last seen of an entry moves with it.
#[tokio::test]
async fn what_a_renamed_directory_holds_is_reported_under_its_new_name() {
    let root = tempfile::tempdir().unwrap();
    let watched = root.path().join("w");
    fs::create_dir(&watched).unwrap();
    let mut watch = InotifyWatch::start(root.path(), &[PathBuf::from("/w")], &[]).unwrap();

    fs::create_dir(watched.join("target.tmp")).unwrap();
    fs::write(watched.join("target.tmp/tag"), b"t").unwrap();
    fs::rename(watched.join("target.tmp"), watched.join("target")).unwrap();
    let tag = PathBuf::from("/w/target/tag");
    assert_eq!(
        drain(&mut watch),
        [
            (Op::Mkdir, PathBuf::from("/w/target")),
            (Op::Open, tag.clone()),
            (Op::Write, tag.clone()),
            (Op::Close, tag),
        ]
    );
    fs::write(watched.join("target/new"), b"n").unwrap();
    let new = PathBuf::from("/w/target/new");
    assert_eq!(
        drain(&mut watch),
        [
            (Op::Open, new.clone()),
            (Op::Write, new.clone()),
            (Op::Close, new)
        ]
    );

    // A hard link made in a directory renamed at once (rustc's incremental
    // session directory): found under the directory's new name.
    fs::create_dir(watched.join("s-working")).unwrap();
    assert_eq!(
        drain(&mut watch),
        [(Op::Mkdir, PathBuf::from("/w/s-working"))]
    );
    fs::hard_link(watched.join("target/new"), watched.join("s-working/a.o")).unwrap();
    fs::rename(watched.join("s-working"), watched.join("s-done")).unwrap();
    let linked = PathBuf::from("/w/s-done/a.o");
    assert_eq!(
        drain(&mut watch),
        [
            (Op::Rename, PathBuf::from("/w/s-working")),
            (Op::Open, linked.clone()),
            (Op::Write, linked.clone()),
            (Op::Close, linked),
        ]
    );

    // What was last seen of an entry moved with its directory: a mode
    // change there is a mode change, not also an owner change.
    fs::rename(watched.join("target"), watched.join("built")).unwrap();
    drain(&mut watch);
    fs::set_permissions(watched.join("built/new"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        drain(&mut watch),
        [(Op::Chmod, PathBuf::from("/w/built/new"))]
    );
}
