//! The loop that feeds a session from the kernel.
//!
//! Two halves, so that storing content never stalls the kernel's queue: the
//! async half only moves records from the watch into a channel (the ring
//! buffer is drained as fast as the workload fills it), and a blocking
//! thread owns the session, which reads and stores content at its own pace.
//! Measured before the split: while a 25 MiB database version was chunked
//! and compressed, a fast sqlite3 filled the ring and lost events.

use std::future::Future;
use std::time::Duration;

use diffkeeper_probe::{Record, Source};
use diffkeeper_store::monotonic_now_ns;
use tokio::sync::mpsc::{self, Receiver, Sender};

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
    Record(Record),
    Baseline(BaselineItem),
    Tick,
}

/// Feeds `session` from `watch` (a probe watch or a fallback; and from a
/// baseline scan, if given) until `stop` completes, then drains what the
/// kernel already reported (every event is in the ring buffer by the time
/// its syscall returned), lets the baseline scan finish, and hands the
/// session back to be finished.
pub async fn run(
    mut watch: impl Source,
    mut session: Session,
    mut baseline: Option<Receiver<BaselineItem>>,
    stop: impl Future<Output = ()>,
) -> Session {
    if baseline.is_some() {
        session.begin_baseline();
    }
    let (tx, rx) = mpsc::channel(BACKLOG);
    let store = tokio::task::spawn_blocking(move || handle_all(session, rx));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let input = tokio::select! {
            record = watch.next() => match record {
                Some(record) => Input::Record(record),
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
                // A busy session checks the debounce after its batch anyway.
                let _ = tx.try_send(Input::Tick);
                continue;
            }
            () = &mut stop => break,
        };
        forward(&tx, input).await;
    }
    while let Some(record) = watch.try_next() {
        forward(&tx, Input::Record(record)).await;
    }
    // A baseline still running is finished: the recording must say what the
    // tree looked like at the start, even for a workload that ran briefly.
    if let Some(rx) = &mut baseline {
        while let Some(item) = rx.recv().await {
            forward(&tx, Input::Baseline(item)).await;
        }
    }
    drop(tx);
    store.await.expect("the session thread panicked")
}

async fn forward(tx: &Sender<Input>, input: Input) {
    // The receiver lives until the sender is dropped, below.
    tx.send(input)
        .await
        .unwrap_or_else(|_| unreachable!("the session thread ended early"));
}

/// The session thread: handles everything already waiting, then does the
/// reads that closes asked for (one read per file per batch).
fn handle_all(mut session: Session, mut rx: Receiver<Input>) -> Session {
    while let Some(first) = rx.blocking_recv() {
        handle(&mut session, first);
        for _ in 1..BATCH {
            match rx.try_recv() {
                Ok(input) => handle(&mut session, input),
                Err(_) => break,
            }
        }
        session.flush_due();
    }
    session
}

fn handle(session: &mut Session, input: Input) {
    match input {
        Input::Record(record) => session.handle(record),
        Input::Baseline(item) => session.add_baseline(item),
        Input::Tick => session.tick(monotonic_now_ns()),
    }
}

async fn next_item(baseline: &mut Option<Receiver<BaselineItem>>) -> Option<BaselineItem> {
    match baseline {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
