//! Choosing and writing the representation of a new version.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

use super::chunking;
use super::decode::{self};
use super::pieces::{self, PieceWriter};
use super::{
    content_id, delta, hash, hash_on_all_cores, ContentId, ContentRecord, ContentRef, Fault,
    PatchEngine, Repr,
};
use crate::format;

/// Which representations the encoder may use, and the bounds that keep reads
/// fast. The defaults are the per-case choice documented (with the numbers
/// behind it) in docs/recording-format.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodingPolicy {
    /// Store only the new tail when the previous version is a prefix.
    pub append: bool,
    /// Files at least this large are chunked (FastCDC); smaller ones are
    /// stored whole or as a patch. `u64::MAX` disables chunking.
    pub chunked_from: u64,
    /// Patch engines tried for small files (each candidate is computed and
    /// the smallest result wins, including plain compression).
    pub patch_engines: Vec<PatchEngine>,
    /// Only files (and bases) up to this size are patched.
    pub patch_up_to: u64,
    /// Longest run of `Append` links before a version is re-based as a
    /// self-contained chunk list (re-using the stored tails: no data copy).
    pub max_append_chain: u16,
    /// Longest run of links a `Patch` may extend.
    pub max_patch_chain: u16,
    /// Each patch in a chain costs a full decode of the file on read, so a
    /// patch is only added while `(chain + 1) × size` stays within this
    /// budget: a 4 KiB config may chain hundreds of patches, a 64 KiB file
    /// a few dozen, before a version is stored whole again.
    pub max_patch_read_bytes: u64,
}

impl Default for EncodingPolicy {
    fn default() -> Self {
        EncodingPolicy {
            append: true,
            chunked_from: 64 * 1024,
            // bsdiff never beat zstd in the benchmark (docs/recording-format.md)
            // and costs ~20× the CPU, so it is opt-in.
            patch_engines: vec![PatchEngine::ZstdPrefix],
            patch_up_to: 64 * 1024,
            max_append_chain: 1024,
            max_patch_chain: 256,
            max_patch_read_bytes: 2 << 20,
        }
    }
}

impl EncodingPolicy {
    /// Every version stored whole (compressed): the reference point the
    /// benchmarks compare against.
    pub fn whole_only() -> Self {
        EncodingPolicy {
            append: false,
            chunked_from: u64::MAX,
            patch_engines: vec![],
            patch_up_to: 0,
            max_append_chain: 0,
            max_patch_chain: 0,
            max_patch_read_bytes: 0,
        }
    }
}

/// What the encoder did, for metrics and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodingStats {
    /// Content bytes offered to the store.
    pub bytes_in: u64,
    /// Bytes newly written to the piece and content tables.
    pub bytes_stored: u64,
    pub deduplicated: u64,
    pub whole: u64,
    pub appends: u64,
    pub patches_zstd: u64,
    pub patches_bsdiff: u64,
    pub chunked: u64,
    /// Chunks of chunked versions taken over from the previous version
    /// without cutting, hashing or looking them up again.
    pub reused_chunks: u64,
}

/// Write access to the content tables of one transaction.
pub(crate) struct ContentWriter<'t, 'p> {
    pub content: Table<'t, &'static [u8; 32], &'static [u8]>,
    pub pieces: PieceWriter<'t, 'p>,
    pub recent: &'p mut RecentContent,
}

/// The bytes of recently stored small versions. Patching against a path's
/// previous version would otherwise rebuild that version's whole patch
/// chain for every new version (measured: 1 ms per 4 KiB config edit).
#[derive(Debug, Default)]
pub(crate) struct RecentContent {
    bytes: HashMap<ContentId, Vec<u8>>,
    order: VecDeque<ContentId>,
    total: usize,
}

impl RecentContent {
    const LIMIT: usize = 8 << 20;

    fn get(&self, id: &ContentId) -> Option<&[u8]> {
        self.bytes.get(id).map(Vec::as_slice)
    }

    fn insert(&mut self, id: ContentId, data: &[u8]) {
        if self.bytes.contains_key(&id) {
            return;
        }
        self.bytes.insert(id, data.to_vec());
        self.order.push_back(id);
        self.total += data.len();
        while self.total > Self::LIMIT {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.total -= self.bytes.remove(&old).map_or(0, |b| b.len());
        }
    }
}

impl ContentWriter<'_, '_> {
    /// Stores `data` as a version following `prev` (the path's previous
    /// content, if known) and returns its reference. `changed`, if known,
    /// holds every byte range written since `prev` (see
    /// [`chunking::store_chunks_reusing`]).
    pub(crate) fn store(
        &mut self,
        data: &[u8],
        prev: Option<&ContentRef>,
        changed: Option<&[Range<u64>]>,
        policy: &EncodingPolicy,
        stats: &mut EncodingStats,
    ) -> Result<ContentRef, Fault> {
        let id = if self.pieces.speed.prefers_speed() {
            ContentId(hash_on_all_cores(data))
        } else {
            content_id(data)
        };
        let cref = ContentRef {
            id,
            size: data.len() as u64,
        };
        stats.bytes_in += cref.size;
        if self.content.get(&cref.id.0)?.is_some() {
            stats.deduplicated += 1;
            return Ok(cref);
        }
        let mut written = 0;
        let record = self.encode(data, prev, changed, policy, stats, &mut written)?;
        let record_bytes = format::to_bytes(&record);
        written += record_bytes.len() as u64;
        self.content.insert(&cref.id.0, record_bytes.as_slice())?;
        stats.bytes_stored += written;
        if cref.size <= policy.patch_up_to {
            self.recent.insert(cref.id, data);
        }
        Ok(cref)
    }

    fn encode(
        &mut self,
        data: &[u8],
        prev: Option<&ContentRef>,
        changed: Option<&[Range<u64>]>,
        policy: &EncodingPolicy,
        stats: &mut EncodingStats,
        written: &mut u64,
    ) -> Result<ContentRecord, Fault> {
        let size = data.len() as u64;
        let prev = match prev {
            Some(p) => decode::record(&self.content, &p.id)?.map(|r| (*p, r)),
            None => None,
        };

        if let Some((p, base)) = &prev {
            let is_append = policy.append
                && p.size > 0
                // Equal sizes cannot be an append: the content differs.
                && p.size < size
                && hash(&data[..p.size as usize]) == p.id.0;
            if is_append {
                let tail = &data[p.size as usize..];
                if base.chain < policy.max_append_chain && (tail.len() as u64) < policy.chunked_from
                {
                    let (tail, _, new) = self.pieces.put(tail)?;
                    *written += new;
                    stats.appends += 1;
                    return Ok(ContentRecord {
                        size,
                        chain: base.chain + 1,
                        repr: Repr::Append { base: p.id, tail },
                    });
                }
                // Chain too long or tail too big: a self-contained chunk
                // list that re-uses every stored piece of the base.
                self.pieces.flush()?;
                let leaves = decode::leaves(&self.content, &self.pieces.reader(), &p.id)?;
                if let Some(mut leaves) = leaves {
                    leaves.extend(chunking::store_chunks(&mut self.pieces, tail, written)?);
                    return self.chunked_record(size, leaves, stats, written);
                }
            }
        }

        if size >= policy.chunked_from {
            // The previous version's chunks, when the writes since are known.
            let old = match (&prev, changed) {
                (Some((p, _)), Some(changed)) => {
                    self.pieces.flush()?;
                    decode::leaves(&self.content, &self.pieces.reader(), &p.id)?
                        .map(|old| (old, changed))
                }
                _ => None,
            };
            let leaves = match old {
                Some((old, changed)) => {
                    let (leaves, reused) = chunking::store_chunks_reusing(
                        &mut self.pieces,
                        data,
                        &old,
                        changed,
                        written,
                    )?;
                    stats.reused_chunks += reused;
                    leaves
                }
                None => chunking::store_chunks(&mut self.pieces, data, written)?,
            };
            return self.chunked_record(size, leaves, stats, written);
        }

        let (codec, whole) = pieces::encode(data, self.pieces.speed.zstd_level());
        if let Some((p, base)) = &prev {
            let read_work = (u64::from(base.chain) + 1) * size.max(p.size);
            let patchable = base.chain < policy.max_patch_chain
                && read_work <= policy.max_patch_read_bytes
                && p.size <= policy.patch_up_to
                && size <= policy.patch_up_to
                && !policy.patch_engines.is_empty();
            if patchable {
                // A corrupt base just means we store this version whole.
                let base_bytes = match self.recent.get(&p.id) {
                    Some(bytes) => Ok(Cow::Borrowed(bytes)),
                    None => {
                        self.pieces.flush()?;
                        decode::read(&self.content, &self.pieces.reader(), p).map(Cow::Owned)
                    }
                };
                if let Ok(base_bytes) = base_bytes {
                    let mut best: Option<(PatchEngine, Vec<u8>)> = None;
                    for &engine in &policy.patch_engines {
                        let Ok(patch) = delta::diff(engine, &base_bytes, data) else {
                            continue;
                        };
                        let beats_best = best.as_ref().is_none_or(|(_, b)| patch.len() < b.len());
                        if patch.len() < whole.len() && beats_best {
                            best = Some((engine, patch));
                        }
                    }
                    if let Some((engine, patch)) = best {
                        let (patch, _, new) = self.pieces.put(&patch)?;
                        *written += new;
                        match engine {
                            PatchEngine::ZstdPrefix => stats.patches_zstd += 1,
                            PatchEngine::Bsdiff => stats.patches_bsdiff += 1,
                        }
                        return Ok(ContentRecord {
                            size,
                            chain: base.chain + 1,
                            repr: Repr::Patch {
                                base: p.id,
                                engine,
                                patch,
                            },
                        });
                    }
                }
            }
        }

        let piece = super::PieceId(hash(data));
        if !self.pieces.contains(&piece)? {
            self.pieces
                .put_encoded(piece, codec, &whole, pieces::check(data))?;
            *written += whole.len() as u64;
        }
        stats.whole += 1;
        Ok(ContentRecord {
            size,
            chain: 0,
            repr: Repr::Whole { piece },
        })
    }

    fn chunked_record(
        &mut self,
        size: u64,
        leaves: Vec<chunking::Entry>,
        stats: &mut EncodingStats,
        written: &mut u64,
    ) -> Result<ContentRecord, Fault> {
        let (root, height) = chunking::store_tree(&mut self.pieces, leaves, written)?;
        stats.chunked += 1;
        Ok(ContentRecord {
            size,
            chain: 0,
            repr: Repr::Chunked { root, height },
        })
    }
}
