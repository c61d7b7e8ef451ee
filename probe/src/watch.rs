//! One cgroup's event stream: its own ring buffer ([`Ring`]), routed to by
//! the shared programs through the cgroup's `dk_drops` entry, and the loss
//! accounting that turns kernel drop counters into [`Gap`] records.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::abi::RawDirtyKey;
use crate::event::{self, Decoded, Gap, Record, RING_FULL};
use crate::probe::{map_errno, map_error, Shared};
use crate::ring::Ring;
use crate::Error;

/// The kernel wakes a sleeping watcher only for batches and the events a
/// recorder must act on at once (see `wakeup()` in bpf/probe.bpf.c), and a
/// failed reservation wakes nobody, so the watcher also drains and checks
/// the drop counter this often.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// For `LINGER` after its latest record the watcher is awake: it drains
/// every `POLL_INTERVAL` and no record interrupts the workload to wake it
/// (each wakeup is an interrupt on the writer's CPU). Then it announces that
/// it sleeps, and the next record that must be acted on at once wakes it. A
/// close in a busy container therefore waits at most `POLL_INTERVAL` for
/// the reader, one after a quiet moment not at all.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
const LINGER: Duration = Duration::from_millis(20);

/// Receives the records of one cgroup until dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), diffkeeper_probe::Error> {
/// use diffkeeper_probe::{ChildCgroup, Probe, ProbeConfig, Record};
/// let probe = Probe::load(ProbeConfig::default())?;
/// let cgroup = ChildCgroup::create("diffkeeper/job")?;
/// let mut watch = probe.watch(cgroup.id())?;
/// while let Some(record) = watch.next().await {
///     match record {
///         Record::Event(event) => println!("{:?} {:?}", event.op, event.path),
///         Record::Gap(gap) => println!("lost {} events", gap.count),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Watch {
    cgroup_id: u64,
    ring: AsyncFd<RingBuf<MapData>>,
    /// Unregisters the ring when dropped: after `drop` removed the route.
    registration: Ring,
    /// When the latest record was read (see `LINGER`).
    last_record: Instant,
    /// Whether the programs were told that this watcher sleeps.
    asleep: bool,
    shared: Arc<Shared>,
    /// Losses already turned into gaps (cumulative, like the kernel's counter).
    accounted: u64,
    /// Time of the latest record, to place gaps userspace has to invent.
    last_ns: u64,
}

impl Watch {
    /// Reads `buffer` (the ring `registration` registered), whose cgroup
    /// the caller has just routed to it.
    pub(crate) fn start(
        shared: Arc<Shared>,
        cgroup_id: u64,
        buffer: RingBuf<MapData>,
        registration: Ring,
    ) -> Result<Self, Error> {
        let ring = match register(buffer, cgroup_id) {
            Ok(ring) => ring,
            Err(err) => {
                remove_route(&shared, cgroup_id);
                return Err(err);
            }
        };
        tracing::debug!(cgroup_id, "watching");
        Ok(Self {
            cgroup_id,
            ring,
            registration,
            last_record: Instant::now(),
            asleep: false,
            shared,
            accounted: 0,
            last_ns: 0,
        })
    }

    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    /// The handle through which a reader has the next write through an fd
    /// reported (see [`MergedWrites`]).
    pub fn merged_writes(&self) -> MergedWrites {
        MergedWrites {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The next record, waiting for one. `None` only if the ring buffer can
    /// no longer be polled (logged).
    pub async fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.try_next() {
                // Here, not in `try_next`: a drain loop calls that per record.
                self.last_record = Instant::now();
                self.asleep = false;
                return Some(record);
            }
            let wait = if self.last_record.elapsed() < LINGER {
                POLL_INTERVAL
            } else if self.asleep {
                DRAIN_INTERVAL
            } else {
                // A record committed before the announcement woke nobody:
                // look again once it is made.
                self.announce_sleep();
                continue;
            };
            match tokio::time::timeout(wait, self.ring.readable_mut()).await {
                Err(_idle) => {}
                Ok(Ok(mut ready)) => ready.clear_ready(),
                Ok(Err(err)) => {
                    tracing::error!(cgroup_id = self.cgroup_id, %err, "ring buffer poll failed");
                    return None;
                }
            }
        }
    }

    /// The next record if one is ready, without waiting: drain with it after
    /// the workload exited (every event is in the ring by the time its
    /// syscall returned). Reports pending losses once the ring is empty.
    pub fn try_next(&mut self) -> Option<Record> {
        loop {
            let decoded = self.ring.get_mut().next().map(|item| event::decode(&item));
            let Some(decoded) = decoded else {
                return self.pending_loss();
            };
            match decoded {
                Ok(Decoded::Event(event)) => {
                    self.last_ns = event.ts_ns;
                    return Some(Record::Event(event));
                }
                Ok(Decoded::Gap(gap)) => {
                    if let Some(gap) = self.account(gap.dropped_total, gap.first_ns, gap.last_ns) {
                        return Some(Record::Gap(gap));
                    }
                }
                Err(err) => {
                    // An unreadable record is a lost event, never a silent one.
                    tracing::warn!(cgroup_id = self.cgroup_id, %err, "undecodable record");
                    return Some(Record::Gap(Gap {
                        count: 1,
                        from_ns: self.last_ns,
                        to_ns: self.last_ns,
                        reason: "the probe delivered an undecodable record",
                    }));
                }
            }
        }
    }

    fn announce_sleep(&mut self) {
        if let Err(err) = self.registration.announce_sleep() {
            // Records then wait for the drain timer: later, never lost.
            tracing::warn!(cgroup_id = self.cgroup_id, %err, "cannot announce sleep");
        }
        self.asleep = true;
    }

    /// Losses the kernel counted but could not report in-band (no event
    /// followed them yet).
    fn pending_loss(&mut self) -> Option<Record> {
        let drops = self
            .shared
            .drops
            .lock()
            .expect("drops map lock")
            .get(&self.cgroup_id, 0);
        match drops {
            Ok(d) => self
                .account(d.dropped, d.first_ns, d.last_ns)
                .map(Record::Gap),
            Err(err) => {
                tracing::warn!(cgroup_id = self.cgroup_id, %err, "cannot read the drop counter");
                None
            }
        }
    }

    /// Turns a cumulative loss count into the gap not yet reported, if any.
    fn account(&mut self, total: u64, first_ns: u64, last_ns: u64) -> Option<Gap> {
        let count = total.checked_sub(self.accounted).filter(|&n| n > 0)?;
        self.accounted = total;
        self.last_ns = self.last_ns.max(last_ns);
        Some(Gap {
            count,
            from_ns: first_ns,
            to_ns: last_ns,
            reason: RING_FULL,
        })
    }
}

/// The probe reports the first write through an fd to a file and folds the
/// writes after it into that report (no record: a log's appends would each
/// cost a record and a path walk), until the reader reads the file. So a
/// reader about to read a file calls [`MergedWrites::report_next_write`]
/// for every fd that wrote it since its last read: what was written before
/// is in what it reads, and the next write is reported again. A [`Write`]
/// record's range is therefore where writing started, not all it wrote.
///
/// [`Write`]: crate::Op::Write
#[derive(Clone)]
pub struct MergedWrites {
    shared: Arc<Shared>,
}

impl MergedWrites {
    /// Has the next write through `fd` of process `pid` reported.
    pub fn report_next_write(&self, pid: u32, fd: i32) -> Result<(), Error> {
        let key = RawDirtyKey { tgid: pid, fd };
        match self.shared.dirty().remove(&key) {
            // Closed, or evicted: its next write is reported anyway.
            Err(err) if map_errno(&err) != Some(libc::ENOENT) => Err(map_error("dk_dirty", err)),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Debug for MergedWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedWrites").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("cgroup_id", &self.cgroup_id)
            .field("accounted", &self.accounted)
            .finish_non_exhaustive()
    }
}

/// Registers the ring buffer with the current tokio runtime's reactor.
fn register(ring: RingBuf<MapData>, cgroup_id: u64) -> Result<AsyncFd<RingBuf<MapData>>, Error> {
    let poll_error = |source| Error::Poll { cgroup_id, source };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(poll_error(io::Error::other("no tokio runtime")));
    }
    // SAFETY: RingBuf owns its map fd, keeps it open until dropped, and
    // as_raw_fd always returns that same fd.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| poll_error(e.into()))
}

impl Drop for Watch {
    fn drop(&mut self) {
        remove_route(&self.shared, self.cgroup_id);
        tracing::debug!(cgroup_id = self.cgroup_id, "stopped watching");
    }
}

/// Stops the kernel routing events to this watcher (and releases its claim
/// on the cgroup).
fn remove_route(shared: &Shared, cgroup_id: u64) {
    if let Err(err) = shared
        .drops
        .lock()
        .expect("drops map lock")
        .remove(&cgroup_id)
    {
        tracing::warn!(cgroup_id, %err, "cannot remove the route");
    }
}
