//! What a recording is made of: an ordered log of file-system events, each
//! stamped with the kernel's monotonic clock and the process that caused it.

use serde::{Deserialize, Serialize};

use crate::content::ContentRef;
use crate::path::RecPath;

/// One recorded change. `seq` is assigned by the recorder: dense, from 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Kernel `CLOCK_MONOTONIC` nanoseconds; see `RecordingMeta::mono_base_ns`.
    pub time_ns: u64,
    pub actor: Actor,
    pub op: Op,
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A process of the recorded workload, with its pid and tid as the
    /// workload sees them (in its own pid namespace: a container's init is 1).
    Process { pid: u32, tid: u32, comm: String },
    /// The recorder itself: a gap it noticed, or state a rescan found.
    Recorder,
    /// A process the capture backend cannot name (inotify reports no pid).
    Unknown,
}

/// "12 events", or "events (number unknown)" for a backend that cannot
/// count its losses.
pub fn lost_events(lost: u64) -> String {
    match lost {
        0 => "events (number unknown)".into(),
        1 => "1 event".into(),
        n => format!("{n} events"),
    }
}

/// The operation. Content-changing operations carry the file's full new
/// content by reference; metadata operations carry only what changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A new regular file (open with `O_CREAT`, `creat`), with its content.
    Create {
        path: RecPath,
        mode: u32,
        content: ContentRef,
    },
    /// A regular file's content changed (write, copy into, mmap flush…).
    Write {
        path: RecPath,
        content: ContentRef,
    },
    /// `truncate`/`ftruncate`/`O_TRUNC`; `content` is the result.
    Truncate {
        path: RecPath,
        content: ContentRef,
    },
    /// `rename*`: `to` is replaced; directories move with their contents.
    Rename {
        from: RecPath,
        to: RecPath,
    },
    Unlink {
        path: RecPath,
    },
    Mkdir {
        path: RecPath,
        mode: u32,
    },
    Rmdir {
        path: RecPath,
    },
    Symlink {
        path: RecPath,
        target: Vec<u8>,
    },
    /// A hard link. The store models it as a copy at link time; later writes
    /// through either name are recorded against that name.
    Link {
        existing: RecPath,
        new: RecPath,
    },
    Chmod {
        path: RecPath,
        mode: u32,
    },
    Chown {
        path: RecPath,
        uid: u32,
        gid: u32,
    },
    /// Recorded for the timeline; extended attributes are not part of the
    /// materialised state (see docs/recording-format.md).
    SetXattr {
        path: RecPath,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// A process of the workload executed a program.
    Exec {
        path: Vec<u8>,
    },
    /// A process of the workload exited: its exit code, or 128 + the signal
    /// that killed it (as a shell reports it).
    Exit {
        code: i32,
    },
    /// Events were lost between two times: the recording is incomplete there.
    Gap {
        lost: u64,
        from_ns: u64,
        to_ns: u64,
        reason: String,
    },
}

/// The kind of an [`Op`], for filtering and display.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OpKind {
    Create,
    Write,
    Truncate,
    Rename,
    Unlink,
    Mkdir,
    Rmdir,
    Symlink,
    Link,
    Chmod,
    Chown,
    SetXattr,
    Exec,
    Exit,
    Gap,
}

impl OpKind {
    pub const ALL: [OpKind; 15] = [
        OpKind::Create,
        OpKind::Write,
        OpKind::Truncate,
        OpKind::Rename,
        OpKind::Unlink,
        OpKind::Mkdir,
        OpKind::Rmdir,
        OpKind::Symlink,
        OpKind::Link,
        OpKind::Chmod,
        OpKind::Chown,
        OpKind::SetXattr,
        OpKind::Exec,
        OpKind::Exit,
        OpKind::Gap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Write => "write",
            OpKind::Truncate => "truncate",
            OpKind::Rename => "rename",
            OpKind::Unlink => "unlink",
            OpKind::Mkdir => "mkdir",
            OpKind::Rmdir => "rmdir",
            OpKind::Symlink => "symlink",
            OpKind::Link => "link",
            OpKind::Chmod => "chmod",
            OpKind::Chown => "chown",
            OpKind::SetXattr => "setxattr",
            OpKind::Exec => "exec",
            OpKind::Exit => "exit",
            OpKind::Gap => "gap",
        }
    }

    /// Parses a name as printed by [`OpKind::name`].
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Create { .. } => OpKind::Create,
            Op::Write { .. } => OpKind::Write,
            Op::Truncate { .. } => OpKind::Truncate,
            Op::Rename { .. } => OpKind::Rename,
            Op::Unlink { .. } => OpKind::Unlink,
            Op::Mkdir { .. } => OpKind::Mkdir,
            Op::Rmdir { .. } => OpKind::Rmdir,
            Op::Symlink { .. } => OpKind::Symlink,
            Op::Link { .. } => OpKind::Link,
            Op::Chmod { .. } => OpKind::Chmod,
            Op::Chown { .. } => OpKind::Chown,
            Op::SetXattr { .. } => OpKind::SetXattr,
            Op::Exec { .. } => OpKind::Exec,
            Op::Exit { .. } => OpKind::Exit,
            Op::Gap { .. } => OpKind::Gap,
        }
    }

    /// The paths this operation touches (one or two).
    pub fn paths(&self) -> Vec<&RecPath> {
        match self {
            Op::Create { path, .. }
            | Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Unlink { path }
            | Op::Mkdir { path, .. }
            | Op::Rmdir { path }
            | Op::Symlink { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::SetXattr { path, .. } => vec![path],
            Op::Rename { from, to } => vec![from, to],
            Op::Link { existing, new } => vec![existing, new],
            Op::Exec { .. } | Op::Exit { .. } | Op::Gap { .. } => vec![],
        }
    }

    /// The new content this operation carries, if any.
    pub fn content(&self) -> Option<&ContentRef> {
        match self {
            Op::Create { content, .. }
            | Op::Write { content, .. }
            | Op::Truncate { content, .. } => Some(content),
            _ => None,
        }
    }
}

impl Actor {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Actor::Process { pid, .. } => Some(*pid),
            Actor::Recorder | Actor::Unknown => None,
        }
    }
}
