//! Reaps the shim's children and hands each exit to whoever waits for it.
//!
//! Containers are created `as_sibling`, so their init and exec processes are
//! children of the shim itself (like runc's shim, which is their subreaper).
//! A process may exit before the shim learns its pid (`/bin/true` under a
//! fast start): such exits are kept until claimed, for a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{wait, WaitOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// How long an exit nobody asked for is kept (libcontainer's intermediate
/// processes end up here and are never claimed).
const UNCLAIMED_TTL: Duration = Duration::from_secs(120);

/// Reaps children on `SIGCHLD` and dispatches their exit codes.
#[derive(Clone, Default)]
pub(crate) struct Reaper {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<i32, oneshot::Sender<u32>>,
    unclaimed: HashMap<i32, (u32, Instant)>,
}

impl Reaper {
    /// Starts reaping. Must run before the first child is spawned, so that
    /// no `SIGCHLD` is missed.
    pub(crate) fn start() -> Result<Self> {
        let mut sigchld =
            signal(SignalKind::child()).map_err(|e| Error::sys("install SIGCHLD handler", e))?;
        let reaper = Self::default();
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Resolves to `pid`'s exit code (128 + signal for a signal), whether it
    /// already exited or not.
    pub(crate) fn subscribe(&self, pid: i32) -> oneshot::Receiver<u32> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state.lock().expect("reaper lock");
        match state.unclaimed.remove(&pid) {
            Some((code, _)) => {
                let _ = tx.send(code);
            }
            None => {
                state.waiting.insert(pid, tx);
            }
        }
        rx
    }

    fn reap_all(&self) {
        loop {
            // `wait` is waitpid(-1): any child, whatever its process group
            // (containers call setsid).
            match wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let code = match (status.exit_status(), status.terminating_signal()) {
                        (Some(code), _) => code as u32,
                        (None, Some(sig)) => 128 + sig as u32,
                        (None, None) => continue,
                    };
                    self.deliver(pid.as_raw_nonzero().get(), code);
                }
                // No child has exited yet, or there are no children.
                Ok(None) | Err(rustix::io::Errno::CHILD) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => {
                    tracing::warn!(%err, "waitpid failed");
                    break;
                }
            }
        }
    }

    fn deliver(&self, pid: i32, code: u32) {
        let mut state = self.state.lock().expect("reaper lock");
        match state.waiting.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(code);
            }
            None => {
                let now = Instant::now();
                state
                    .unclaimed
                    .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
                state.unclaimed.insert(pid, (code, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_exits_claimed_before_and_after() {
        let reaper = Reaper::default();
        let early = reaper.subscribe(10);
        reaper.deliver(10, 0);
        assert_eq!(early.await.unwrap(), 0);

        reaper.deliver(11, 137);
        assert_eq!(reaper.subscribe(11).await.unwrap(), 137);
    }

    #[tokio::test]
    async fn reaps_real_children_with_exact_codes() {
        let reaper = Reaper::start().unwrap();
        // The reaper, not the Child handle, collects these exits.
        let spawn = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .map(|child| child.id() as i32)
                .unwrap()
        };
        let a = reaper.subscribe(spawn("exit 3"));
        let b = reaper.subscribe(spawn("kill -9 $$"));
        assert_eq!(a.await.unwrap(), 3);
        assert_eq!(b.await.unwrap(), 137);
    }
}
