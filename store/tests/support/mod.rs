//! Helpers shared by the store's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use diffkeeper_store::{
    Actor, Capture, Op, RecPath, Recorder, RecorderOptions, RecordingMeta, Subject,
};

pub const BASE_NS: u64 = 1_000_000_000;

pub fn meta() -> RecordingMeta {
    RecordingMeta {
        subject: Subject {
            kind: "container".into(),
            id: "test-container".into(),
            namespace: "test".into(),
            image: "busybox".into(),
            rootfs: "/rootfs".into(),
        },
        started_unix_ns: 1_700_000_000_000_000_000,
        mono_base_ns: BASE_NS,
        capture: Capture {
            backend: "test".into(),
            limits: vec![],
        },
        ..Default::default()
    }
}

/// A temporary directory and the path of a recording inside it.
pub fn temp_recording() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.redb");
    (dir, file)
}

pub fn recorder(path: &Path) -> Recorder {
    Recorder::create(path, &meta(), RecorderOptions::default()).unwrap()
}

pub fn p(s: &str) -> RecPath {
    RecPath::new(s).unwrap()
}

pub fn actor(pid: u32) -> Actor {
    Actor::Process {
        pid,
        tid: pid,
        comm: "sh".into(),
    }
}

/// Records a content change (`Write`) at `offset_ms` after the start.
pub fn write(rec: &mut Recorder, offset_ms: u64, path: &str, data: &[u8]) -> u64 {
    let path = p(path);
    let content = rec.store_content(&path, data).unwrap();
    rec.record(at(offset_ms), actor(7), Op::Write { path, content })
        .unwrap()
}

pub fn at(offset_ms: u64) -> u64 {
    BASE_NS + offset_ms * 1_000_000
}
