//! The starting tree, scanned on a thread of its own while the workload
//! already runs (the workload is never delayed by it).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use diffkeeper_store::{ContentId, ContentRef, RecPath};
use tokio::sync::mpsc::Sender;

use crate::filter::PathFilter;

/// One thing the scan found, or its end.
#[derive(Debug)]
pub enum BaselineItem {
    Entry {
        path: RecPath,
        kind: EntryKind,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// The scan is over; `note` says why it is not a full baseline.
    Done { entries: u64, note: Option<String> },
}

#[derive(Debug)]
pub enum EntryKind {
    /// A regular file and its content.
    File(Vec<u8>),
    /// A regular file's hash and size only (the content budget is spent,
    /// or the file exceeds `max_file_size`).
    FileManifest(ContentRef),
    Dir,
    Symlink(Vec<u8>),
}

/// What to scan and how much content to keep.
#[derive(Clone, Debug)]
pub struct BaselineScan {
    /// Host directory the recorded paths are relative to (a rootfs, or `/`).
    pub root: PathBuf,
    /// Recorded directories to scan below `root` (`/` for everything).
    pub subtrees: Vec<PathBuf>,
    pub filter: PathFilter,
    pub max_file_size: u64,
    /// Content bytes kept in total; past it, files are recorded as hashes.
    pub max_total_bytes: u64,
    /// Store content at all (false: a manifest-only baseline).
    pub with_content: bool,
}

impl BaselineScan {
    /// Scans on a new thread, sending what it finds; the last item is
    /// always `Done` (unless the receiver went away).
    pub fn spawn(self, tx: Sender<BaselineItem>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("diffkeeper-baseline".into())
            .spawn(move || self.run(&tx))
            .expect("spawning the baseline thread")
    }

    fn run(&self, tx: &Sender<BaselineItem>) {
        let mut walk = Walk {
            scan: self,
            tx,
            entries: 0,
            bytes: 0,
            manifest_from: (!self.with_content).then_some(0),
            skipped: 0,
        };
        for subtree in &self.subtrees {
            if walk.visit(subtree).is_err() {
                return; // the receiver is gone: the recording ended
            }
        }
        let mut notes = Vec::new();
        if let Some(at) = walk.manifest_from.filter(|_| self.with_content) {
            notes.push(format!(
                "content budget of {} bytes spent after {at} entries; later files are recorded by hash only",
                self.max_total_bytes
            ));
        }
        if walk.skipped > 0 {
            notes.push(format!("{} entries could not be read", walk.skipped));
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        let _ = tx.blocking_send(BaselineItem::Done {
            entries: walk.entries,
            note,
        });
    }
}

struct Walk<'a> {
    scan: &'a BaselineScan,
    tx: &'a Sender<BaselineItem>,
    entries: u64,
    bytes: u64,
    /// Entry count at which content stopped being kept.
    manifest_from: Option<u64>,
    skipped: u64,
}

struct Gone;

/// A directory still to list: its name in an open parent directory (the
/// parent stays open only while such entries are pending, so open
/// descriptors stay about as many as the tree is deep).
struct Pending {
    recorded: PathBuf,
    parent: Rc<OwnedFd>,
    name: OsString,
}

/// Opening an entry below the scanned root: never following a symlink, and
/// never blocking on a FIFO a workload put where a file was.
const NO_FOLLOW: OFlags = OFlags::NOFOLLOW
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY);

impl Walk<'_> {
    /// Scans `subtree`. The subtree itself is the caller's choice (a rootfs,
    /// a watched directory); below it every entry is reached through its
    /// parent's descriptor without following symlinks, so a workload that
    /// swaps a directory for a symlink to `/` mid-scan cannot make the
    /// recording hold host files.
    fn visit(&mut self, subtree: &Path) -> Result<(), Gone> {
        let host = self
            .scan
            .root
            .join(subtree.strip_prefix("/").unwrap_or(subtree));
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let Ok(top) = rfs::open(&host, flags, Mode::empty()) else {
            self.skipped += 1;
            return Ok(());
        };
        let mut stack = Vec::new();
        self.list(subtree.to_path_buf(), top, &mut stack)?;
        while let Some(dir) = stack.pop() {
            let flags = NO_FOLLOW | OFlags::DIRECTORY | OFlags::RDONLY;
            match rfs::openat(&*dir.parent, &dir.name, flags, Mode::empty()) {
                Ok(fd) => self.list(dir.recorded, fd, &mut stack)?,
                Err(_) => self.skipped += 1,
            }
        }
        Ok(())
    }

    /// Sends the entries of the open directory `dir` (recorded as
    /// `recorded`) and queues its subdirectories.
    fn list(
        &mut self,
        recorded: PathBuf,
        dir: OwnedFd,
        stack: &mut Vec<Pending>,
    ) -> Result<(), Gone> {
        let Ok(entries) = rfs::Dir::read_from(&dir) else {
            self.skipped += 1;
            return Ok(());
        };
        let mut names: Vec<OsString> = entries
            .filter_map(|e| e.ok())
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|name| name != "." && name != "..")
            .collect();
        // Reverse order on the stack: subdirectories are listed in order.
        names.sort_by(|a, b| b.cmp(a));
        let dir = Rc::new(dir);
        for name in names {
            let recorded_child = recorded.join(&name);
            let Ok(path) = RecPath::new(recorded_child.as_os_str().as_bytes()) else {
                continue;
            };
            let Ok(stat) = rfs::statat(&*dir, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                self.skipped += 1;
                continue;
            };
            let file_type = FileType::from_raw_mode(stat.st_mode);
            if file_type == FileType::Directory && !self.scan.filter.excludes(&path) {
                stack.push(Pending {
                    recorded: recorded_child,
                    parent: dir.clone(),
                    name: name.clone(),
                });
            }
            if !self.scan.filter.accepts(&path) {
                continue;
            }
            let (kind, stat) = match file_type {
                FileType::Directory => (EntryKind::Dir, stat),
                FileType::Symlink => match rfs::readlinkat(&*dir, &name, Vec::new()) {
                    Ok(target) => (EntryKind::Symlink(target.into_bytes()), stat),
                    Err(_) => {
                        self.skipped += 1;
                        continue;
                    }
                },
                FileType::RegularFile => match self.file(&dir, &name) {
                    Some(found) => found,
                    None => {
                        self.skipped += 1;
                        continue;
                    }
                },
                _ => continue, // devices, fifos, sockets are not recorded
            };
            self.entries += 1;
            let item = BaselineItem::Entry {
                path,
                kind,
                mode: stat.st_mode & 0o7777,
                uid: stat.st_uid,
                gid: stat.st_gid,
            };
            self.tx.blocking_send(item).map_err(|_| Gone)?;
        }
        Ok(())
    }

    /// The file `name` in `dir`: its content (or hash) and the status of
    /// what was actually opened, or `None` if it is no longer a regular
    /// file or changed size past the limit while read.
    fn file(&mut self, dir: &OwnedFd, name: &OsStr) -> Option<(EntryKind, rfs::Stat)> {
        let fd = rfs::openat(dir, name, NO_FOLLOW | OFlags::RDONLY, Mode::empty()).ok()?;
        let stat = rfs::fstat(&fd).ok()?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return None;
        }
        let size = stat.st_size as u64;
        let keep = self.manifest_from.is_none()
            && size <= self.scan.max_file_size
            && self.bytes + size <= self.scan.max_total_bytes;
        if self.manifest_from.is_none() && !keep && size <= self.scan.max_file_size {
            self.manifest_from = Some(self.entries);
        }
        let file = std::fs::File::from(fd);
        if keep {
            let mut data = Vec::with_capacity(size as usize);
            file.take(self.scan.max_file_size + 1)
                .read_to_end(&mut data)
                .ok()?;
            if data.len() as u64 > self.scan.max_file_size {
                return None; // grew past the limit while read
            }
            self.bytes += data.len() as u64;
            return Some((EntryKind::File(data), stat));
        }
        let mut hasher = blake3::Hasher::new();
        let size = std::io::copy(&mut std::io::BufReader::new(file), &mut hasher).ok()?;
        let manifest = ContentRef {
            id: ContentId(*hasher.finalize().as_bytes()),
            size,
        };
        Some((EntryKind::FileManifest(manifest), stat))
    }
}
