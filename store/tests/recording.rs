//! Scenario tests of the write and read sides on real files.

mod support;

use diffkeeper_store::{
    Error, ExportOptions, Moment, NodeKind, Op, OpKind, Recorder, Recording, TimeSpec,
    TimelineFilter,
};
use support::*;

#[test]
fn timeline_state_cat_and_diff() {
    let (_dir, file) = temp_recording();
    let mut rec = recorder(&file);
    write(&mut rec, 100, "/etc/app.conf", b"mode=fast\n");
    write(&mut rec, 1100, "/etc/app.conf", b"mode=slow\n");
    let log = p("/var/log/app.log");
    let mut text = Vec::new();
    for i in 0..5 {
        text.extend_from_slice(format!("line {i}\n").as_bytes());
        write(&mut rec, 1200 + i, "/var/log/app.log", &text);
    }
    rec.record(
        at(1500),
        actor(8),
        Op::Rename {
            from: log.clone(),
            to: p("/var/log/app.log.1"),
        },
    )
    .unwrap();
    rec.record_gap(12, at(1600), at(1700), "ring buffer full")
        .unwrap();
    rec.record(
        at(1800),
        actor(8),
        Op::Unlink {
            path: p("/etc/app.conf"),
        },
    )
    .unwrap();
    let status = rec.finish(Some(1)).unwrap();
    assert_eq!(status.exit_code, Some(1));
    assert_eq!(
        status.incomplete,
        vec!["12 events lost: ring buffer full".to_string()]
    );

    let recording = Recording::open(&file).unwrap();
    assert_eq!(recording.event_count().unwrap(), 10);
    let at_1s = recording.moment("1s").unwrap();
    assert_eq!(
        recording.cat(&p("/etc/app.conf"), &at_1s).unwrap(),
        b"mode=fast\n"
    );
    let at_1_5 = recording.moment("1500ms").unwrap();
    assert_eq!(
        recording.cat(&p("/etc/app.conf"), &at_1_5).unwrap(),
        b"mode=slow\n"
    );
    assert_eq!(
        recording.cat(&p("/var/log/app.log.1"), &at_1_5).unwrap(),
        text
    );
    assert!(matches!(
        recording.cat(&p("/var/log/app.log"), &at_1_5),
        Err(Error::NoSuchPath { .. })
    ));
    let latest = Moment::latest();
    assert!(recording
        .state_at(&latest)
        .unwrap()
        .state
        .get(&p("/etc/app.conf"))
        .is_none());
    assert_eq!(recording.state_at(&latest).unwrap().gaps.len(), 1);
    // Events #0 and #1 are the config writes, so #3 is the log's second version.
    let seq3 = recording.resolve(&TimeSpec::Seq(3)).unwrap();
    assert_eq!(recording.cat(&log, &seq3).unwrap(), b"line 0\nline 1\n");

    // Filters: path glob, op kinds; gaps always shown.
    let filter = TimelineFilter::default()
        .with_path_globs(&["/etc/**"])
        .unwrap();
    let kinds: Vec<OpKind> = recording
        .timeline(&filter)
        .unwrap()
        .iter()
        .map(|e| e.op.kind())
        .collect();
    assert_eq!(
        kinds,
        [OpKind::Write, OpKind::Write, OpKind::Gap, OpKind::Unlink]
    );
    let filter = TimelineFilter::default().ops([OpKind::Rename]);
    assert_eq!(recording.timeline(&filter).unwrap().len(), 2);
    let filter = TimelineFilter::default().pid(8);
    assert_eq!(recording.timeline(&filter).unwrap().len(), 3);

    let changes = recording.diff(&at_1s, &at_1_5).unwrap();
    let summary: Vec<(String, &str)> = changes
        .iter()
        .map(|c| (c.path.to_string(), c.kind()))
        .collect();
    assert_eq!(
        summary,
        [
            ("/etc/app.conf".to_string(), "changed"),
            ("/var/log/app.log.1".to_string(), "added"),
        ]
    );
    let text_diff = recording.text_diff(&changes[0]).unwrap().unwrap();
    assert!(
        text_diff.contains("-mode=fast") && text_diff.contains("+mode=slow"),
        "{text_diff}"
    );

    assert!(recording.verify().unwrap().is_ok());
}

#[test]
fn times_outside_a_finished_recording_are_refused_or_clamped() {
    let (_dir, file) = temp_recording();
    let mut rec = recorder(&file);
    write(&mut rec, 10, "/a", b"x");
    rec.finish(Some(0)).unwrap();
    let recording = Recording::open(&file).unwrap();
    let err = recording.moment("#5").unwrap_err().to_string();
    assert!(err.contains("has 1 events"), "{err}");
    let err = recording
        .moment("1970-01-01T00:00:00Z")
        .unwrap_err()
        .to_string();
    assert!(err.contains("before the recording started"), "{err}");
    // The test metadata says the recording started in 2023; it ended now.
    let after = recording.moment("100000d").unwrap();
    assert!(after.to_string().contains("the final state"), "{after}");
    let state = recording.state_at(&after).unwrap();
    let latest = recording
        .state_at(&recording.moment("latest").unwrap())
        .unwrap();
    assert_eq!(state.state, latest.state);
    assert_eq!(state.events_applied, 1);
    let err = "yesterday".parse::<TimeSpec>().unwrap_err().to_string();
    assert!(err.contains("expected 'latest'"), "{err}");
}

#[test]
fn a_live_recording_is_readable_while_written() {
    let (_dir, file) = temp_recording();
    let mut rec = recorder(&file);
    write(&mut rec, 1, "/a", b"one");
    rec.flush().unwrap();
    let reader = Recording::open(&file).unwrap();
    assert_eq!(reader.event_count().unwrap(), 1);
    write(&mut rec, 2, "/a", b"two");
    rec.flush().unwrap();
    assert_eq!(reader.event_count().unwrap(), 2);
    assert_eq!(reader.cat(&p("/a"), &Moment::latest()).unwrap(), b"two");
    assert_eq!(
        reader.status().unwrap().state,
        diffkeeper_store::RecordingState::Recording
    );
}

#[test]
fn identical_content_is_stored_once() {
    let (_dir, file) = temp_recording();
    let mut rec = recorder(&file);
    let blob: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&mut rec, 1, "/one", &blob);
    let stored_once = rec.stats().bytes_stored;
    write(&mut rec, 2, "/two", &blob);
    write(&mut rec, 3, "/three/copy", &blob);
    assert_eq!(rec.stats().bytes_stored, stored_once);
    assert_eq!(rec.stats().deduplicated, 2);
}

#[test]
fn baseline_sits_beneath_events_and_export_writes_the_whole_tree() {
    let (dir, file) = temp_recording();
    let mut rec = recorder(&file);
    // The workload writes /etc/hosts before the background baseline gets to it.
    write(&mut rec, 5, "/etc/hosts", b"10.0.0.1 db\n");
    let original = rec
        .store_content(&p("/etc/hosts"), b"127.0.0.1 localhost\n")
        .unwrap();
    rec.add_baseline(p("/etc"), diffkeeper_store::Node::dir(0o755))
        .unwrap();
    rec.add_baseline(
        p("/etc/hosts"),
        diffkeeper_store::Node::file(original, 0o644),
    )
    .unwrap();
    let sh = rec.store_content(&p("/bin/sh"), b"\x7fELF...").unwrap();
    rec.add_baseline(p("/bin/sh"), diffkeeper_store::Node::file(sh, 0o755))
        .unwrap();
    rec.add_baseline(
        p("/bin/ls"),
        diffkeeper_store::Node::symlink(b"sh".to_vec()),
    )
    .unwrap();
    rec.finish(None).unwrap();

    let recording = Recording::open(&file).unwrap();
    let start = recording.moment("1ms").unwrap();
    assert_eq!(
        recording.cat(&p("/etc/hosts"), &start).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(
        recording.cat(&p("/etc/hosts"), &Moment::latest()).unwrap(),
        b"10.0.0.1 db\n"
    );

    let out = dir.path().join("full");
    let report = recording
        .export(&Moment::latest(), &out, &ExportOptions::default())
        .unwrap();
    assert_eq!((report.files, report.dirs, report.symlinks), (2, 1, 1));
    assert_eq!(
        std::fs::read(out.join("etc/hosts")).unwrap(),
        b"10.0.0.1 db\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("bin/ls")).unwrap().to_str(),
        Some("sh")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("bin/sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);

    let changed = dir.path().join("changed");
    let options = ExportOptions {
        changes_only: true,
        ..Default::default()
    };
    let report = recording
        .export(&Moment::latest(), &changed, &options)
        .unwrap();
    assert_eq!(report.files, 1);
    assert!(changed.join("etc/hosts").exists() && !changed.join("bin").exists());

    let err = recording
        .export(&Moment::latest(), &out, &ExportOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let node = recording
        .state_at(&Moment::latest())
        .unwrap()
        .state
        .get(&p("/bin/ls"))
        .cloned();
    assert!(matches!(node.unwrap().kind, NodeKind::Symlink(_)));
}

#[test]
fn a_foreign_or_newer_file_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"hello, not a database").unwrap();
    let err = Recording::open(&text).err().unwrap();
    assert!(matches!(err, Error::NotARecording { .. }), "{err}");

    let other = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&other).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("x"))
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Recording::open(&other).err().unwrap();
    assert!(
        err.to_string().contains("not a DiffKeeper recording"),
        "{err}"
    );

    let newer = dir.path().join("newer.redb");
    recorder(&newer).finish(None).unwrap();
    {
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .open(&newer)
            .unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(diffkeeper_store::format::META)
            .unwrap()
            .insert(
                diffkeeper_store::format::META_VERSION_KEY,
                99u32.to_le_bytes().as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Recording::open(&newer).err().unwrap();
    assert!(matches!(err, Error::NewerFormat { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade diffkeeper"));

    let err = diffkeeper_store::Recorder::create(&newer, &meta(), Default::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
}

#[test]
fn recordings_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, file) = temp_recording();
    recorder(&file).finish(None).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn restore_applies_the_state_at_a_moment_over_the_baseline_tree() {
    use diffkeeper_store::Node;
    use std::os::unix::fs::{symlink, PermissionsExt};
    let (dir, file) = temp_recording();
    let mut rec = recorder(&file);
    let baseline_file = |rec: &mut diffkeeper_store::Recorder, path: &str, data: &[u8]| {
        let content = rec.store_content(&p(path), data).unwrap();
        rec.add_baseline(p(path), Node::file(content, 0o644))
            .unwrap();
    };
    for dir in ["/etc", "/bin", "/var", "/var/cache"] {
        rec.add_baseline(p(dir), Node::dir(0o755)).unwrap();
    }
    baseline_file(&mut rec, "/etc/hosts", b"127.0.0.1 localhost\n");
    baseline_file(&mut rec, "/bin/sh", b"\x7fELF");
    baseline_file(&mut rec, "/var/cache/index", b"old index");
    rec.add_baseline(p("/bin/ls"), Node::symlink(b"sh".to_vec()))
        .unwrap();
    write(&mut rec, 5, "/etc/hosts", b"10.0.0.1 db\n");
    for (ms, op) in [
        (10, Op::Unlink { path: p("/bin/ls") }),
        (
            11,
            Op::Unlink {
                path: p("/var/cache/index"),
            },
        ),
        (
            12,
            Op::Rmdir {
                path: p("/var/cache"),
            },
        ),
        (
            13,
            Op::Mkdir {
                path: p("/data"),
                mode: 0o750,
            },
        ),
    ] {
        rec.record(at(ms), actor(7), op).unwrap();
    }
    write(&mut rec, 20, "/data/state", b"step 3");
    write(&mut rec, 100, "/etc/hosts", b"after the moment\n");
    rec.finish(Some(137)).unwrap();

    // A new container's root: the baseline, plus a trap (its /data is a
    // symlink out) that restore must replace, not write through.
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    for dir in ["etc", "bin", "var/cache"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("bin/sh"), "\x7fELF").unwrap();
    std::fs::write(root.join("var/cache/index"), "old index").unwrap();
    symlink("sh", root.join("bin/ls")).unwrap();
    symlink(&outside, root.join("data")).unwrap();

    let recording = Recording::open(&file).unwrap();
    let moment = recording.resolve_within(&"50ms".parse().unwrap()).unwrap();
    let report = recording.restore_into(&moment, &root).unwrap();
    assert_eq!((report.written, report.removed), (3, 2), "{report:?}");
    assert_eq!(
        std::fs::read(root.join("etc/hosts")).unwrap(),
        b"10.0.0.1 db\n"
    );
    assert_eq!(std::fs::read(root.join("data/state")).unwrap(), b"step 3");
    let data = std::fs::symlink_metadata(root.join("data")).unwrap();
    assert!(data.is_dir());
    assert_eq!(data.permissions().mode() & 0o7777, 0o750);
    assert!(root.join("bin/ls").symlink_metadata().is_err());
    assert!(!root.join("var/cache").exists() && root.join("var").is_dir());
    assert_eq!(std::fs::read(root.join("bin/sh")).unwrap(), b"\x7fELF");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    let err = recording
        .resolve_within(&"5000d".parse().unwrap())
        .unwrap_err();
    assert!(
        matches!(err, Error::TimeOutOfRange { .. }) && err.to_string().contains("ends at"),
        "{err}"
    );
    recording
        .resolve_within(&TimeSpec::Latest)
        .expect("latest is within");
}

/// Bytes that do not compress or repeat (xorshift), so every chunk is unique.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_version_with_known_writes_takes_over_the_untouched_chunks_and_reads_back_exactly() {
    let (_dir, file) = temp_recording();
    let mut rec = recorder(&file);
    let path = p("/db");
    let mut versions = Vec::new();
    let mut store = |rec: &mut Recorder, data: &[u8], changed: Option<&[std::ops::Range<u64>]>| {
        let before = rec.stats().reused_chunks;
        let content = rec.store_version(&path, data, changed).unwrap();
        let ms = 10 * (versions.len() as u64 + 1);
        rec.record(
            at(ms),
            actor(7),
            Op::Write {
                path: path.clone(),
                content,
            },
        )
        .unwrap();
        versions.push((ms, data.to_vec()));
        rec.stats().reused_chunks - before
    };

    let v1 = noise(1 << 20, 1);
    assert_eq!(store(&mut rec, &v1, None), 0);

    // One page rewritten, and said so: all but the chunks around it are
    // taken over.
    let mut v2 = v1.clone();
    v2[500_000..504_096].copy_from_slice(&noise(4096, 2));
    let chunks = 1 << 20 >> 11; // ~2 KiB average
    let reused = store(
        &mut rec,
        &v2,
        Some(std::slice::from_ref(&(500_000..504_096))),
    );
    assert!(reused > chunks / 2, "{reused} of ~{chunks} chunks reused");

    // A write nobody reported (a shared mapping, another cgroup) next to a
    // reported one: the unreported bytes must still be recorded.
    let mut v3 = v2.clone();
    v3[100_000..100_016].copy_from_slice(b"unreported write");
    v3[900_000..900_100].copy_from_slice(&noise(100, 3));
    store(
        &mut rec,
        &v3,
        Some(std::slice::from_ref(&(900_000..900_100))),
    );

    // Truncated, then grown past the old end.
    let mut v4 = v3[..700_000].to_vec();
    v4.extend(noise(400_000, 4));
    store(
        &mut rec,
        &v4,
        Some(std::slice::from_ref(&(700_000..u64::MAX))),
    );

    // Nothing changed at all, but a write was reported: same content.
    store(&mut rec, &v4, Some(std::slice::from_ref(&(0..1))));
    rec.finish(Some(0)).unwrap();

    let recording = Recording::open(&file).unwrap();
    for (ms, data) in &versions {
        let moment = recording.moment(&format!("{ms}ms")).unwrap();
        assert!(
            recording.cat(&path, &moment).unwrap() == *data,
            "version at {ms}ms differs"
        );
    }
    assert!(recording.verify().unwrap().is_ok());
}

#[test]
fn repeated_chunks_within_one_version_are_stored_once_and_read_back() {
    // 64 identical 16 KiB blocks of noise: FastCDC cuts them alike, so one
    // version holds the same new chunk many times.
    let block = noise(16 << 10, 9);
    let data: Vec<u8> = block
        .iter()
        .copied()
        .cycle()
        .take(64 * block.len())
        .collect();
    // Stored one chunk after another, and (speed switch flipped) encoded
    // in parallel first.
    for fast in [false, true] {
        let (_dir, file) = temp_recording();
        let mut rec = recorder(&file);
        if fast {
            rec.speed_switch().prefer_speed();
        }
        write(&mut rec, 1, "/blocks", &data);
        assert!(
            rec.stats().bytes_stored < 4 * block.len() as u64,
            "{:?}",
            rec.stats()
        );
        rec.finish(Some(0)).unwrap();
        let recording = Recording::open(&file).unwrap();
        let moment = recording.moment("latest").unwrap();
        assert!(recording.cat(&p("/blocks"), &moment).unwrap() == data);
        assert!(recording.verify().unwrap().is_ok());
    }
}

#[test]
fn the_speed_switch_compresses_faster_and_reads_back_the_same() {
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("{i:08} worker={} state=ok\n", i % 7).into_bytes())
        .collect();
    let mut stored = Vec::new();
    for fast in [false, true] {
        let (_dir, file) = temp_recording();
        let mut rec = recorder(&file);
        if fast {
            // From another thread, as the recorder's driver flips it.
            let switch = rec.speed_switch();
            std::thread::spawn(move || switch.prefer_speed())
                .join()
                .unwrap();
        }
        write(&mut rec, 1, "/log", &text);
        stored.push(rec.stats().bytes_stored);
        rec.finish(Some(0)).unwrap();
        let recording = Recording::open(&file).unwrap();
        let moment = recording.moment("latest").unwrap();
        assert!(recording.cat(&p("/log"), &moment).unwrap() == text);
        assert!(recording.verify().unwrap().is_ok());
    }
    // zstd -1 compresses text less than zstd 3: the switch took effect.
    assert!(stored[1] > stored[0], "{stored:?}");
}
