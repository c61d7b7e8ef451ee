//! Typed records decoded from the ring buffer.

use std::ffi::OsStr;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::abi::{self, RawEvent, RawGap};

/// What a watcher receives, in the order the kernel produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    /// Events were lost here (the ring buffer was full); the recorder must not
    /// trust its picture of the files touched in this window (rescan them).
    Gap(Gap),
}

/// `count` events of one cgroup lost between `from_ns` and `to_ns` (kernel
/// monotonic clock, the same clock as [`Event::ts_ns`]). A count of 0:
/// unknown (the inotify fallback cannot count what it lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub count: u64,
    pub from_ns: u64,
    pub to_ns: u64,
    /// Why, for the recording's "incomplete" list.
    pub reason: &'static str,
}

/// Why the eBPF probe loses events.
pub(crate) const RING_FULL: &str = "the probe's ring buffer was full";

/// The operation an [`Event`] reports. Each is reported only when it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// open/openat/openat2/creat with write intent (O_WRONLY, O_RDWR, O_CREAT
    /// or O_TRUNC); `fd` is the new descriptor, `op_flags` the open flags.
    Open,
    /// write/pwrite64/writev/pwritev/pwritev2, and copy_file_range/sendfile/
    /// splice into a file: `len` bytes at `offset`.
    Write,
    /// truncate/ftruncate to `len` bytes.
    Truncate,
    /// fallocate: `op_flags` is the mode, range `offset`..`offset + len`.
    Fallocate,
    /// rename/renameat/renameat2 from `path` to `path2`.
    Rename,
    /// unlink/unlinkat.
    Unlink,
    Mkdir,
    /// rmdir, unlinkat(AT_REMOVEDIR).
    Rmdir,
    /// symlink `path` pointing to `path2` (as given, not resolved).
    Symlink,
    /// hard link `path` to the existing `path2`.
    Link,
    /// chmod family: new `mode`.
    Chmod,
    /// chown family: new `uid`/`gid` (`None` for unchanged).
    Chown,
    /// Close of an fd this process wrote through: the moment to read content.
    Close,
    /// fsync/fdatasync.
    Fsync,
    /// Shared writable mapping of the file at address `offset`, `len` bytes:
    /// the file may change without any write(2) until the process exits.
    Mmap,
    /// msync of the address range `offset`..`offset + len` (no path: match it
    /// to an earlier [`Op::Mmap`] of the same pid).
    Msync,
    /// A process image replaced: `path` is the executable, `path2` the name
    /// passed to execve.
    Exec,
    /// The last thread of process `pid` exited; `ret` is its wait status
    /// (exit code in bits 8-15, terminating signal in bits 0-6).
    Exit,
}

impl Op {
    fn from_raw(op: u16) -> Option<Self> {
        Some(match op {
            1 => Self::Open,
            2 => Self::Write,
            3 => Self::Truncate,
            4 => Self::Fallocate,
            5 => Self::Rename,
            6 => Self::Unlink,
            7 => Self::Mkdir,
            8 => Self::Rmdir,
            9 => Self::Symlink,
            10 => Self::Link,
            11 => Self::Chmod,
            12 => Self::Chown,
            13 => Self::Close,
            14 => Self::Fsync,
            15 => Self::Mmap,
            16 => Self::Msync,
            17 => Self::Exec,
            18 => Self::Exit,
            _ => return None,
        })
    }
}

/// How far a path can be trusted; see docs/probe.md, "Paths".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathFlags {
    /// Longer than the walk limit: the path is only its last components.
    pub truncated: bool,
    /// Resolves outside the container's root (an fd inherited from the host,
    /// a memfd): the path is not a container path.
    pub outside_root: bool,
    /// The string argument could not be read: the path is missing.
    pub unreadable: bool,
}

/// One successful file or process operation of a watched cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Kernel monotonic time (ns) when the syscall returned.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    /// Host process (thread group) id.
    pub pid: u32,
    /// Host thread id.
    pub tid: u32,
    /// Process id in the task's own pid namespace (a container's pid 1 is 1).
    pub ns_pid: u32,
    /// Thread id in the task's own pid namespace.
    pub ns_tid: u32,
    pub comm: Vec<u8>,
    pub op: Op,
    /// Absolute path relative to the task's root (the container's rootfs),
    /// lexically normalised; may hold non-UTF-8 bytes.
    pub path: PathBuf,
    pub path_flags: PathFlags,
    /// Second path of [`Op::Rename`], [`Op::Link`], [`Op::Symlink`], [`Op::Exec`].
    pub path2: Option<PathBuf>,
    pub path2_flags: PathFlags,
    /// Descriptor used, or -1.
    pub fd: i32,
    pub mode: u32,
    pub op_flags: u64,
    pub offset: u64,
    pub len: u64,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Syscall return value (the wait status for [`Op::Exit`]).
    pub ret: i64,
    /// x86-64 syscall number; `None` for exec and exit.
    pub syscall_nr: Option<u32>,
}

impl Event {
    /// The bytes of its file the operation may have changed, when the
    /// backend says: the eBPF probe reports each write's offset and length
    /// (`u64::MAX` as the end for a truncate, which changes everything from
    /// the new size on); the fallbacks report only that a file changed
    /// (`None`, as for an mmap: stores through it are not seen).
    pub fn changed_range(&self) -> Option<Range<u64>> {
        // fallocate modes that move the bytes after `offset`.
        const COLLAPSE_OR_INSERT_RANGE: u64 = 0x08 | 0x20;
        // pwritev2 flag: written at the end, whatever the offset says.
        const RWF_APPEND: u64 = 0x10;
        self.syscall_nr?;
        let end = self.offset.saturating_add(self.len);
        match self.op {
            Op::Write if self.op_flags & RWF_APPEND != 0 => None,
            Op::Fallocate if self.op_flags & COLLAPSE_OR_INSERT_RANGE != 0 => {
                Some(self.offset..u64::MAX)
            }
            Op::Write | Op::Fallocate => Some(self.offset..end),
            Op::Truncate => Some(self.len..u64::MAX),
            _ => None,
        }
    }
}

/// A record as found in the ring buffer, before gap accounting.
pub(crate) enum Decoded {
    Event(Event),
    Gap(RawGap),
}

/// Why bytes from the ring buffer are not a record this build understands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("record of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error(
        "record version {found}, this build reads version {}",
        abi::EVENT_VERSION
    )]
    Version { found: u16 },
    #[error("unknown record kind {0}")]
    Kind(u16),
    #[error("unknown operation code {0}")]
    Op(u16),
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let short = || DecodeError::Short { len: bytes.len() };
    let [v0, v1, k0, k1, ..] = *bytes else {
        return Err(short());
    };
    let version = u16::from_ne_bytes([v0, v1]);
    if version != abi::EVENT_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    match u16::from_ne_bytes([k0, k1]) {
        abi::KIND_GAP => abi::read::<RawGap>(bytes)
            .map(Decoded::Gap)
            .ok_or_else(short),
        abi::KIND_EVENT => {
            let raw: RawEvent = abi::read(bytes).ok_or_else(short)?;
            let paths = &bytes[size_of::<RawEvent>()..];
            let (len1, len2) = (usize::from(raw.path_len), usize::from(raw.path2_len));
            if paths.len() < len1 + len2 {
                return Err(short());
            }
            event(&raw, &paths[..len1], &paths[len1..len1 + len2]).map(Decoded::Event)
        }
        kind => Err(DecodeError::Kind(kind)),
    }
}

fn event(raw: &RawEvent, path: &[u8], path2: &[u8]) -> Result<Event, DecodeError> {
    let op = Op::from_raw(raw.op).ok_or(DecodeError::Op(raw.op))?;
    let has = |bit| raw.flags & bit != 0;
    let comm_len = raw
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(raw.comm.len());
    let has_path2 = matches!(op, Op::Rename | Op::Link | Op::Symlink | Op::Exec);
    let path2 = has_path2.then(|| {
        if has(abi::F_PATH2_RAW) {
            PathBuf::from(OsStr::from_bytes(path2))
        } else {
            normalize(path2)
        }
    });
    let id = |v: u32| (v != u32::MAX).then_some(v);
    Ok(Event {
        ts_ns: raw.ts_ns,
        cgroup_id: raw.cgroup_id,
        pid: raw.pid,
        tid: raw.tid,
        ns_pid: raw.ns_pid,
        ns_tid: raw.ns_tid,
        comm: raw.comm[..comm_len].to_vec(),
        op,
        path: if path.is_empty() {
            PathBuf::new()
        } else {
            normalize(path)
        },
        path_flags: PathFlags {
            truncated: has(abi::F_PATH_TRUNCATED),
            outside_root: has(abi::F_PATH_OUTSIDE_ROOT),
            unreadable: has(abi::F_PATH_UNREADABLE),
        },
        path2,
        path2_flags: PathFlags {
            truncated: has(abi::F_PATH2_TRUNCATED),
            outside_root: has(abi::F_PATH2_OUTSIDE_ROOT),
            unreadable: has(abi::F_PATH2_UNREADABLE),
        },
        fd: raw.fd,
        mode: raw.mode,
        op_flags: raw.op_flags,
        offset: raw.offset,
        len: raw.len,
        uid: id(raw.uid),
        gid: id(raw.gid),
        ret: raw.ret,
        syscall_nr: id(raw.syscall_nr),
    })
}

/// Lexical normalisation of a kernel-joined path: drops empty and `.`
/// components and applies `..`, never above the root. The kernel joins
/// "cwd + / + argument" without resolving, so `a/../b` arrives as written;
/// like `filepath.Clean`, this ignores symlinks in intermediate components.
fn normalize(bytes: &[u8]) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in Path::new(OsStr::from_bytes(bytes)).components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_joins_like_the_kernel_resolves() {
        assert_eq!(normalize(b"/a//b/./c/"), Path::new("/a/b/c"));
        assert_eq!(normalize(b"/a/b/../c"), Path::new("/a/c"));
        assert_eq!(normalize(b"/../../x"), Path::new("/x"));
        assert_eq!(normalize(b"/"), Path::new("/"));
        assert_eq!(
            normalize(b"/d\xffir/f"),
            Path::new(OsStr::from_bytes(b"/d\xffir/f"))
        );
    }

    #[test]
    fn each_path_has_its_own_unreadable_flag() {
        let raw = |flags| RawEvent {
            version: abi::EVENT_VERSION,
            kind: abi::KIND_EVENT,
            op: 5, // rename
            flags,
            ts_ns: 1,
            cgroup_id: 2,
            pid: 3,
            tid: 3,
            ret: 0,
            fd: -1,
            mode: 0,
            op_flags: 0,
            offset: 0,
            len: 0,
            uid: u32::MAX,
            gid: u32::MAX,
            comm: [0; 16],
            path_len: 4,
            path2_len: 0,
            syscall_nr: 82,
            ns_pid: 3,
            ns_tid: 3,
        };
        let renamed = event(&raw(abi::F_PATH2_UNREADABLE), b"/old", b"").unwrap();
        assert_eq!(renamed.path, Path::new("/old"));
        assert!(!renamed.path_flags.unreadable, "the first path is fine");
        assert!(renamed.path2_flags.unreadable);
        let first = event(&raw(abi::F_PATH_UNREADABLE), b"/old", b"").unwrap();
        assert!(first.path_flags.unreadable && !first.path2_flags.unreadable);
    }

    #[test]
    fn decode_rejects_other_versions_and_short_records() {
        assert!(matches!(decode(&[1]), Err(DecodeError::Short { len: 1 })));
        let mut gap = [0u8; 40];
        gap[0..2].copy_from_slice(&9u16.to_ne_bytes());
        assert!(matches!(
            decode(&gap),
            Err(DecodeError::Version { found: 9 })
        ));
        gap[0..2].copy_from_slice(&abi::EVENT_VERSION.to_ne_bytes());
        gap[2..4].copy_from_slice(&abi::KIND_GAP.to_ne_bytes());
        assert!(matches!(decode(&gap), Ok(Decoded::Gap(_))));
        assert!(matches!(
            decode(&gap[..20]),
            Err(DecodeError::Short { len: 20 })
        ));
    }
}
