//! Paths inside a recording: absolute, normalised byte strings as the
//! recorded process saw them (container paths are relative to the container's
//! root; record-mode paths are host paths). Bytes, not `str`, because Linux
//! file names need not be UTF-8.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest path accepted, matching Linux's `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;

/// A validated absolute path: starts with `/`, no empty, `.` or `..`
/// components, no NUL bytes, no trailing slash, and not the root itself.
///
/// Validation happens on construction *and* when a recording is read back
/// (`serde` goes through [`RecPath::new`]), so a crafted recording cannot
/// smuggle `..` into `export`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct RecPath(Vec<u8>);

impl RecPath {
    /// Validates and normalises (`//` collapses to `/`).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RecPath> {
        let bytes = bytes.into();
        let invalid = |reason| Error::InvalidPath {
            path: String::from_utf8_lossy(&bytes).into_owned(),
            reason,
        };
        if bytes.first() != Some(&b'/') {
            return Err(invalid("must be absolute"));
        }
        if bytes.len() > MAX_PATH_LEN {
            return Err(invalid("longer than PATH_MAX"));
        }
        if bytes.contains(&0) {
            return Err(invalid("contains a NUL byte"));
        }
        let mut normal = Vec::with_capacity(bytes.len());
        for component in bytes.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            if component == b"." || component == b".." {
                return Err(invalid("contains a '.' or '..' component"));
            }
            normal.push(b'/');
            normal.extend_from_slice(component);
        }
        if normal.is_empty() {
            return Err(invalid("is the root directory"));
        }
        Ok(RecPath(normal))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The components after the leading `/`.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0[1..].split(|&b| b == b'/')
    }

    /// The parent directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RecPath> {
        let cut = self.0.iter().rposition(|&b| b == b'/')?;
        (cut > 0).then(|| RecPath(self.0[..cut].to_vec()))
    }

    /// True when `self` is strictly below `dir`.
    pub fn is_within(&self, dir: &RecPath) -> bool {
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }

    /// The path as a `Path`, without copying (for glob matching and joins).
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// `self` with the prefix `from` replaced by `to` (for directory renames).
    /// Caller guarantees `self == from` or `self.is_within(from)`.
    pub fn rebased(&self, from: &RecPath, to: &RecPath) -> RecPath {
        let mut bytes = to.0.clone();
        bytes.extend_from_slice(&self.0[from.0.len()..]);
        RecPath(bytes)
    }

    /// Lossy text for display and glob matching.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// A set of path globs as users write them: `*` stays within a directory,
/// `**` crosses `/`, and `/dir/**` also matches `/dir` itself.
#[derive(Clone, Debug)]
pub struct PathGlobs(GlobSet);

impl PathGlobs {
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<PathGlobs> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            let pattern = glob.as_ref();
            let dir = pattern.strip_suffix("/**").filter(|d| !d.is_empty());
            for p in std::iter::once(pattern).chain(dir) {
                let built = GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|source| Error::InvalidGlob {
                        pattern: pattern.to_string(),
                        source,
                    })?;
                builder.add(built);
            }
        }
        let set = builder.build().map_err(|source| Error::InvalidGlob {
            pattern: globs
                .iter()
                .map(|g| g.as_ref())
                .collect::<Vec<_>>()
                .join(","),
            source,
        })?;
        Ok(PathGlobs(set))
    }

    pub fn matches(&self, path: &RecPath) -> bool {
        self.0.is_match(path.as_path())
    }
}

// Ordering is the byte order of the path, so maps keyed by `RecPath` can be
// searched by raw byte prefixes (e.g. "everything below /a/").
impl std::borrow::Borrow<[u8]> for RecPath {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Vec<u8>> for RecPath {
    type Error = Error;
    fn try_from(bytes: Vec<u8>) -> Result<RecPath> {
        RecPath::new(bytes)
    }
}

impl From<RecPath> for Vec<u8> {
    fn from(path: RecPath) -> Vec<u8> {
        path.0
    }
}

impl TryFrom<&str> for RecPath {
    type Error = Error;
    fn try_from(s: &str) -> Result<RecPath> {
        RecPath::new(s.as_bytes())
    }
}

impl fmt::Display for RecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_rejects() {
        assert_eq!(RecPath::new("//a///b").unwrap().as_bytes(), b"/a/b");
        for bad in ["a/b", "/", "/a/../b", "/a/./b", "/a\0b", ""] {
            assert!(RecPath::new(bad).is_err(), "{bad:?} accepted");
        }
        let non_utf8 = RecPath::new(b"/caf\xe9".to_vec()).unwrap();
        assert_eq!(non_utf8.components().next().unwrap(), b"caf\xe9");
    }

    #[test]
    fn relations() {
        let a = RecPath::new("/a").unwrap();
        let ab = RecPath::new("/a/b").unwrap();
        let abc = RecPath::new("/ab/c").unwrap();
        assert!(ab.is_within(&a));
        assert!(!abc.is_within(&a));
        assert!(!a.is_within(&a));
        assert_eq!(ab.parent(), Some(a.clone()));
        assert_eq!(a.parent(), None);
        let x = RecPath::new("/x").unwrap();
        assert_eq!(ab.rebased(&a, &x).as_bytes(), b"/x/b");
    }

    #[test]
    fn deserialising_revalidates() {
        let evil = postcard::to_stdvec(&b"/../etc/passwd".to_vec()).unwrap();
        assert!(postcard::from_bytes::<RecPath>(&evil).is_err());
    }
}
