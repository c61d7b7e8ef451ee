//! Rebuilding a version's bytes from its representation.

use redb::ReadableTable;

use super::chunking::{self, Entry};
use super::pieces::{PieceReader, PieceSource, MAX_PIECE_LEN};
use super::{delta, hash_on_all_cores, ContentId, ContentRecord, ContentRef, Fault, Repr};
use crate::format;

/// The most `Append`/`Patch` links a read follows. The encoder keeps chains
/// far shorter; a longer chain in a file means corruption (or a cycle).
const MAX_LINKS: usize = 4096;

/// A table keyed by a blake3 id (`content`, `pieces`) of a read or write
/// transaction. `Sync` so large files can be read by several threads.
pub(crate) trait ContentTable:
    ReadableTable<&'static [u8; 32], &'static [u8]> + Sync
{
}
impl<T: ReadableTable<&'static [u8; 32], &'static [u8]> + Sync> ContentTable for T {}

/// The `packs` table of a read or write transaction.
pub(crate) trait PackTable: ReadableTable<u64, &'static [u8]> + Sync {}
impl<T: ReadableTable<u64, &'static [u8]> + Sync> PackTable for T {}

/// Read access to the `content`, `pieces` and `packs` tables of one
/// transaction.
pub(crate) struct ContentReader<C, I, P> {
    pub content: C,
    pub index: I,
    pub packs: P,
}

impl<C: ContentTable, I: ContentTable, P: PackTable> ContentReader<C, I, P> {
    pub(crate) fn record(&self, id: &ContentId) -> Result<Option<ContentRecord>, Fault> {
        record(&self.content, id)
    }

    /// The bytes of a version, checked against its blake3.
    pub(crate) fn read(&self, cref: &ContentRef) -> Result<Vec<u8>, Fault> {
        read(&self.content, &self.pieces(), cref)
    }

    pub(crate) fn pieces(&self) -> PieceReader<'_, I, P> {
        PieceReader {
            index: &self.index,
            packs: &self.packs,
        }
    }
}

pub(crate) fn record(
    content: &impl ContentTable,
    id: &ContentId,
) -> Result<Option<ContentRecord>, Fault> {
    match content.get(&id.0)? {
        None => Ok(None),
        Some(bytes) => format::from_bytes(bytes.value())
            .map(Some)
            .map_err(|e| Fault::Corrupt(format!("content record: {e}"))),
    }
}

fn require(content: &impl ContentTable, id: &ContentId) -> Result<ContentRecord, Fault> {
    record(content, id)?.ok_or_else(|| Fault::Corrupt(format!("content {id} is not stored")))
}

pub(crate) fn read(
    content: &impl ContentTable,
    pieces: &impl PieceSource,
    cref: &ContentRef,
) -> Result<Vec<u8>, Fault> {
    // Walk down to a self-contained representation, then apply the links
    // back up: iterative, so a long append chain cannot overflow the stack.
    let mut links = Vec::new();
    let mut current = require(content, &cref.id)?;
    if current.size != cref.size {
        return Err(Fault::Corrupt(format!(
            "content {} is {} bytes, the event says {}",
            cref.id, current.size, cref.size
        )));
    }
    let mut bytes = loop {
        match &current.repr {
            Repr::Whole { piece } => break read_piece(pieces, piece, current.size)?,
            Repr::Chunked { root, height } => {
                let leaves = chunking::leaves(pieces, root, *height)?;
                break read_leaves(pieces, &leaves, current.size)?;
            }
            Repr::Append { base, .. } | Repr::Patch { base, .. } => {
                let base = require(content, base)?;
                links.push(std::mem::replace(&mut current, base));
                if links.len() > MAX_LINKS {
                    return Err(Fault::Corrupt("delta chain too long (cycle?)".into()));
                }
            }
        }
    };
    // A chunked version's chunks were each checked as they were copied; any
    // other representation is checked whole against its blake3 below.
    let checked_by_chunks = links.is_empty() && matches!(current.repr, Repr::Chunked { .. });
    for link in links.into_iter().rev() {
        bytes = match link.repr {
            Repr::Append { tail, .. } => {
                let tail_len = link
                    .size
                    .checked_sub(bytes.len() as u64)
                    .ok_or_else(|| Fault::Corrupt("append is shorter than its base".into()))?;
                let tail = read_piece(pieces, &tail, tail_len)?;
                bytes.extend_from_slice(&tail);
                bytes
            }
            Repr::Patch { engine, patch, .. } => {
                let patch = read_piece(pieces, &patch, MAX_PIECE_LEN)?;
                delta::apply(engine, &bytes, &patch, link.size).map_err(Fault::Corrupt)?
            }
            Repr::Whole { .. } | Repr::Chunked { .. } => unreachable!("only links are pushed"),
        };
    }
    if bytes.len() as u64 != cref.size
        || (!checked_by_chunks && hash_on_all_cores(&bytes) != cref.id.0)
    {
        return Err(Fault::Corrupt(format!(
            "content {} fails its blake3 check",
            cref.id
        )));
    }
    Ok(bytes)
}

/// The chunk list of a version, when it can be expressed as one without
/// decoding (used to re-base long append chains without copying data).
pub(crate) fn leaves(
    content: &impl ContentTable,
    pieces: &impl PieceSource,
    id: &ContentId,
) -> Result<Option<Vec<Entry>>, Fault> {
    let mut tails = Vec::new();
    let mut current = require(content, id)?;
    let mut leaves = loop {
        match &current.repr {
            Repr::Whole { piece } => {
                break vec![Entry {
                    piece: *piece,
                    len: current.size,
                    loc: pieces.locate(piece)?,
                }]
            }
            Repr::Chunked { root, height } => break chunking::leaves(pieces, root, *height)?,
            Repr::Patch { .. } => return Ok(None),
            Repr::Append { base, tail } => {
                let base = require(content, base)?;
                tails.push(Entry {
                    piece: *tail,
                    len: current.size.saturating_sub(base.size),
                    loc: pieces.locate(tail)?,
                });
                current = base;
                if tails.len() > MAX_LINKS {
                    return Err(Fault::Corrupt("delta chain too long (cycle?)".into()));
                }
            }
        }
    };
    leaves.extend(tails.into_iter().rev());
    Ok(Some(leaves))
}

fn read_piece(
    pieces: &impl PieceSource,
    id: &super::PieceId,
    limit: u64,
) -> Result<Vec<u8>, Fault> {
    let mut out = Vec::new();
    pieces.read_into(id, &mut out, limit)?;
    Ok(out)
}

/// Chunked files this large are read by several threads at once: each
/// chunk is a random b-tree lookup, and lookups, not copying, dominate.
const PARALLEL_READ_FROM: u64 = 8 << 20;

fn read_leaves(pieces: &impl PieceSource, leaves: &[Entry], size: u64) -> Result<Vec<u8>, Fault> {
    let total: u64 = leaves.iter().map(|e| e.len).sum();
    if total != size {
        return Err(Fault::Corrupt(format!(
            "chunks add up to {total} bytes, content is {size}"
        )));
    }
    let mut out = vec![0u8; size as usize];
    let threads = if size >= PARALLEL_READ_FROM {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
    } else {
        1
    };
    // Split the leaves into `threads` runs of about equal bytes, each with
    // its own disjoint part of the output.
    let mut jobs = Vec::with_capacity(threads);
    let mut rest: &mut [u8] = &mut out;
    let mut first = 0;
    for t in 0..threads {
        let goal = size * (t as u64 + 1) / threads as u64;
        let mut end = first;
        let mut bytes = 0;
        let done: u64 = leaves[..first].iter().map(|e| e.len).sum();
        while end < leaves.len() && (done + bytes < goal || t + 1 == threads) {
            bytes += leaves[end].len;
            end += 1;
        }
        let (mine, tail) = rest.split_at_mut(bytes as usize);
        jobs.push((&leaves[first..end], mine));
        rest = tail;
        first = end;
    }
    let run = |(leaves, out): (&[Entry], &mut [u8])| pieces.read_chunks(leaves, out);
    if jobs.len() == 1 {
        run(jobs.pop().expect("one job"))?;
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|job| scope.spawn(move || run(job)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Fault::Corrupt("reader thread panicked".into())))
            })
        })?;
    }
    Ok(out)
}
