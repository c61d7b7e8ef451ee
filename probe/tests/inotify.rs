//! The inotify fallback against a real directory tree (no root needed).

use std::fs;
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
