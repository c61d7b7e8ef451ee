//! The write side: one `Recorder` appends to one recording file.
//!
//! Writes are batched into redb transactions committed with
//! `Durability::Immediate` (fsync) every `commit_interval` or
//! `commit_after_events`, whichever comes first. A crash loses at most the
//! uncommitted batch; nothing half-written is ever visible, because redb
//! commits are atomic and an event is inserted in the same transaction as the
//! content it refers to.
//!
//! A failed commit (disk full, I/O error) does not end the recorder: the
//! batch's events are counted as lost, and the next call that finds the store
//! writable again re-opens it at its last commit and records a `Gap` for them.

use std::fs::OpenOptions;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, WriteTransaction};

use crate::content::{
    ContentRef, ContentWriter, EncodingPolicy, EncodingStats, Fault, OpenPack, PieceWriter,
    RecentContent, SpeedSwitch,
};
use crate::error::{Error, Result};
use crate::event::{lost_events, Actor, Event, Op};
use crate::format::{self, BASELINE, CONTENT, EVENTS, META, PACKS, PIECES};
use crate::meta::{BaselineMode, BaselineStatus, RecordingMeta, RecordingState, Status};
use crate::path::RecPath;
use crate::state::{FsState, Node};

/// How a recorder batches and encodes.
#[derive(Clone, Debug)]
pub struct RecorderOptions {
    /// Commit at least this often while events are pending (default 100 ms).
    pub commit_interval: Duration,
    /// Commit as soon as this many events are pending (default 4096).
    pub commit_after_events: usize,
    /// Delta engine choice and chain bounds.
    pub encoding: EncodingPolicy,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            commit_interval: Duration::from_millis(100),
            commit_after_events: 4096,
            encoding: EncodingPolicy::default(),
        }
    }
}

/// Appends events and content to a recording.
pub struct Recorder {
    path: PathBuf,
    options: RecorderOptions,
    db: Option<Database>,
    txn: Option<WriteTransaction>,
    pending: Batch,
    next_seq: u64,
    /// The tree as recorded so far: the source of each path's previous
    /// version for delta encoding.
    state: FsState,
    status: Status,
    status_dirty: bool,
    stats: EncodingStats,
    /// Pieces are packed; this is the pack being filled (see `content`).
    open_pack: OpenPack,
    recent: RecentContent,
    speed: SpeedSwitch,
    failure: Option<Failure>,
}

/// Events written since the last commit.
#[derive(Default)]
struct Batch {
    events: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    since: Option<Instant>,
}

/// Set while the store cannot be written; cleared by a successful recovery.
struct Failure {
    reason: String,
    lost: u64,
    from_ns: u64,
    to_ns: u64,
    last_attempt: Instant,
}

const RECOVERY_BACKOFF: Duration = Duration::from_secs(1);

impl Recorder {
    /// Creates a new recording at `path` (mode 0600). Refuses to overwrite.
    pub fn create(
        path: impl AsRef<Path>,
        meta: &RecordingMeta,
        options: RecorderOptions,
    ) -> Result<Recorder> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { path: path.clone() },
                _ => Error::io(&path, e),
            })?;
        let db = Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .create_with_backend(
                redb::backends::FileBackend::new(file).map_err(|e| Error::storage(&path, e))?,
            )
            .map_err(|e| Error::storage(&path, e))?;
        let status = Status::default();
        let mut recorder = Recorder {
            path,
            options,
            db: Some(db),
            txn: None,
            pending: Batch::default(),
            next_seq: 0,
            state: FsState::new(),
            status,
            status_dirty: true,
            stats: EncodingStats::default(),
            open_pack: OpenPack::default(),
            recent: RecentContent::default(),
            speed: SpeedSwitch::default(),
            failure: None,
        };
        let meta_json = serde_json::to_vec(meta).expect("metadata serialises to JSON");
        let txn = recorder.txn()?;
        let result = (|| -> Result<(), redb::Error> {
            let mut table = txn.open_table(META)?;
            table.insert(format::META_MAGIC_KEY, format::MAGIC)?;
            table.insert(
                format::META_VERSION_KEY,
                format::FORMAT_VERSION.to_le_bytes().as_slice(),
            )?;
            table.insert(format::META_RECORDING_KEY, meta_json.as_slice())?;
            // Create every table now so readers never meet a missing one.
            txn.open_table(EVENTS)?;
            txn.open_table(BASELINE)?;
            txn.open_table(CONTENT)?;
            txn.open_table(PIECES)?;
            txn.open_table(PACKS)?;
            Ok(())
        })();
        result.map_err(|e| Error::storage(&recorder.path, e))?;
        recorder.commit()?;
        Ok(recorder)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encoding counters since creation.
    pub fn stats(&self) -> &EncodingStats {
        &self.stats
    }

    /// The tree as recorded so far (baseline entries included).
    pub fn state(&self) -> &FsState {
        &self.state
    }

    /// Events recorded so far (including any not yet committed).
    pub fn event_count(&self) -> u64 {
        self.next_seq
    }

    /// A switch to make this recorder compress for speed rather than size
    /// from its next piece on, from any thread: for what is left to store
    /// once the workload is gone and the recording's end is waited for.
    pub fn speed_switch(&self) -> SpeedSwitch {
        self.speed.clone()
    }

    /// Stores `data` as the next version of `path` and returns the reference
    /// to put in a `Create`, `Write` or `Truncate` event. The previous
    /// version of `path`, if any, is the delta base.
    pub fn store_content(&mut self, path: &RecPath, data: &[u8]) -> Result<ContentRef> {
        self.store_version(path, data, None)
    }

    /// [`Recorder::store_content`] for a version whose only writes since
    /// the path's previous version are in `changed` (byte ranges, sorted
    /// and disjoint; a list that is not is ignored), when the caller knows
    /// them (`None`: unknown). Chunks of a large file that no
    /// write touched are then taken over from the previous version, each
    /// checked against its stored xxh3 first, instead of being cut and
    /// hashed again.
    pub fn store_version(
        &mut self,
        path: &RecPath,
        data: &[u8],
        changed: Option<&[Range<u64>]>,
    ) -> Result<ContentRef> {
        self.ensure_writable()?;
        let changed = changed.filter(|c| c.windows(2).all(|w| w[0].end <= w[1].start));
        let prev = self.state.get(path).and_then(|n| n.content()).copied();
        self.ensure_txn()?;
        let txn = self.txn.as_ref().expect("transaction open");
        let stats = &mut self.stats;
        let policy = &self.options.encoding;
        let open_pack = &mut self.open_pack;
        let recent = &mut self.recent;
        let result = (|| -> Result<ContentRef, Fault> {
            let mut writer = ContentWriter {
                content: txn.open_table(CONTENT).map_err(table_fault)?,
                pieces: PieceWriter {
                    index: txn.open_table(PIECES).map_err(table_fault)?,
                    packs: txn.open_table(PACKS).map_err(table_fault)?,
                    open: open_pack,
                    speed: &self.speed,
                },
                recent,
            };
            writer.store(data, prev.as_ref(), changed, policy, stats)
        })();
        result.map_err(|fault| self.fault(fault))
    }

    /// Appends one event and returns its sequence number. Content referenced
    /// by the operation must come from [`Recorder::store_content`].
    pub fn record(&mut self, time_ns: u64, actor: Actor, op: Op) -> Result<u64> {
        if let Err(err) = self.ensure_writable() {
            self.count_lost(time_ns);
            return Err(err);
        }
        let event = Event {
            seq: self.next_seq,
            time_ns,
            actor,
            op,
        };
        let bytes = format::to_bytes(&event);
        let txn = self.txn()?;
        let result = (|| -> Result<(), redb::Error> {
            if let Some(content) = event.op.content() {
                if txn.open_table(CONTENT)?.get(&content.id.0)?.is_none() {
                    return Err(redb::Error::Corrupted(format!(
                        "event refers to content {} that was not stored first",
                        content.id
                    )));
                }
            }
            txn.open_table(EVENTS)?
                .insert(event.seq, bytes.as_slice())?;
            Ok(())
        })();
        result.map_err(|e| Error::storage(&self.path, e))?;
        self.state.apply(&event.op);
        self.next_seq += 1;
        self.pending.events += 1;
        self.pending.first_ns.get_or_insert(time_ns);
        self.pending.last_ns = self.pending.last_ns.max(time_ns);
        self.pending.since.get_or_insert_with(Instant::now);
        if let Op::Gap { reason, lost, .. } = &event.op {
            self.note_incomplete(format!("{} lost: {reason}", lost_events(*lost)));
        }
        if self.pending.events as usize >= self.options.commit_after_events {
            self.commit()?;
        } else {
            self.tick()?;
        }
        Ok(event.seq)
    }

    /// Records that `lost` events were dropped between two times.
    pub fn record_gap(&mut self, lost: u64, from_ns: u64, to_ns: u64, reason: &str) -> Result<u64> {
        self.record(
            to_ns,
            Actor::Recorder,
            Op::Gap {
                lost,
                from_ns,
                to_ns,
                reason: reason.to_string(),
            },
        )
    }

    /// Adds one entry of the starting tree. Baseline entries sit beneath the
    /// events: an event at any time overrides them. A file's content must
    /// have been stored first, unless the baseline status says `Manifest`
    /// (hashes and sizes only).
    pub fn add_baseline(&mut self, path: RecPath, node: Node) -> Result<()> {
        self.ensure_writable()?;
        let bytes = format::to_bytes(&node);
        let content_required = self.status.baseline.mode != BaselineMode::Manifest;
        let txn = self.txn()?;
        let result = (|| -> Result<(), redb::Error> {
            if let Some(content) = node.content().filter(|_| content_required) {
                if txn.open_table(CONTENT)?.get(&content.id.0)?.is_none() {
                    return Err(redb::Error::Corrupted(format!(
                        "baseline entry refers to content {} that was not stored first",
                        content.id
                    )));
                }
            }
            txn.open_table(BASELINE)?
                .insert(path.as_bytes(), bytes.as_slice())?;
            Ok(())
        })();
        result.map_err(|e| Error::storage(&self.path, e))?;
        if self.state.get(&path).is_none() {
            self.state.insert(path, node);
        }
        self.pending.since.get_or_insert_with(Instant::now);
        self.tick()
    }

    /// Updates the baseline's progress (mode, completeness, counts).
    pub fn set_baseline_status(&mut self, baseline: BaselineStatus) {
        self.status.baseline = baseline;
        self.status_dirty = true;
    }

    /// Marks the recording as missing changes, with a reason readers show.
    pub fn note_incomplete(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if !self.status.incomplete.contains(&reason) {
            self.status.incomplete.push(reason);
            self.status_dirty = true;
        }
    }

    /// Commits if the oldest pending write is older than the commit interval.
    /// Call this periodically (the shim does every few tens of ms) so a quiet
    /// workload's last events are durable within the interval.
    pub fn tick(&mut self) -> Result<()> {
        let due = self
            .pending
            .since
            .is_some_and(|since| since.elapsed() >= self.options.commit_interval);
        if due || (self.failure.is_some() && self.txn.is_none()) {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits everything pending now.
    pub fn flush(&mut self) -> Result<()> {
        self.commit()
    }

    /// Closes the recording: final status, last commit.
    pub fn finish(mut self, exit_code: Option<i32>) -> Result<Status> {
        self.ensure_writable()?;
        self.status.state = RecordingState::Finished;
        self.status.exit_code = exit_code;
        self.status.ended_unix_ns = Some(unix_now_ns());
        self.status_dirty = true;
        self.commit()?;
        if let Some(mut db) = self.db.take() {
            // Copy-on-write leaves free pages behind; a finished recording
            // is kept for a long time, so give them back. Best effort: a
            // reader holding an old snapshot makes this a no-op.
            if let Err(e) = db.compact() {
                tracing::debug!(path = %self.path.display(), error = %e, "recording not compacted");
            }
        }
        Ok(self.status.clone())
    }

    /// The open write transaction, beginning one if none is open.
    fn txn(&mut self) -> Result<&WriteTransaction> {
        self.ensure_txn()?;
        Ok(self.txn.as_ref().expect("transaction just opened"))
    }

    fn ensure_txn(&mut self) -> Result<()> {
        if self.txn.is_none() {
            let db = self.db.as_ref().ok_or_else(|| Error::RecorderFailed {
                reason: "recording is closed".into(),
            })?;
            let mut txn = db
                .begin_write()
                .map_err(|e| Error::storage(&self.path, e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| Error::storage(&self.path, e))?;
            self.txn = Some(txn);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.open_pack.dirty {
            self.ensure_txn()?;
            let txn = self.txn.as_ref().expect("transaction open");
            let open = &self.open_pack;
            let result = txn
                .open_table(PACKS)
                .map_err(redb::Error::from)
                .and_then(|mut packs| {
                    Ok(packs.insert(open.id, open.bytes.as_slice()).map(drop)?)
                });
            result.map_err(|e| Error::storage(&self.path, e))?;
            self.open_pack.dirty = false;
        }
        if self.status_dirty {
            let status = serde_json::to_vec(&self.status).expect("status serialises to JSON");
            let txn = self.txn()?;
            let result = (|| -> Result<(), redb::Error> {
                let mut table = txn.open_table(META)?;
                table.insert(format::META_STATUS_KEY, status.as_slice())?;
                Ok(())
            })();
            result.map_err(|e| Error::storage(&self.path, e))?;
        }
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        match txn.commit() {
            Ok(()) => {
                self.status_dirty = false;
                self.pending = Batch::default();
                Ok(())
            }
            Err(e) => {
                let err = Error::storage(&self.path, e);
                self.fail(err.to_string());
                Err(err)
            }
        }
    }

    /// Remembers that the pending batch is lost and why.
    fn fail(&mut self, reason: String) {
        let batch = std::mem::take(&mut self.pending);
        let lost = self.failure.as_ref().map_or(0, |f| f.lost) + batch.events;
        let from_ns = self
            .failure
            .as_ref()
            .map(|f| f.from_ns)
            .or(batch.first_ns)
            .unwrap_or(batch.last_ns);
        self.failure = Some(Failure {
            reason,
            lost,
            from_ns,
            to_ns: batch
                .last_ns
                .max(self.failure.as_ref().map_or(0, |f| f.to_ns)),
            last_attempt: Instant::now(),
        });
    }

    fn count_lost(&mut self, time_ns: u64) {
        if let Some(f) = &mut self.failure {
            f.lost += 1;
            f.from_ns = f.from_ns.min(time_ns);
            f.to_ns = f.to_ns.max(time_ns);
        }
    }

    fn fault(&mut self, fault: Fault) -> Error {
        match fault {
            Fault::Storage(e) => Error::storage(&self.path, e),
            Fault::Corrupt(detail) => Error::CorruptMeta { detail },
        }
    }

    /// After a failed commit: re-open the store at its last commit, rebuild
    /// the in-memory tree from it, and record the lost events as a gap.
    fn ensure_writable(&mut self) -> Result<()> {
        let Some(failure) = &self.failure else {
            return Ok(());
        };
        if failure.last_attempt.elapsed() < RECOVERY_BACKOFF {
            return Err(Error::RecorderFailed {
                reason: failure.reason.clone(),
            });
        }
        self.txn = None;
        self.db = None;
        let reopened = Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .open(&self.path)
            .map_err(|e| Error::storage(&self.path, e))
            .and_then(|db| {
                let (state, next_seq, next_pack) = crate::recording::replay_all(&db, &self.path)?;
                Ok((db, state, next_seq, next_pack))
            });
        let failure = self.failure.as_mut().expect("checked above");
        failure.last_attempt = Instant::now();
        let (db, state, next_seq, next_pack) = match reopened {
            Ok(ok) => ok,
            Err(err) => {
                failure.reason = err.to_string();
                return Err(Error::RecorderFailed {
                    reason: failure.reason.clone(),
                });
            }
        };
        let failure = self.failure.take().expect("checked above");
        self.db = Some(db);
        self.state = state;
        self.next_seq = next_seq;
        // Pieces of the lost batch may sit in the open pack and the recent
        // cache; start both afresh.
        self.recent = RecentContent::default();
        self.open_pack = OpenPack {
            id: next_pack,
            ..OpenPack::default()
        };
        self.note_incomplete(format!("store write failed: {}", failure.reason));
        let gap = self.record_gap(
            failure.lost,
            failure.from_ns,
            failure.to_ns,
            &format!("store write failed: {}", failure.reason),
        );
        gap.and_then(|_| self.commit())
    }
}

fn table_fault(e: redb::TableError) -> Fault {
    match redb::Error::from(e) {
        redb::Error::Io(io) => Fault::Storage(redb::StorageError::Io(io)),
        other => Fault::Corrupt(other.to_string()),
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Kernel `CLOCK_MONOTONIC` now, in nanoseconds: the clock eBPF timestamps use.
pub fn monotonic_now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Best effort: a recorder dropped without `finish` still commits what
        // it has, so an early return in the caller loses nothing.
        if self.db.is_some() && self.failure.is_none() {
            let _ = self.commit();
        }
    }
}
