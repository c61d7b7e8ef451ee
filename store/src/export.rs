//! Materialising a moment as a directory tree: `export` into a new
//! directory, `restore_into` over an existing root (a new container's).
//!
//! Safety: every entry is created relative to a directory file descriptor
//! opened with `O_NOFOLLOW` one component at a time, starting from the
//! target. A path can therefore never climb out (`..` is rejected by
//! [`RecPath`] anyway) nor pass through a symlink — not even one the export
//! itself just created. Export creates files with `O_EXCL`, so nothing
//! that already exists is overwritten; restore removes what stands at a
//! path (unlinking, never following) before creating the recorded entry.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::content::ContentRef;
use crate::error::{contained, Error, Result};
use crate::path::RecPath;
use crate::recording::{Recording, StoredContent};
use crate::state::{Node, NodeKind};
use crate::time::Moment;

/// How to export.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Only entries that differ from the baseline (changed or new).
    pub changes_only: bool,
    /// Restore owners and setuid/setgid bits (needs root). Off by default:
    /// an export is for reading, and must not plant setuid binaries.
    pub preserve_owner: bool,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Entries not written, with why (e.g. manifest-only baseline content).
    pub skipped: Vec<(RecPath, String)>,
    /// Gaps at or before the moment: the export may be wrong near them.
    pub gaps: u64,
}

/// Progress of a running export, in bytes of file content.
#[derive(Copy, Clone, Debug)]
pub struct ExportProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a restore changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Files, directories and symlinks written (changed since the baseline).
    pub written: u64,
    /// Entries removed (deleted since the baseline).
    pub removed: u64,
    pub bytes: u64,
    /// Gaps at or before the moment: the state may be wrong near them.
    pub gaps: u64,
}

impl Recording {
    /// Writes the tree at `moment` into `target`, which must not exist or be
    /// an empty directory.
    pub fn export(
        &self,
        moment: &Moment,
        target: &Path,
        options: &ExportOptions,
    ) -> Result<ExportReport> {
        self.export_with_progress(moment, target, options, &mut |_| {})
    }

    /// [`Recording::export`], calling `progress` after each file.
    pub fn export_with_progress(
        &self,
        moment: &Moment,
        target: &Path,
        options: &ExportOptions,
        progress: &mut dyn FnMut(ExportProgress),
    ) -> Result<ExportReport> {
        contained(self.path(), || {
            let snapshot = self.state_at(moment)?;
            let root = open_target(target)?;
            let entries: Vec<(&RecPath, &Node)> = snapshot
                .state
                .iter()
                .filter(|(path, node)| {
                    !options.changes_only || snapshot.baseline.get(path) != Some(*node)
                })
                .collect();
            let bytes_total = entries
                .iter()
                .filter_map(|(_, n)| n.content().map(|c| c.size))
                .sum();
            let reader = RecordedContent {
                recording: self,
                reader: self.content_reader()?,
            };
            let mut writer = TreeWriter::new(target, root, options.preserve_owner, false);
            let mut report = ExportReport {
                gaps: snapshot.gaps.len() as u64,
                ..ExportReport::default()
            };
            for (path, node) in entries {
                match writer.entry(&reader, path, node)? {
                    Written::Content(bytes) => {
                        report.files += 1;
                        report.bytes += bytes;
                        progress(ExportProgress {
                            bytes_done: report.bytes,
                            bytes_total,
                        });
                    }
                    Written::Dir => report.dirs += 1,
                    Written::Symlink => report.symlinks += 1,
                    Written::NoContent => report.skipped.push((
                        path.clone(),
                        "content not recorded (manifest-only baseline)".into(),
                    )),
                }
            }
            writer.finish()?;
            Ok(report)
        })
    }
}

impl Recording {
    /// Makes the tree under `root` hold this recording's state at `moment`,
    /// given that it starts as the recording's baseline (a new container
    /// of the same image): what was deleted since the baseline is removed,
    /// what changed or appeared is written over whatever stands there, with
    /// the recorded owners and modes. Refuses, before touching anything, a
    /// state with a file whose content was not recorded.
    pub fn restore_into(&self, moment: &Moment, root: &Path) -> Result<RestoreReport> {
        contained(self.path(), || {
            let snapshot = self.state_at(moment)?;
            let changed: Vec<(&RecPath, &Node)> = snapshot
                .state
                .iter()
                .filter(|(path, node)| snapshot.baseline.get(path) != Some(*node))
                .collect();
            let reader = RecordedContent {
                recording: self,
                reader: self.content_reader()?,
            };
            for (path, node) in &changed {
                if let Some(content) = node.content() {
                    if !reader.has(content)? {
                        return Err(Error::ExportTarget {
                            path: root.to_path_buf(),
                            reason: format!(
                                "the recording has no content for {path} (larger than \
                                 max-file-size when recorded); its state cannot be restored exactly"
                            ),
                        });
                    }
                }
            }
            let fd = rfs::open(
                root,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io(root, e.into()))?;
            let mut writer = TreeWriter::new(root, fd, true, true);
            let mut report = RestoreReport {
                gaps: snapshot.gaps.len() as u64,
                ..RestoreReport::default()
            };
            // A deleted entry whose parent is deleted too goes with it.
            let gone = |path: &RecPath| {
                snapshot.baseline.get(path).is_some() && snapshot.state.get(path).is_none()
            };
            for (path, _) in snapshot.baseline.iter() {
                if gone(path) && !path.parent().is_some_and(|parent| gone(&parent)) {
                    writer.remove(path)?;
                    report.removed += 1;
                }
            }
            for (path, node) in changed {
                if let Written::Content(bytes) = writer.entry(&reader, path, node)? {
                    report.bytes += bytes;
                }
                report.written += 1;
            }
            writer.finish()?;
            Ok(report)
        })
    }
}

/// Reads recorded content for a [`TreeWriter`].
struct RecordedContent<'r> {
    recording: &'r Recording,
    reader: StoredContent,
}

impl RecordedContent<'_> {
    /// Whether `content` was recorded (not so for a manifest-only
    /// baseline's files, or files over `max-file-size`).
    fn has(&self, content: &ContentRef) -> Result<bool> {
        let record = self.reader.record(&content.id);
        Ok(record
            .map_err(|f| self.recording.fault(content, f))?
            .is_some())
    }
}

/// What [`TreeWriter::entry`] did.
enum Written {
    /// A file with this many bytes.
    Content(u64),
    /// Nothing: the file's content was not recorded.
    NoContent,
    Dir,
    Symlink,
}

fn open_target(target: &Path) -> Result<OwnedFd> {
    let err = |reason: String| Error::ExportTarget {
        path: target.to_path_buf(),
        reason,
    };
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(err(
                    "directory is not empty; export into a new or empty directory".into(),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        }
        Err(e) => return Err(Error::io(target, e)),
    }
    rfs::open(
        target,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(target, e.into()))
}

struct TreeWriter {
    target: PathBuf,
    root: OwnedFd,
    /// The directories of the previous entry's parent chain, outermost
    /// first. Entries arrive in path order, so this works as a stack.
    open_dirs: Vec<(RecPath, OwnedFd)>,
    /// Directory modes are applied last, so a read-only directory does not
    /// block writing its children.
    deferred_dir_modes: Vec<(RecPath, u32, u32, u32)>,
    preserve_owner: bool,
    /// Replace what stands at a path (restore) instead of refusing to
    /// (export).
    replace: bool,
}

/// Directories created only because a recorded entry lives below them.
const IMPLIED_DIR_MODE: u32 = 0o755;

impl TreeWriter {
    fn new(target: &Path, root: OwnedFd, preserve_owner: bool, replace: bool) -> TreeWriter {
        TreeWriter {
            target: target.to_path_buf(),
            root,
            open_dirs: Vec::new(),
            deferred_dir_modes: Vec::new(),
            preserve_owner,
            replace,
        }
    }

    /// Writes one recorded entry.
    fn entry(&mut self, content: &RecordedContent, path: &RecPath, node: &Node) -> Result<Written> {
        match &node.kind {
            NodeKind::File(file) => {
                let data = match content.reader.read(file) {
                    Ok(data) => data,
                    Err(_) if !content.has(file)? => return Ok(Written::NoContent),
                    Err(fault) => return Err(content.recording.fault(file, fault)),
                };
                self.file(path, node, &data)?;
                Ok(Written::Content(data.len() as u64))
            }
            NodeKind::Dir => {
                self.dir(path, node)?;
                Ok(Written::Dir)
            }
            NodeKind::Symlink(link_target) => {
                self.symlink(path, node, link_target)?;
                Ok(Written::Symlink)
            }
        }
    }

    /// Removes `path` (a whole directory tree), if it exists.
    fn remove(&mut self, path: &RecPath) -> Result<()> {
        let host = self.host_path(path);
        let name = path.components().last().expect("a RecPath has a component");
        let parent = match path.parent() {
            None => self.root.try_clone().map_err(|e| Error::io(&host, e))?,
            Some(parent) => match self.walk(&parent) {
                Ok(fd) => fd,
                // Its directory is not there: neither is it.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            },
        };
        self.open_dirs.clear();
        remove_entry(parent.as_fd(), name).map_err(|e| Error::io(&host, e.into()))
    }

    fn file(&mut self, path: &RecPath, node: &Node, data: &[u8]) -> Result<()> {
        let host = self.host_path(path);
        let replace = self.replace;
        let (parent, name) = self.parent_of(path)?;
        if replace {
            remove_entry(parent, name).map_err(|e| Error::io(&host, e.into()))?;
        }
        let fd = rfs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.error(path, e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(data)
            .map_err(|e| Error::io(&self.host_path(path), e))?;
        if self.preserve_owner {
            rfs::fchown(&file, Some(uid(node.uid)), Some(gid(node.gid)))
                .map_err(|e| self.error(path, e))?;
        }
        rfs::fchmod(&file, Mode::from_raw_mode(self.mode(node.mode)))
            .map_err(|e| self.error(path, e))?;
        Ok(())
    }

    fn dir(&mut self, path: &RecPath, node: &Node) -> Result<()> {
        let host = self.host_path(path);
        let replace = self.replace;
        let (parent, name) = self.parent_of(path)?;
        let mode = Mode::from_raw_mode(0o700);
        match rfs::mkdirat(parent, name, mode) {
            // A directory already there is kept with its contents; its mode
            // is set below like a new one's.
            Err(rustix::io::Errno::EXIST) if replace => {
                let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io(&host, e.into()))?;
                if rfs::FileType::from_raw_mode(existing.st_mode) != rfs::FileType::Directory {
                    remove_entry(parent, name).map_err(|e| Error::io(&host, e.into()))?;
                    rfs::mkdirat(parent, name, mode).map_err(|e| Error::io(&host, e.into()))?;
                }
            }
            result => result.map_err(|e| Error::io(&host, e.into()))?,
        }
        self.deferred_dir_modes
            .push((path.clone(), node.mode, node.uid, node.gid));
        Ok(())
    }

    fn symlink(&mut self, path: &RecPath, node: &Node, link_target: &[u8]) -> Result<()> {
        let host = self.host_path(path);
        let replace = self.replace;
        let (parent, name) = self.parent_of(path)?;
        if replace {
            remove_entry(parent, name).map_err(|e| Error::io(&host, e.into()))?;
        }
        let link_target = std::ffi::OsStr::from_bytes(link_target);
        rfs::symlinkat(link_target, parent, name).map_err(|e| Error::io(&host, e.into()))?;
        if self.preserve_owner {
            let parent = self
                .open_dirs
                .last()
                .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
            rfs::chownat(
                parent,
                name,
                Some(uid(node.uid)),
                Some(gid(node.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.error(path, e))?;
        }
        Ok(())
    }

    /// Applies directory modes, deepest first.
    fn finish(mut self) -> Result<()> {
        self.open_dirs.clear();
        let deferred = std::mem::take(&mut self.deferred_dir_modes);
        for (path, mode, owner, group) in deferred.into_iter().rev() {
            let fd = self.walk(&path)?;
            if self.preserve_owner {
                rfs::fchown(&fd, Some(uid(owner)), Some(gid(group)))
                    .map_err(|e| self.error(&path, e))?;
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(self.mode(mode)))
                .map_err(|e| self.error(&path, e))?;
        }
        Ok(())
    }

    /// The directory fd that will hold `path`, and `path`'s last component.
    fn parent_of<'p>(
        &mut self,
        path: &'p RecPath,
    ) -> Result<(std::os::fd::BorrowedFd<'_>, &'p [u8])> {
        let name = path
            .components()
            .last()
            .expect("a RecPath has at least one component");
        match path.parent() {
            None => {
                self.open_dirs.clear();
                Ok((self.root.as_fd(), name))
            }
            Some(parent) => {
                // Keep the still-useful prefix of the open directory chain.
                while let Some((open, _)) = self.open_dirs.last() {
                    if *open == parent || parent.is_within(open) {
                        break;
                    }
                    self.open_dirs.pop();
                }
                if self.open_dirs.last().map(|(p, _)| p) != Some(&parent) {
                    let fd = self.walk_from_stack(&parent)?;
                    self.open_dirs.push((parent, fd));
                }
                let fd = self.open_dirs.last().expect("just pushed").1.as_fd();
                Ok((fd, name))
            }
        }
    }

    /// Opens `dir` starting from the deepest open ancestor, creating
    /// missing components.
    fn walk_from_stack(&mut self, dir: &RecPath) -> Result<OwnedFd> {
        let (start_depth, mut current) = match self.open_dirs.last() {
            Some((p, fd)) => (
                p.components().count(),
                fd.try_clone().map_err(|e| Error::io(&self.target, e))?,
            ),
            None => (
                0,
                self.root
                    .try_clone()
                    .map_err(|e| Error::io(&self.target, e))?,
            ),
        };
        for component in dir.components().skip(start_depth) {
            current = self.step(current, component, true, dir)?;
        }
        Ok(current)
    }

    /// Opens `dir` from the root, never creating anything.
    fn walk(&self, dir: &RecPath) -> Result<OwnedFd> {
        let mut current = self
            .root
            .try_clone()
            .map_err(|e| Error::io(&self.target, e))?;
        for component in dir.components() {
            current = self.step(current, component, false, dir)?;
        }
        Ok(current)
    }

    fn step(
        &self,
        at: OwnedFd,
        component: &[u8],
        create: bool,
        whole: &RecPath,
    ) -> Result<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(&at, component, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::NOENT) if create => {
                rfs::mkdirat(&at, component, Mode::from_raw_mode(IMPLIED_DIR_MODE))
                    .map_err(|e| self.error(whole, e))?;
                rfs::openat(&at, component, flags, Mode::empty()).map_err(|e| self.error(whole, e))
            }
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => Err(Error::ExportTarget {
                path: self.host_path(whole),
                reason:
                    "a path component is a symlink or not a directory; refusing to write through it"
                        .into(),
            }),
            Err(e) => Err(self.error(whole, e)),
        }
    }

    fn mode(&self, mode: u32) -> u32 {
        if self.preserve_owner {
            mode & 0o7777
        } else {
            mode & 0o1777
        }
    }

    fn host_path(&self, path: &RecPath) -> PathBuf {
        self.target
            .join(std::ffi::OsStr::from_bytes(&path.as_bytes()[1..]))
    }

    fn error(&self, path: &RecPath, e: rustix::io::Errno) -> Error {
        Error::io(&self.host_path(path), e.into())
    }
}

/// Removes the entry `name` in `parent`, a directory with everything in
/// it; never follows a symlink. Absent is fine.
fn remove_entry(parent: BorrowedFd, name: &[u8]) -> rustix::io::Result<()> {
    match rfs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::ISDIR) => {
            let dir = rfs::openat(
                parent,
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let names: Vec<Vec<u8>> = rfs::Dir::read_from(&dir)?
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_bytes().to_vec())
                .filter(|name| name != b"." && name != b"..")
                .collect();
            for child in names {
                remove_entry(dir.as_fd(), &child)?;
            }
            rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)
        }
        Err(e) => Err(e),
    }
}

fn uid(raw: u32) -> rfs::Uid {
    rfs::Uid::from_raw(raw)
}

fn gid(raw: u32) -> rfs::Gid {
    rfs::Gid::from_raw(raw)
}
