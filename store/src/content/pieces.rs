//! The piece table: byte strings stored once by their blake3.

use redb::{ReadableTable, Table};

use super::{hash, PieceId};
use crate::format::Codec;

/// Pieces shorter than this are never worth a zstd frame header.
const COMPRESS_FROM: usize = 64;
const ZSTD_LEVEL: i32 = 3;
/// No piece is larger than the largest file the recorder accepts in one
/// piece; `verify` uses it as the decode bound when no content size applies.
pub(crate) const MAX_PIECE_LEN: u64 = 1 << 32;

pub(crate) type PieceTable<'t> = Table<'t, &'static [u8; 32], &'static [u8]>;

/// Stores `data` unless an identical piece exists; returns its id and the
/// number of bytes newly written (0 when deduplicated).
pub(crate) fn put(
    table: &mut PieceTable<'_>,
    data: &[u8],
) -> Result<(PieceId, u64), redb::StorageError> {
    let id = PieceId(hash(data));
    if table.get(&id.0)?.is_some() {
        return Ok((id, 0));
    }
    let stored = encode(data);
    table.insert(&id.0, stored.as_slice())?;
    Ok((id, stored.len() as u64))
}

/// The bytes a piece occupies on disk: `codec ‖ payload`, compressed only
/// when that is smaller.
pub(crate) fn encode(data: &[u8]) -> Vec<u8> {
    thread_local! {
        // Creating a zstd context per piece cost more than compressing it.
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            std::cell::RefCell::new(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok());
    }
    if data.len() >= COMPRESS_FROM {
        let compressed =
            COMPRESSOR.with_borrow_mut(|c| c.as_mut().and_then(|c| c.compress(data).ok()));
        if let Some(compressed) = compressed {
            if compressed.len() < data.len() {
                let mut out = Vec::with_capacity(compressed.len() + 1);
                out.push(Codec::Zstd as u8);
                out.extend_from_slice(&compressed);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(Codec::Raw as u8);
    out.extend_from_slice(data);
    out
}

/// Decodes a stored piece, appending its bytes to `out`. At most `limit`
/// bytes are produced: the caller knows how long the content must be, and a
/// corrupt or crafted frame must not be able to exhaust memory.
pub(crate) fn decode_into(stored: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<(), String> {
    use std::io::Read;
    let (&codec, payload) = stored.split_first().ok_or("empty piece record")?;
    let produced = match Codec::from_byte(codec) {
        Some(Codec::Raw) => {
            if payload.len() as u64 > limit {
                return Err("piece is longer than its content".into());
            }
            out.extend_from_slice(payload);
            payload.len() as u64
        }
        Some(Codec::Zstd) => {
            let decoder = zstd::stream::read::Decoder::new(payload)
                .map_err(|e| format!("zstd decoder: {e}"))?;
            let mut bounded = decoder.take(limit.saturating_add(1));
            let n = std::io::copy(&mut bounded, out).map_err(|e| format!("zstd: {e}"))?;
            if n > limit {
                return Err("piece is longer than its content".into());
            }
            n
        }
        None => return Err(format!("unknown piece codec {codec}")),
    };
    debug_assert!(produced <= limit);
    Ok(())
}

/// Decodes a stored piece into `out`, which must be exactly its length.
pub(crate) fn decode_exact(stored: &[u8], out: &mut [u8]) -> Result<(), String> {
    let (&codec, payload) = stored.split_first().ok_or("empty piece record")?;
    match Codec::from_byte(codec) {
        Some(Codec::Raw) if payload.len() == out.len() => out.copy_from_slice(payload),
        Some(Codec::Raw) => return Err("piece has the wrong length".into()),
        Some(Codec::Zstd) => {
            // The output buffer bounds decompression: a crafted frame cannot
            // make it allocate.
            let n =
                zstd::bulk::decompress_to_buffer(payload, out).map_err(|e| format!("zstd: {e}"))?;
            if n != out.len() {
                return Err("piece has the wrong length".into());
            }
        }
        None => return Err(format!("unknown piece codec {codec}")),
    }
    Ok(())
}

/// Re-hashes a stored piece against its key.
pub(crate) fn verify_piece(key: &[u8; 32], stored: &[u8]) -> Result<(), String> {
    let mut data = Vec::new();
    decode_into(stored, &mut data, MAX_PIECE_LEN)?;
    if hash(&data) != *key {
        return Err("blake3 mismatch".into());
    }
    Ok(())
}

/// Reads and decodes one piece; `Ok(None)` if it is not stored.
pub(crate) fn get_into(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    id: &PieceId,
    out: &mut Vec<u8>,
    limit: u64,
) -> Result<Option<Result<(), String>>, redb::StorageError> {
    match table.get(&id.0)? {
        None => Ok(None),
        Some(stored) => Ok(Some(decode_into(stored.value(), out, limit))),
    }
}
