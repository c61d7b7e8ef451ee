//! What a recorder reads records from, whichever backend captures them.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::event::Record;
use crate::fanotify::FanotifyWatch;
use crate::inotify::InotifyWatch;
use crate::watch::{MergedWrites, Watch};

/// A stream of [`Record`]s: the eBPF probe's [`Watch`] or a fallback's
/// ([`FanotifyWatch`], [`InotifyWatch`]).
pub trait Source: Send {
    /// The next record, waiting for one; `None` once the source failed.
    fn next(&mut self) -> impl Future<Output = Option<Record>> + Send;
    /// The next record if one is ready, without waiting.
    fn try_next(&mut self) -> Option<Record>;
    /// Where writes after a reported one are folded into it (eBPF), the
    /// handle a reader must use before reading a file (see [`MergedWrites`]).
    fn merged_writes(&self) -> Option<MergedWrites> {
        None
    }
}

impl Source for Watch {
    fn next(&mut self) -> impl Future<Output = Option<Record>> + Send {
        Watch::next(self)
    }

    fn try_next(&mut self) -> Option<Record> {
        Watch::try_next(self)
    }

    fn merged_writes(&self) -> Option<MergedWrites> {
        Some(Watch::merged_writes(self))
    }
}

impl Source for FanotifyWatch {
    fn next(&mut self) -> impl Future<Output = Option<Record>> + Send {
        FanotifyWatch::next(self)
    }

    fn try_next(&mut self) -> Option<Record> {
        FanotifyWatch::try_next(self)
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
    Fanotify(FanotifyWatch),
    Inotify(InotifyWatch),
}

impl AnyWatch {
    /// The capture without eBPF: fanotify where it can mark (Linux 5.17;
    /// 6.5 on overlayfs), which tells pids to root and pairs renames, else
    /// inotify. Watches `subtrees` below `root`, never below `skip`.
    pub fn fallback(
        root: &Path,
        subtrees: &[PathBuf],
        skip: &[PathBuf],
    ) -> std::io::Result<AnyWatch> {
        FanotifyWatch::start(root, subtrees, skip)
            .map(AnyWatch::Fanotify)
            .or_else(|err| {
                tracing::info!(%err, "fanotify unavailable; using inotify");
                InotifyWatch::start(root, subtrees, skip).map(AnyWatch::Inotify)
            })
    }
}

impl Source for AnyWatch {
    async fn next(&mut self) -> Option<Record> {
        match self {
            AnyWatch::Ebpf(watch) => watch.next().await,
            AnyWatch::Fanotify(watch) => watch.next().await,
            AnyWatch::Inotify(watch) => watch.next().await,
        }
    }

    fn try_next(&mut self) -> Option<Record> {
        match self {
            AnyWatch::Ebpf(watch) => watch.try_next(),
            AnyWatch::Fanotify(watch) => watch.try_next(),
            AnyWatch::Inotify(watch) => watch.try_next(),
        }
    }

    fn merged_writes(&self) -> Option<MergedWrites> {
        match self {
            AnyWatch::Ebpf(watch) => Some(watch.merged_writes()),
            AnyWatch::Fanotify(_) | AnyWatch::Inotify(_) => None,
        }
    }
}
