//! The loop that feeds a session from the kernel.
//!
//! Two halves, so that storing content never stalls the kernel's queue: the
//! async half only moves records from the watch into a channel (the ring
//! buffer is drained as fast as the workload fills it), and a blocking
//! thread owns the session, which reads and stores content at its own pace.
//! Measured before the split: while a 25 MiB database version was chunked
//! and compressed, a fast sqlite3 filled the ring and lost events.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use diffkeeper_probe::{Record, Source};
use diffkeeper_store::monotonic_now_ns;
use tokio::sync::mpsc::{self, Receiver, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use crate::baseline::BaselineItem;
use crate::session::Session;

/// How often dirty files are checked against the debounce.
const TICK: Duration = Duration::from_millis(20);
/// Records handled before due reads are done, at most.
const BATCH: usize = 4096;
/// Records waiting for the session, at most: a backlog while content is
/// stored (a few MiB); beyond it the ring buffer fills and the kernel
/// counts the losses, which the recording shows as a gap.
const BACKLOG: usize = 1 << 16;

/// What the session thread is handed, in arrival order.
enum Input {
    Records(Vec<Record>),
    Baseline(BaselineItem),
    Tick,
}

/// Feeds `session` from `watch` (a probe watch or a fallback; and from a
/// baseline scan, if given) until `stop` completes, then drains what the
/// kernel already reported (every event is in the ring buffer by the time
/// its syscall returned), lets the baseline scan finish, and hands the
/// session back to be finished. The caller keeps `watch` and should drop
/// it only after finishing: a probe watch's removal waits for an RCU grace
/// period (measured 8-13 ms here), which the end of a recording, and the
/// exit containerd reports after it, need not wait for.
pub async fn run(
    watch: &mut impl Source,
    mut session: Session,
    mut baseline: Option<Receiver<BaselineItem>>,
    stop: impl Future<Output = ()>,
) -> Session {
    session.read_merged_writes_through(watch.merged_writes());
    if baseline.is_some() {
        session.begin_baseline();
    }
    // Batches vary in size: the channel only orders them, the semaphore
    // bounds the records they hold.
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Semaphore::new(BACKLOG));
    let speed = session.store().speed_switch();
    let store = {
        let backlog = Arc::clone(&backlog);
        tokio::task::spawn_blocking(move || handle_all(session, rx, &backlog))
    };
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let input = tokio::select! {
            record = watch.next() => match record {
                Some(record) => Input::Records(batch(record, watch, &backlog).await),
                None => break,
            },
            item = next_item(&mut baseline) => match item {
                Some(item) => Input::Baseline(item),
                None => {
                    baseline = None;
                    continue;
                }
            },
            _ = ticker.tick() => {
                forward(&tx, Input::Tick);
                continue;
            }
            () = &mut stop => break,
        };
        forward(&tx, input);
    }
    // From here on the recording's end is waited for: whatever is being
    // stored now, and the rest, is compressed for speed.
    speed.prefer_speed();
    while let Some(record) = watch.try_next() {
        forward(&tx, Input::Records(batch(record, watch, &backlog).await));
    }
    // A baseline still running is finished: the recording must say what the
    // tree looked like at the start, even for a workload that ran briefly.
    if let Some(rx) = &mut baseline {
        while let Some(item) = rx.recv().await {
            forward(&tx, Input::Baseline(item));
        }
    }
    drop(tx);
    store.await.expect("the session thread panicked")
}

/// `first` and whatever else is already reported, up to a batch, once the
/// backlog has room for them.
async fn batch(first: Record, watch: &mut impl Source, backlog: &Semaphore) -> Vec<Record> {
    let mut records = vec![first];
    while records.len() < BATCH {
        match watch.try_next() {
            Some(record) => records.push(record),
            None => break,
        }
    }
    backlog
        .acquire_many(records.len() as u32)
        .await
        .expect("the backlog semaphore is never closed")
        .forget();
    records
}

fn forward(tx: &UnboundedSender<Input>, input: Input) {
    // The receiver lives until the sender is dropped, at the end of `run`.
    tx.send(input)
        .unwrap_or_else(|_| unreachable!("the session thread ended early"));
}

/// The session thread: handles everything already waiting (a backlog that
/// built up while content was stored is one batch), then does the reads
/// that closes asked for (one read per file per batch) and, if a tick came,
/// the debounce.
fn handle_all(
    mut session: Session,
    mut rx: UnboundedReceiver<Input>,
    backlog: &Semaphore,
) -> Session {
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let (mut handled, mut ticked) = (0, false);
        while let Some(input) = next.take() {
            match input {
                Input::Records(records) => {
                    handled += records.len();
                    backlog.add_permits(records.len());
                    records.into_iter().for_each(|r| session.handle(r));
                }
                Input::Baseline(item) => session.add_baseline(item),
                Input::Tick => ticked = true,
            }
            if handled < BATCH {
                next = rx.try_recv().ok();
            }
        }
        session.flush_due();
        if ticked {
            session.tick(monotonic_now_ns());
        }
    }
    session
}

async fn next_item(baseline: &mut Option<Receiver<BaselineItem>>) -> Option<BaselineItem> {
    match baseline {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
