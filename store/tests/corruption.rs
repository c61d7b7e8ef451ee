//! Damaged and hostile recordings: `verify` names what is bad, no read
//! panics, and `export` never writes outside its target.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use diffkeeper_store::{ExportOptions, Moment, Op, Problem, Recording};
use rand::{Rng, SeedableRng};
use support::*;

/// Incompressible bytes, so they are stored raw and can be found on disk.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

fn sample_recording(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("rec.redb");
    let mut rec = recorder(&file);
    write(&mut rec, 1, "/etc/config", b"key=value\n");
    write(&mut rec, 2, "/data/blob", &noise(1, 5_000));
    write(&mut rec, 3, "/data/big", &noise(2, 300_000));
    write(&mut rec, 4, "/var/log/app.log", b"started\n");
    write(&mut rec, 5, "/var/log/app.log", b"started\nready\n");
    rec.finish(Some(0)).unwrap();
    file
}

#[test]
fn a_flipped_byte_is_named_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample_recording(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = &noise(1, 5_000)[100..132];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("raw piece bytes are on disk");
    bytes[at + 5] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let recording = Recording::open(&file).unwrap();
    let report = recording.verify().unwrap();
    let bad_version = report.problems.iter().find_map(|p| match p {
        Problem::Version { used_by, .. } => Some(used_by.clone()),
        _ => None,
    });
    assert_eq!(
        bad_version,
        Some(vec!["#1 /data/blob".to_string()]),
        "{:?}",
        report.problems
    );
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::Piece { .. })));
    // Everything else still reads; the bad file is an error, not garbage.
    let latest = Moment::latest();
    assert_eq!(
        recording.cat(&p("/etc/config"), &latest).unwrap(),
        b"key=value\n"
    );
    let err = recording
        .cat(&p("/data/blob"), &latest)
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupt"), "{err}");
    let err = recording
        .export(&latest, &dir.path().join("out"), &ExportOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn a_flipped_byte_in_a_chunked_file_fails_its_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample_recording(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = &noise(2, 300_000)[150_000..150_032];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at + 7] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let recording = Recording::open(&file).unwrap();
    let err = recording
        .cat(&p("/data/big"), &Moment::latest())
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    let report = recording.verify().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::Version { used_by, .. } if used_by == &["#2 /data/big"])),
        "{:?}",
        report.problems
    );
}

#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = std::fs::read(sample_recording(dir.path())).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut outcomes = [0u32; 3]; // opened+clean, opened+problems, refused
    for trial in 0..150 {
        let mut bytes = pristine.clone();
        for _ in 0..rng.random_range(1..16) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        let file = dir.path().join(format!("damaged-{trial}.redb"));
        std::fs::write(&file, &bytes).unwrap();
        let out = dir.path().join(format!("out-{trial}"));
        let result = catch_unwind(AssertUnwindSafe(|| {
            let Ok(recording) = Recording::open(&file) else {
                return 2;
            };
            let clean = recording.verify().map(|r| r.is_ok()).unwrap_or(false);
            let _ = recording.timeline(&Default::default());
            let _ = recording.export(&Moment::latest(), &out, &ExportOptions::default());
            if clean {
                0
            } else {
                1
            }
        }));
        let outcome = result.unwrap_or_else(|_| panic!("trial {trial}: a read panicked"));
        outcomes[outcome] += 1;
        assert!(!dir.path().join("escaped").exists());
    }
    eprintln!("clean / problems found / refused: {outcomes:?}");
}

#[test]
fn a_crafted_dotdot_path_is_rejected() {
    let (dir, file) = temp_recording();
    let mut rec = recorder(&file);
    // Same length as "/../../escaped", patched in on disk below.
    write(&mut rec, 1, "/XX/YY/escaped", b"owned");
    rec.finish(None).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(14)
        .position(|w| w == b"/XX/YY/escaped")
        .unwrap();
    bytes[at..at + 14].copy_from_slice(b"/../../escaped");
    std::fs::write(&file, &bytes).unwrap();

    let recording = Recording::open(&file).unwrap();
    let target = dir.path().join("a/b");
    let err = recording
        .export(&Moment::latest(), &target, &ExportOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, diffkeeper_store::Error::CorruptEvent { seq: 0, .. }),
        "{err}"
    );
    assert!(!dir.path().join("escaped").exists());
    assert!(!recording.verify().unwrap().is_ok());
}

#[test]
fn export_never_follows_a_symlink_out() {
    let (dir, file) = temp_recording();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut rec = recorder(&file);
    // A state no kernel would produce, but a recording can claim: a symlink
    // pointing out of the tree, then a file "below" it.
    let link_target = outside.as_os_str().as_encoded_bytes().to_vec();
    rec.record(
        at(1),
        actor(1),
        Op::Symlink {
            path: p("/link"),
            target: link_target,
        },
    )
    .unwrap();
    write(&mut rec, 2, "/link/evil", b"owned");
    rec.finish(None).unwrap();

    let recording = Recording::open(&file).unwrap();
    let err = recording
        .export(
            &Moment::latest(),
            &dir.path().join("out"),
            &ExportOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the symlink"
    );
}
