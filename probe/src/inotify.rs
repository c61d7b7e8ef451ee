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

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

use crate::event::Record;
use crate::tree::{self, DirQueue, DirTree, MarkError};

/// What each watched directory reports.
const MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::EXCL_UNLINK)
    .union(WatchFlags::ONLYDIR);

/// Events read per `read(2)`.
const BUFFER: usize = 64 * 1024;

/// Recursive inotify watches on subtrees of a root, as a record stream.
pub struct InotifyWatch {
    fd: AsyncFd<OwnedFd>,
    /// Watch descriptor → directory.
    tree: DirTree<i32>,
    /// An `IN_MOVED_FROM` waiting for its `IN_MOVED_TO` (same cookie).
    moved_from: Option<(u32, PathBuf, bool)>,
    buffer: Vec<MaybeUninit<u8>>,
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
            tree: DirTree::new(root, subtrees, skip)?,
            moved_from: None,
            buffer: vec![MaybeUninit::uninit(); BUFFER],
        };
        watch.tree.mark_subtrees(&mut marker(watch.fd.get_ref()));
        Ok(watch)
    }

    /// The next record, waiting for one. `None` if the inotify descriptor
    /// can no longer be polled (logged).
    pub async fn next(&mut self) -> Option<Record> {
        tree::next(self).await
    }

    /// The next record if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<Record> {
        tree::try_next(self)
    }

    /// `from` left the watched tree: its directories' watches go (they
    /// would report under the old paths).
    fn moved_out(&mut self, from: PathBuf, is_dir: bool) {
        for wd in self.tree.moved_out(from, is_dir) {
            let _ = inotify::remove_watch(self.fd.get_ref(), wd);
        }
    }

    fn translate(&mut self, wd: i32, flags: ReadFlags, cookie: u32, name: Option<&[u8]>) {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.tree.gap("the inotify event queue overflowed");
            self.tree.mark_subtrees(&mut marker(self.fd.get_ref()));
            return;
        }
        if flags.contains(ReadFlags::IGNORED) {
            self.tree.forget(&wd);
            return;
        }
        let Some(name) = name else {
            return; // about a watched directory itself: its parent reports it
        };
        let Some(path) = self.tree.path_of(&wd, name) else {
            return;
        };
        let is_dir = flags.contains(ReadFlags::ISDIR);
        if let Some((from_cookie, from, from_dir)) = self.moved_from.take() {
            if flags.contains(ReadFlags::MOVED_TO) && from_cookie == cookie {
                self.tree
                    .renamed(from, path, from_dir, &mut marker(self.fd.get_ref()));
                return;
            }
            self.moved_out(from, from_dir);
        }
        if flags.contains(ReadFlags::MOVED_FROM) {
            self.moved_from = Some((cookie, path, is_dir));
        } else if flags.contains(ReadFlags::MOVED_TO) || flags.contains(ReadFlags::CREATE) {
            // Moved in from elsewhere: new to us, like a creation.
            self.tree
                .created(path, is_dir, &mut marker(self.fd.get_ref()));
        } else if flags.contains(ReadFlags::DELETE) {
            self.tree.deleted(path, is_dir);
        } else if flags.contains(ReadFlags::MODIFY) {
            self.tree.modified(path);
        } else if flags.contains(ReadFlags::CLOSE_WRITE) {
            self.tree.closed_after_write(path);
        } else if flags.contains(ReadFlags::ATTRIB) {
            self.tree.attributes_changed(path);
        }
    }
}

impl DirQueue for InotifyWatch {
    type Key = i32;
    const NAME: &'static str = "inotify";

    fn fd(&self) -> &AsyncFd<OwnedFd> {
        &self.fd
    }

    fn tree(&mut self) -> &mut DirTree<i32> {
        &mut self.tree
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
}

/// Adds inotify watches through `fd`.
fn marker(fd: &OwnedFd) -> impl FnMut(&OwnedFd) -> Result<i32, MarkError> + use<'_> {
    move |dir: &OwnedFd| {
        // The watch goes on the directory opened inside the root (through
        // its magic link, which must be followed).
        let opened = format!("/proc/self/fd/{}", dir.as_raw_fd());
        inotify::add_watch(fd.as_fd(), opened, MASK).map_err(|err| match err {
            rustix::io::Errno::NOSPC => MarkError::Limit(
                "fs.inotify.max_user_watches reached: directories from here on are not watched",
            ),
            _ => MarkError::Gone,
        })
    }
}
