//! A full disk: the recorder reports it clearly, the recording stays valid
//! up to its last commit, and once space is back the lost events become a
//! recorded gap. Uses a small tmpfs, so it needs root.

mod support;

use std::process::Command;
use std::time::Duration;

use diffkeeper_store::{Error, Moment, Op, RecorderOptions, Recording};
use diffkeeper_test_support::lacks_root;
use support::*;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_is_reported_and_recovered_as_a_gap() {
    if lacks_root("mounting a small tmpfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "diffkeeper-test"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let _mount = Mount(dir.path().to_path_buf());

    let file = dir.path().join("rec.redb");
    let options = RecorderOptions {
        commit_after_events: 1,
        ..Default::default()
    };
    let mut rec = diffkeeper_store::Recorder::create(&file, &meta(), options).unwrap();
    let mut committed = 0u64;
    let mut failure = None;
    for i in 0..10_000u64 {
        // Incompressible, distinct content so every event costs space.
        let data: Vec<u8> = (0..20_000u64)
            .map(|j| ((i * 7_919 + j * 104_729) >> 3) as u8 ^ (j * i) as u8)
            .collect();
        let path = p(&format!("/f{i}"));
        let result = rec
            .store_content(&path, &data)
            .and_then(|content| rec.record(at(i), actor(1), Op::Write { path, content }));
        match result {
            Ok(_) => committed = i + 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a 3 MiB file system fills up");
    assert!(matches!(failure, Error::DiskFull { .. }), "{failure}");
    assert!(failure.to_string().contains("disk is full"));
    assert!(committed > 10, "only {committed} events fitted");

    // Everything committed before the failure is intact.
    {
        let recording = Recording::open(&file).unwrap();
        assert!(recording.verify().unwrap().is_ok());
        let count = recording.event_count().unwrap();
        assert!(
            count >= committed.saturating_sub(1) && count <= committed,
            "{count} vs {committed}"
        );
    }

    // Writes while the store is failed are refused and counted.
    let path = p("/later");
    assert!(rec.store_content(&path, b"x").is_err());

    // Space comes back (here: the mount grows); after the back-off the
    // recorder resumes and the loss is a gap.
    let status = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(1100));
    let content = rec.store_content(&path, b"after").unwrap();
    rec.record(
        at(20_000),
        actor(1),
        Op::Write {
            path: path.clone(),
            content,
        },
    )
    .unwrap();
    rec.finish(Some(0)).unwrap();

    let recording = Recording::open(&file).unwrap();
    assert!(recording.verify().unwrap().is_ok());
    let snapshot = recording.state_at(&Moment::latest()).unwrap();
    assert_eq!(
        snapshot.gaps.len(),
        1,
        "the lost batch is recorded as a gap"
    );
    assert_eq!(recording.cat(&path, &Moment::latest()).unwrap(), b"after");
    let status = recording.status().unwrap();
    assert!(
        status
            .incomplete
            .iter()
            .any(|r| r.contains("store write failed")),
        "{status:?}"
    );
}
