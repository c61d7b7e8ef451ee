//! Pieces: byte strings stored once by their blake3, packed together.
//!
//! redb gives a value that does not fit a page a run of pages rounded up to
//! a power of two, so storing each few-KiB piece as its own value wasted
//! about half the file. Pieces are therefore appended to *packs* of up to
//! `PACK_TARGET` bytes (just under a power of two), and the `pieces` table
//! maps a piece id to its place in a pack. The pack being filled lives in
//! memory and is written (rewritten, while it grows) before every commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rayon::prelude::*;
use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

use super::chunking::Entry;
use super::{hash, Fault, PieceId};
use crate::format::{self, Codec};

/// Pieces shorter than this are never worth a zstd frame header.
const COMPRESS_FROM: usize = 64;
/// Whether a recorder compresses for size or, once flipped, for speed
/// ([`crate::Recorder::speed_switch`]). Shared between threads.
#[derive(Clone, Debug, Default)]
pub struct SpeedSwitch(Arc<AtomicBool>);

impl SpeedSwitch {
    /// Compress for speed from the next piece on.
    pub fn prefer_speed(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Flipped: the workload is gone and the recording's end is waited
    /// for, so nothing else needs the cores.
    pub(crate) fn prefers_speed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// zstd level 3, the size/speed balance measured in
    /// docs/recording-format.md; -1 once flipped (~2.4× faster on 2 KiB
    /// chunks, ~15% larger).
    pub(crate) fn zstd_level(&self) -> i32 {
        if self.prefers_speed() {
            -1
        } else {
            3
        }
    }
}

/// 128 KiB less room for redb's page header and the key, so a full pack
/// occupies exactly 32 pages. A larger piece gets a pack of its own.
pub(crate) const PACK_TARGET: usize = (128 << 10) - 512;
/// The most bytes any single piece may decode to; the bound for reads that
/// have no content size to check against.
pub(crate) const MAX_PIECE_LEN: u64 = 1 << 32;

/// Where a piece's stored bytes are: `len` bytes at `offset` in pack `pack`,
/// encoded with `codec`; `check` is the xxh3-64 of the decoded bytes.
///
/// Why a second hash: a chunked read checks each chunk against `check` as
/// it copies it (tens of GB/s) instead of re-hashing the whole file with
/// blake3 afterwards, which cost more than the read itself. `verify` still
/// checks every piece against its blake3 id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PieceLoc {
    pub pack: u64,
    pub offset: u32,
    pub len: u32,
    pub codec: u8,
    pub check: u64,
}

/// The pack being filled by a recorder.
#[derive(Debug, Default)]
pub(crate) struct OpenPack {
    pub id: u64,
    pub bytes: Vec<u8>,
    /// Holds pieces not yet written to the `packs` table.
    pub dirty: bool,
}

pub(crate) type IndexTable<'t> = Table<'t, &'static [u8; 32], &'static [u8]>;
pub(crate) type PackTable<'t> = Table<'t, u64, &'static [u8]>;

/// Write access to the pieces of one transaction.
pub(crate) struct PieceWriter<'t, 'p> {
    pub index: IndexTable<'t>,
    pub packs: PackTable<'t>,
    pub open: &'p mut OpenPack,
    pub speed: &'p SpeedSwitch,
}

impl PieceWriter<'_, '_> {
    /// Stores `data` unless an identical piece exists; returns its id and
    /// the number of bytes newly stored (0 when deduplicated).
    pub(crate) fn put(&mut self, data: &[u8]) -> Result<(PieceId, PieceLoc, u64), Fault> {
        let id = PieceId(hash(data));
        if let Some(loc) = self.reader().find(&id)? {
            return Ok((id, loc, 0));
        }
        let (codec, payload) = encode(data, self.speed.zstd_level());
        let loc = self.put_encoded(id, codec, &payload, check(data))?;
        Ok((id, loc, payload.len() as u64))
    }

    /// Stores each of `chunks` as [`put`](Self::put) does, in order. Once
    /// the speed switch is flipped the new ones are hashed and compressed
    /// on all cores first: the workload is gone then, so the cores are free
    /// and the recording's end is what is waited for (while it runs, a
    /// second compressing thread only took the workload's core: measured
    /// no faster, docs/benchmarks.md).
    pub(crate) fn put_all(
        &mut self,
        chunks: &[&[u8]],
    ) -> Result<Vec<(PieceId, PieceLoc, u64)>, Fault> {
        if !self.speed.prefers_speed() {
            return chunks.iter().map(|chunk| self.put(chunk)).collect();
        }
        let ids: Vec<PieceId> = chunks.par_iter().map(|c| PieceId(hash(c))).collect();
        // Each id looked up once: stored already, or new (its first
        // occurrence is encoded; later ones find it stored by then).
        let mut stored: HashMap<PieceId, PieceLoc> = HashMap::new();
        let mut new = Vec::new();
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if !seen.insert(*id) {
                continue;
            }
            match self.reader().find(id)? {
                Some(loc) => {
                    stored.insert(*id, loc);
                }
                None => new.push(i),
            }
        }
        let level = self.speed.zstd_level();
        let mut encoded: HashMap<PieceId, (Codec, Vec<u8>, u64)> = new
            .par_iter()
            .map(|&i| {
                let (codec, payload) = encode(chunks[i], level);
                (ids[i], (codec, payload, check(chunks[i])))
            })
            .collect();
        ids.into_iter()
            .map(|id| match encoded.remove(&id) {
                Some((codec, payload, check)) => {
                    let loc = self.put_encoded(id, codec, &payload, check)?;
                    stored.insert(id, loc);
                    Ok((id, loc, payload.len() as u64))
                }
                None => Ok((id, stored[&id], 0)),
            })
            .collect()
    }

    /// Stores already-encoded bytes under `id` (which must be new);
    /// `check` is [`check`] of the decoded bytes.
    pub(crate) fn put_encoded(
        &mut self,
        id: PieceId,
        codec: Codec,
        payload: &[u8],
        check: u64,
    ) -> Result<PieceLoc, redb::StorageError> {
        if !self.open.bytes.is_empty() && self.open.bytes.len() + payload.len() > PACK_TARGET {
            self.flush()?;
            self.open.id += 1;
            self.open.bytes.clear();
        }
        let loc = PieceLoc {
            pack: self.open.id,
            offset: self.open.bytes.len() as u32,
            len: payload.len() as u32,
            codec: codec as u8,
            check,
        };
        self.open.bytes.extend_from_slice(payload);
        self.open.dirty = true;
        self.index
            .insert(&id.0, format::to_bytes(&loc).as_slice())?;
        Ok(loc)
    }

    pub(crate) fn contains(&self, id: &PieceId) -> Result<bool, redb::StorageError> {
        Ok(self.index.get(&id.0)?.is_some())
    }

    /// Writes the open pack so reads (and the commit) see its pieces.
    pub(crate) fn flush(&mut self) -> Result<(), redb::StorageError> {
        if self.open.dirty {
            self.packs
                .insert(self.open.id, self.open.bytes.as_slice())?;
            self.open.dirty = false;
        }
        Ok(())
    }

    /// Read access to everything written so far (call `flush` first).
    pub(crate) fn reader(&self) -> PieceReader<'_, IndexTable<'_>, PackTable<'_>> {
        PieceReader {
            index: &self.index,
            packs: &self.packs,
        }
    }
}

/// The fast checksum a piece's decoded bytes are checked against on read.
pub(crate) fn check(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// The codec and payload a piece is stored as: zstd at `level`, only
/// when smaller.
pub(crate) fn encode(data: &[u8], level: i32) -> (Codec, Vec<u8>) {
    thread_local! {
        // Creating a zstd context per piece cost more than compressing it;
        // it is kept with the level it is set to.
        static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
        // Pieces in a row that zstd could not shrink (see `worth_trying`).
        static INCOMPRESSIBLE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let streak = INCOMPRESSIBLE.get();
    if data.len() >= COMPRESS_FROM && worth_trying(streak) {
        let compressed = COMPRESSOR.with_borrow_mut(|slot| {
            match slot {
                Some((current, compressor)) if *current != level => {
                    compressor.set_compression_level(level).ok()?;
                    *current = level;
                }
                Some(_) => {}
                None => *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?)),
            }
            let (_, compressor) = slot.as_mut()?;
            compressor.compress(data).ok()
        });
        if let Some(compressed) = compressed.filter(|c| c.len() < data.len()) {
            INCOMPRESSIBLE.set(0);
            return (Codec::Zstd, compressed);
        }
    }
    if data.len() >= COMPRESS_FROM {
        INCOMPRESSIBLE.set(streak.saturating_add(1));
    }
    (Codec::Raw, data.to_vec())
}

/// Whether to try compressing after `streak` pieces in a row that did not
/// compress: a file of random or already compressed bytes (media, archives,
/// encrypted data) made zstd a fifth of the recorder's CPU for nothing. After
/// 16 such pieces only one in 16 is tried, so compressible data is noticed
/// again within 16 pieces (~32 KiB of chunks stored raw).
fn worth_trying(streak: u32) -> bool {
    const GIVE_UP_AFTER: u32 = 16;
    const PROBE_EVERY: u32 = 16;
    streak < GIVE_UP_AFTER || streak.is_multiple_of(PROBE_EVERY)
}

/// Read access to pieces: the index and the packs of one transaction.
pub(crate) struct PieceReader<'a, I, P> {
    pub index: &'a I,
    pub packs: &'a P,
}

impl<I, P> PieceReader<'_, I, P>
where
    I: ReadableTable<&'static [u8; 32], &'static [u8]> + Sync,
    P: ReadableTable<u64, &'static [u8]> + Sync,
{
    /// Where a piece is stored, if it is.
    pub(crate) fn find(&self, id: &PieceId) -> Result<Option<PieceLoc>, Fault> {
        match self.index.get(&id.0)? {
            None => Ok(None),
            Some(loc) => format::from_bytes(loc.value())
                .map(Some)
                .map_err(|e| Fault::Corrupt(format!("piece {id:?}: {e}"))),
        }
    }

    /// Runs `f` on a piece's codec and stored payload.
    fn with_payload<T>(
        &self,
        id: &PieceId,
        f: impl FnOnce(Codec, &[u8]) -> Result<T, String>,
    ) -> Result<T, Fault> {
        let loc = self.locate(id)?;
        let pack = self.pack(id, loc.pack)?;
        let (codec, payload) = slice(id, &loc, pack.value())?;
        f(codec, payload).map_err(|e| Fault::Corrupt(format!("piece {id:?}: {e}")))
    }

    fn pack(&self, id: &PieceId, pack: u64) -> Result<redb::AccessGuard<'_, &'static [u8]>, Fault> {
        self.packs
            .get(pack)?
            .ok_or_else(|| Fault::Corrupt(format!("piece {id:?}: pack {pack} is not stored")))
    }

    /// Re-hashes a piece against its id.
    pub(crate) fn verify(&self, id: &PieceId) -> Result<(), Fault> {
        let mut data = Vec::new();
        self.read_into(id, &mut data, MAX_PIECE_LEN)?;
        if hash(&data) != id.0 {
            return Err(Fault::Corrupt(format!("piece {id:?}: blake3 mismatch")));
        }
        Ok(())
    }
}

/// The codec and payload `loc` names inside a pack's bytes.
fn slice<'a>(id: &PieceId, loc: &PieceLoc, pack: &'a [u8]) -> Result<(Codec, &'a [u8]), Fault> {
    let corrupt = |e: String| Fault::Corrupt(format!("piece {id:?}: {e}"));
    let start = loc.offset as usize;
    let payload = pack
        .get(start..start + loc.len as usize)
        .ok_or_else(|| corrupt(format!("outside pack {}", loc.pack)))?;
    let codec = Codec::from_byte(loc.codec)
        .ok_or_else(|| corrupt(format!("unknown codec {}", loc.codec)))?;
    Ok((codec, payload))
}

/// Reading pieces, whichever transaction they come from.
pub(crate) trait PieceSource: Sync {
    /// Where a piece is stored.
    fn locate(&self, id: &PieceId) -> Result<PieceLoc, Fault>;
    /// Appends a piece's bytes to `out`, producing at most `limit` bytes.
    fn read_into(&self, id: &PieceId, out: &mut Vec<u8>, limit: u64) -> Result<(), Fault>;
    /// Fills `out` with the concatenated bytes of `chunks`, in order, each
    /// checked against its checksum; `out` must be exactly their total
    /// length. Consecutive chunks in one pack cost one lookup.
    fn read_chunks(&self, chunks: &[Entry], out: &mut [u8]) -> Result<(), Fault>;
}

impl<I, P> PieceSource for PieceReader<'_, I, P>
where
    I: ReadableTable<&'static [u8; 32], &'static [u8]> + Sync,
    P: ReadableTable<u64, &'static [u8]> + Sync,
{
    fn locate(&self, id: &PieceId) -> Result<PieceLoc, Fault> {
        self.find(id)?
            .ok_or_else(|| Fault::Corrupt(format!("piece {id:?} is not stored")))
    }

    fn read_into(&self, id: &PieceId, out: &mut Vec<u8>, limit: u64) -> Result<(), Fault> {
        self.with_payload(id, |codec, payload| decode_into(codec, payload, out, limit))
    }

    fn read_chunks(&self, chunks: &[Entry], mut out: &mut [u8]) -> Result<(), Fault> {
        let mut current: Option<(u64, redb::AccessGuard<'_, &'static [u8]>)> = None;
        for chunk in chunks {
            let (part, rest) = std::mem::take(&mut out).split_at_mut(chunk.len as usize);
            out = rest;
            if current
                .as_ref()
                .is_none_or(|(pack, _)| *pack != chunk.loc.pack)
            {
                current = Some((chunk.loc.pack, self.pack(&chunk.piece, chunk.loc.pack)?));
            }
            let (_, pack) = current.as_ref().expect("pack just loaded");
            let (codec, payload) = slice(&chunk.piece, &chunk.loc, pack.value())?;
            decode_exact(codec, payload, part)
                .map_err(|e| Fault::Corrupt(format!("piece {:?}: {e}", chunk.piece)))?;
            if check(part) != chunk.loc.check {
                return Err(Fault::Corrupt(format!(
                    "piece {:?}: checksum mismatch",
                    chunk.piece
                )));
            }
        }
        Ok(())
    }
}

/// Decodes a payload, appending to `out`. A corrupt or crafted frame cannot
/// produce more than `limit` bytes, so it cannot exhaust memory.
fn decode_into(codec: Codec, payload: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<(), String> {
    use std::io::Read;
    let produced = match codec {
        Codec::Raw => {
            out.extend_from_slice(payload);
            payload.len() as u64
        }
        Codec::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(payload).map_err(|e| format!("zstd: {e}"))?;
            let mut bounded = decoder.take(limit.saturating_add(1));
            std::io::copy(&mut bounded, out).map_err(|e| format!("zstd: {e}"))?
        }
    };
    if produced > limit {
        return Err("piece is longer than its content".into());
    }
    Ok(())
}

fn decode_exact(codec: Codec, payload: &[u8], out: &mut [u8]) -> Result<(), String> {
    match codec {
        Codec::Raw if payload.len() == out.len() => out.copy_from_slice(payload),
        Codec::Raw => return Err("piece has the wrong length".into()),
        Codec::Zstd => {
            // The output buffer bounds decompression.
            let n =
                zstd::bulk::decompress_to_buffer(payload, out).map_err(|e| format!("zstd: {e}"))?;
            if n != out.len() {
                return Err("piece has the wrong length".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_piece(seed: &mut u64) -> Vec<u8> {
        (0..2048)
            .map(|_| {
                // xorshift64: incompressible enough for zstd.
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_runs_stop_being_compressed_and_compressible_data_is_noticed_again() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..17 {
            assert_eq!(encode(&random_piece(&mut seed), 3).0, Codec::Raw);
        }
        let text = b"the same line, again and again\n".repeat(64);
        let codecs: Vec<Codec> = (0..20).map(|_| encode(&text, 3).0).collect();
        let first = codecs.iter().position(|&c| c == Codec::Zstd);
        assert_eq!(first, Some(15), "tried again at the 16th piece: {codecs:?}");
        assert!(codecs[15..].iter().all(|&c| c == Codec::Zstd), "{codecs:?}");
    }
}
