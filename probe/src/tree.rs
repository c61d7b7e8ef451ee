//! What the two directory-watching fallbacks (inotify, fanotify) share: a
//! mark on every directory of the watched subtrees, the directory each mark
//! stands for, and the translation of "this name in this directory changed"
//! into [`Record`]s. Each backend only reads its kernel queue and says which
//! mark an event came through (`K`: an inotify watch descriptor, a fanotify
//! file handle).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::hash::Hash;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use tokio::io::unix::AsyncFd;

use crate::event::{Event, Gap, Op, PathFlags, Record};

/// Why a directory got no mark.
pub(crate) enum MarkError {
    /// The backend's limit on marks (`fs.inotify.max_user_watches`, ...):
    /// reported once, as a gap naming the limit.
    Limit(&'static str),
    /// Gone, or not a directory any more: its parent's events say so.
    Gone,
}

/// The process an event came from, where the backend tells.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origin {
    pub pid: u32,
    pub ns_pid: u32,
    pub comm: Vec<u8>,
}

/// A backend's kernel queue, feeding its [`DirTree`].
pub(crate) trait DirQueue {
    type Key: Eq + Hash + Clone;
    /// The backend, for logs.
    const NAME: &'static str;
    fn fd(&self) -> &AsyncFd<OwnedFd>;
    fn tree(&mut self) -> &mut DirTree<Self::Key>;
    /// Reads and translates what the kernel has queued.
    fn read_available(&mut self);
}

/// The next record of `queue` if one is ready, without waiting.
pub(crate) fn try_next<Q: DirQueue>(queue: &mut Q) -> Option<Record> {
    if queue.tree().is_empty() {
        queue.read_available();
    }
    queue.tree().pop()
}

/// The next record of `queue`, waiting for one; `None` if its descriptor
/// can no longer be polled (logged).
pub(crate) async fn next<Q: DirQueue>(queue: &mut Q) -> Option<Record> {
    loop {
        if let Some(record) = try_next(queue) {
            return Some(record);
        }
        match queue.fd().readable().await {
            Ok(mut ready) => ready.clear_ready(),
            Err(err) => {
                tracing::error!(%err, backend = Q::NAME, "poll failed");
                return None;
            }
        }
    }
}

/// Marked directories below a root, and the records translated so far.
pub(crate) struct DirTree<K> {
    /// The root paths are relative to (`/` for a command, the container's
    /// root filesystem for a container), opened.
    root: OwnedFd,
    /// Subtrees never watched (the recording's own directory, /proc...).
    skip: Vec<PathBuf>,
    /// What `start` watched, watched again after a queue overflow.
    subtrees: Vec<PathBuf>,
    /// Mark → the directory, as a path below `root`.
    dirs: HashMap<K, PathBuf>,
    /// Mode, owner and group last reported per path, so that an attribute
    /// event for a timestamp alone records nothing.
    attrs: HashMap<PathBuf, (u32, u32, u32)>,
    /// Entries whose creation was handled once nothing was at their path
    /// any more (whether a directory): removed since, or moved with their
    /// directory, whose rename is still queued. That rename reports them.
    missed: HashMap<PathBuf, bool>,
    /// Records translated but not yet handed out.
    ready: VecDeque<Record>,
    /// The mark limit was hit once: reported once.
    limit_reported: bool,
    /// Who caused the event being translated (`None`: unknown, pid 0).
    pub origin: Option<Origin>,
}

impl<K: Eq + Hash + Clone> DirTree<K> {
    pub fn new(root: &Path, subtrees: &[PathBuf], skip: &[PathBuf]) -> std::io::Result<Self> {
        Ok(DirTree {
            root: rustix::fs::open(
                root,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
            skip: skip.to_vec(),
            subtrees: subtrees.to_vec(),
            dirs: HashMap::new(),
            attrs: HashMap::new(),
            missed: HashMap::new(),
            ready: VecDeque::new(),
            limit_reported: false,
            origin: None,
        })
    }

    pub fn pop(&mut self) -> Option<Record> {
        self.ready.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// `name` in the directory `key` marks, unless that directory is not
    /// (or no longer) ours or the path is skipped.
    pub fn path_of(&self, key: &K, name: &[u8]) -> Option<PathBuf> {
        let path = self.dirs.get(key)?.join(OsStr::from_bytes(name));
        (!self.skipped(&path)).then_some(path)
    }

    /// The mark's directory is gone (the kernel dropped the mark).
    pub fn forget(&mut self, key: &K) {
        self.dirs.remove(key);
    }

    /// Marks every directory of the subtrees `start` was given; also after
    /// a queue overflow (directories created meanwhile were never seen:
    /// without a mark nothing in them would be seen after the gap either;
    /// a directory marked twice gets the same key).
    pub fn mark_subtrees(&mut self, mark: &mut impl FnMut(&OwnedFd) -> Result<K, MarkError>) {
        for subtree in self.subtrees.clone() {
            self.mark_tree(&subtree, false, mark);
        }
    }

    /// Marks `dir` and every directory below it. With `report`, entries
    /// already inside are reported as created (a directory made and filled
    /// before its mark was added, `mkdir -p a/b/c`, `tar x`).
    fn mark_tree(
        &mut self,
        dir: &Path,
        report: bool,
        mark: &mut impl FnMut(&OwnedFd) -> Result<K, MarkError>,
    ) {
        // What a scan finds was made before the mark, by whoever: not by
        // the process whose event started the scan.
        let origin = if report { self.origin.take() } else { None };
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            if self.skipped(&dir) {
                continue;
            }
            let Ok((dir_fd, _)) = self.open_in_root(&dir, OFlags::RDONLY | OFlags::DIRECTORY)
            else {
                continue; // gone, or not a directory any more
            };
            match mark(&dir_fd) {
                Ok(key) => {
                    self.dirs.insert(key, dir.clone());
                }
                Err(MarkError::Limit(limit)) => {
                    if !self.limit_reported {
                        self.limit_reported = true;
                        self.gap(limit);
                        tracing::error!(dir = %dir.display(), limit, "directory mark limit reached");
                    }
                    continue;
                }
                Err(MarkError::Gone) => continue,
            }
            let Ok(entries) = rustix::fs::Dir::read_from(&dir_fd) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = OsStr::from_bytes(entry.file_name().to_bytes());
                if name == "." || name == ".." {
                    continue;
                }
                let path = dir.join(name);
                if self.skipped(&path) || report && !self.report(&path, true) {
                    continue;
                }
                if entry.file_type() == FileType::Directory {
                    pending.push(path);
                }
            }
        }
        if report {
            self.origin = origin;
        }
    }

    /// A new entry: a directory is marked and scanned (it may have been
    /// filled before its mark existed), a file is read once closed or
    /// after the debounce.
    pub fn created(
        &mut self,
        path: PathBuf,
        is_dir: bool,
        mark: &mut impl FnMut(&OwnedFd) -> Result<K, MarkError>,
    ) {
        if !self.report(&path, false) {
            self.missed.insert(path, is_dir);
        } else if is_dir {
            self.mark_tree(&path, true, mark);
        }
    }

    /// A rename inside what is watched.
    pub fn renamed(
        &mut self,
        from: PathBuf,
        to: PathBuf,
        is_dir: bool,
        mark: &mut impl FnMut(&OwnedFd) -> Result<K, MarkError>,
    ) {
        // A file missed this way is fine: its writes and close were
        // reported under the name it had, which the rename moves.
        self.missed.remove(&from);
        if is_dir && !self.dirs.values().any(|dir| dir == &from) {
            // Made and renamed before its creation was handled (cargo
            // makes `target` as a temporary directory, fills it and renames
            // it): it was gone when looked for, so it was neither reported
            // nor marked. New to us under its new name, with its entries.
            self.created(to, true, mark);
            return;
        }
        if is_dir {
            for dir in self.dirs.values_mut() {
                if dir.starts_with(&from) {
                    *dir = rebased(dir, &from, &to);
                }
            }
        }
        self.push(Op::Rename, from.clone(), Some(to.clone()));
        if is_dir {
            // Entries made in it just before it moved (rustc's incremental
            // session directory gets its files as hard links, then its
            // final name), reported now under their new paths: found, by
            // whoever made them, not necessarily the renamer.
            let moved: Vec<(PathBuf, bool)> = self
                .missed
                .extract_if(|path, _| path.starts_with(&from))
                .collect();
            let renamer = self.origin.take();
            for (path, is_dir) in moved {
                let path = rebased(&path, &from, &to);
                if !self.report(&path, true) {
                    self.missed.insert(path, is_dir);
                } else if is_dir {
                    self.mark_tree(&path, true, mark);
                }
            }
            self.origin = renamer;
        }
        if is_dir {
            // What was last reported of its entries moves with them, so
            // an attribute event there records only what changed.
            let moved: Vec<(PathBuf, (u32, u32, u32))> = self
                .attrs
                .extract_if(|path, _| path.starts_with(&from))
                .collect();
            for (path, attrs) in moved {
                self.attrs.insert(rebased(&path, &from, &to), attrs);
            }
        } else if let Some(attrs) = self.attrs.remove(&from) {
            self.attrs.insert(to, attrs);
        }
    }

    /// `from` left the watched tree: a rename without a target. Returns
    /// the marks of the directories that left with it, which must no
    /// longer report (they would report under the old paths).
    pub fn moved_out(&mut self, from: PathBuf, is_dir: bool) -> Vec<K> {
        self.missed.retain(|path, _| !path.starts_with(&from));
        let mut gone = Vec::new();
        if is_dir {
            gone = self
                .dirs
                .iter()
                .filter(|(_, dir)| dir.starts_with(&from))
                .map(|(key, _)| key.clone())
                .collect();
            for key in &gone {
                self.dirs.remove(key);
            }
        }
        self.push(Op::Rename, from, None);
        gone
    }

    pub fn deleted(&mut self, path: PathBuf, is_dir: bool) {
        self.attrs.remove(&path);
        self.missed.retain(|missed, _| !missed.starts_with(&path));
        self.push(if is_dir { Op::Rmdir } else { Op::Unlink }, path, None);
    }

    pub fn modified(&mut self, path: PathBuf) {
        self.push(Op::Write, path, None);
    }

    pub fn closed_after_write(&mut self, path: PathBuf) {
        self.push(Op::Close, path, None);
    }

    /// Reports `path` as new; false if it is already gone again (its
    /// removal follows). A file `found` by a scan was made before its
    /// directory's mark, so its writes and close were not seen: it is
    /// reported written and closed too (read now, in order; a later write
    /// is seen by the new mark).
    fn report(&mut self, path: &Path, found: bool) -> bool {
        let Ok((fd, stat)) = self.open_in_root(path, OFlags::PATH) else {
            return false;
        };
        self.attrs.insert(
            path.to_path_buf(),
            (stat.st_mode & 0o7777, stat.st_uid, stat.st_gid),
        );
        let path = path.to_path_buf();
        let file_type = FileType::from_raw_mode(stat.st_mode);
        if file_type == FileType::Directory {
            let mut event = self.event(Op::Mkdir, path, None);
            event.mode = stat.st_mode;
            self.ready.push_back(Record::Event(event));
        } else if file_type == FileType::Symlink {
            let target = rustix::fs::readlinkat(&fd, "", Vec::new()).unwrap_or_default();
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            self.push(Op::Symlink, path, Some(target));
        } else {
            let mut event = self.event(Op::Open, path.clone(), None);
            event.mode = stat.st_mode;
            event.op_flags = (libc::O_CREAT | libc::O_WRONLY) as u64;
            self.ready.push_back(Record::Event(event));
            if found {
                self.push(Op::Write, path.clone(), None);
                self.push(Op::Close, path, None);
            }
        }
        true
    }

    pub fn attributes_changed(&mut self, path: PathBuf) {
        let Ok((_, stat)) = self.open_in_root(&path, OFlags::PATH) else {
            return;
        };
        let now = (stat.st_mode & 0o7777, stat.st_uid, stat.st_gid);
        let before = self.attrs.insert(path.clone(), now);
        if before.is_none_or(|(mode, _, _)| mode != now.0) {
            let mut event = self.event(Op::Chmod, path.clone(), None);
            event.mode = now.0;
            self.ready.push_back(Record::Event(event));
        }
        if before.is_none_or(|(_, uid, gid)| (uid, gid) != (now.1, now.2)) {
            let mut event = self.event(Op::Chown, path, None);
            event.uid = Some(now.1);
            event.gid = Some(now.2);
            self.ready.push_back(Record::Event(event));
        }
    }

    /// Whether something is at `path` now.
    pub fn exists(&self, path: &Path) -> bool {
        self.open_in_root(path, OFlags::PATH).is_ok()
    }

    fn skipped(&self, path: &Path) -> bool {
        self.skip.iter().any(|skip| path.starts_with(skip))
    }

    /// Opens `path` (below the root) without leaving the root: symlinks,
    /// the last one included, are never followed out of it, so a workload
    /// that swaps a directory for a symlink cannot make this mark or stat
    /// the host's files.
    fn open_in_root(&self, path: &Path, flags: OFlags) -> std::io::Result<(OwnedFd, Stat)> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let fd = rustix::fs::openat2(
            &self.root,
            relative,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        let stat = rustix::fs::fstat(&fd)?;
        Ok((fd, stat))
    }

    fn push(&mut self, op: Op, path: PathBuf, path2: Option<PathBuf>) {
        let event = self.event(op, path, path2);
        self.ready.push_back(Record::Event(event));
    }

    fn event(&self, op: Op, path: PathBuf, path2: Option<PathBuf>) -> Event {
        let origin = self.origin.clone().unwrap_or_default();
        Event {
            ts_ns: monotonic_ns(),
            cgroup_id: 0,
            pid: origin.pid,
            tid: origin.pid,
            ns_pid: origin.ns_pid,
            ns_tid: origin.ns_pid,
            comm: origin.comm,
            op,
            path,
            path_flags: PathFlags::default(),
            path2,
            path2_flags: PathFlags::default(),
            fd: -1,
            mode: 0,
            op_flags: 0,
            offset: 0,
            len: 0,
            uid: None,
            gid: None,
            ret: 0,
            syscall_nr: None,
        }
    }

    /// Events were lost (`reason`), how many is unknown.
    pub fn gap(&mut self, reason: &'static str) {
        let now = monotonic_ns();
        self.ready.push_back(Record::Gap(Gap {
            count: 0,
            from_ns: now,
            to_ns: now,
            reason,
        }));
    }
}

/// `path`, at or below `from`, as it is named once `from` is renamed `to`.
fn rebased(path: &Path, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from) {
        Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
        _ => to.to_path_buf(),
    }
}

/// `CLOCK_MONOTONIC`, the clock eBPF timestamps use too.
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
