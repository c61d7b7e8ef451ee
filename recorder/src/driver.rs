//! The loop that feeds a session from the kernel.

use std::future::Future;
use std::time::Duration;

use diffkeeper_probe::Watch;
use diffkeeper_store::monotonic_now_ns;

use crate::session::Session;

/// How often dirty files are checked against the debounce.
const TICK: Duration = Duration::from_millis(20);

/// Feeds `session` from `watch` until `stop` completes, then drains what
/// the kernel already reported (every event is in the ring buffer by the
/// time its syscall returned) and hands the session back to be finished.
pub async fn run(
    mut watch: Watch,
    mut session: Session,
    stop: impl Future<Output = ()>,
) -> Session {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            record = watch.next() => match record {
                Some(record) => session.handle(record),
                None => break,
            },
            _ = ticker.tick() => session.tick(monotonic_now_ns()),
            () = &mut stop => break,
        }
    }
    while let Some(record) = watch.try_next() {
        session.handle(record);
    }
    session
}
