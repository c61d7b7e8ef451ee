//! What a recorder reads records from, whichever backend captures them.

use std::future::Future;

use crate::event::Record;
use crate::inotify::InotifyWatch;
use crate::watch::Watch;

/// A stream of [`Record`]s: the eBPF probe's [`Watch`] or the fallback's
/// [`InotifyWatch`].
pub trait Source: Send {
    /// The next record, waiting for one; `None` once the source failed.
    fn next(&mut self) -> impl Future<Output = Option<Record>> + Send;
    /// The next record if one is ready, without waiting.
    fn try_next(&mut self) -> Option<Record>;
}

impl Source for Watch {
    fn next(&mut self) -> impl Future<Output = Option<Record>> + Send {
        Watch::next(self)
    }

    fn try_next(&mut self) -> Option<Record> {
        Watch::try_next(self)
    }
}

impl Source for InotifyWatch {
    fn next(&mut self) -> impl Future<Output = Option<Record>> + Send {
        InotifyWatch::next(self)
    }

    fn try_next(&mut self) -> Option<Record> {
        InotifyWatch::try_next(self)
    }
}

/// Whichever backend a recorder ended up with.
pub enum AnyWatch {
    Ebpf(Watch),
    Inotify(InotifyWatch),
}

impl Source for AnyWatch {
    async fn next(&mut self) -> Option<Record> {
        match self {
            AnyWatch::Ebpf(watch) => watch.next().await,
            AnyWatch::Inotify(watch) => watch.next().await,
        }
    }

    fn try_next(&mut self) -> Option<Record> {
        match self {
            AnyWatch::Ebpf(watch) => watch.try_next(),
            AnyWatch::Inotify(watch) => watch.try_next(),
        }
    }
}
