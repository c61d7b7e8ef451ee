//! The first fallback: fanotify, for machines where the eBPF probe cannot
//! load (no BTF, not root, an eBPF program refused). Like
//! [`InotifyWatch`](crate::InotifyWatch)
//! it marks every directory of the watched subtrees (a container's overlay
//! root cannot take one filesystem-wide mark: its file handles cannot be
//! decoded), and unlike it, each event names the process that caused it
//! and a rename arrives as one event with both names (docs/probe.md,
//! "Without eBPF"):
//!
//! - the pid of the process, for a recorder running as root (the kernel
//!   hides other processes' pids from an unprivileged one); its pid in its
//!   own namespace and command name are read from `/proc`, so a process
//!   gone by then is unknown;
//! - no exec or exit events, writes coalesced, as with inotify;
//! - the queue can overflow (a [`Gap`](crate::Gap) of unknown count), and
//!   `fs.fanotify.max_user_marks` bounds the directories watched.
//!
//! Needs Linux 5.13 without root (inode marks), 5.17 (`FAN_RENAME`) and 6.5
//! on overlayfs (`AT_HANDLE_FID`).

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;

use crate::event::Record;
use crate::tree::{self, DirQueue, DirTree, MarkError, Origin};

/// What each watched directory reports, for itself and its entries.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_RENAME
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;

/// Bytes read per `read(2)`.
const BUFFER: usize = 64 * 1024;
/// `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;

/// A directory as fanotify names it: filesystem id, handle type, handle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DirId(Vec<u8>);

/// Recursive fanotify marks on subtrees of a root, as a record stream.
pub struct FanotifyWatch {
    fd: AsyncFd<OwnedFd>,
    tree: DirTree<DirId>,
    buffer: Vec<u8>,
}

impl FanotifyWatch {
    /// Marks every directory below each of `subtrees` (paths below `root`),
    /// except those below `skip`. Fails on a kernel without `FAN_RENAME`
    /// (or, without root, before Linux 5.13).
    pub fn start(
        root: &Path,
        subtrees: &[PathBuf],
        skip: &[PathBuf],
    ) -> std::io::Result<FanotifyWatch> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME;
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // FAN_RENAME came in 5.17, AT_HANDLE_FID in 6.5: find out now, on
        // the root, rather than record without renames or paths.
        let root_dir = OwnedFd::from(std::fs::File::open(root)?);
        mark(&fd, &root_dir).map_err(|err| match err {
            MarkError::Gone => std::io::Error::other(format!(
                "fanotify cannot mark {} (needs Linux 5.17 for FAN_RENAME, 6.5 on overlayfs)",
                root.display()
            )),
            MarkError::Limit(limit) => std::io::Error::other(limit),
        })?;
        unmark(&fd, &root_dir);
        // SAFETY: the OwnedFd is moved in and stays open, the same fd,
        // until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        let mut watch = FanotifyWatch {
            fd,
            tree: DirTree::new(root, subtrees, skip)?,
            buffer: vec![0; BUFFER],
        };
        watch
            .tree
            .mark_subtrees(&mut |dir| mark(watch.fd.get_ref(), dir));
        Ok(watch)
    }

    /// The next record, waiting for one. `None` if the fanotify descriptor
    /// can no longer be polled (logged).
    pub async fn next(&mut self) -> Option<Record> {
        tree::next(self).await
    }

    /// The next record if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<Record> {
        tree::try_next(self)
    }

    fn translate(&mut self, event: &RawEvent) {
        if event.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.tree.gap("the fanotify event queue overflowed");
            let fd = self.fd.get_ref();
            self.tree.mark_subtrees(&mut |dir| mark(fd, dir));
            return;
        }
        let is_dir = event.mask & libc::FAN_ONDIR != 0;
        if event.mask & libc::FAN_RENAME != 0 {
            let from = event.old.as_ref().and_then(|(d, n)| self.path_of(d, n));
            let to = event.new.as_ref().and_then(|(d, n)| self.path_of(d, n));
            let fd = self.fd.get_ref();
            match (from, to) {
                (Some(from), Some(to)) => {
                    self.tree
                        .renamed(from, to, is_dir, &mut |dir| mark(fd, dir));
                }
                // Marks on a directory moved out stay, but its id no longer
                // names a path of ours, so it reports nothing.
                (Some(from), None) => drop(self.tree.moved_out(from, is_dir)),
                (None, Some(to)) => {
                    self.tree.created(to, is_dir, &mut |dir| mark(fd, dir));
                }
                (None, None) => {}
            }
            return;
        }
        let Some(path) = event.entry.as_ref().and_then(|(d, n)| self.path_of(d, n)) else {
            return;
        };
        // Unread events about one name merge into one (their masks OR'd):
        // replay them in the order they can happen. A name both deleted and
        // created that exists now was removed first.
        let created = event.mask & libc::FAN_CREATE != 0;
        let deleted = event.mask & libc::FAN_DELETE != 0;
        let recreated = created && deleted && self.tree.exists(&path);
        if recreated {
            self.tree.deleted(path.clone(), is_dir);
        }
        let fd = self.fd.get_ref();
        if created {
            self.tree
                .created(path.clone(), is_dir, &mut |dir| mark(fd, dir));
        }
        if event.mask & libc::FAN_MODIFY != 0 {
            self.tree.modified(path.clone());
        }
        if event.mask & libc::FAN_ATTRIB != 0 {
            self.tree.attributes_changed(path.clone());
        }
        if event.mask & libc::FAN_CLOSE_WRITE != 0 {
            self.tree.closed_after_write(path.clone());
        }
        if deleted && !recreated {
            self.tree.deleted(path, is_dir);
        }
    }

    /// The entry `name` of directory `dir`; `.` is the directory itself,
    /// which its parent's mark reports.
    fn path_of(&self, dir: &DirId, name: &[u8]) -> Option<PathBuf> {
        if name == b"." {
            return None;
        }
        self.tree.path_of(dir, name)
    }
}

impl DirQueue for FanotifyWatch {
    type Key = DirId;
    const NAME: &'static str = "fanotify";

    fn fd(&self) -> &AsyncFd<OwnedFd> {
        &self.fd
    }

    fn tree(&mut self) -> &mut DirTree<DirId> {
        &mut self.tree
    }

    /// Reads and translates one buffer of what the kernel has queued.
    fn read_available(&mut self) {
        let mut buffer = std::mem::take(&mut self.buffer);
        let len = match rustix::io::read(self.fd.get_ref(), &mut buffer[..]) {
            Ok(len) => len,
            Err(rustix::io::Errno::AGAIN) => 0,
            Err(err) => {
                tracing::error!(%err, "fanotify read failed");
                0
            }
        };
        // Processes are looked up once per buffer: a pid reused later is
        // looked up again.
        let mut origins = HashMap::new();
        let mut rest = &buffer[..len];
        while let Some(event) = RawEvent::parse(rest) {
            rest = &rest[event.len..];
            let origin = origins
                .entry(event.pid)
                .or_insert_with(|| origin_of(event.pid))
                .clone();
            self.tree.origin = origin;
            self.translate(&event);
        }
        self.tree.origin = None;
        if !rest.is_empty() {
            self.tree
                .gap("a fanotify record this build does not understand (the rest of its read was dropped)");
        }
        self.buffer = buffer;
    }
}

/// One event of the kernel's queue, its directory records resolved into
/// (directory id, entry name).
struct RawEvent {
    len: usize,
    mask: u64,
    pid: i32,
    /// The entry an event is about (`FAN_EVENT_INFO_TYPE_DFID_NAME`).
    entry: Option<(DirId, Vec<u8>)>,
    /// A rename's source and target.
    old: Option<(DirId, Vec<u8>)>,
    new: Option<(DirId, Vec<u8>)>,
}

impl RawEvent {
    /// The first event of `bytes`, `None` at the end or at a record this
    /// build does not understand (logged).
    fn parse(bytes: &[u8]) -> Option<RawEvent> {
        let u16_at = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
        if bytes.len() < METADATA_LEN {
            return None;
        }
        let len = u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize;
        let version = bytes[4];
        let metadata_len = usize::from(u16_at(6));
        if version != libc::FANOTIFY_METADATA_VERSION || len > bytes.len() || metadata_len > len {
            tracing::error!(version, len, "fanotify record not understood");
            return None;
        }
        let mut event = RawEvent {
            len,
            mask: u64::from_ne_bytes(bytes[8..16].try_into().unwrap()),
            pid: i32::from_ne_bytes(bytes[20..24].try_into().unwrap()),
            entry: None,
            old: None,
            new: None,
        };
        let mut info = &bytes[metadata_len..len];
        // Each info record: type (u8), pad (u8), length (u16), then for the
        // directory-and-name types: fsid (8 bytes), `struct file_handle`
        // (handle_bytes u32, handle_type i32, handle), the name, NUL-ended.
        while info.len() >= 4 {
            let kind = info[0];
            let record_len = usize::from(u16::from_ne_bytes([info[2], info[3]]));
            if record_len < 4 || record_len > info.len() {
                break;
            }
            let record = &info[4..record_len];
            info = &info[record_len..];
            let slot = match kind {
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME => &mut event.entry,
                libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => &mut event.old,
                libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => &mut event.new,
                _ => continue,
            };
            *slot = dir_and_name(record);
        }
        Some(event)
    }
}

fn dir_and_name(record: &[u8]) -> Option<(DirId, Vec<u8>)> {
    let handle_bytes = u32::from_ne_bytes(record.get(8..12)?.try_into().ok()?) as usize;
    let handle_end = 16 + handle_bytes;
    let fsid = record.get(0..8)?;
    let id = dir_id(fsid, record.get(12..16)?, record.get(16..handle_end)?);
    let name = CStr::from_bytes_until_nul(record.get(handle_end..)?).ok()?;
    Some((id, name.to_bytes().to_vec()))
}

fn dir_id(fsid: &[u8], handle_type: &[u8], handle: &[u8]) -> DirId {
    DirId([fsid, handle_type, handle].concat())
}

/// Marks `dir` in the group `fd`; its id as events will name it.
fn mark(fd: &OwnedFd, dir: &OwnedFd) -> Result<DirId, MarkError> {
    let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR;
    // SAFETY: both descriptors are open; a null path marks `dir` itself.
    let marked = unsafe {
        libc::fanotify_mark(
            fd.as_raw_fd(),
            flags,
            MASK,
            dir.as_raw_fd(),
            std::ptr::null(),
        )
    };
    if marked < 0 {
        return Err(match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSPC) => MarkError::Limit(
                "fs.fanotify.max_user_marks reached: directories from here on are not watched",
            ),
            _ => MarkError::Gone,
        });
    }
    id_of(dir).ok_or(MarkError::Gone)
}

fn unmark(fd: &OwnedFd, dir: &OwnedFd) {
    // SAFETY: as in `mark`.
    unsafe {
        libc::fanotify_mark(
            fd.as_raw_fd(),
            libc::FAN_MARK_REMOVE,
            MASK,
            dir.as_raw_fd(),
            std::ptr::null(),
        )
    };
}

/// `dir`'s filesystem id and file handle, as fanotify reports them. An
/// identifying handle is enough (`AT_HANDLE_FID`: overlayfs has no
/// decodable ones).
fn id_of(dir: &OwnedFd) -> Option<DirId> {
    #[repr(C)]
    struct Handle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; libc::MAX_HANDLE_SZ as usize],
    }
    let mut handle = Handle {
        handle_bytes: libc::MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; libc::MAX_HANDLE_SZ as usize],
    };
    let mut mount_id = 0;
    // SAFETY: `handle` has room for MAX_HANDLE_SZ bytes as its header says;
    // the empty path with AT_EMPTY_PATH names `dir` itself.
    let done = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            c"".as_ptr(),
            (&raw mut handle).cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH | libc::AT_HANDLE_FID,
        )
    };
    if done < 0 {
        return None;
    }
    let statfs = rustix::fs::fstatfs(dir).ok()?;
    // SAFETY: `fsid_t` is two ints, as fanotify's `__kernel_fsid_t`.
    let fsid: [u8; 8] = unsafe { std::mem::transmute(statfs.f_fsid) };
    let len = (handle.handle_bytes as usize).min(handle.f_handle.len());
    Some(dir_id(
        &fsid,
        &handle.handle_type.to_ne_bytes(),
        &handle.f_handle[..len],
    ))
}

/// Who `pid` is, if it still exists: its pid in its own namespace (a
/// container's pid 1 is 1) and its command name.
fn origin_of(pid: i32) -> Option<Origin> {
    let pid = u32::try_from(pid).ok().filter(|&p| p != 0)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ns_pid = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|ids| ids.split_whitespace().last())
        .and_then(|id| id.parse().ok())?;
    let comm = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
    Some(Origin {
        pid,
        ns_pid,
        comm: comm.strip_suffix(b"\n").unwrap_or(&comm).to_vec(),
    })
}
