//! Property test: random sequences of file operations are applied to a
//! simple reference model and recorded in a real store on disk; for random
//! moments, `state_at` and `export` must equal the model byte for byte.
//!
//! The generator only emits operations a real kernel would have allowed
//! (what the probe reports: successful syscalls), so the model can be the
//! plain, obvious semantics of a file system.

mod support;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use diffkeeper_store::{ExportOptions, Moment, NodeKind, Op, RecPath, Recording, TimeSpec};
use proptest::prelude::*;
use support::*;

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The reference: a flat map from path bytes to entries.
type Model = BTreeMap<Vec<u8>, Entry>;

/// A randomly drawn intention; turned into a concrete, valid operation
/// against the current model (or dropped if none applies).
#[derive(Clone, Debug)]
enum Step {
    Create {
        dir: usize,
        name: usize,
        data: Data,
        mode: u32,
    },
    Write {
        file: usize,
        data: Data,
    },
    Truncate {
        file: usize,
        keep: f64,
    },
    Rename {
        from: usize,
        dir: usize,
        name: usize,
    },
    Unlink {
        file: usize,
    },
    Mkdir {
        dir: usize,
        name: usize,
        mode: u32,
    },
    Rmdir {
        dir: usize,
    },
    Symlink {
        dir: usize,
        name: usize,
        target: usize,
    },
    Link {
        file: usize,
        dir: usize,
        name: usize,
    },
    Chmod {
        any: usize,
        mode: u32,
    },
    Chown {
        any: usize,
        uid: u32,
        gid: u32,
    },
}

#[derive(Clone, Debug)]
enum Data {
    Bytes(Vec<u8>),
    Append(Vec<u8>),
    Edit { at: f64, bytes: Vec<u8> },
    Large { seed: u8, len: usize },
}

const NAMES: [&[u8]; 6] = [b"a", b"b", b"log", b"caf\xc3\xa9", b"\xff\xfebin", b"d e"];
const TARGETS: [&[u8]; 3] = [b"a", b"../x", b"/etc/passwd"];

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Data::Bytes),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Data::Append),
        (0.0..1.0f64, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Data::Edit { at, bytes }),
        (any::<u8>(), 60_000..140_000usize).prop_map(|(seed, len)| Data::Large { seed, len }),
    ]
}

fn mode() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0o644),
        Just(0o755),
        Just(0o600),
        Just(0o4755),
        Just(0o000)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let i = || 0..64usize;
    prop_oneof![
        4 => (i(), 0..NAMES.len(), data(), mode()).prop_map(|(dir, name, data, mode)| Step::Create { dir, name, data, mode }),
        6 => (i(), data()).prop_map(|(file, data)| Step::Write { file, data }),
        1 => (i(), 0.0..1.0f64).prop_map(|(file, keep)| Step::Truncate { file, keep }),
        2 => (i(), i(), 0..NAMES.len()).prop_map(|(from, dir, name)| Step::Rename { from, dir, name }),
        1 => i().prop_map(|file| Step::Unlink { file }),
        2 => (i(), 0..NAMES.len(), mode()).prop_map(|(dir, name, mode)| Step::Mkdir { dir, name, mode }),
        1 => i().prop_map(|dir| Step::Rmdir { dir }),
        1 => (i(), 0..NAMES.len(), 0..TARGETS.len()).prop_map(|(dir, name, target)| Step::Symlink { dir, name, target }),
        1 => (i(), i(), 0..NAMES.len()).prop_map(|(file, dir, name)| Step::Link { file, dir, name }),
        1 => (i(), mode()).prop_map(|(any, mode)| Step::Chmod { any, mode }),
        1 => (i(), 0..3u32, 0..3u32).prop_map(|(any, uid, gid)| Step::Chown { any, uid, gid }),
    ]
}

fn pick(model: &Model, n: usize, want: impl Fn(&Entry) -> bool) -> Option<&Vec<u8>> {
    let matching: Vec<&Vec<u8>> = model
        .iter()
        .filter(|(_, e)| want(e))
        .map(|(p, _)| p)
        .collect();
    (!matching.is_empty()).then(|| matching[n % matching.len()])
}

/// Directories that can hold a new entry: the root (empty path) or a dir.
fn pick_dir(model: &Model, n: usize) -> Vec<u8> {
    let dirs: Vec<Vec<u8>> = std::iter::once(Vec::new())
        .chain(
            model
                .iter()
                .filter(|(_, e)| e.kind == Kind::Dir)
                .map(|(p, _)| p.clone()),
        )
        .collect();
    dirs[n % dirs.len()].clone()
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn within(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

fn materialise(data: &Data, old: Option<&Vec<u8>>) -> Vec<u8> {
    let old = old.cloned().unwrap_or_default();
    match data {
        Data::Bytes(b) => b.clone(),
        Data::Append(b) => [old, b.clone()].concat(),
        Data::Edit { at, bytes } => {
            let mut out = old;
            let start = ((out.len() as f64) * at) as usize;
            for (i, b) in bytes.iter().enumerate() {
                match out.get_mut(start + i) {
                    Some(slot) => *slot = *b,
                    None => out.push(*b),
                }
            }
            out
        }
        Data::Large { seed, len } => (0..*len)
            .map(|i| {
                ((i as u64)
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(*seed as u64)
                    >> 33) as u8
            })
            .collect(),
    }
}

/// Applies `step` to the model and returns the equivalent recorded
/// operation plus, for content changes, the new bytes.
fn concretise(model: &mut Model, step: &Step) -> Option<(Op, Option<Vec<u8>>)> {
    let rp = |b: &[u8]| RecPath::new(b.to_vec()).unwrap();
    let dummy = diffkeeper_store::ContentRef {
        id: diffkeeper_store::content_id(b""),
        size: 0,
    };
    match step {
        Step::Create {
            dir,
            name,
            data,
            mode,
        } => {
            let path = join(&pick_dir(model, *dir), NAMES[*name]);
            match model.get(&path) {
                Some(e) if e.kind != Kind::Dir => {}
                None => {}
                Some(_) => return None,
            }
            let old = match model.get(&path).map(|e| &e.kind) {
                Some(Kind::File(b)) => Some(b.clone()),
                _ => None,
            };
            if matches!(model.get(&path).map(|e| &e.kind), Some(Kind::Symlink(_))) {
                return None;
            }
            let bytes = materialise(data, old.as_ref());
            let entry = model.entry(path.clone()).or_insert(Entry {
                kind: Kind::Dir,
                mode: mode & 0o7777,
                uid: 0,
                gid: 0,
            });
            entry.kind = Kind::File(bytes.clone());
            Some((
                Op::Create {
                    path: rp(&path),
                    mode: *mode,
                    content: dummy,
                },
                Some(bytes),
            ))
        }
        Step::Write { file, data } => {
            let path = pick(model, *file, |e| matches!(e.kind, Kind::File(_)))?.clone();
            let Kind::File(old) = &model[&path].kind else {
                unreachable!()
            };
            let bytes = materialise(data, Some(old));
            model.get_mut(&path).unwrap().kind = Kind::File(bytes.clone());
            Some((
                Op::Write {
                    path: rp(&path),
                    content: dummy,
                },
                Some(bytes),
            ))
        }
        Step::Truncate { file, keep } => {
            let path = pick(model, *file, |e| matches!(e.kind, Kind::File(_)))?.clone();
            let Kind::File(old) = &model[&path].kind else {
                unreachable!()
            };
            let bytes = old[..((old.len() as f64) * keep) as usize].to_vec();
            model.get_mut(&path).unwrap().kind = Kind::File(bytes.clone());
            Some((
                Op::Truncate {
                    path: rp(&path),
                    content: dummy,
                },
                Some(bytes),
            ))
        }
        Step::Rename { from, dir, name } => {
            let from = pick(model, *from, |_| true)?.clone();
            let to = join(&pick_dir(model, *dir), NAMES[*name]);
            if to == from || within(&to, &from) {
                return None;
            }
            let from_is_dir = model[&from].kind == Kind::Dir;
            match model.get(&to).map(|e| e.kind == Kind::Dir) {
                // rename(2): a dir may replace only an empty dir, a non-dir only a non-dir.
                Some(true) if !from_is_dir || model.keys().any(|p| within(p, &to)) => return None,
                Some(false) if from_is_dir => return None,
                _ => {}
            }
            model.remove(&to);
            let moved: Vec<Vec<u8>> = model
                .keys()
                .filter(|p| **p == from || within(p, &from))
                .cloned()
                .collect();
            for old in moved {
                let entry = model.remove(&old).unwrap();
                model.insert([to.clone(), old[from.len()..].to_vec()].concat(), entry);
            }
            Some((
                Op::Rename {
                    from: rp(&from),
                    to: rp(&to),
                },
                None,
            ))
        }
        Step::Unlink { file } => {
            let path = pick(model, *file, |e| e.kind != Kind::Dir)?.clone();
            model.remove(&path);
            Some((Op::Unlink { path: rp(&path) }, None))
        }
        Step::Mkdir { dir, name, mode } => {
            let path = join(&pick_dir(model, *dir), NAMES[*name]);
            if model.contains_key(&path) {
                return None;
            }
            model.insert(
                path.clone(),
                Entry {
                    kind: Kind::Dir,
                    mode: mode & 0o7777,
                    uid: 0,
                    gid: 0,
                },
            );
            Some((
                Op::Mkdir {
                    path: rp(&path),
                    mode: *mode,
                },
                None,
            ))
        }
        Step::Rmdir { dir } => {
            let path = pick(model, *dir, |e| e.kind == Kind::Dir)?.clone();
            if model.keys().any(|p| within(p, &path)) {
                return None;
            }
            model.remove(&path);
            Some((Op::Rmdir { path: rp(&path) }, None))
        }
        Step::Symlink { dir, name, target } => {
            let path = join(&pick_dir(model, *dir), NAMES[*name]);
            if model.contains_key(&path) {
                return None;
            }
            let target = TARGETS[*target].to_vec();
            model.insert(
                path.clone(),
                Entry {
                    kind: Kind::Symlink(target.clone()),
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                },
            );
            Some((
                Op::Symlink {
                    path: rp(&path),
                    target,
                },
                None,
            ))
        }
        Step::Link { file, dir, name } => {
            let existing = pick(model, *file, |e| matches!(e.kind, Kind::File(_)))?.clone();
            let new = join(&pick_dir(model, *dir), NAMES[*name]);
            if model.contains_key(&new) {
                return None;
            }
            let entry = model[&existing].clone();
            model.insert(new.clone(), entry);
            Some((
                Op::Link {
                    existing: rp(&existing),
                    new: rp(&new),
                },
                None,
            ))
        }
        Step::Chmod { any, mode } => {
            let path = pick(model, *any, |e| !matches!(e.kind, Kind::Symlink(_)))?.clone();
            model.get_mut(&path).unwrap().mode = mode & 0o7777;
            Some((
                Op::Chmod {
                    path: rp(&path),
                    mode: *mode,
                },
                None,
            ))
        }
        Step::Chown { any, uid, gid } => {
            let path = pick(model, *any, |_| true)?.clone();
            let e = model.get_mut(&path).unwrap();
            (e.uid, e.gid) = (*uid, *gid);
            Some((
                Op::Chown {
                    path: rp(&path),
                    uid: *uid,
                    gid: *gid,
                },
                None,
            ))
        }
    }
}

fn with_content(op: Op, content: diffkeeper_store::ContentRef) -> Op {
    match op {
        Op::Create { path, mode, .. } => Op::Create {
            path,
            mode,
            content,
        },
        Op::Write { path, .. } => Op::Write { path, content },
        Op::Truncate { path, .. } => Op::Truncate { path, content },
        other => other,
    }
}

fn assert_state_matches(recording: &Recording, moment: &Moment, model: &Model) {
    let state = recording.state_at(moment).unwrap().state;
    let got: Vec<Vec<u8>> = state.iter().map(|(p, _)| p.as_bytes().to_vec()).collect();
    let want: Vec<Vec<u8>> = model.keys().cloned().collect();
    assert_eq!(got, want, "paths at {moment}");
    for (path, node) in state.iter() {
        let entry = &model[path.as_bytes()];
        assert_eq!(
            (node.mode, node.uid, node.gid),
            (entry.mode, entry.uid, entry.gid),
            "{path:?}"
        );
        match (&node.kind, &entry.kind) {
            (NodeKind::File(c), Kind::File(bytes)) => {
                assert_eq!(
                    &recording.read_content(c).unwrap(),
                    bytes,
                    "{path:?} at {moment}"
                )
            }
            (NodeKind::Dir, Kind::Dir) => {}
            (NodeKind::Symlink(a), Kind::Symlink(b)) => assert_eq!(a, b),
            (a, b) => panic!("{path:?}: {a:?} vs {b:?}"),
        }
    }
}

/// Reads an exported tree back into the model's shape. Modes are compared
/// without setuid/setgid (export drops them unless asked to keep owners).
fn read_tree(root: &Path) -> Model {
    let mut out = Model::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = [
                b"/".as_slice(),
                path.strip_prefix(root).unwrap().as_os_str().as_bytes(),
            ]
            .concat();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if meta.file_type().is_symlink() {
                Kind::Symlink(
                    std::fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                Kind::Dir
            } else {
                Kind::File(std::fs::read(&path).unwrap())
            };
            let mode = if matches!(kind, Kind::Symlink(_)) {
                0o777
            } else {
                meta.permissions().mode() & 0o7777
            };
            out.insert(
                rel,
                Entry {
                    kind,
                    mode,
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
            );
        }
    }
    out
}

fn comparable(model: &Model) -> Vec<(Vec<u8>, Kind, u32)> {
    model
        .iter()
        .map(|(p, e)| (p.clone(), e.kind.clone(), e.mode & 0o1777))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn state_and_export_match_the_model(
        steps in proptest::collection::vec(step(), 1..40),
        picks in proptest::collection::vec(0.0..1.0f64, 3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rec.redb");
        let mut rec = recorder(&file);
        let mut model = Model::new();
        let mut history = vec![model.clone()];
        for step in &steps {
            let Some((op, bytes)) = concretise(&mut model, step) else { continue };
            let op = match bytes {
                Some(bytes) => {
                    let path = op.paths()[0].clone();
                    let content = rec.store_content(&path, &bytes).unwrap();
                    with_content(op, content)
                }
                None => op,
            };
            // One event per millisecond; history[i] is the model after i events.
            let seq = rec.record(at(history.len() as u64), actor(1), op).unwrap();
            prop_assert_eq!(seq + 1, history.len() as u64);
            history.push(model.clone());
        }
        rec.finish(Some(0)).unwrap();

        let recording = Recording::open(&file).unwrap();
        prop_assert!(recording.verify().unwrap().is_ok());
        for (i, pick) in picks.iter().enumerate() {
            let n = ((history.len() as f64) * pick) as usize;
            // By time (n ms after start = after n events), and by event number.
            let by_time = recording.resolve(&TimeSpec::SinceStart(std::time::Duration::from_millis(n as u64))).unwrap();
            assert_state_matches(&recording, &by_time, &history[n]);
            if n > 0 {
                let by_seq = recording.resolve(&TimeSpec::Seq(n as u64 - 1)).unwrap();
                assert_state_matches(&recording, &by_seq, &history[n]);
            }
            let out = dir.path().join(format!("export-{i}"));
            recording.export(&by_time, &out, &ExportOptions::default()).unwrap();
            prop_assert_eq!(comparable(&read_tree(&out)), comparable(&history[n]));
        }
    }
}
