//! The fallback capture: inotify, for machines where the eBPF probe cannot
//! load (no BTF, not root, an old kernel). It yields the same [`Record`]s
//! as a [`Watch`](crate::Watch), with what inotify cannot tell left out
//! (docs/probe.md, "Without eBPF"):
//!
//! - no process: every event has pid 0 (the recorder shows "unknown");
//! - no exec or exit events;
//! - writes are coalesced (`IN_MODIFY` says a file changed, not where);
//! - a directory created and filled before its watch is added is scanned,
//!   so its entries appear as created at that moment;
//! - the kernel's queue can overflow (a [`Gap`] with an unknown count), and
//!   `fs.inotify.max_user_watches` bounds the directories watched (a gap
//!   names the first directory left unwatched).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use tokio::io::unix::AsyncFd;

use crate::event::{Event, Gap, Op, PathFlags, Record};

/// What each watched directory reports.
const MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DONT_FOLLOW)
    .union(WatchFlags::EXCL_UNLINK)
    .union(WatchFlags::ONLYDIR);

/// Events read per `read(2)`.
const BUFFER: usize = 64 * 1024;

/// Recursive inotify watches on subtrees of a root, as a record stream.
pub struct InotifyWatch {
    fd: AsyncFd<OwnedFd>,
    /// The root paths are relative to (`/` for a command, the container's
    /// root filesystem for a container), opened.
    root: OwnedFd,
    /// Subtrees never watched (the recording's own directory, /proc...).
    skip: Vec<PathBuf>,
    /// What `start` watched, watched again after a queue overflow.
    subtrees: Vec<PathBuf>,
    /// Watch descriptor → the directory, as a path below `root`.
    dirs: HashMap<i32, PathBuf>,
    /// Mode, owner and group last reported per path, so that `IN_ATTRIB`
    /// for a timestamp alone records nothing.
    attrs: HashMap<PathBuf, (u32, u32, u32)>,
    /// Records translated but not yet handed out.
    ready: VecDeque<Record>,
    /// An `IN_MOVED_FROM` waiting for its `IN_MOVED_TO` (same cookie).
    moved_from: Option<(u32, PathBuf, bool)>,
    buffer: Vec<MaybeUninit<u8>>,
    /// The watch limit was hit once: reported once.
    limit_reported: bool,
}

impl InotifyWatch {
    /// Watches every directory below each of `subtrees` (paths below
    /// `root`, e.g. `/` or `/home/ci/project`), except those below `skip`.
    pub fn start(
        root: &Path,
        subtrees: &[PathBuf],
        skip: &[PathBuf],
    ) -> std::io::Result<InotifyWatch> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        // SAFETY: the OwnedFd is moved in and stays open, the same fd,
        // until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        let mut watch = InotifyWatch {
            fd,
            root: rustix::fs::open(
                root,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
            skip: skip.to_vec(),
            subtrees: subtrees.to_vec(),
            dirs: HashMap::new(),
            attrs: HashMap::new(),
            ready: VecDeque::new(),
            moved_from: None,
            buffer: vec![MaybeUninit::uninit(); BUFFER],
            limit_reported: false,
        };
        watch.watch_subtrees();
        Ok(watch)
    }

    /// The next record, waiting for one. `None` if the inotify descriptor
    /// can no longer be polled (logged).
    pub async fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.try_next() {
                return Some(record);
            }
            match self.fd.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                Err(err) => {
                    tracing::error!(%err, "inotify poll failed");
                    return None;
                }
            }
        }
    }

    /// The next record if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<Record> {
        if self.ready.is_empty() {
            self.read_available();
        }
        self.ready.pop_front()
    }

    /// Reads and translates what the kernel has queued.
    fn read_available(&mut self) {
        let mut events = Vec::new();
        let mut drained = false;
        let mut buffer = std::mem::take(&mut self.buffer);
        {
            let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buffer);
            loop {
                match reader.next() {
                    Ok(event) => events.push((
                        event.wd(),
                        event.events(),
                        event.cookie(),
                        event.file_name().map(|name| name.to_bytes().to_vec()),
                    )),
                    Err(rustix::io::Errno::AGAIN) => {
                        drained = true;
                        break;
                    }
                    Err(err) => {
                        tracing::error!(%err, "inotify read failed");
                        break;
                    }
                }
                if reader.is_buffer_empty() && events.len() >= 4096 {
                    break;
                }
            }
        }
        self.buffer = buffer;
        for (wd, flags, cookie, name) in events {
            self.translate(wd, flags, cookie, name.as_deref());
        }
        // A rename's two halves are queued together: with the queue
        // drained, a lone half moved a path out of what is watched (a read
        // stopped at the batch limit may have the other half still queued).
        if drained {
            if let Some((_, from, from_dir)) = self.moved_from.take() {
                self.moved_out(from, from_dir);
            }
        }
    }

    /// `from` left the watched tree: a rename without a target, and its
    /// directories' watches go (they would report under the old paths).
    fn moved_out(&mut self, from: PathBuf, is_dir: bool) {
        if is_dir {
            let gone: Vec<i32> = self
                .dirs
                .iter()
                .filter(|(_, dir)| dir.starts_with(&from))
                .map(|(wd, _)| *wd)
                .collect();
            for wd in gone {
                self.dirs.remove(&wd);
                let _ = inotify::remove_watch(self.fd.get_ref(), wd);
            }
        }
        self.push(Op::Rename, from, None, 0);
    }

    fn translate(&mut self, wd: i32, flags: ReadFlags, cookie: u32, name: Option<&[u8]>) {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.gap("the inotify event queue overflowed");
            // Directories created meanwhile were never seen: without a
            // watch, nothing in them would be seen after the gap either.
            // Existing watches are found again (same descriptor).
            self.watch_subtrees();
            return;
        }
        if flags.contains(ReadFlags::IGNORED) {
            self.dirs.remove(&wd);
            return;
        }
        let (Some(dir), Some(name)) = (self.dirs.get(&wd), name) else {
            return; // about a watched directory itself: its parent reports it
        };
        let path = dir.join(OsStr::from_bytes(name));
        if self.skipped(&path) {
            return;
        }
        let is_dir = flags.contains(ReadFlags::ISDIR);
        if let Some((from_cookie, from, from_dir)) = self.moved_from.take() {
            if flags.contains(ReadFlags::MOVED_TO) && from_cookie == cookie {
                if from_dir {
                    self.rebase_dirs(&from, &path);
                }
                if let Some(attrs) = self.attrs.remove(&from) {
                    self.attrs.insert(path.clone(), attrs);
                }
                self.push(Op::Rename, from, Some(path), 0);
                return;
            }
            self.moved_out(from, from_dir);
        }
        if flags.contains(ReadFlags::MOVED_FROM) {
            self.moved_from = Some((cookie, path, is_dir));
        } else if flags.contains(ReadFlags::MOVED_TO) {
            // Moved in from elsewhere: new to us, like a creation.
            self.created(path, is_dir);
        } else if flags.contains(ReadFlags::CREATE) {
            self.created(path, is_dir);
        } else if flags.contains(ReadFlags::DELETE) {
            self.attrs.remove(&path);
            self.push(if is_dir { Op::Rmdir } else { Op::Unlink }, path, None, 0);
        } else if flags.contains(ReadFlags::MODIFY) {
            self.push(Op::Write, path, None, 0);
        } else if flags.contains(ReadFlags::CLOSE_WRITE) {
            self.push(Op::Close, path, None, 0);
        } else if flags.contains(ReadFlags::ATTRIB) {
            self.attributes_changed(path);
        }
    }

    /// A new entry: a directory is watched and scanned (it may have been
    /// filled before its watch existed), a file is read once closed or
    /// after the debounce.
    fn created(&mut self, path: PathBuf, is_dir: bool) {
        if self.report(&path, false) && is_dir {
            self.watch_tree(&path, true);
        }
    }

    /// Reports `path` as new; false if it is already gone again (its
    /// removal follows). A file `found` by a scan was made before its
    /// directory's watch, so its writes and close were not seen: it is
    /// reported written and closed too (read now, in order; a later write
    /// is seen by the new watch).
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
            self.push(Op::Mkdir, path, None, stat.st_mode);
        } else if file_type == FileType::Symlink {
            let target = rustix::fs::readlinkat(&fd, "", Vec::new()).unwrap_or_default();
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            self.push(Op::Symlink, path, Some(target), 0);
        } else {
            let mut event = self.event(Op::Open, path.clone(), None, stat.st_mode);
            event.op_flags = (libc::O_CREAT | libc::O_WRONLY) as u64;
            self.ready.push_back(Record::Event(event));
            if found {
                self.push(Op::Write, path.clone(), None, 0);
                self.push(Op::Close, path, None, 0);
            }
        }
        true
    }

    fn attributes_changed(&mut self, path: PathBuf) {
        let Ok((_, stat)) = self.open_in_root(&path, OFlags::PATH) else {
            return;
        };
        let now = (stat.st_mode & 0o7777, stat.st_uid, stat.st_gid);
        let before = self.attrs.insert(path.clone(), now);
        if before.is_none_or(|(mode, _, _)| mode != now.0) {
            self.push(Op::Chmod, path.clone(), None, now.0);
        }
        if before.is_none_or(|(_, uid, gid)| (uid, gid) != (now.1, now.2)) {
            let mut event = self.event(Op::Chown, path, None, 0);
            event.uid = Some(now.1);
            event.gid = Some(now.2);
            self.ready.push_back(Record::Event(event));
        }
    }

    /// Watches `dir` and every directory below it. With `report`, entries
    /// already inside are reported as created (a directory made and filled
    /// before its watch was added, `mkdir -p a/b/c`, `tar x`).
    fn watch_subtrees(&mut self) {
        for subtree in self.subtrees.clone() {
            self.watch_tree(&subtree, false);
        }
    }

    fn watch_tree(&mut self, dir: &Path, report: bool) {
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            if self.skipped(&dir) {
                continue;
            }
            let Ok((dir_fd, _)) = self.open_in_root(&dir, OFlags::RDONLY | OFlags::DIRECTORY)
            else {
                continue; // gone, or not a directory any more
            };
            // The watch goes on the directory opened inside the root (the
            // magic link is followed, so not DONT_FOLLOW).
            let opened = format!("/proc/self/fd/{}", dir_fd.as_raw_fd());
            match inotify::add_watch(self.fd.get_ref(), opened, MASK - WatchFlags::DONT_FOLLOW) {
                Ok(wd) => {
                    self.dirs.insert(wd, dir.clone());
                }
                Err(rustix::io::Errno::NOSPC) => {
                    if !self.limit_reported {
                        self.limit_reported = true;
                        self.gap("fs.inotify.max_user_watches reached: directories from here on are not watched");
                        tracing::error!(dir = %dir.display(), "inotify watch limit reached");
                    }
                    continue;
                }
                Err(_) => continue, // gone, or not a directory any more
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
    }

    /// Directory paths below `from` now live below `to`.
    fn rebase_dirs(&mut self, from: &Path, to: &Path) {
        for dir in self.dirs.values_mut() {
            if let Ok(rest) = dir.strip_prefix(from) {
                *dir = to.join(rest);
            }
        }
    }

    fn skipped(&self, path: &Path) -> bool {
        self.skip.iter().any(|skip| path.starts_with(skip))
    }

    /// Opens `path` (below the root) without leaving the root: symlinks,
    /// the last one included, are never followed out of it, so a workload
    /// that swaps a directory for a symlink cannot make this watch or stat
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

    fn push(&mut self, op: Op, path: PathBuf, path2: Option<PathBuf>, mode: u32) {
        let event = self.event(op, path, path2, mode);
        self.ready.push_back(Record::Event(event));
    }

    fn event(&self, op: Op, path: PathBuf, path2: Option<PathBuf>, mode: u32) -> Event {
        Event {
            ts_ns: monotonic_ns(),
            cgroup_id: 0,
            pid: 0,
            tid: 0,
            ns_pid: 0,
            ns_tid: 0,
            comm: Vec::new(),
            op,
            path,
            path_flags: PathFlags::default(),
            path2,
            path2_flags: PathFlags::default(),
            fd: -1,
            mode,
            op_flags: 0,
            offset: 0,
            len: 0,
            uid: None,
            gid: None,
            ret: 0,
            syscall_nr: None,
        }
    }

    fn gap(&mut self, reason: &'static str) {
        let now = monotonic_ns();
        self.ready.push_back(Record::Gap(Gap {
            count: 0,
            from_ns: now,
            to_ns: now,
            reason,
        }));
    }
}

/// `CLOCK_MONOTONIC`, the clock eBPF timestamps use too.
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
