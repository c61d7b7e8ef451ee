//! Content storage: every version of every file, content-addressed by blake3.
//!
//! Two tables cooperate (layouts in `crate::format`):
//! - `pieces` holds byte strings by their blake3 (optionally zstd-compressed):
//!   whole small files, append tails, patches, chunks and chunk-tree nodes.
//!   Identical bytes are stored once across files, versions and recordings'
//!   lifetimes.
//! - `content` maps the blake3 of a file's full bytes to a [`ContentRecord`]
//!   saying how to rebuild them from pieces ([`Repr`]).
//!
//! [`encode`] picks the cheapest honest representation for each new version;
//! [`decode`] rebuilds and checks it.

mod chunking;
mod decode;
mod delta;
mod encode;
mod pieces;

use std::fmt;

use serde::{Deserialize, Serialize};

pub(crate) use decode::ContentReader;
pub(crate) use encode::{ContentWriter, RecentContent};
pub use encode::{EncodingPolicy, EncodingStats};
pub use pieces::SpeedSwitch;
pub(crate) use pieces::{OpenPack, PieceWriter};

/// blake3 of a file's full content.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentId(pub [u8; 32]);

/// blake3 of a stored piece's decoded bytes.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PieceId(pub [u8; 32]);

/// A file version as events refer to it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentRef {
    pub id: ContentId,
    pub size: u64,
}

/// How one content id is rebuilt. `chain` counts the `Append`/`Patch` links
/// down to a self-contained representation; the encoder bounds it so a read
/// never walks a long chain (see `EncodingPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRecord {
    pub size: u64,
    pub chain: u16,
    pub repr: Repr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Repr {
    /// The bytes are one piece.
    Whole { piece: PieceId },
    /// `base`'s bytes followed by the `tail` piece (logs, appends).
    Append { base: ContentId, tail: PieceId },
    /// `patch` applied to `base`'s bytes with `engine`.
    Patch {
        base: ContentId,
        engine: PatchEngine,
        patch: PieceId,
    },
    /// Content-defined chunks, listed by a tree of nodes `height` levels
    /// deep whose root is a piece. Self-contained: no base to rebuild first.
    Chunked { root: PieceId, height: u8 },
}

/// The binary delta formats the encoder may choose between.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchEngine {
    /// A zstd frame compressed with the base as a reference prefix
    /// (`zstd --patch-from`).
    ZstdPrefix,
    /// A bsdiff patch as produced by `qbsdiff`.
    Bsdiff,
}

/// Why rebuilding content failed, before the caller adds which content and
/// which recording it was.
#[derive(Debug)]
pub(crate) enum Fault {
    Storage(redb::StorageError),
    Corrupt(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Storage(e) => write!(f, "storage error: {e}"),
            Fault::Corrupt(detail) => f.write_str(detail),
        }
    }
}

impl From<redb::StorageError> for Fault {
    fn from(e: redb::StorageError) -> Self {
        Fault::Storage(e)
    }
}

/// Hashes a file's content.
pub fn content_id(data: &[u8]) -> ContentId {
    ContentId(hash(data))
}

/// blake3 on the calling thread: while a workload runs, the recorder must
/// not take its cores (rayon's idle workers also spin before they sleep).
pub(crate) fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// blake3 on every core for large inputs: for readers, and for a recorder
/// whose workload is gone.
pub(crate) fn hash_on_all_cores(data: &[u8]) -> [u8; 32] {
    const PARALLEL_FROM: usize = 1 << 20;
    if data.len() < PARALLEL_FROM {
        return hash(data);
    }
    *blake3::Hasher::new()
        .update_rayon(data)
        .finalize()
        .as_bytes()
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", &self.to_string()[..16])
    }
}

impl fmt::Debug for PieceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PieceId({})", &ContentId(self.0).to_string()[..16])
    }
}
