//! A container the shim runs, and the processes (init and execs) in it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_shim_protos::api::Status;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use tokio::sync::watch;

use crate::cgroup::ContainerCgroup;
use crate::error::{Error, Result};
use crate::observer::ContainerInfo;
use crate::stdio::{ProcessIo, StdioRequest};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    /// Exit code, 128 + signal number when killed by a signal.
    pub code: u32,
    pub at: SystemTime,
}

impl Exit {
    pub(crate) fn timestamp(&self) -> Timestamp {
        Timestamp::from(self.at)
    }
}

/// Lifecycle of one process, as containerd's task API sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessStatus {
    Created,
    Running,
    Stopped(Exit),
}

impl ProcessStatus {
    pub(crate) fn api(&self) -> Status {
        match self {
            ProcessStatus::Created => Status::CREATED,
            ProcessStatus::Running => Status::RUNNING,
            ProcessStatus::Stopped(_) => Status::STOPPED,
        }
    }
}

/// The init process or an exec process.
pub(crate) struct Process {
    /// Empty for the init process.
    pub exec_id: String,
    pub stdio: StdioRequest,
    /// For exec processes: the OCI process spec handed to libcontainer.
    pub spec_file: Option<PathBuf>,
    state: Mutex<ProcessState>,
    exited: watch::Sender<Option<Exit>>,
    /// Held while a lifecycle event is being published, so that a fast exit
    /// cannot overtake the create or start event (containerd drops a
    /// TaskExit that precedes its TaskStart).
    pub events_order: tokio::sync::Mutex<()>,
}

pub(crate) struct ProcessState {
    pub pid: i32,
    pub status: ProcessStatus,
    pub io: Option<ProcessIo>,
}

impl Process {
    pub(crate) fn new(exec_id: &str, stdio: StdioRequest, spec_file: Option<PathBuf>) -> Self {
        Self {
            exec_id: exec_id.to_owned(),
            stdio,
            spec_file,
            state: Mutex::new(ProcessState {
                pid: 0,
                status: ProcessStatus::Created,
                io: None,
            }),
            exited: watch::channel(None).0,
            events_order: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, ProcessState> {
        self.state.lock().expect("process state lock")
    }

    pub(crate) fn pid(&self) -> i32 {
        self.state().pid
    }

    pub(crate) fn status(&self) -> ProcessStatus {
        self.state().status
    }

    /// Records the exit and wakes every `Wait`.
    pub(crate) fn set_exited(&self, exit: Exit) {
        {
            let mut state = self.state();
            state.status = ProcessStatus::Stopped(exit);
        }
        self.exited.send_replace(Some(exit));
    }

    /// Resolves once the process has exited.
    pub(crate) async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map(|exit| *exit)
            .ok()
            .flatten();
        // The sender lives as long as `self`, so the wait cannot fail.
        exit.expect("exit channel outlives its process")
    }

    /// Sends `signal` to the process.
    pub(crate) fn signal(&self, signal: u32) -> Result<()> {
        let state = self.state();
        match state.status {
            ProcessStatus::Stopped(_) => Err(Error::NotFound("process already finished".into())),
            _ if state.pid <= 0 => Err(Error::FailedPrecondition("process not started".into())),
            _ => send_signal(state.pid, signal),
        }
    }
}

/// Sends a raw signal number to `pid`; a vanished pid reads as not found.
pub(crate) fn send_signal(pid: i32, signal: u32) -> Result<()> {
    let sig = i32::try_from(signal)
        .ok()
        .and_then(rustix::process::Signal::from_named_raw)
        .ok_or_else(|| Error::InvalidArgument(format!("unknown signal {signal}")))?;
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| Error::InvalidArgument(format!("bad pid {pid}")))?;
    match rustix::process::kill_process(pid, sig) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::SRCH) => Err(Error::NotFound("process already finished".into())),
        Err(err) => Err(Error::sys("kill", err)),
    }
}

/// One container: its init process, exec processes and resources.
pub(crate) struct Instance {
    pub info: ContainerInfo,
    pub cgroup: ContainerCgroup,
    /// Whether the shim mounted the rootfs (and must unmount it).
    pub mounted_rootfs: bool,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

impl Instance {
    pub(crate) fn new(
        info: ContainerInfo,
        cgroup: ContainerCgroup,
        mounted_rootfs: bool,
        init: Arc<Process>,
    ) -> Self {
        Self {
            info,
            cgroup,
            mounted_rootfs,
            init,
            execs: Mutex::new(HashMap::new()),
        }
    }

    /// The init process for an empty `exec_id`, else that exec process.
    pub(crate) fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} in {}", self.info.id)))
    }

    pub(crate) fn add_exec(&self, process: Arc<Process>) -> Result<()> {
        let mut execs = self.execs();
        if execs.contains_key(&process.exec_id) {
            return Err(Error::AlreadyExists(format!("exec {}", process.exec_id)));
        }
        execs.insert(process.exec_id.clone(), process);
        Ok(())
    }

    pub(crate) fn remove_exec(&self, exec_id: &str) -> Option<Arc<Process>> {
        self.execs().remove(exec_id)
    }

    pub(crate) fn exec_processes(&self) -> Vec<Arc<Process>> {
        self.execs().values().cloned().collect()
    }

    fn execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().expect("exec table lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_sees_exits_before_and_after_it_starts() {
        let process = Arc::new(Process::new("", StdioRequest::default(), None));
        let waiter = {
            let process = process.clone();
            tokio::spawn(async move { process.wait().await })
        };
        let exit = Exit {
            code: 137,
            at: SystemTime::now(),
        };
        process.set_exited(exit);
        assert_eq!(waiter.await.unwrap(), exit);
        assert_eq!(process.wait().await, exit);
        assert_eq!(process.status().api(), Status::STOPPED);
    }

    #[test]
    fn signalling_a_finished_process_is_not_found() {
        let process = Process::new("e1", StdioRequest::default(), None);
        process.set_exited(Exit {
            code: 0,
            at: SystemTime::now(),
        });
        assert!(matches!(process.signal(9), Err(Error::NotFound(_))));
    }

    #[test]
    fn rejects_unknown_signals() {
        assert!(matches!(
            send_signal(std::process::id() as i32, 0),
            Err(Error::InvalidArgument(_))
        ));
    }
}
