//! One recording in progress: probe records in, store events out.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use diffkeeper_probe::{Event as ProbeEvent, Gap, MergedWrites, Op as ProbeOp, PathFlags, Record};
use diffkeeper_store::{
    monotonic_now_ns, Actor, BaselineMode, BaselineStatus, Node, NodeKind, Op, RecPath, Recorder,
    Status,
};

use crate::baseline::{BaselineItem, EntryKind};

use crate::filter::PathFilter;
use crate::root::{RootView, Snapshot};

/// How a session decides what and when to record.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub filter: PathFilter,
    /// Content of larger files is not stored (the recording says so).
    pub max_file_size: u64,
    /// A written file still open after this long is read anyway.
    pub debounce: Duration,
    /// Ignore everything before the first exec: until then the runtime is
    /// setting the container up, and its writes are not the workload's.
    pub wait_for_exec: bool,
}

/// A file written but not yet read.
#[derive(Debug)]
struct Dirty {
    since_ns: u64,
    actor: Actor,
    /// Set by a close, fsync or msync: read at the next `flush_due`, so a
    /// burst of closes of one file while the recorder catches up costs one
    /// read (a read after the fact would see the latest content anyway).
    due_ns: Option<u64>,
    /// Written since it became dirty (not only created or truncated by an
    /// open). A close of a file never written through is no moment to read:
    /// a shell's `> file` opens, moves the fd with dup2 and closes the
    /// original before anything is written, and the content comes after.
    written: bool,
    /// Such a close came: the first write after it (through the dup'd fd,
    /// whose own close is implicit and unseen) is the moment to read.
    close_pending: bool,
    /// Not there when last read: renamed or removed after it was written,
    /// by an event not handled yet. Kept so that the rename reads its
    /// content under the new name (a new path would otherwise carry the
    /// content from before the write); not read again by the debounce.
    gone: bool,
    /// What was written since the recorded version, as the events say.
    changed: Changed,
    /// (pid, fd) of the writes reported since, whose later writes the
    /// probe folds into them until told (see `Session::flush`).
    writers: Vec<(u32, i32)>,
}

/// The byte ranges of a file written since its recorded version, when
/// every event that dirtied it reported one (eBPF writes and truncates);
/// the store then takes over the chunks nothing touched, each checked
/// against its stored xxh3 first. A hint, not a promise: the probe reports
/// where a run of writes through an fd began and folds the rest into it
/// (see `MergedWrites`), and the check finds those. `Unknown` after an
/// mmap, a fallback's event, a truncating open, or a loss.
#[derive(Debug)]
enum Changed {
    Ranges(Vec<Range<u64>>),
    Unknown,
}

impl Changed {
    /// Beyond this many separate ranges (a database checkpoint writes
    /// thousands of pages; 16 bytes each) the file is simply re-cut whole.
    const MAX_RANGES: usize = 1 << 16;

    fn add(&mut self, range: Option<Range<u64>>) {
        let Changed::Ranges(ranges) = self else {
            return;
        };
        let Some(mut range) = range else {
            *self = Changed::Unknown;
            return;
        };
        // Sorted and disjoint: ranges[first..last] touch the new one.
        let first = ranges.partition_point(|r| r.end < range.start);
        let last = ranges.partition_point(|r| r.start <= range.end);
        if first < last {
            range.start = range.start.min(ranges[first].start);
            range.end = range.end.max(ranges[last - 1].end);
        }
        ranges.splice(first..last, [range]);
        if ranges.len() > Self::MAX_RANGES {
            *self = Changed::Unknown;
        }
    }

    fn ranges(&self) -> Option<&[Range<u64>]> {
        match self {
            Changed::Ranges(ranges) => Some(ranges),
            Changed::Unknown => None,
        }
    }
}

impl Dirty {
    /// Remembers the fd a reported write went through (see `writers`).
    fn note_writer(&mut self, ev: &ProbeEvent) {
        let writer = (ev.pid, ev.fd);
        if ev.op == ProbeOp::Write && self.writers.last() != Some(&writer) {
            self.writers.push(writer);
        }
    }

    /// A write at `t`; true if that makes the file due (a close came
    /// before it, see `close_pending`).
    fn written_at(&mut self, t: u64) -> bool {
        self.written = true;
        self.gone = false;
        let due = std::mem::take(&mut self.close_pending);
        if due {
            self.due_ns = Some(t);
        }
        due
    }
}

/// Turns probe records into store events. Every failure to record is
/// noted in the recording (`Status::incomplete`) and logged; none is
/// returned to the caller, so the workload is never affected.
pub struct Session {
    store: Recorder,
    root: RootView,
    options: SessionOptions,
    started: bool,
    dirty: HashMap<RecPath, Dirty>,
    /// Shared writable mappings by (pid, address), for `msync`, under
    /// their file's current name (see `follow_mappings`).
    mappings: HashMap<(u32, u64), RecPath>,
    /// Exec and exit events held back until the reads reported before them
    /// are done (see `flush_due`): process churn must not force a read.
    later: Vec<(u64, Actor, Op)>,
    /// While a baseline scan runs: paths any event touched, whose scan
    /// would read changed content, not starting content. `None` otherwise,
    /// so the event path pays nothing for it.
    touched: Option<HashSet<RecPath>>,
    /// Set when something may be due; lets `flush_due` return at once.
    maybe_due: bool,
    baseline: BaselineStatus,
    baseline_late: u64,
    /// Every write since a path's recorded version is in its `Changed`
    /// ranges. False for the rest of the recording once that may not hold:
    /// events were lost, or a read recorded nothing (the next version's
    /// base is then older than the ranges). Checked where a `Dirty` is
    /// made; a loss also makes every existing one `Unknown` (which stays).
    trust_ranges: bool,
    /// Reused for every read: a large file read again and again (a
    /// database) costs no fresh allocation and page faults each time.
    /// Released once unused for `KEEP_READ_BUFFER`.
    read_buffer: Vec<u8>,
    read_buffer_used_ns: u64,
    /// With eBPF: has the next write through an fd reported before a file
    /// it wrote is read.
    merged_writes: Option<MergedWrites>,
    /// Files whose last read cost at least `COSTLY_READ`: not read again
    /// for a close or the debounce before this time (see `READ_SPACING`).
    quiet_until: HashMap<RecPath, u64>,
}

/// A read (and store) of one version that took this much of the recorder's
/// CPU makes its file wait `READ_SPACING` times as long before the next read
/// a close or the debounce asks for: a large file rewritten without pause (a
/// database) then costs the recorder at most a quarter of a CPU, instead of
/// all of one beside the workload it is meant not to slow down. Small files
/// (tens of microseconds) never wait.
const COSTLY_READ: Duration = Duration::from_millis(1);
const READ_SPACING: u32 = 3;

/// How long an idle read buffer (over 1 MiB) is kept for the next read.
const KEEP_READ_BUFFER: Duration = Duration::from_secs(1);

/// What an event did to the bytes of a file it dirtied.
enum Touch {
    Bytes(Range<u64>),
    /// Possibly anything (an mmap, a truncating open, a fallback's event).
    Unknown,
    /// Nothing by itself (a close, an fsync, an exec, an open that does not
    /// truncate).
    Nothing,
}

/// `renameat2` flag: the two names were swapped.
const RENAME_EXCHANGE: u64 = 2;

impl Session {
    pub fn new(store: Recorder, root: RootView, options: SessionOptions) -> Session {
        Session {
            started: !options.wait_for_exec,
            store,
            root,
            options,
            dirty: HashMap::new(),
            mappings: HashMap::new(),
            later: Vec::new(),
            touched: None,
            maybe_due: false,
            baseline: BaselineStatus::default(),
            baseline_late: 0,
            trust_ranges: true,
            read_buffer: Vec::new(),
            read_buffer_used_ns: 0,
            merged_writes: None,
            quiet_until: HashMap::new(),
        }
    }

    /// Where the source folds writes into earlier reports (eBPF), the
    /// handle that has them reported again before a file is read.
    pub fn read_merged_writes_through(&mut self, merged_writes: Option<MergedWrites>) {
        self.merged_writes = merged_writes;
    }

    /// A baseline scan is starting: from now until it is done, note which
    /// paths events touch (see [`Session::add_baseline`]).
    pub fn begin_baseline(&mut self) {
        self.touched.get_or_insert_with(HashSet::new);
    }

    /// Adds what the baseline scan found (see [`crate::BaselineScan`]).
    pub fn add_baseline(&mut self, item: BaselineItem) {
        let (path, kind, mode, uid, gid) = match item {
            BaselineItem::Entry {
                path,
                kind,
                mode,
                uid,
                gid,
            } => (path, kind, mode, uid, gid),
            BaselineItem::Done { entries, note } => {
                self.touched = None;
                let mut notes: Vec<String> = note.into_iter().collect();
                if self.baseline_late > 0 {
                    notes.push(format!(
                        "{} entries changed before the scan reached them; their starting state is unknown",
                        self.baseline_late
                    ));
                }
                self.baseline.complete = true;
                self.baseline.entries = entries - self.baseline_late;
                self.baseline.note = (!notes.is_empty()).then(|| notes.join("; "));
                if self.baseline.mode == BaselineMode::None {
                    self.baseline.mode = BaselineMode::Full;
                }
                self.store.set_baseline_status(self.baseline.clone());
                return;
            }
        };
        let touched = self.touched.as_ref();
        let mut ancestors = std::iter::successors(Some(path.clone()), RecPath::parent);
        if ancestors.any(|p| touched.is_some_and(|t| t.contains(&p))) {
            self.baseline_late += 1;
            return;
        }
        let node_kind = match kind {
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink(target) => NodeKind::Symlink(target),
            EntryKind::FileManifest(content) => {
                if self.baseline.mode != BaselineMode::Manifest {
                    self.baseline.mode = BaselineMode::Manifest;
                    self.store.set_baseline_status(self.baseline.clone());
                }
                NodeKind::File(content)
            }
            EntryKind::File(data) => match self.store.store_content(&path, &data) {
                Ok(content) => NodeKind::File(content),
                Err(err) => {
                    self.store
                        .note_incomplete(format!("baseline {path}: {err}"));
                    return;
                }
            },
        };
        let node = Node {
            kind: node_kind,
            mode,
            uid,
            gid,
        };
        if let Err(err) = self.store.add_baseline(path.clone(), node) {
            self.store
                .note_incomplete(format!("baseline {path}: {err}"));
        }
    }

    /// Where content is read from from now on (e.g. the bundle rootfs once
    /// the container's init is gone).
    pub fn set_root(&mut self, root: RootView) {
        self.root = root;
    }

    pub fn store(&self) -> &Recorder {
        &self.store
    }

    pub fn handle(&mut self, record: Record) {
        match record {
            Record::Event(event) => self.on_event(event),
            Record::Gap(gap) => self.on_gap(gap),
        }
    }

    /// Reads files that stayed dirty longer than the debounce, and lets the
    /// store commit on time.
    pub fn tick(&mut self, now_ns: u64) {
        self.flush_due();
        let debounce = self.options.debounce.as_nanos() as u64;
        let stale = self.dirty_since(|d| !d.gone && now_ns.saturating_sub(d.since_ns) >= debounce);
        for path in stale {
            if !self.quiet(&path, now_ns) {
                self.flush(&path, now_ns);
            }
        }
        self.quiet_until.retain(|_, until| *until > now_ns);
        let idle = now_ns.saturating_sub(self.read_buffer_used_ns);
        if self.read_buffer.capacity() > 1 << 20 && idle >= KEEP_READ_BUFFER.as_nanos() as u64 {
            self.read_buffer = Vec::new();
        }
        if let Err(err) = self.store.tick() {
            tracing::warn!(%err, "recording commit failed");
        }
    }

    /// Reads every file still dirty and closes the recording.
    pub fn finish(
        mut self,
        now_ns: u64,
        exit_code: Option<i32>,
    ) -> diffkeeper_store::Result<Status> {
        // Files still mapped may have been stored to since their last read.
        let mapped: Vec<RecPath> = self.mappings.drain().map(|(_, path)| path).collect();
        for path in mapped {
            self.mark_dirty(path, now_ns, Actor::Recorder);
        }
        self.flush_due();
        let dirty = self.dirty_since(|_| true);
        for path in dirty {
            self.flush(&path, now_ns);
        }
        // Left dirty: gone, and no event said where to.
        for path in self.dirty_since(|_| true) {
            self.store.note_incomplete(format!(
                "{path}: written, then gone before it was read, and no rename or \
                 removal of it was seen; its last content is not recorded"
            ));
        }
        self.store.finish(exit_code)
    }

    fn on_gap(&mut self, gap: Gap) {
        self.trust_ranges = false;
        for dirty in self.dirty.values_mut() {
            dirty.changed = Changed::Unknown;
        }
        self.flush_due();
        if let Err(err) = self
            .store
            .record_gap(gap.count, gap.from_ns, gap.to_ns, gap.reason)
        {
            tracing::error!(%err, "cannot record a gap");
        }
        // What we know is dirty may have changed further: read it now.
        let dirty = self.dirty_since(|_| true);
        for path in dirty {
            self.flush(&path, gap.to_ns);
        }
    }

    fn on_event(&mut self, ev: ProbeEvent) {
        if !self.started {
            if ev.op != ProbeOp::Exec {
                return;
            }
            self.started = true;
        }
        // The common case, another write to a file already dirty, changes
        // nothing: return before building a path or an actor for it.
        if matches!(
            ev.op,
            ProbeOp::Write | ProbeOp::Truncate | ProbeOp::Fallocate
        ) && ev.path_flags == PathFlags::default()
        {
            if let Some(dirty) = self.dirty.get_mut(ev.path.as_os_str().as_bytes()) {
                dirty.changed.add(ev.changed_range());
                self.maybe_due |= dirty.written_at(ev.ts_ns);
                dirty.note_writer(&ev);
                return;
            }
        }
        // Built only where something is recorded (`comm` is an allocation).
        // pid 0 is no process of a workload: the backend could not tell.
        let actor = || match ev.pid {
            0 => Actor::Unknown,
            _ => Actor::Process {
                pid: ev.ns_pid,
                tid: ev.ns_tid,
                comm: String::from_utf8_lossy(&ev.comm).into_owned(),
            },
        };
        let t = ev.ts_ns;
        let path = self.path_of(&ev.path, ev.path_flags);
        match ev.op {
            ProbeOp::Open => {
                let changes_content = ev.op_flags & (libc::O_CREAT | libc::O_TRUNC) as u64 != 0;
                let truncates = ev.op_flags & libc::O_TRUNC as u64 != 0;
                if let (Some(path), true) = (path, changes_content) {
                    self.mark_opened(path, t, actor(), truncates);
                }
            }
            ProbeOp::Write | ProbeOp::Truncate | ProbeOp::Fallocate => {
                if let Some(path) = path {
                    self.mark_written(path.clone(), t, actor(), ev.changed_range());
                    if let Some(dirty) = self.dirty.get_mut(&path) {
                        dirty.note_writer(&ev);
                    }
                }
            }
            ProbeOp::Mmap => {
                if let Some(path) = path {
                    self.mappings.insert((ev.pid, ev.offset), path.clone());
                    // Stores through the mapping are invisible: the debounce
                    // reads the file while it stays mapped.
                    self.mark_dirty(path, t, actor());
                }
            }
            ProbeOp::Msync => {
                if let Some(path) = self.mappings.get(&(ev.pid, ev.offset)).cloned() {
                    self.mark_due(path, t, actor(), Touch::Unknown);
                }
            }
            ProbeOp::Close | ProbeOp::Fsync => {
                let Some(path) = path else { return };
                match self.dirty.get_mut(&path) {
                    // Only opened (created or truncated) so far: read after
                    // the next write, or at the debounce (`Dirty::written`).
                    Some(dirty) if !dirty.written => dirty.close_pending = true,
                    _ => self.mark_due(path, t, actor(), Touch::Nothing),
                }
            }
            ProbeOp::Rename => self.on_rename(&ev, path, t, actor()),
            ProbeOp::Unlink | ProbeOp::Rmdir => {
                if let Some(path) = path {
                    if ev.op == ProbeOp::Unlink {
                        self.dirty.remove(&path);
                    } else {
                        self.dirty.retain(|p, _| p != &path && !p.is_within(&path));
                    }
                    self.follow_mappings(&path, None, false);
                    let op = if ev.op == ProbeOp::Unlink {
                        Op::Unlink { path }
                    } else {
                        Op::Rmdir { path }
                    };
                    self.record(t, actor(), op);
                }
            }
            ProbeOp::Mkdir => {
                if let Some(path) = path {
                    // The syscall's mode is before the umask: ask the file system.
                    let mode = self.root.mode(&path).unwrap_or(ev.mode & !0o022) & 0o7777;
                    self.record(t, actor(), Op::Mkdir { path, mode });
                }
            }
            ProbeOp::Symlink => {
                if let Some(path) = path {
                    let target = ev
                        .path2
                        .as_deref()
                        .map_or_else(Vec::new, |t| t.as_os_str().as_bytes().to_vec());
                    self.record(t, actor(), Op::Symlink { path, target });
                }
            }
            ProbeOp::Link => {
                let existing = ev
                    .path2
                    .as_deref()
                    .and_then(|p| self.path_of(p, ev.path2_flags));
                match (existing, path) {
                    (Some(existing), Some(new)) if self.store.state().get(&existing).is_some() => {
                        self.flush_if_dirty(&existing, t);
                        self.record(t, actor(), Op::Link { existing, new });
                    }
                    // Linked in from an unrecorded place, or from a file we
                    // hold no content for: read it as new content.
                    (_, Some(new)) => {
                        self.mark_dirty(new.clone(), t, actor());
                        self.flush(&new, t);
                    }
                    _ => {}
                }
            }
            ProbeOp::Chmod => {
                if let Some(path) = path {
                    self.record(
                        t,
                        actor(),
                        Op::Chmod {
                            path,
                            mode: ev.mode & 0o7777,
                        },
                    );
                }
            }
            ProbeOp::Chown => {
                if let Some(path) = path {
                    let current = self.store.state().get(&path).map(|n| (n.uid, n.gid));
                    let (uid, gid) = current.unwrap_or((0, 0));
                    let op = Op::Chown {
                        path,
                        uid: ev.uid.unwrap_or(uid),
                        gid: ev.gid.unwrap_or(gid),
                    };
                    self.record(t, actor(), op);
                }
            }
            ProbeOp::Exec => {
                if let Some(path) = path.filter(|p| self.dirty.contains_key(p)) {
                    self.mark_due(path, t, actor(), Touch::Nothing);
                }
                self.address_space_gone(ev.pid, t, actor());
                let exe = ev.path.as_os_str().as_bytes().to_vec();
                self.later.push((t, actor(), Op::Exec { path: exe }));
            }
            ProbeOp::Exit => {
                self.address_space_gone(ev.pid, t, actor());
                let code = exit_code(ev.ret);
                self.later.push((t, actor(), Op::Exit { code }));
            }
        }
    }

    fn on_rename(&mut self, ev: &ProbeEvent, from: Option<RecPath>, t: u64, actor: Actor) {
        let to = ev
            .path2
            .as_deref()
            .and_then(|p| self.path_of(p, ev.path2_flags));
        let exchange = ev.op_flags & RENAME_EXCHANGE != 0;
        match (&from, &to) {
            (Some(from), to) => self.follow_mappings(from, to.as_ref(), exchange),
            // Moved in from outside (or swapped out): `to`'s file left.
            (None, Some(to)) => self.follow_mappings(to, None, false),
            (None, None) => {}
        }
        if exchange {
            // The store has no swap: record both names' new content.
            for path in [from, to].into_iter().flatten() {
                self.mark_dirty(path.clone(), t, actor.clone());
                self.flush(&path, t);
            }
            return;
        }
        match (from, to) {
            (Some(from), Some(to)) => {
                // A source we hold no content for (its content vanished
                // before we could read it, e.g. a temp file renamed over a
                // config at once) must be read under its new name.
                let unknown = self.store.state().get(&from).is_none();
                let was_dirty = self.dirty.remove(&from).is_some() || unknown;
                let moved: Vec<(RecPath, Dirty)> =
                    self.dirty.extract_if(|p, _| p.is_within(&from)).collect();
                self.record(
                    t,
                    actor.clone(),
                    Op::Rename {
                        from: from.clone(),
                        to: to.clone(),
                    },
                );
                // What `to` named before is replaced: its written ranges
                // no longer describe the content now recorded there.
                if let Some(replaced) = self.dirty.get_mut(&to) {
                    replaced.changed = Changed::Unknown;
                }
                for (path, dirty) in moved {
                    let rebased = path.rebased(&from, &to);
                    self.dirty.insert(rebased, dirty);
                }
                if was_dirty {
                    self.mark_dirty(to.clone(), t, actor);
                    self.flush(&to, t);
                }
            }
            // Moved out of what is recorded: it is gone for us.
            (Some(from), None) => {
                self.dirty.retain(|p, _| p != &from && !p.is_within(&from));
                self.record(t, actor, Op::Unlink { path: from });
            }
            // Moved in from outside: new content.
            (None, Some(to)) => {
                self.mark_dirty(to.clone(), t, actor);
                self.flush(&to, t);
            }
            (None, None) => {}
        }
    }

    /// `pid`'s address space is gone (exit, exec; munmap is not traced):
    /// what it stored through its shared mappings is final now, so read it.
    fn address_space_gone(&mut self, pid: u32, t: u64, actor: Actor) {
        let unmapped: Vec<RecPath> = self
            .mappings
            .extract_if(|(mapper, _), _| *mapper == pid)
            .map(|(_, path)| path)
            .collect();
        for path in unmapped {
            self.mark_due(path, t, actor.clone(), Touch::Unknown);
        }
    }

    /// Keeps each shared mapping under its file's name after `from` was
    /// renamed to `to` (`exchange`: the two names swapped). A mapping whose
    /// file lost its name (`from` removed or moved out of what is recorded,
    /// `to` replaced) is forgotten: stores through it change a file no
    /// recorded path shows, and reading its old name at the mapper's exit
    /// would find nothing there, or another file.
    fn follow_mappings(&mut self, from: &RecPath, to: Option<&RecPath>, exchange: bool) {
        let under = |path: &RecPath, name: &RecPath| path == name || path.is_within(name);
        self.mappings.retain(|_, path| {
            if under(path, from) {
                let Some(to) = to else { return false };
                *path = path.rebased(from, to);
                true
            } else if let Some(to) = to.filter(|to| under(path, to)) {
                if exchange {
                    *path = path.rebased(to, from);
                }
                exchange
            } else {
                true
            }
        });
    }

    /// A probe path as a recorded path, or `None` if it is not recorded.
    fn path_of(&mut self, path: &Path, flags: PathFlags) -> Option<RecPath> {
        if flags.unreadable {
            // The operation succeeded; only its path is unknown.
            self.store.note_incomplete(
                "the probe could not read the path of a successful operation; that change is not recorded",
            );
            return None;
        }
        if path.as_os_str().is_empty() || flags.outside_root {
            return None;
        }
        let path = RecPath::new(path.as_os_str().as_bytes()).ok()?;
        if flags.truncated {
            self.store.note_incomplete(format!(
                "a path longer than the probe's walk limit was not recorded ({}…)",
                path.to_string_lossy().chars().take(80).collect::<String>()
            ));
            return None;
        }
        self.options.filter.accepts(&path).then_some(path)
    }

    /// `path` changed (written, truncated, mapped, moved in...).
    fn mark_dirty(&mut self, path: RecPath, t: u64, actor: Actor) {
        self.insert_dirty(path, t, actor, true, Touch::Unknown);
    }

    /// A write of `range` (if the event told it) to `path`.
    fn mark_written(&mut self, path: RecPath, t: u64, actor: Actor, range: Option<Range<u64>>) {
        let touch = range.map_or(Touch::Unknown, Touch::Bytes);
        self.insert_dirty(path, t, actor, true, touch);
    }

    /// `path` was created or truncated by an open, not yet written.
    fn mark_opened(&mut self, path: RecPath, t: u64, actor: Actor, truncated: bool) {
        let touch = if truncated {
            Touch::Unknown
        } else {
            Touch::Nothing
        };
        self.insert_dirty(path, t, actor, false, touch);
    }

    fn insert_dirty(&mut self, path: RecPath, t: u64, actor: Actor, written: bool, touch: Touch) {
        if let Some(dirty) = self.dirty.get_mut(&path) {
            dirty.gone = false;
            match touch {
                Touch::Bytes(range) => dirty.changed.add(Some(range)),
                Touch::Unknown => dirty.changed = Changed::Unknown,
                Touch::Nothing => {}
            }
            if written {
                self.maybe_due |= dirty.written_at(t);
            }
            return; // the common case: another write to a dirty file
        }
        let changed = match touch {
            // Stores through a live shared mapping are not seen.
            _ if !self.trust_ranges || self.mappings.values().any(|p| p == &path) => {
                Changed::Unknown
            }
            Touch::Bytes(range) => Changed::Ranges(vec![range]),
            Touch::Unknown => Changed::Unknown,
            Touch::Nothing => Changed::Ranges(Vec::new()),
        };
        if let Some(touched) = &mut self.touched {
            touched.insert(path.clone());
        }
        self.dirty.insert(
            path,
            Dirty {
                since_ns: t,
                actor,
                due_ns: None,
                written,
                close_pending: false,
                gone: false,
                changed,
                writers: Vec::new(),
            },
        );
    }

    /// Dirty paths matching `which`, oldest first, so versions are recorded
    /// in the order their files were written.
    fn dirty_since(&self, which: impl Fn(&Dirty) -> bool) -> Vec<RecPath> {
        let mut paths: Vec<(u64, RecPath)> = self
            .dirty
            .iter()
            .filter(|(_, d)| which(d))
            .map(|(p, d)| (d.since_ns, p.clone()))
            .collect();
        paths.sort();
        paths.into_iter().map(|(_, p)| p).collect()
    }

    /// A moment to read `path`'s content: marks it for the next `flush_due`.
    fn mark_due(&mut self, path: RecPath, t: u64, actor: Actor, touch: Touch) {
        self.insert_dirty(path.clone(), t, actor, true, touch);
        if let Some(dirty) = self.dirty.get_mut(&path) {
            dirty.due_ns = Some(t);
            self.maybe_due = true;
        }
    }

    /// Reads every file a close, fsync or msync asked for. The driver calls
    /// this whenever it has caught up with the kernel.
    pub fn flush_due(&mut self) {
        if !self.maybe_due && self.later.is_empty() {
            return;
        }
        self.maybe_due = false;
        enum Deferred {
            Read(RecPath),
            Process(Actor, Op),
        }
        let mut deferred: Vec<(u64, Deferred)> = self
            .dirty
            .iter()
            .filter_map(|(p, d)| d.due_ns.map(|t| (t, Deferred::Read(p.clone()))))
            .collect();
        deferred.extend(
            self.later
                .drain(..)
                .map(|(t, actor, op)| (t, Deferred::Process(actor, op))),
        );
        // In the order the kernel reported them (stable: ties keep order).
        deferred.sort_by_key(|(t, _)| *t);
        let now = monotonic_now_ns();
        for (t, item) in deferred {
            match item {
                Deferred::Read(path) if self.quiet(&path, now) => {
                    // Still due: the next call reads it.
                    self.maybe_due = true;
                }
                Deferred::Read(path) => {
                    // Held back past its trigger: its content is as of now.
                    let waited = self.quiet_until.get(&path).is_some_and(|&until| until > t);
                    self.flush(&path, if waited { now } else { t });
                }
                Deferred::Process(actor, op) => self.record_now(t, actor, op),
            }
        }
    }

    /// Whether `path` was read so recently, at such cost, that a close or
    /// the debounce must not have it read again yet.
    fn quiet(&self, path: &RecPath, now: u64) -> bool {
        self.quiet_until.get(path).is_some_and(|&until| until > now)
    }

    fn flush_if_dirty(&mut self, path: &RecPath, t: u64) {
        if self.dirty.contains_key(path) {
            self.flush(path, t);
        }
    }

    /// Reads a dirty file now and records its content.
    fn flush(&mut self, path: &RecPath, t: u64) {
        let Some(mut dirty) = self.dirty.remove(path) else {
            return;
        };
        // First, so that nothing written through these fds after the read
        // goes unreported.
        if let Some(merged) = &self.merged_writes {
            dirty.writers.sort_unstable();
            dirty.writers.dedup();
            for &(pid, fd) in &dirty.writers {
                if let Err(err) = merged.report_next_write(pid, fd) {
                    self.store.note_incomplete(format!(
                        "{path}: a write after this read may go unrecorded until the file is closed: {err}"
                    ));
                }
            }
        }
        let mut data = std::mem::take(&mut self.read_buffer);
        let started = thread_cpu_time();
        self.record_content(path, t, dirty, &mut data);
        let cost = thread_cpu_time().saturating_sub(started);
        self.read_buffer = data;
        self.read_buffer_used_ns = self.read_buffer_used_ns.max(t);
        if cost >= COSTLY_READ {
            let until = monotonic_now_ns() + (cost * READ_SPACING).as_nanos() as u64;
            self.quiet_until.insert(path.clone(), until);
        }
    }

    /// Reads `path` into `data` and records it as the version `dirty` asked for.
    fn record_content(&mut self, path: &RecPath, t: u64, dirty: Dirty, data: &mut Vec<u8>) {
        let snapshot = match self.root.read(path, self.options.max_file_size, data) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                self.trust_ranges = false;
                self.store
                    .note_incomplete(format!("{path}: could not be read: {err}"));
                return;
            }
        };
        let (mode, data) = match snapshot {
            Snapshot::File { mode } => (mode, &data[..]),
            Snapshot::NotAFile => {
                self.trust_ranges = false;
                return;
            }
            Snapshot::Gone => {
                self.dirty.insert(
                    path.clone(),
                    Dirty {
                        due_ns: None,
                        gone: true,
                        ..dirty
                    },
                );
                return;
            }
            Snapshot::TooLarge { size } => {
                self.trust_ranges = false;
                self.store.note_incomplete(format!(
                    "{path}: {size} bytes, larger than max-file-size; its content was not recorded"
                ));
                return;
            }
        };
        let known = match self.store.state().get(path).map(|n| &n.kind) {
            Some(NodeKind::File(content)) => Some(*content),
            _ => None,
        };
        let changed = dirty.changed.ranges();
        let result = self
            .store
            .store_version(path, data, changed)
            .and_then(|content| {
                let op = match known {
                    // Read again without a change (e.g. a close after a read-write open).
                    Some(old) if old == content => return Ok(()),
                    Some(_) => Op::Write {
                        path: path.clone(),
                        content,
                    },
                    None => Op::Create {
                        path: path.clone(),
                        mode,
                        content,
                    },
                };
                self.store
                    .record(t.max(dirty.since_ns), dirty.actor, op)
                    .map(drop)
            });
        if let Err(err) = result {
            self.trust_ranges = false;
            tracing::warn!(%path, %err, "content not recorded");
            self.store
                .note_incomplete(format!("{path}: content not recorded: {err}"));
        }
    }

    /// Records a file-system operation, after everything deferred before it
    /// so the recording keeps the kernel's order.
    fn record(&mut self, t: u64, actor: Actor, op: Op) {
        self.flush_due();
        self.record_now(t, actor, op);
    }

    fn record_now(&mut self, t: u64, actor: Actor, op: Op) {
        if let Some(touched) = &mut self.touched {
            touched.extend(op.paths().into_iter().cloned());
        }
        if let Err(err) = self.store.record(t, actor, op) {
            tracing::warn!(%err, "event not recorded");
        }
    }
}

/// CPU time of the calling thread: what a read cost the recorder, whatever
/// else the machine is doing.
fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A wait status as a shell reports it: the exit code, or 128 + signal.
fn exit_code(wait_status: i64) -> i32 {
    let status = wait_status as i32;
    match status & 0x7f {
        0 => (status >> 8) & 0xff,
        signal => 128 + signal,
    }
}

#[cfg(test)]
mod tests {
    use super::Changed;

    fn ranges(changed: &Changed) -> Option<Vec<(u64, u64)>> {
        changed
            .ranges()
            .map(|rs| rs.iter().map(|r| (r.start, r.end)).collect())
    }

    #[test]
    fn written_ranges_merge_and_give_up_when_unknown_or_too_many() {
        let mut changed = Changed::Ranges(Vec::new());
        changed.add(Some(100..200));
        changed.add(Some(0..10));
        changed.add(Some(200..250)); // adjacent: merged
        changed.add(Some(5..120)); // bridges two
        changed.add(Some(400..500));
        assert_eq!(ranges(&changed), Some(vec![(0, 250), (400, 500)]));
        changed.add(None);
        assert_eq!(ranges(&changed), None);

        let mut many = Changed::Ranges(Vec::new());
        for i in 0..=Changed::MAX_RANGES as u64 {
            many.add(Some(i * 10..i * 10 + 1));
        }
        assert_eq!(ranges(&many), None);
    }
}
