//! The on-disk layout, in one place. `docs/recording-format.md` describes it
//! for humans; any change to a table, key or value layout here must bump
//! [`FORMAT_VERSION`] and be described there.
//!
//! Invariants the rest of the crate relies on:
//! - `events` keys are dense sequence numbers starting at 0, written in order.
//! - every content id referenced by an event or a baseline entry is present in
//!   `content` in the same or an earlier commit (the recorder inserts content
//!   before the event that refers to it, inside one transaction);
//! - every piece referenced by a content record or a chunk-tree node is
//!   present in `pieces` by the same rule, and its pack in `packs`;
//! - blake3 of a piece's decoded payload equals its key.

use redb::TableDefinition;
use serde::{de::DeserializeOwned, Serialize};

/// The newest layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// Written under [`META_MAGIC_KEY`] so a foreign redb file is recognised.
pub const MAGIC: &[u8] = b"diffkeeper-recording";

/// `meta`: small named records. Values of `recording` and `status` are JSON
/// (self-describing, so new optional fields don't need a version bump).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const META_MAGIC_KEY: &str = "magic";
pub const META_VERSION_KEY: &str = "format_version";
pub const META_RECORDING_KEY: &str = "recording";
pub const META_STATUS_KEY: &str = "status";

/// `events`: sequence number → postcard-encoded [`crate::Event`].
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// `baseline`: path bytes → postcard-encoded [`crate::Node`]: the tree as it
/// was when recording started (written in the background, see `Status`).
pub const BASELINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("baseline");

/// `content`: blake3 of a file's bytes → postcard-encoded
/// [`crate::content::ContentRecord`] saying how to rebuild those bytes.
pub const CONTENT: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("content");

/// `pieces`: blake3 of a byte string → postcard `PieceLoc` {pack, offset,
/// len, codec}: where its stored bytes are.
pub const PIECES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pieces");

/// `packs`: pack number → concatenated stored pieces (see `PIECES`).
pub const PACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("packs");

/// How a piece's payload is stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Encodes a compact binary record (events, nodes, content records).
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data structs into a Vec cannot fail.
    postcard::to_stdvec(value).expect("postcard encoding of an in-memory record")
}

/// Decodes a compact binary record; the error text is kept for reports.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}
