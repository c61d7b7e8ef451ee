//! Content-defined chunking for large files, and the chunk tree that lists a
//! version's chunks.
//!
//! Chunks are cut with FastCDC, so an edit changes only the chunks it
//! touches and boundaries re-synchronise after insertions. The list of chunk
//! ids is itself split into nodes at content-defined points (an entry whose
//! id has its low bits clear ends a node), so a version that changes a few
//! pages rewrites a few leaves, the nodes above them, and nothing else: a
//! 256 MiB file with 64 changed pages costs ~64 chunks and ~2×64 small nodes,
//! and reading any version needs no patch chain. When the written ranges
//! are known, the untouched chunks are not even cut again
//! ([`store_chunks_reusing`]).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::pieces::{check, PieceLoc, PieceSource, PieceWriter, MAX_PIECE_LEN};
use super::{Fault, PieceId};
use crate::format;

/// FastCDC bounds. 4 KiB average keeps a 4 KiB page edit to ~2 chunks; see
/// docs/recording-format.md for the measurements behind these numbers.
pub(crate) const CHUNK_MIN: u32 = 1024;
pub(crate) const CHUNK_AVG: u32 = 2 * 1024;
pub(crate) const CHUNK_MAX: u32 = 16 * 1024;

/// An entry ends a node when its id's first byte has these bits clear (≈1 in
/// 16 entries), or when the node holds `NODE_MAX` entries.
const NODE_BOUNDARY_MASK: u8 = 0x0f;
const NODE_MAX: usize = 64;
/// Deeper trees cannot occur for files below 2^64 bytes; a deeper claim in a
/// recording is corruption.
pub(crate) const MAX_HEIGHT: u8 = 16;

/// One child of a tree node: a chunk (at height 1) or a node (above), with
/// the number of content bytes below it and where the piece is stored (so a
/// read goes straight to the pack; packs never move).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub piece: PieceId,
    pub len: u64,
    pub loc: PieceLoc,
}

/// Splits `data` into chunks, stores them, and returns the chunk list.
pub(crate) fn store_chunks(
    pieces: &mut PieceWriter<'_, '_>,
    data: &[u8],
    written: &mut u64,
) -> Result<Vec<Entry>, Fault> {
    let plan = cut(data, 0)
        .map(|(start, end)| Leaf::New(start..end))
        .collect();
    store_plan(pieces, data, plan, written)
}

/// Splits `data`, a new version of the file whose chunks were `old`, when
/// every byte written since lies in `changed` (sorted and disjoint);
/// returns the chunk list and how many chunks of `old` it took over.
///
/// An old chunk no change touched is taken over as it is (no cutting,
/// hashing, lookup or compression), after checking its bytes against its
/// stored xxh3 (`check`): a write nobody reported (through a shared
/// mapping, io_uring, or by a process outside the watched cgroup) shows up
/// there and the chunk is cut anew. From a chunk that differs, the data is
/// cut with FastCDC until a cut falls on the boundary of an old chunk that
/// is still intact, where taking over resumes. Any bytes past the old
/// chunks are cut anew.
pub(crate) fn store_chunks_reusing(
    pieces: &mut PieceWriter<'_, '_>,
    data: &[u8],
    old: &[Entry],
    changed: &[Range<u64>],
    written: &mut u64,
) -> Result<(Vec<Entry>, u64), Fault> {
    let size = data.len() as u64;
    let starts: Vec<u64> = old
        .iter()
        .scan(0u64, |offset, e| {
            let start = *offset;
            *offset += e.len;
            Some(start)
        })
        .collect();
    let intact = |i: usize| {
        let (start, end) = (starts[i], starts[i] + old[i].len);
        // `changed` is sorted and disjoint: the first range ending after
        // `start` is the only one that can overlap.
        let first = changed.partition_point(|r| r.end <= start);
        let touched = changed.get(first).is_some_and(|r| r.start < end);
        end <= size && !touched && check(&data[start as usize..end as usize]) == old[i].loc.check
    };
    let mut plan = Vec::with_capacity(old.len());
    let (mut offset, mut next_old, mut reused) = (0u64, 0usize, 0u64);
    while offset < size {
        if next_old < old.len() && starts[next_old] == offset && intact(next_old) {
            plan.push(Leaf::Old(old[next_old]));
            offset += old[next_old].len;
            next_old += 1;
            reused += 1;
            continue;
        }
        for (start, end) in cut(data, offset as usize) {
            plan.push(Leaf::New(start..end));
            offset = end as u64;
            while next_old < old.len() && starts[next_old] < offset {
                next_old += 1;
            }
            if next_old < old.len() && starts[next_old] == offset && intact(next_old) {
                break;
            }
        }
    }
    Ok((store_plan(pieces, data, plan, written)?, reused))
}

/// A chunk of a new version: taken over, or these bytes of it to store.
enum Leaf {
    Old(Entry),
    New(Range<usize>),
}

/// FastCDC cuts of `data` from `from` on, as (start, end) offsets.
fn cut(data: &[u8], from: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    fastcdc::v2020::FastCDC::new(&data[from..], CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .map(move |c| (from + c.offset, from + c.offset + c.length))
}

/// Stores the new chunks of `plan` and returns the chunk list. New chunks
/// go to `put_all` a window at a time: it may hold a window's encodings at
/// once (see `PieceWriter::put_all`).
fn store_plan(
    pieces: &mut PieceWriter<'_, '_>,
    data: &[u8],
    plan: Vec<Leaf>,
    written: &mut u64,
) -> Result<Vec<Entry>, Fault> {
    const WINDOW: usize = 1 << 20;
    let mut entries = Vec::with_capacity(plan.len());
    let mut window: Vec<&[u8]> = Vec::new();
    let mut window_bytes = 0;
    let mut store_window = |window: &mut Vec<&[u8]>, entries: &mut Vec<Entry>| {
        for (chunk, (piece, loc, new)) in window.iter().zip(pieces.put_all(window)?) {
            *written += new;
            entries.push(Entry {
                piece,
                len: chunk.len() as u64,
                loc,
            });
        }
        window.clear();
        Ok::<_, Fault>(())
    };
    for leaf in plan {
        match leaf {
            Leaf::Old(entry) => {
                store_window(&mut window, &mut entries)?;
                window_bytes = 0;
                entries.push(entry);
            }
            Leaf::New(range) => {
                window_bytes += range.len();
                window.push(&data[range]);
                if window_bytes >= WINDOW {
                    store_window(&mut window, &mut entries)?;
                    window_bytes = 0;
                }
            }
        }
    }
    store_window(&mut window, &mut entries)?;
    Ok(entries)
}

/// Builds the node tree over `leaves`; returns the root piece and height.
pub(crate) fn store_tree(
    pieces: &mut PieceWriter<'_, '_>,
    mut entries: Vec<Entry>,
    written: &mut u64,
) -> Result<(PieceId, u8), Fault> {
    let mut height = 0u8;
    loop {
        height += 1;
        let mut parents = Vec::new();
        let mut node = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            node.push(*entry);
            let last = i + 1 == entries.len();
            if last || node.len() >= NODE_MAX || entry.piece.0[0] & NODE_BOUNDARY_MASK == 0 {
                parents.push(store_node(pieces, &node, written)?);
                node.clear();
            }
        }
        if parents.is_empty() {
            // An empty file: one empty node.
            parents.push(store_node(pieces, &[], written)?);
        }
        if parents.len() == 1 {
            return Ok((parents[0].piece, height));
        }
        entries = parents;
    }
}

fn store_node(
    pieces: &mut PieceWriter<'_, '_>,
    node: &[Entry],
    written: &mut u64,
) -> Result<Entry, Fault> {
    let (piece, loc, new) = pieces.put(&format::to_bytes(&node))?;
    *written += new;
    Ok(Entry {
        piece,
        len: node.iter().map(|e| e.len).sum(),
        loc,
    })
}

/// Reads a node's entries.
pub(crate) fn read_node(pieces: &impl PieceSource, id: &PieceId) -> Result<Vec<Entry>, Fault> {
    let mut bytes = Vec::new();
    pieces.read_into(id, &mut bytes, MAX_PIECE_LEN)?;
    format::from_bytes(&bytes).map_err(|e| Fault::Corrupt(format!("chunk-tree node: {e}")))
}

/// The leaves (chunks) below a node, in order.
pub(crate) fn leaves(
    pieces: &impl PieceSource,
    root: &PieceId,
    height: u8,
) -> Result<Vec<Entry>, Fault> {
    if height == 0 || height > MAX_HEIGHT {
        return Err(Fault::Corrupt(format!("invalid tree height {height}")));
    }
    let mut nodes = vec![*root];
    for level in 1..=height {
        let mut children = Vec::new();
        for node in &nodes {
            children.extend(read_node(pieces, node)?);
        }
        if level == height {
            return Ok(children);
        }
        nodes = children.iter().map(|e| e.piece).collect();
    }
    unreachable!("the loop returns at the last level")
}
