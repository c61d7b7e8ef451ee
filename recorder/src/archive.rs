//! The recordings root: where recordings of containers are kept, and which
//! of them retention lets go.
//!
//! Layout: `<root>/<namespace>/<container>/<start>.redb`, directories
//! 0700 and files 0600 (recordings hold secrets). `<container>` is the
//! container id, or for a Kubernetes container `<pod namespace>_<pod
//! name>_<container name>` ([`container_key`]): every restart has a new
//! id, and one directory per pod container keeps its restarts together for
//! retention and `--previous`. `<start>` is the UTC start time
//! (`2026-11-21T22-16-14.744Z`), so name order is time order.
//! While a container runs its recording lives in the bundle and the slot
//! holds a symlink to it; on Delete the finished file is renamed over the
//! symlink, so readers find a recording at the same path throughout.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use diffkeeper_runtime_config::Retention;
use diffkeeper_store::KubernetesIdentity;

/// An I/O failure in the recordings root, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct ArchiveError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A recordings root.
#[derive(Clone, Debug)]
pub struct Archive {
    root: PathBuf,
}

/// One recording in the root.
#[derive(Clone, Debug)]
pub struct Archived {
    pub path: PathBuf,
    pub namespace: String,
    /// The container's directory: its id, or a Kubernetes container's
    /// [`container_key`].
    pub container: String,
    /// Bytes of the recording file.
    pub size: u64,
    pub modified: SystemTime,
    /// Still being written: the slot is a symlink into a live bundle.
    pub active: bool,
}

/// The directory name of a container's recordings: its id, or for a
/// Kubernetes container `<pod namespace>_<pod name>_<container name>`, the
/// way the kubelet names a container's log directory (Kubernetes names
/// cannot hold `_`; an identity that does holds falls back to the id).
pub fn container_key(id: &str, kubernetes: Option<&KubernetesIdentity>) -> String {
    let parts = kubernetes.map(|k| [&k.pod_namespace, &k.pod_name, &k.container_name]);
    match parts {
        Some(parts) if parts.iter().all(|p| is_name_part(p)) => parts.map(String::as_str).join("_"),
        _ => id.to_owned(),
    }
}

/// The pod namespace, pod name and container name of a directory
/// [`container_key`] named after a Kubernetes container.
pub fn pod_container_of(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.split('_');
    let found = (parts.next()?, parts.next()?, parts.next()?);
    let all = [found.0, found.1, found.2];
    (parts.next().is_none() && all.iter().all(|p| is_name_part(p))).then_some(found)
}

fn is_name_part(part: &str) -> bool {
    !part.is_empty() && part != "." && part != ".." && !part.contains(['_', '/'])
}

/// The file name of a recording that started at `started`.
pub fn recording_file_name(started: SystemTime) -> String {
    let utc: chrono::DateTime<chrono::Utc> = started.into();
    format!("{}.redb", utc.format("%Y-%m-%dT%H-%M-%S%.3fZ"))
}

/// Creates `dir` and its missing parents with mode 0700, and makes `dir`
/// itself 0700 even if it existed.
pub fn create_private_dir(dir: &Path) -> Result<(), ArchiveError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(at("restricting", dir))
}

impl Archive {
    pub fn new(root: impl Into<PathBuf>) -> Archive {
        Archive { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `namespace/container`'s recordings (refusing names
    /// that would leave the root: empty, `.`, `..`, or holding `/`).
    pub fn container_dir(&self, namespace: &str, container: &str) -> Result<PathBuf, ArchiveError> {
        for part in [namespace, container] {
            if part.is_empty() || part.contains('/') || part == "." || part == ".." {
                return Err(ArchiveError {
                    what: "refusing a recording named",
                    path: PathBuf::from(part),
                    source: io::Error::from(io::ErrorKind::InvalidInput),
                });
            }
        }
        Ok(self.root.join(namespace).join(container))
    }

    /// The path a recording of `namespace/container` started at `started`
    /// gets, its directories created (0700).
    pub fn slot(
        &self,
        namespace: &str,
        container: &str,
        started: SystemTime,
    ) -> Result<PathBuf, ArchiveError> {
        let dir = self.container_dir(namespace, container)?;
        create_private_dir(&self.root)?;
        create_private_dir(&dir)?;
        Ok(dir.join(recording_file_name(started)))
    }

    /// Points `slot` at a recording still being written at `live`, and
    /// notes the slot next to it (`<live>.slot`): whoever finishes a
    /// recording its writer abandoned finds where it goes there, without
    /// knowing the configuration that chose the root.
    pub fn link_active(slot: &Path, live: &Path) -> Result<(), ArchiveError> {
        std::os::unix::fs::symlink(live, slot).map_err(at("linking", slot))?;
        let note = slot_note(live);
        std::fs::write(&note, slot.as_os_str().as_encoded_bytes()).map_err(at("writing", &note))
    }

    /// The slot [`Archive::link_active`] noted for `live`, if any.
    pub fn noted_slot(live: &Path) -> Option<PathBuf> {
        let noted = std::fs::read(slot_note(live)).ok()?;
        Some(PathBuf::from(std::ffi::OsString::from_vec(noted)))
    }

    /// Moves a closed recording into `slot` (replacing the symlink
    /// `link_active` left there), atomically when both are on one file
    /// system; otherwise copied, synced, then removed.
    pub fn keep(recording: &Path, slot: &Path) -> Result<(), ArchiveError> {
        std::fs::set_permissions(recording, std::fs::Permissions::from_mode(0o600))
            .map_err(at("restricting", recording))?;
        match std::fs::rename(recording, slot) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let partial = slot.with_extension("redb.partial");
                std::fs::copy(recording, &partial).map_err(at("copying to", &partial))?;
                std::fs::File::open(&partial)
                    .and_then(|f| f.sync_all())
                    .map_err(at("syncing", &partial))?;
                std::fs::rename(&partial, slot).map_err(at("renaming", &partial))?;
                std::fs::remove_file(recording).map_err(at("removing", recording))?;
            }
            Err(e) => return Err(at("moving", recording)(e)),
        }
        // Only now: a failed move leaves the note for `rescue` to find.
        let _ = std::fs::remove_file(slot_note(recording));
        Ok(())
    }

    /// Every recording, optionally of one namespace, sorted by namespace,
    /// container and start time. Slots whose live recording is gone are
    /// left out (see [`Archive::remove_stale_links`]).
    pub fn list(&self, namespace: Option<&str>) -> Result<Vec<Archived>, ArchiveError> {
        let mut found = Vec::new();
        if !self.root.exists() {
            return Ok(found);
        }
        for ns in subdirs(&self.root)? {
            let ns_name = file_name(&ns);
            if namespace.is_some_and(|want| want != ns_name) {
                continue;
            }
            for container in subdirs(&ns)? {
                for path in recordings_in(&container)? {
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    found.push(Archived {
                        active: path.is_symlink(),
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        path,
                        namespace: ns_name.clone(),
                        container: file_name(&container),
                    });
                }
            }
        }
        found.sort_by(|a, b| {
            (&a.namespace, &a.container, &a.path).cmp(&(&b.namespace, &b.container, &b.path))
        });
        Ok(found)
    }

    /// Removes slots whose live recording is gone (its bundle was removed
    /// without the shim moving it); returns them.
    pub fn remove_stale_links(&self) -> Result<Vec<PathBuf>, ArchiveError> {
        let mut removed = Vec::new();
        if !self.root.exists() {
            return Ok(removed);
        }
        for ns in subdirs(&self.root)? {
            for container in subdirs(&ns)? {
                for path in recordings_in(&container)? {
                    if path.is_symlink() && !path.exists() {
                        std::fs::remove_file(&path).map_err(at("removing", &path))?;
                        removed.push(path);
                    }
                }
            }
        }
        Ok(removed)
    }

    /// The recordings retention lets go, as of `now`, with the rules
    /// `rules_for` gives each container (its namespace and id). Per
    /// container: all but the newest `keep`, those older than `max_age`,
    /// then the oldest until the rest fit in `max_bytes`. Recordings still
    /// being written are never chosen (they count towards `keep` and
    /// `max_bytes`).
    pub fn expired<'r>(
        &self,
        rules_for: impl Fn(&str, &str) -> &'r Retention,
        now: SystemTime,
    ) -> Result<Vec<Archived>, ArchiveError> {
        let mut expired = Vec::new();
        let mut rest = self.list(None)?.into_iter().peekable();
        while let Some(first) = rest.next() {
            // `list` sorts by container, then start: a group is a run.
            let mut group = vec![first];
            while let Some(next) = rest.next_if(|n| {
                (&n.namespace, &n.container) == (&group[0].namespace, &group[0].container)
            }) {
                group.push(next);
            }
            let rules = rules_for(&group[0].namespace, &group[0].container);
            expired.extend(expired_in_group(group, rules, now));
        }
        Ok(expired)
    }

    /// Deletes one recording (and its container's directory once empty).
    pub fn remove(&self, entry: &Archived) -> Result<(), ArchiveError> {
        std::fs::remove_file(&entry.path).map_err(at("deleting", &entry.path))?;
        if let Some(dir) = entry.path.parent() {
            // Fails while other recordings remain: that is the point.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// `expired` for one container's recordings, oldest first.
fn expired_in_group(group: Vec<Archived>, rules: &Retention, now: SystemTime) -> Vec<Archived> {
    let beyond_keep = group.len().saturating_sub(rules.keep.unwrap_or(usize::MAX));
    let mut doomed: Vec<bool> = group
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let too_old = rules
                .max_age
                .is_some_and(|age| now.duration_since(entry.modified).unwrap_or_default() > age);
            !entry.active && (i < beyond_keep || too_old)
        })
        .collect();
    if let Some(max) = rules.max_bytes {
        let mut kept: u64 = group
            .iter()
            .zip(&doomed)
            .filter(|(_, doomed)| !**doomed)
            .map(|(entry, _)| entry.size)
            .sum();
        for (entry, doomed) in group.iter().zip(doomed.iter_mut()) {
            if kept <= max {
                break;
            }
            if !*doomed && !entry.active {
                *doomed = true;
                kept -= entry.size;
            }
        }
    }
    group
        .into_iter()
        .zip(doomed)
        .filter_map(|(entry, doomed)| doomed.then_some(entry))
        .collect()
}

/// The `*.redb` files (or slots) directly in `dir`, oldest first.
pub fn recordings_in(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(at("reading", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "redb") && (p.is_file() || p.is_symlink()))
        .collect();
    files.sort();
    Ok(files)
}

fn slot_note(live: &Path) -> PathBuf {
    live.with_extension("slot")
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(at("reading", dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn add(archive: &Archive, ns: &str, id: &str, started: SystemTime, size: usize) -> PathBuf {
        let slot = archive.slot(ns, id, started).unwrap();
        std::fs::write(&slot, vec![0u8; size]).unwrap();
        let file = std::fs::File::options().write(true).open(&slot).unwrap();
        file.set_modified(started).unwrap();
        slot
    }

    #[test]
    fn a_kubernetes_container_is_kept_by_pod_and_name_across_restarts() {
        let k = KubernetesIdentity {
            pod_namespace: "shop".into(),
            pod_name: "web-0".into(),
            container_name: "app".into(),
            ..KubernetesIdentity::default()
        };
        assert_eq!(container_key("3f2a", Some(&k)), "shop_web-0_app");
        assert_eq!(
            pod_container_of("shop_web-0_app"),
            Some(("shop", "web-0", "app"))
        );
        assert_eq!(container_key("3f2a", None), "3f2a");
        assert_eq!(pod_container_of("3f2a"), None);
        // Not a Kubernetes name: the id, never a key that parses otherwise.
        let odd = KubernetesIdentity {
            pod_name: "a_b".into(),
            ..k.clone()
        };
        assert_eq!(container_key("3f2a", Some(&odd)), "3f2a");
        let missing = KubernetesIdentity {
            pod_namespace: String::new(),
            ..k
        };
        assert_eq!(container_key("3f2a", Some(&missing)), "3f2a");
        assert_eq!(pod_container_of("a_b_c_d"), None);
    }

    #[test]
    fn slots_are_private_and_sorted_by_start() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::new(dir.path().join("root"));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let late = add(&archive, "default", "web", t0 + Duration::from_secs(5), 1);
        let early = add(&archive, "default", "web", t0, 1);
        let listed: Vec<PathBuf> = archive
            .list(None)
            .unwrap()
            .into_iter()
            .map(|a| a.path)
            .collect();
        assert_eq!(listed, [early.clone(), late]);
        for dir in [
            archive.root(),
            early.parent().unwrap(),
            early.parent().unwrap().parent().unwrap(),
        ] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        assert!(archive.slot("default", "../x", t0).is_err());
        assert!(archive.slot("", "x", t0).is_err());
    }

    #[test]
    fn retention_keeps_the_newest_and_never_live_recordings() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::new(dir.path());
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let old = add(&archive, "ns", "a", now - 10 * day, 100);
        let mid = add(&archive, "ns", "a", now - 2 * day, 100);
        let new = add(&archive, "ns", "a", now - day, 100);
        let other = add(&archive, "ns", "b", now - 9 * day, 100);
        let live = dir.path().join("live.redb");
        std::fs::write(&live, [0u8; 10]).unwrap();
        let active = archive.slot("ns", "b", now - 20 * day).unwrap();
        Archive::link_active(&active, &live).unwrap();

        // `expired` lists in `list` order: by container, then start.
        let names = |rules: Retention| -> Vec<PathBuf> {
            let expired = archive.expired(|_, _| &rules, now).unwrap();
            expired.into_iter().map(|a| a.path).collect()
        };
        let keep = Retention {
            keep: Some(2),
            ..Default::default()
        };
        assert_eq!(names(keep), std::slice::from_ref(&old));
        let age = Retention {
            max_age: Some(5 * day),
            ..Default::default()
        };
        assert_eq!(names(age), [old.clone(), other.clone()]);
        // Per container: `a` holds 300 bytes, `b` 110 (10 of them live).
        let bytes = Retention {
            max_bytes: Some(210),
            ..Default::default()
        };
        assert_eq!(names(bytes), std::slice::from_ref(&old));
        let bytes = Retention {
            max_bytes: Some(50),
            ..Default::default()
        };
        assert_eq!(
            names(bytes),
            [old.clone(), mid.clone(), new.clone(), other.clone()]
        );
        assert!(names(Retention::default()).is_empty());
        // Rules per container: an age limit for `b` alone spares `a`.
        let (none, age) = (
            Retention::default(),
            Retention {
                max_age: Some(5 * day),
                ..Default::default()
            },
        );
        let only_b = archive
            .expired(
                |ns, c| if (ns, c) == ("ns", "b") { &age } else { &none },
                now,
            )
            .unwrap();
        assert_eq!(
            only_b.into_iter().map(|a| a.path).collect::<Vec<_>>(),
            std::slice::from_ref(&other)
        );

        std::fs::remove_file(&live).unwrap();
        assert_eq!(archive.remove_stale_links().unwrap(), [active]);
    }

    #[test]
    fn keep_replaces_the_live_link_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::new(dir.path().join("root"));
        let live = dir.path().join("bundle.redb");
        std::fs::write(&live, b"recording").unwrap();
        let slot = archive.slot("ns", "c", SystemTime::now()).unwrap();
        Archive::link_active(&slot, &live).unwrap();
        assert_eq!(Archive::noted_slot(&live), Some(slot.clone()));
        assert!(archive.list(None).unwrap()[0].active);
        Archive::keep(&live, &slot).unwrap();
        assert!(!live.exists() && !slot.is_symlink());
        assert_eq!(
            Archive::noted_slot(&live),
            None,
            "the note goes with the move"
        );
        assert_eq!(std::fs::read(&slot).unwrap(), b"recording");
        assert_eq!(
            std::fs::metadata(&slot).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!archive.list(None).unwrap()[0].active);
    }
}
