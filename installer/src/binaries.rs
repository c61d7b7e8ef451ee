//! The shim and the CLI, copied onto the node where containerd finds the
//! shim (its `PATH`) and users find `diffkeeper`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomically;
use crate::Outcome;

/// What `install` copies and `uninstall` removes.
pub const BINARIES: [&str; 2] = ["containerd-shim-diffkeeper-v1", "diffkeeper"];

const MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("{path} not found: build it (cargo build --release -p diffkeeper-shim -p diffkeeper-cli) or point --from at the directory holding it")]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot install {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}; remove it by hand")]
    Remove { path: PathBuf, source: io::Error },
}

/// Copies `from/name` to `bin_dir/name` with mode 0755, unless identical.
pub fn install_binary(from: &Path, bin_dir: &Path, name: &str) -> Result<Outcome, BinaryError> {
    let (source, target) = (from.join(name), bin_dir.join(name));
    let bytes = fs::read(&source).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => BinaryError::Missing {
            path: source.clone(),
        },
        _ => BinaryError::Read {
            path: source.clone(),
            source: err,
        },
    })?;
    let outcome = match fs::read(&target) {
        Ok(old) if old == bytes && mode(&target) == Some(MODE) => return Ok(Outcome::Unchanged),
        Ok(_) => Outcome::Updated,
        Err(err) if err.kind() == io::ErrorKind::NotFound => Outcome::Added,
        Err(err) => {
            return Err(BinaryError::Read {
                path: target,
                source: err,
            })
        }
    };
    // A new file renamed over the old one, never a write into it: running
    // shims execute the old file (a write would fail with ETXTBSY) and keep
    // it until they exit.
    write_atomically(&target, &bytes, MODE).map_err(|err| BinaryError::Write {
        path: target,
        source: err,
    })?;
    Ok(outcome)
}

/// Removes `bin_dir/name`. Running shims keep their (unlinked) binary.
pub fn remove_binary(bin_dir: &Path, name: &str) -> Result<Outcome, BinaryError> {
    let path = bin_dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(Outcome::Removed),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Outcome::Absent),
        Err(err) => Err(BinaryError::Remove { path, source: err }),
    }
}

fn mode(path: &Path) -> Option<u32> {
    Some(fs::metadata(path).ok()?.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_installed_0755_once_and_removed() {
        let (from, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bin_dir = bin.path().join("usr/local/bin");
        fs::write(from.path().join("diffkeeper"), "v1").unwrap();
        let installed = bin_dir.join("diffkeeper");

        assert_eq!(
            install_binary(from.path(), &bin_dir, "diffkeeper").unwrap(),
            Outcome::Added
        );
        assert_eq!(fs::read(&installed).unwrap(), b"v1");
        assert_eq!(mode(&installed), Some(0o755));
        assert_eq!(
            install_binary(from.path(), &bin_dir, "diffkeeper").unwrap(),
            Outcome::Unchanged
        );
        fs::write(from.path().join("diffkeeper"), "v2").unwrap();
        assert_eq!(
            install_binary(from.path(), &bin_dir, "diffkeeper").unwrap(),
            Outcome::Updated
        );
        assert_eq!(fs::read(&installed).unwrap(), b"v2");

        assert_eq!(
            remove_binary(&bin_dir, "diffkeeper").unwrap(),
            Outcome::Removed
        );
        assert!(!installed.exists());
        assert_eq!(
            remove_binary(&bin_dir, "diffkeeper").unwrap(),
            Outcome::Absent
        );
    }

    #[test]
    fn a_missing_source_is_named() {
        let (from, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let err = install_binary(from.path(), bin.path(), "diffkeeper").unwrap_err();
        assert!(
            matches!(&err, BinaryError::Missing { path } if *path == from.path().join("diffkeeper"))
        );
        assert!(err.to_string().contains("--from"), "{err}");
    }
}
