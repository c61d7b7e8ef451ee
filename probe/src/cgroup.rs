//! cgroup v2 helpers: the id the probe filters on, and a child cgroup to put a
//! workload in.
//!
//! The probe filters on `bpf_get_current_cgroup_id()`, which is always the
//! task's cgroup **v2** id. On hybrid hosts (v1 controllers, v2 mounted at
//! `/sys/fs/cgroup/unified`) container runtimes only place processes in v1
//! hierarchies, so every container shares the v2 root; a dedicated v2 child
//! gives the workload an id of its own. Pure v2 hosts work the same way, under
//! `/sys/fs/cgroup` (or the runtime's own cgroup directory can be used as is).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{sys, Error};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup v2 id of a cgroup directory: the inode number of the directory
/// in cgroupfs, which is what the kernel's `cgroup_id()` returns.
pub fn cgroup_id_of(path: impl AsRef<Path>) -> Result<u64, Error> {
    let path = path.as_ref();
    if !is_cgroup2(path)? {
        return Err(Error::NotCgroup2 { path: path.into() });
    }
    let meta = fs::metadata(path).map_err(|source| Error::Cgroup {
        path: path.into(),
        source,
    })?;
    Ok(meta.ino())
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> Result<PathBuf, Error> {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if is_cgroup2(Path::new(candidate)).unwrap_or(false) {
            return Ok(PathBuf::from(candidate));
        }
    }
    Err(Error::NoCgroup2)
}

fn is_cgroup2(path: &Path) -> Result<bool, Error> {
    let magic = sys::fs_magic(path).map_err(|source| Error::Cgroup {
        path: path.into(),
        source,
    })?;
    Ok(magic == CGROUP2_SUPER_MAGIC)
}

/// A cgroup v2 directory this process created, removed again on drop.
///
/// ```no_run
/// # fn main() -> Result<(), diffkeeper_probe::Error> {
/// use diffkeeper_probe::ChildCgroup;
/// let cgroup = ChildCgroup::create("diffkeeper/ci-job-42")?;
/// let mut command = std::process::Command::new("make");
/// cgroup.spawn_inside(&mut command);
/// let status = command.status();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChildCgroup {
    path: PathBuf,
    id: u64,
    /// Directories created for it, innermost first, removed if left empty.
    created: Vec<PathBuf>,
}

impl ChildCgroup {
    /// Creates `relative` (and missing parents) under the cgroup v2 root.
    /// Fails if the leaf already exists: two owners would remove it twice.
    pub fn create(relative: impl AsRef<Path>) -> Result<Self, Error> {
        let root = cgroup2_root()?;
        let relative = relative.as_ref();
        let path = root.join(relative.strip_prefix("/").unwrap_or(relative));
        let mut created = Vec::new();
        let mut missing: Vec<&Path> = path
            .ancestors()
            .take_while(|dir| *dir != root && !dir.exists())
            .collect();
        if missing.first() != Some(&path.as_path()) {
            return Err(Error::Cgroup {
                path,
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            });
        }
        while let Some(dir) = missing.pop() {
            match fs::create_dir(dir) {
                Ok(()) => created.insert(0, dir.to_path_buf()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir != path => {}
                Err(source) => {
                    remove_dirs(&created);
                    return Err(Error::Cgroup {
                        path: dir.into(),
                        source,
                    });
                }
            }
        }
        let id = cgroup_id_of(&path).inspect_err(|_| remove_dirs(&created))?;
        tracing::debug!(?path, id, "created cgroup");
        Ok(Self { path, id, created })
    }

    /// The id to pass to [`crate::Probe::watch`].
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` (and so all its future children) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), Error> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(|source| Error::Cgroup {
            path: procs,
            source,
        })
    }

    /// Makes `command`'s child join this cgroup between fork and exec, so the
    /// exec and everything after it are seen under this cgroup's id.
    pub fn spawn_inside(&self, command: &mut Command) {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroupfs paths have no NUL");
        // SAFETY: the hook runs in the forked child and only makes
        // async-signal-safe calls (open, write, close) on memory prepared
        // before the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || join_cgroup(&procs));
        }
    }
}

/// Writes "0" to `cgroup.procs`: the kernel reads it as "the writing process".
fn join_cgroup(procs: &CString) -> io::Result<()> {
    // SAFETY: procs is NUL-terminated; the fd is closed below.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is open and the buffer is one valid byte.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: fd was opened above and is not used after this.
    unsafe { libc::close(fd) };
    result
}

fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(err) = fs::remove_dir(dir) {
            // Busy parents are shared with other cgroups; only the leaf matters.
            if dir == &dirs[0] {
                tracing::warn!(?dir, %err, "cannot remove cgroup (processes still inside?)");
            }
            return;
        }
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        remove_dirs(&self.created);
    }
}
