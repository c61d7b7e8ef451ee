//! The read side: open a recording (finished, crashed or still being
//! written) and ask it questions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};

use crate::content::{ContentReader, ContentRef, Fault};
use crate::error::{contained, Error, Result};
use crate::event::{Event, Op, OpKind};
use crate::format::{self, BASELINE, CONTENT, EVENTS, META, PACKS, PIECES};
use crate::meta::{RecordingMeta, RecordingState, Status};
use crate::path::{PathGlobs, RecPath};
use crate::state::{FsState, Node, NodeKind};
use crate::time::{format_offset, Moment, TimeSpec};

type Bytes32Table = ReadOnlyTable<&'static [u8; 32], &'static [u8]>;
type PacksTable = ReadOnlyTable<u64, &'static [u8]>;
/// A reader of a finished or live recording's content tables.
pub(crate) type StoredContent = ContentReader<Bytes32Table, Bytes32Table, PacksTable>;

/// A recording opened for reading. Cheap to open; every query runs in its
/// own read transaction, so a recording still being written shows each new
/// commit to the next query.
pub struct Recording {
    path: PathBuf,
    db: redb::ReadOnlyDatabase,
    meta: RecordingMeta,
}

/// The tree at a moment, with the gaps that make it uncertain.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub moment: Moment,
    /// Baseline overlaid with every included event.
    pub state: FsState,
    /// Baseline only (for `--changes-only` and diffs against the start).
    pub baseline: FsState,
    /// Gap events at or before the moment: the state may be wrong there.
    pub gaps: Vec<Event>,
    /// Events applied (baseline excluded).
    pub events_applied: u64,
}

/// Which events `timeline` returns. Gap events within the time range are
/// always returned, whatever the other filters: a reader must see them.
#[derive(Clone, Debug, Default)]
pub struct TimelineFilter {
    paths: Option<PathGlobs>,
    pid: Option<u32>,
    ops: Vec<OpKind>,
    since: Option<Moment>,
    until: Option<Moment>,
}

impl TimelineFilter {
    /// Only events of this process (by host pid).
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Only these operations (empty: all).
    pub fn ops(mut self, ops: impl IntoIterator<Item = OpKind>) -> Self {
        self.ops = ops.into_iter().collect();
        self
    }

    /// Only events at or after this moment.
    pub fn since(mut self, moment: Moment) -> Self {
        self.since = Some(moment);
        self
    }

    /// Only events included in this moment.
    pub fn until(mut self, moment: Moment) -> Self {
        self.until = Some(moment);
        self
    }

    /// Restricts to events touching a path matching any of these globs
    /// (`*` does not cross `/`; `**` does).
    pub fn with_path_globs<S: AsRef<str>>(mut self, globs: &[S]) -> Result<Self> {
        if !globs.is_empty() {
            self.paths = Some(PathGlobs::new(globs)?);
        }
        Ok(self)
    }

    fn matches(&self, event: &Event) -> bool {
        if let Some(since) = &self.since {
            if since.until_ns.is_some_and(|t| event.time_ns < t)
                || since.until_seq.is_some_and(|s| event.seq < s)
            {
                return false;
            }
        }
        if let Some(until) = &self.until {
            if !until.includes(event.seq, event.time_ns) {
                return false;
            }
        }
        if matches!(event.op, Op::Gap { .. }) {
            return true;
        }
        if let Some(pid) = self.pid {
            if event.actor.pid() != Some(pid) {
                return false;
            }
        }
        if !self.ops.is_empty() && !self.ops.contains(&event.op.kind()) {
            return false;
        }
        if let Some(globs) = &self.paths {
            let paths = event.op.paths();
            if !paths.iter().any(|p| globs.matches(p)) {
                return false;
            }
        }
        true
    }
}

/// One path that differs between two moments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: RecPath,
    pub before: Option<Node>,
    pub after: Option<Node>,
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            _ => "changed",
        }
    }
}

impl Recording {
    /// Opens a recording for reading. A recording whose writer was killed is
    /// first brought back to its last commit (redb's recovery).
    pub fn open(path: impl AsRef<Path>) -> Result<Recording> {
        let path = path.as_ref().to_path_buf();
        if let Err(e) = std::fs::metadata(&path) {
            return Err(Error::io(&path, e));
        }
        let db = match open_read_only(&path) {
            Err(redb::DatabaseError::RepairAborted) => {
                // The writer died mid-transaction. Opening it for writing
                // runs recovery to the last commit; nothing committed is lost.
                let repaired = redb::Database::builder()
                    .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
                    .open(&path)
                    .map_err(|e| open_error(&path, e))?;
                drop(repaired);
                open_read_only(&path).map_err(|e| open_error(&path, e))?
            }
            other => other.map_err(|e| open_error(&path, e))?,
        };
        let meta = contained(&path, || read_meta(&db, &path))?;
        Ok(Recording { path, db, meta })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    /// The current status (re-read: a live recording's status changes).
    pub fn status(&self) -> Result<Status> {
        contained(&self.path, || {
            let txn = self.begin()?;
            let table = txn.open_table(META).map_err(|e| self.storage(e))?;
            let value = table
                .get(format::META_STATUS_KEY)
                .map_err(|e| self.storage(e))?;
            match value {
                None => Ok(Status::default()),
                Some(v) => serde_json::from_slice(v.value()).map_err(|e| Error::CorruptMeta {
                    detail: format!("status: {e}"),
                }),
            }
        })
    }

    /// Number of committed events.
    pub fn event_count(&self) -> Result<u64> {
        contained(&self.path, || {
            let txn = self.begin()?;
            let table = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
            let last = table.last().map_err(|e| self.storage(e))?;
            Ok(last.map_or(0, |(k, _)| k.value() + 1))
        })
    }

    /// Time since the start of an event timestamp.
    pub fn offset_of(&self, time_ns: u64) -> Duration {
        Duration::from_nanos(time_ns.saturating_sub(self.meta.mono_base_ns))
    }

    /// Wall-clock time (ns since the epoch) of an event timestamp.
    pub fn wall_time_of(&self, time_ns: u64) -> i64 {
        let offset = time_ns as i128 - self.meta.mono_base_ns as i128;
        (self.meta.started_unix_ns as i128 + offset).clamp(i64::MIN as i128, i64::MAX as i128)
            as i64
    }

    /// Every committed event in order.
    pub fn events(&self) -> Result<impl Iterator<Item = Result<Event>>> {
        let txn = self.begin()?;
        let table = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
        let range = table.range::<u64>(..).map_err(|e| self.storage(e))?;
        let path = self.path.clone();
        let mut range = range;
        Ok(std::iter::from_fn(move || {
            let next = contained(&path, || match range.next() {
                None => Ok(None),
                Some(item) => {
                    let (k, v) = item.map_err(|e| Error::storage(&path, e))?;
                    decode_event(k.value(), v.value()).map(Some)
                }
            });
            next.transpose()
        }))
    }

    /// Events matching `filter`, in order.
    pub fn timeline(&self, filter: &TimelineFilter) -> Result<Vec<Event>> {
        contained(&self.path, || {
            let mut out = Vec::new();
            for event in self.events()? {
                let event = event?;
                if filter.matches(&event) {
                    out.push(event);
                }
            }
            Ok(out)
        })
    }

    /// Turns a user's time into a moment of this recording. Refuses times
    /// before the start and event numbers not recorded; times after the end
    /// of a finished recording are its end.
    pub fn resolve(&self, spec: &TimeSpec) -> Result<Moment> {
        self.resolve_in_range(spec, true)
    }

    /// [`Recording::resolve`] that also refuses a time after a finished
    /// recording's end (`latest` is its final state): for acting on a
    /// state, as restore does, rather than reading it.
    pub fn resolve_within(&self, spec: &TimeSpec) -> Result<Moment> {
        self.resolve_in_range(spec, false)
    }

    fn resolve_in_range(&self, spec: &TimeSpec, past_end_is_end: bool) -> Result<Moment> {
        let out_of_range = |reason: String| Error::TimeOutOfRange {
            input: spec.to_string(),
            reason,
        };
        let base = self.meta.mono_base_ns;
        let status = self.status()?;
        let end_ns = status
            .ended_unix_ns
            .filter(|_| status.state == RecordingState::Finished)
            .map(|end| base.saturating_add((end - self.meta.started_unix_ns).max(0) as u64));
        let until_ns = match spec {
            TimeSpec::Latest => return Ok(Moment::latest()),
            TimeSpec::Seq(seq) => {
                let count = self.event_count()?;
                if *seq >= count {
                    return Err(out_of_range(format!(
                        "it has {count} events, #0 to #{}",
                        count.saturating_sub(1)
                    )));
                }
                return Ok(Moment {
                    until_ns: None,
                    until_seq: Some(*seq),
                    label: spec.to_string(),
                });
            }
            TimeSpec::SinceStart(d) => {
                base.saturating_add(d.as_nanos().min(u64::MAX as u128) as u64)
            }
            TimeSpec::Wall(ns) => {
                if *ns < self.meta.started_unix_ns {
                    return Err(out_of_range("it is before the recording started".into()));
                }
                base.saturating_add((*ns - self.meta.started_unix_ns) as u64)
            }
        };
        // Nothing changes after a finished recording's end: a later time
        // is its final state (a crash is often asked about "at 5s" when the
        // container died at 4.2s), and the label says so.
        if let Some(end) = end_ns.filter(|end| until_ns > *end) {
            let end_offset = format_offset(Duration::from_nanos(end - base));
            if !past_end_is_end {
                return Err(out_of_range(format!(
                    "the recording ends at {end_offset} (`latest` is its final state)"
                )));
            }
            return Ok(Moment {
                until_ns: Some(end),
                until_seq: None,
                label: format!("{spec} (after the end at {end_offset}: the final state)"),
            });
        }
        Ok(Moment {
            until_ns: Some(until_ns),
            until_seq: None,
            label: spec.to_string(),
        })
    }

    /// Parses and resolves a time in one step.
    pub fn moment(&self, input: &str) -> Result<Moment> {
        self.resolve(&input.parse()?)
    }

    /// The tree at `moment`: the baseline, then every event included by the
    /// moment applied in sequence order.
    pub fn state_at(&self, moment: &Moment) -> Result<Snapshot> {
        contained(&self.path, || {
            let txn = self.begin()?;
            replay(&txn, &self.path, moment)
        })
    }

    /// A file's bytes at `moment`.
    pub fn cat(&self, path: &RecPath, moment: &Moment) -> Result<Vec<u8>> {
        let snapshot = self.state_at(moment)?;
        let node = snapshot.state.get(path).ok_or_else(|| Error::NoSuchPath {
            path: path.to_string(),
            at: moment.to_string(),
        })?;
        match &node.kind {
            NodeKind::File(content) => self.read_content(content),
            _ => Err(Error::NotAFile {
                path: path.to_string(),
                at: moment.to_string(),
            }),
        }
    }

    /// The bytes of one stored version, checked against its blake3.
    pub fn read_content(&self, content: &ContentRef) -> Result<Vec<u8>> {
        contained(&self.path, || {
            self.content_reader()?
                .read(content)
                .map_err(|f| self.fault(content, f))
        })
    }

    /// Whether a version's bytes are stored (a manifest-only baseline
    /// records hashes without content).
    pub fn has_content(&self, content: &ContentRef) -> Result<bool> {
        contained(&self.path, || {
            let reader = self.content_reader()?;
            Ok(reader
                .record(&content.id)
                .map_err(|f| self.fault(content, f))?
                .is_some())
        })
    }

    /// Paths added, removed or changed (content, kind, mode or owner)
    /// between two moments, in path order.
    pub fn diff(&self, from: &Moment, to: &Moment) -> Result<Vec<Change>> {
        let a = self.state_at(from)?.state;
        let b = self.state_at(to)?.state;
        Ok(diff_states(&a, &b))
    }

    /// A unified text diff of one change, when both sides are text (UTF-8,
    /// no NUL, at most 1 MiB); `None` for binary or non-file changes.
    pub fn text_diff(&self, change: &Change) -> Result<Option<String>> {
        const TEXT_LIMIT: u64 = 1 << 20;
        let side = |node: &Option<Node>| -> Result<Option<String>> {
            match node.as_ref().map(|n| &n.kind) {
                None => Ok(Some(String::new())),
                Some(NodeKind::File(c)) if c.size <= TEXT_LIMIT => {
                    let bytes = self.read_content(c)?;
                    Ok(String::from_utf8(bytes).ok().filter(|s| !s.contains('\0')))
                }
                Some(_) => Ok(None),
            }
        };
        let (Some(old), Some(new)) = (side(&change.before)?, side(&change.after)?) else {
            return Ok(None);
        };
        let name = change.path.to_string();
        let diff = similar::TextDiff::from_lines(&old, &new);
        let text = diff
            .unified_diff()
            .context_radius(3)
            .header(&format!("a{name}"), &format!("b{name}"))
            .to_string();
        Ok(Some(text))
    }

    pub(crate) fn begin(&self) -> Result<ReadTransaction> {
        self.db.begin_read().map_err(|e| self.storage(e))
    }

    pub(crate) fn content_reader(&self) -> Result<StoredContent> {
        let txn = self.begin()?;
        Ok(ContentReader {
            content: txn.open_table(CONTENT).map_err(|e| self.storage(e))?,
            index: txn.open_table(PIECES).map_err(|e| self.storage(e))?,
            packs: txn.open_table(PACKS).map_err(|e| self.storage(e))?,
        })
    }

    pub(crate) fn storage(&self, e: impl Into<redb::Error>) -> Error {
        Error::storage(&self.path, e)
    }

    pub(crate) fn fault(&self, content: &ContentRef, fault: Fault) -> Error {
        match fault {
            Fault::Storage(e) => self.storage(e),
            Fault::Corrupt(detail) => Error::CorruptContent {
                id: content.id,
                detail,
            },
        }
    }
}

/// Paths whose node differs between two trees, in path order.
pub fn diff_states(a: &FsState, b: &FsState) -> Vec<Change> {
    let mut changes = Vec::new();
    for (path, before) in a.iter() {
        match b.get(path) {
            None => changes.push(Change {
                path: path.clone(),
                before: Some(before.clone()),
                after: None,
            }),
            Some(after) if after != before => changes.push(Change {
                path: path.clone(),
                before: Some(before.clone()),
                after: Some(after.clone()),
            }),
            Some(_) => {}
        }
    }
    for (path, after) in b.iter() {
        if a.get(path).is_none() {
            changes.push(Change {
                path: path.clone(),
                before: None,
                after: Some(after.clone()),
            });
        }
    }
    changes.sort_by(|x, y| x.path.cmp(&y.path));
    changes
}

fn open_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, redb::DatabaseError> {
    redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open_read_only(path)
}

fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData
                && io.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            Error::io(path, io)
        }
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            Error::Locked {
                path: path.to_path_buf(),
            }
        }
        other => Error::NotARecording {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

fn read_meta(db: &impl ReadableDatabase, path: &Path) -> Result<RecordingMeta> {
    let not_ours = |detail: String| Error::NotARecording {
        path: path.to_path_buf(),
        detail,
    };
    let txn = db.begin_read().map_err(|e| Error::storage(path, e))?;
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(not_ours("no 'meta' table".into()))
        }
        Err(e) => return Err(not_ours(e.to_string())),
    };
    let get = |key: &str| -> Result<Option<Vec<u8>>> {
        Ok(table
            .get(key)
            .map_err(|e| Error::storage(path, e))?
            .map(|v| v.value().to_vec()))
    };
    if get(format::META_MAGIC_KEY)?.as_deref() != Some(format::MAGIC) {
        return Err(not_ours("magic marker missing".into()));
    }
    let version = get(format::META_VERSION_KEY)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| not_ours("format version missing".into()))?;
    if version > format::FORMAT_VERSION {
        return Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found: version,
            supported: format::FORMAT_VERSION,
        });
    }
    let meta = get(format::META_RECORDING_KEY)?.ok_or_else(|| Error::CorruptMeta {
        detail: "recording metadata missing".into(),
    })?;
    serde_json::from_slice(&meta).map_err(|e| Error::CorruptMeta {
        detail: format!("recording metadata: {e}"),
    })
}

pub(crate) fn decode_event(seq: u64, bytes: &[u8]) -> Result<Event> {
    let event: Event =
        format::from_bytes(bytes).map_err(|detail| Error::CorruptEvent { seq, detail })?;
    if event.seq != seq {
        return Err(Error::CorruptEvent {
            seq,
            detail: format!("stored under #{seq} but numbered #{}", event.seq),
        });
    }
    Ok(event)
}

pub(crate) fn read_baseline(txn: &ReadTransaction, path: &Path) -> Result<FsState> {
    let table = txn
        .open_table(BASELINE)
        .map_err(|e| Error::storage(path, e))?;
    let mut state = FsState::new();
    for item in table
        .range::<&[u8]>(..)
        .map_err(|e| Error::storage(path, e))?
    {
        let (k, v) = item.map_err(|e| Error::storage(path, e))?;
        let entry_path = RecPath::new(k.value().to_vec())?;
        let node: Node = format::from_bytes(v.value()).map_err(|detail| Error::CorruptMeta {
            detail: format!("baseline entry {entry_path}: {detail}"),
        })?;
        state.insert(entry_path, node);
    }
    Ok(state)
}

/// Rebuilds the tree at `moment` from one transaction.
pub(crate) fn replay(txn: &ReadTransaction, path: &Path, moment: &Moment) -> Result<Snapshot> {
    let baseline = read_baseline(txn, path)?;
    let mut state = baseline.clone();
    let mut gaps = Vec::new();
    let mut events_applied = 0;
    let table = txn
        .open_table(EVENTS)
        .map_err(|e| Error::storage(path, e))?;
    let upper = moment.until_seq.unwrap_or(u64::MAX);
    for item in table.range(..=upper).map_err(|e| Error::storage(path, e))? {
        let (k, v) = item.map_err(|e| Error::storage(path, e))?;
        let event = decode_event(k.value(), v.value())?;
        if !moment.includes(event.seq, event.time_ns) {
            continue;
        }
        if matches!(event.op, Op::Gap { .. }) {
            gaps.push(event.clone());
        }
        state.apply(&event.op);
        events_applied += 1;
    }
    Ok(Snapshot {
        moment: moment.clone(),
        state,
        baseline,
        gaps,
        events_applied,
    })
}

/// The latest tree, the next sequence number and the next free pack
/// number, for a recorder resuming after a failed commit.
pub(crate) fn replay_all(db: &redb::Database, path: &Path) -> Result<(FsState, u64, u64)> {
    let txn = db.begin_read().map_err(|e| Error::storage(path, e))?;
    let next_key = |last: Option<u64>| last.map_or(0, |k| k + 1);
    let events = txn
        .open_table(EVENTS)
        .map_err(|e| Error::storage(path, e))?;
    let last_event = events.last().map_err(|e| Error::storage(path, e))?;
    let next_seq = next_key(last_event.map(|(k, _)| k.value()));
    let packs = txn.open_table(PACKS).map_err(|e| Error::storage(path, e))?;
    let last_pack = packs.last().map_err(|e| Error::storage(path, e))?;
    let next_pack = next_key(last_pack.map(|(k, _)| k.value()));
    let snapshot = replay(&txn, path, &Moment::latest())?;
    Ok((snapshot.state, next_seq, next_pack))
}
