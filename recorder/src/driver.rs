//! The loop that feeds a session from the kernel.

use std::future::Future;
use std::time::Duration;

use diffkeeper_probe::Source;
use diffkeeper_store::monotonic_now_ns;
use tokio::sync::mpsc::Receiver;

use crate::baseline::BaselineItem;
use crate::session::Session;

/// How often dirty files are checked against the debounce.
const TICK: Duration = Duration::from_millis(20);
/// Records handled before due reads are done, at most.
const BATCH: usize = 4096;

/// Feeds `session` from `watch` (a probe watch or a fallback; and from a
/// baseline scan, if given) until
/// `stop` completes, then drains what the kernel already reported (every
/// event is in the ring buffer by the time its syscall returned), lets the
/// baseline scan finish, and hands the session back to be finished.
pub async fn run(
    mut watch: impl Source,
    mut session: Session,
    mut baseline: Option<Receiver<BaselineItem>>,
    stop: impl Future<Output = ()>,
) -> Session {
    if baseline.is_some() {
        session.begin_baseline();
    }
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            record = watch.next() => match record {
                Some(record) => {
                    session.handle(record);
                    // Catch up with everything already reported, then read
                    // what closes asked for: one read per file per batch.
                    for _ in 0..BATCH {
                        match watch.try_next() {
                            Some(record) => session.handle(record),
                            None => break,
                        }
                    }
                    session.flush_due();
                }
                None => break,
            },
            item = next_item(&mut baseline) => match item {
                Some(item) => session.add_baseline(item),
                None => baseline = None,
            },
            _ = ticker.tick() => session.tick(monotonic_now_ns()),
            () = &mut stop => break,
        }
    }
    while let Some(record) = watch.try_next() {
        session.handle(record);
    }
    session.flush_due();
    // A baseline still running is finished: the recording must say what the
    // tree looked like at the start, even for a workload that ran briefly.
    if let Some(rx) = &mut baseline {
        while let Some(item) = rx.recv().await {
            session.add_baseline(item);
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
