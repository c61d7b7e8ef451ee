//! Reading recorded paths' content without leaving the recorded root.
//!
//! A container's root is reached through `/proc/<pid>/root` while it runs
//! (its own mounts included) and through the bundle's rootfs afterwards.
//! Every open uses `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a
//! symlink inside the container that points at `/etc/shadow` resolves to
//! the *container's* `/etc/shadow`, never the host's; the last component is
//! not followed at all.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use diffkeeper_store::RecPath;

/// A directory that recorded paths are resolved in.
#[derive(Debug)]
pub struct RootView {
    dir: OwnedFd,
}

/// What was found at a path.
#[derive(Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// A regular file and its permission bits (its content is in the
    /// caller's buffer).
    File { mode: u32 },
    /// A regular file larger than the limit: not read.
    TooLarge { size: u64 },
    /// Not a regular file (the events say what it became).
    NotAFile,
    /// Nothing there: removed or renamed since it was written (the events
    /// about that may not have been handled yet).
    Gone,
}

impl RootView {
    /// Resolves paths in `dir` (e.g. `/proc/<pid>/root`, a rootfs, or `/`).
    pub fn open(dir: &Path) -> std::io::Result<RootView> {
        let dir = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootView { dir })
    }

    /// The permission bits of whatever is at `path` now (not following a
    /// final symlink), or `None` if nothing is there.
    pub fn mode(&self, path: &RecPath) -> Option<u32> {
        let fd = rustix::fs::openat2(
            &self.dir,
            &path.as_bytes()[1..],
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()?;
        rustix::fs::fstat(&fd).ok().map(|st| st.st_mode & 0o7777)
    }

    /// Reads `path` into `data` (replacing what it held) if it is a regular
    /// file of at most `limit` bytes.
    pub fn read(
        &self,
        path: &RecPath,
        limit: u64,
        data: &mut Vec<u8>,
    ) -> std::io::Result<Snapshot> {
        data.clear();
        let relative = &path.as_bytes()[1..];
        let opened = rustix::fs::openat2(
            &self.dir,
            relative,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(Snapshot::Gone),
            // The last component is a symlink (`NOFOLLOW`).
            Err(rustix::io::Errno::LOOP) => return Ok(Snapshot::NotAFile),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Ok(Snapshot::NotAFile);
        }
        let size = stat.st_size as u64;
        if size > limit {
            return Ok(Snapshot::TooLarge { size });
        }
        data.reserve(size as usize);
        // The file may grow while we read: never read past the limit.
        std::fs::File::from(fd).take(limit + 1).read_to_end(data)?;
        if data.len() as u64 > limit {
            return Ok(Snapshot::TooLarge {
                size: data.len() as u64,
            });
        }
        Ok(Snapshot::File {
            mode: stat.st_mode & 0o7777,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), b"inside").unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("file-link")).unwrap();
        let view = RootView::open(root.path()).unwrap();
        let p = |s: &str| RecPath::new(s).unwrap();
        let mut data = Vec::new();
        // An intermediate absolute symlink resolves against the root.
        assert_eq!(
            view.read(&p("/link/passwd"), 1 << 20, &mut data).unwrap(),
            Snapshot::File {
                mode: 0o666 & !umask()
            }
        );
        assert_eq!(data, b"inside");
        // The last component is never followed.
        assert_eq!(
            view.read(&p("/file-link"), 1 << 20, &mut data).unwrap(),
            Snapshot::NotAFile
        );
        assert_eq!(
            view.read(&p("/missing"), 1 << 20, &mut data).unwrap(),
            Snapshot::Gone
        );
        assert_eq!(
            view.read(&p("/etc/passwd"), 3, &mut data).unwrap(),
            Snapshot::TooLarge { size: 6 }
        );
    }

    fn umask() -> u32 {
        let probe = tempfile::tempdir().unwrap();
        let f = probe.path().join("f");
        std::fs::write(&f, b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        0o666 & !std::fs::metadata(&f).unwrap().permissions().mode() & 0o777
    }
}
