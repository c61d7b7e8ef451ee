//! Replacing a file so that its readers (containerd loading its config, a
//! shell looking up the shim) see the old file or the new one, never a
//! half-written one, even across a crash.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` to `path` with `mode` through a temporary file in the same
/// directory (a rename is atomic only within one file system), creating
/// missing parent directories.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // A rename would replace the link itself, not the file it names (which
    // under --host-root may not even be the host path the link means).
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; name the file it points to instead",
                path.display()
            ),
        ));
    }
    let mut temp = tempfile::Builder::new()
        .prefix(".diffkeeper-installer-")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|err| err.error)?;
    // The rename is an entry in the directory: until the directory is
    // synced, a crash can bring the old file back.
    File::open(dir)?.sync_all()
}
