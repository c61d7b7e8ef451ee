//! The containerd task service (API v2 and v3 share these messages).
//!
//! Requests are turned into helper invocations (libcontainer) and cgroup
//! operations; exits come from the reaper. Events follow containerd's
//! order: TaskCreate before Create returns, TaskStart before Start returns,
//! TaskExit once the process is reaped (never before its start event),
//! TaskDelete when Delete is done; TaskExecAdded / TaskExecStarted for execs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, WaitRequest, WaitResponse,
};
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use containerd_shim_protos::api::{
    CheckpointTaskRequest, PauseRequest, ResumeRequest, UpdateTaskRequest,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::topics;
use containerd_shim_protos::types::task::ProcessInfo;
use tokio::sync::oneshot;
use tracing::instrument;

use crate::cgroup::{self, ContainerCgroup, Layout};
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::helper::{Helper, RootfsMount};
use crate::instance::{send_signal, Exit, Instance, Process, ProcessStatus};
use crate::observer::{ContainerInfo, ContainerObserver, ContainerProcess, ExitInfo};
use crate::spec;
use crate::stdio::{PendingIo, StdioRequest};

/// How long terminal output may take to reach containerd after an exit.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Where the shim keeps per-shim runtime files.
pub(crate) const RUNTIME_DIR: &str = "/run/diffkeeper";

/// The task service of one shim, serving one or more containers.
pub struct TaskService<O, E> {
    namespace: String,
    layout: Layout,
    helper: Helper,
    reaper: crate::reaper::Reaper,
    observer: Arc<O>,
    events: Arc<E>,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Arc<Instance>>>,
    console_dir: PathBuf,
    console_seq: AtomicU64,
}

impl<O: ContainerObserver, E: EventSink> TaskService<O, E> {
    pub(crate) fn new(
        namespace: &str,
        helper: Helper,
        reaper: crate::reaper::Reaper,
        observer: O,
        events: E,
        exit: Arc<ExitSignal>,
    ) -> Result<Self> {
        Ok(Self {
            namespace: namespace.to_owned(),
            layout: Layout::detect()?,
            helper,
            reaper,
            observer: Arc::new(observer),
            events: Arc::new(events),
            exit,
            containers: Mutex::new(HashMap::new()),
            console_dir: Path::new(RUNTIME_DIR).join("console"),
            console_seq: AtomicU64::new(0),
        })
    }

    fn instance(&self, id: &str) -> Result<Arc<Instance>> {
        self.containers
            .lock()
            .expect("container table lock")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    /// A short, unique console socket path (sun_path holds 108 bytes).
    fn console_path(&self) -> PathBuf {
        let seq = self.console_seq.fetch_add(1, Ordering::Relaxed);
        self.console_dir
            .join(format!("{}-{seq}.sock", std::process::id()))
    }

    async fn do_create(&self, req: CreateTaskRequest) -> Result<u32> {
        let id = req.id.clone();
        if id.is_empty() {
            return Err(Error::InvalidArgument("empty container id".into()));
        }
        if self.instance(&id).is_ok() {
            return Err(Error::AlreadyExists(format!("container {id}")));
        }
        let bundle = PathBuf::from(&req.bundle);
        let config_path = crate::options::config_path(req.options.as_ref())?;
        let bundle_spec = spec::prepare_bundle(&bundle, self.layout)?;
        let info = ContainerInfo {
            id: id.clone(),
            namespace: self.namespace.clone(),
            bundle: bundle.clone(),
            rootfs: bundle_spec.rootfs,
            annotations: bundle_spec.annotations,
            config_path,
        };
        let mounts: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fs_type: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let stdio = StdioRequest {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let (pending, fds) = PendingIo::prepare(&stdio, self.console_path(), &id, &self.namespace)?;
        self.observer.prepare(&info);
        let created = self
            .helper
            .create(&id, &bundle, &mounts, pending.console_socket(), fds)
            .await;
        let pid = match created {
            Ok(pid) => pid,
            Err(err) => {
                self.observer.on_delete(&info).await;
                self.teardown(&id, &bundle, !mounts.is_empty(), None).await;
                return Err(err);
            }
        };
        let exited = self.reaper.subscribe(pid);
        let built = Built {
            info,
            pid,
            stdio,
            mounted: !mounts.is_empty(),
        };
        match self.attach(built, pending).await {
            Ok((instance, io)) => {
                let process = instance.init.clone();
                {
                    let mut state = process.state();
                    state.pid = pid;
                    state.io = Some(io);
                }
                let _order = process.events_order.lock().await;
                self.containers
                    .lock()
                    .expect("container table lock")
                    .insert(id.clone(), Arc::new(instance));
                self.watch_exit(id.clone(), process.clone(), exited);
                self.events
                    .publish(
                        topics::TASK_CREATE_EVENT_TOPIC,
                        Box::new(TaskCreate {
                            container_id: id,
                            bundle: req.bundle,
                            rootfs: req.rootfs,
                            io: Some(TaskIO {
                                stdin: req.stdin,
                                stdout: req.stdout,
                                stderr: req.stderr,
                                terminal: req.terminal,
                                ..Default::default()
                            })
                            .into(),
                            pid: pid as u32,
                            ..Default::default()
                        }),
                    )
                    .await;
                Ok(pid as u32)
            }
            Err((err, info, cgroup)) => {
                let _ = send_signal(pid, libc::SIGKILL as u32);
                let _ = tokio::time::timeout(Duration::from_secs(5), exited).await;
                self.observer.on_delete(&info).await;
                self.teardown(&id, &bundle, !mounts.is_empty(), cgroup)
                    .await;
                Err(err)
            }
        }
    }

    /// The recording hook: own cgroup, then the observer, then stdio. On
    /// failure, what the caller needs to tear down.
    async fn attach(
        &self,
        built: Built,
        pending: PendingIo,
    ) -> std::result::Result<
        (Instance, crate::stdio::ProcessIo),
        (Error, ContainerInfo, Option<ContainerCgroup>),
    > {
        let Built {
            info,
            pid,
            stdio,
            mounted,
        } = built;
        let (layout, namespace, id) = (self.layout, self.namespace.clone(), info.id.clone());
        let cgroup = tokio::task::spawn_blocking(move || {
            ContainerCgroup::attach(layout, &namespace, &id, pid)
        })
        .await
        .map_err(|e| Error::Runtime(format!("cgroup task: {e}")))
        .and_then(|attached| attached);
        let cgroup = match cgroup {
            Ok(cgroup) => cgroup,
            Err(err) => return Err((err, info, None)),
        };
        let process = ContainerProcess {
            cgroup_id: cgroup.id(),
            cgroup_path: cgroup.path().to_owned(),
            init_pid: pid,
        };
        if let Err(err) = self.observer.before_start(&info, &process).await {
            return Err((Error::Observer(err.to_string()), info, Some(cgroup)));
        }
        let io = match pending.finish().await {
            Ok(io) => io,
            Err(err) => return Err((err, info, Some(cgroup))),
        };
        let process = Arc::new(Process::new("", stdio, None));
        Ok((Instance::new(info, cgroup, mounted, process), io))
    }

    /// Best-effort cleanup after a failed create or on delete.
    async fn teardown(
        &self,
        id: &str,
        bundle: &Path,
        unmount: bool,
        cgroup: Option<ContainerCgroup>,
    ) {
        if let Err(err) = self.helper.delete(id).await {
            tracing::warn!(id, %err, "libcontainer state not deleted");
        }
        let rootfs = bundle.join("rootfs");
        tokio::task::spawn_blocking(move || {
            if unmount {
                unmount_rootfs(&rootfs);
            }
            if let Some(cgroup) = cgroup {
                cgroup.remove();
            }
        })
        .await
        .unwrap_or_else(|err| tracing::warn!(%err, "cleanup task failed"));
    }

    /// Publishes the exit once `process` is reaped (after its start event).
    fn watch_exit(&self, id: String, process: Arc<Process>, exited: oneshot::Receiver<u32>) {
        let events = self.events.clone();
        let observer = self.observer.clone();
        let info = if process.exec_id.is_empty() {
            self.instance(&id).ok().map(|i| i.info.clone())
        } else {
            None
        };
        tokio::spawn(async move {
            let code = exited.await.unwrap_or(255);
            let exit = Exit {
                code,
                at: SystemTime::now(),
            };
            if let Some(info) = &info {
                observer
                    .after_exit(info, ExitInfo { exit_status: code })
                    .await;
            }
            let io = process.state().io.take();
            if let Some(mut io) = io {
                io.drain(OUTPUT_DRAIN).await;
                process.state().io = Some(io);
            }
            let _order = process.events_order.lock().await;
            events
                .publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: id.clone(),
                        id: if process.exec_id.is_empty() {
                            id
                        } else {
                            process.exec_id.clone()
                        },
                        pid: process.pid() as u32,
                        exit_status: code,
                        exited_at: Some(exit.timestamp()).into(),
                        ..Default::default()
                    }),
                )
                .await;
            process.set_exited(exit);
        });
    }

    async fn do_start(&self, req: StartRequest) -> Result<u32> {
        let instance = self.instance(&req.id)?;
        let process = instance.process(&req.exec_id)?;
        let _order = process.events_order.lock().await;
        if process.status() != ProcessStatus::Created {
            return Err(Error::FailedPrecondition(format!(
                "{} is not in the created state",
                display_id(&req.id, &req.exec_id)
            )));
        }
        if req.exec_id.is_empty() {
            self.helper.start(&req.id).await?;
            process.state().status = ProcessStatus::Running;
            let pid = process.pid() as u32;
            self.events
                .publish(
                    topics::TASK_START_EVENT_TOPIC,
                    Box::new(TaskStart {
                        container_id: req.id,
                        pid,
                        ..Default::default()
                    }),
                )
                .await;
            return Ok(pid);
        }
        if instance.init.status() != ProcessStatus::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let spec_file = process
            .spec_file
            .clone()
            .ok_or_else(|| Error::InvalidArgument("exec without a process spec".into()))?;
        let (pending, fds) = PendingIo::prepare(
            &process.stdio,
            self.console_path(),
            &req.id,
            &self.namespace,
        )?;
        let procs = instance.cgroup.procs_file();
        let pid = self
            .helper
            .exec(
                &req.id,
                &spec_file,
                pending.console_socket(),
                Some(&procs),
                fds,
            )
            .await?;
        let exited = self.reaper.subscribe(pid);
        let io = pending.finish().await;
        {
            let mut state = process.state();
            state.pid = pid;
            state.status = ProcessStatus::Running;
            match io {
                Ok(io) => state.io = Some(io),
                Err(err) => {
                    tracing::warn!(exec_id = %req.exec_id, %err, "exec stdio not connected")
                }
            }
        }
        self.watch_exit(req.id.clone(), process.clone(), exited);
        self.events
            .publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: req.id,
                    exec_id: req.exec_id,
                    pid: pid as u32,
                    ..Default::default()
                }),
            )
            .await;
        Ok(pid as u32)
    }

    async fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let instance = self.instance(&req.id)?;
        if !req.exec_id.is_empty() {
            let process = instance.process(&req.exec_id)?;
            let exit = match process.status() {
                ProcessStatus::Running => {
                    return Err(Error::FailedPrecondition(format!(
                        "exec {} is still running",
                        req.exec_id
                    )))
                }
                ProcessStatus::Created => Exit {
                    code: 0,
                    at: SystemTime::now(),
                },
                ProcessStatus::Stopped(exit) => exit,
            };
            instance.remove_exec(&req.exec_id);
            if let Some(file) = &process.spec_file {
                let _ = std::fs::remove_file(file);
            }
            return Ok(delete_response(process.pid(), exit));
        }
        let init = instance.init.clone();
        match init.status() {
            ProcessStatus::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is running; kill it first",
                    req.id
                )))
            }
            ProcessStatus::Created => {
                // runc deletes created containers too (SIGKILL first).
                let _ = init.signal(libc::SIGKILL as u32);
            }
            ProcessStatus::Stopped(_) => {}
        }
        let exit = init.wait().await;
        for exec in instance.exec_processes() {
            if exec.status() == ProcessStatus::Running {
                let _ = exec.signal(libc::SIGKILL as u32);
                let _ = tokio::time::timeout(Duration::from_secs(5), exec.wait()).await;
            }
            if let Some(file) = &exec.spec_file {
                let _ = std::fs::remove_file(file);
            }
        }
        init.state().io = None;
        self.observer.on_delete(&instance.info).await;
        self.teardown(
            &req.id,
            &instance.info.bundle,
            instance.mounted_rootfs,
            Some(instance.cgroup.clone()),
        )
        .await;
        self.containers
            .lock()
            .expect("container table lock")
            .remove(&req.id);
        self.events
            .publish(
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    container_id: req.id.clone(),
                    id: req.id,
                    pid: init.pid() as u32,
                    exit_status: exit.code,
                    exited_at: Some(exit.timestamp()).into(),
                    ..Default::default()
                }),
            )
            .await;
        Ok(delete_response(init.pid(), exit))
    }

    async fn do_exec(&self, req: ExecProcessRequest) -> Result<()> {
        let instance = self.instance(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(Error::InvalidArgument("empty exec id".into()));
        }
        if matches!(instance.init.status(), ProcessStatus::Stopped(_)) {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                req.id
            )));
        }
        let raw = req
            .spec
            .as_ref()
            .map(|any| any.value.as_slice())
            .ok_or_else(|| Error::InvalidArgument("exec without a process spec".into()))?;
        let process_json = spec::prepare_process(raw)?;
        let file = instance
            .info
            .bundle
            .join(format!("exec-{}.json", sanitize(&req.exec_id)));
        let stdio = StdioRequest {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let process = Arc::new(Process::new(&req.exec_id, stdio, Some(file.clone())));
        instance.add_exec(process)?;
        if let Err(err) = std::fs::write(&file, process_json) {
            instance.remove_exec(&req.exec_id);
            return Err(Error::io("write exec spec", file, err));
        }
        self.events
            .publish(
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                Box::new(TaskExecAdded {
                    container_id: req.id,
                    exec_id: req.exec_id,
                    ..Default::default()
                }),
            )
            .await;
        Ok(())
    }

    /// containerd asks the shim to exit once its last container is gone
    /// (or right away with `now`).
    fn do_shutdown(&self, now: bool) {
        let remaining = self.containers.lock().expect("container table lock").len();
        if now || remaining == 0 {
            self.exit.signal();
        }
    }

    fn do_kill(&self, req: &KillRequest) -> Result<()> {
        let instance = self.instance(&req.id)?;
        let process = instance.process(&req.exec_id)?;
        if req.all && req.exec_id.is_empty() {
            // Like runc's `kill --all`: every process in the container.
            let pids = instance.cgroup.pids()?;
            if pids.is_empty() {
                return process.signal(req.signal);
            }
            for pid in pids {
                match send_signal(pid, req.signal) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(err) => return Err(err),
                }
            }
            return Ok(());
        }
        process.signal(req.signal)
    }
}

/// A container libcontainer has built: init exists, blocked before exec.
struct Built {
    info: ContainerInfo,
    pid: i32,
    stdio: StdioRequest,
    /// Whether the shim mounted the rootfs.
    mounted: bool,
}

fn display_id(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        format!("container {id}")
    } else {
        format!("exec {exec_id} in {id}")
    }
}

/// Exec ids come from clients; keep them out of path syntax.
fn sanitize(exec_id: &str) -> String {
    exec_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn delete_response(pid: i32, exit: Exit) -> DeleteResponse {
    DeleteResponse {
        pid: pid as u32,
        exit_status: exit.code,
        exited_at: Some(exit.timestamp()).into(),
        ..Default::default()
    }
}

pub(crate) fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    own.dev() != parent.dev()
}

/// Unmounts the rootfs the shim mounted (lazily if still busy).
pub(crate) fn unmount_rootfs(rootfs: &Path) {
    use rustix::mount::{unmount, UnmountFlags};
    if let Err(err) = unmount(rootfs, UnmountFlags::empty()) {
        if err != rustix::io::Errno::INVAL && err != rustix::io::Errno::NOENT {
            if let Err(err) = unmount(rootfs, UnmountFlags::DETACH) {
                tracing::warn!(?rootfs, %err, "rootfs left mounted");
            }
        }
    }
}

#[async_trait]
impl<O: ContainerObserver, E: EventSink> Task for TaskService<O, E> {
    #[instrument(skip(self, _ctx, req), fields(id = %req.id))]
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let pid = self.do_create(req).await.inspect_err(log_error)?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    #[instrument(skip(self, _ctx))]
    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let pid = self.do_start(req).await.inspect_err(log_error)?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    #[instrument(skip(self, _ctx))]
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let instance = self.instance(&req.id)?;
        let process = instance.process(&req.exec_id)?;
        let state = process.state();
        let mut response = StateResponse {
            id: req.id,
            exec_id: req.exec_id,
            bundle: instance.info.bundle.to_string_lossy().into_owned(),
            pid: state.pid as u32,
            status: state.status.api().into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            ..Default::default()
        };
        if let ProcessStatus::Stopped(exit) = state.status {
            response.exit_status = exit.code;
            response.exited_at = Some(exit.timestamp()).into();
        }
        Ok(response)
    }

    #[instrument(skip(self, _ctx))]
    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let process = self.instance(&req.id)?.process(&req.exec_id)?;
        let exit = process.wait().await;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(exit.timestamp()).into(),
            ..Default::default()
        })
    }

    #[instrument(skip(self, _ctx))]
    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        self.do_kill(&req).inspect_err(log_error)?;
        Ok(Empty::new())
    }

    #[instrument(skip(self, _ctx))]
    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        Ok(self.do_delete(req).await.inspect_err(log_error)?)
    }

    #[instrument(skip(self, _ctx))]
    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let instance = self.instance(&req.id)?;
        let cgroup = instance.cgroup.clone();
        let pids = tokio::task::spawn_blocking(move || cgroup.pids())
            .await
            .map_err(|e| Error::Runtime(format!("pids task: {e}")))??;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[instrument(skip(self, _ctx))]
    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        self.instance(&req.id)?;
        let (layout, root, id) = (self.layout, self.helper.root().to_owned(), req.id);
        let stats = tokio::task::spawn_blocking(move || -> Result<_> {
            let container = libcontainer::container::Container::load(root.join(&id))
                .map_err(|e| Error::Runtime(format!("load container {id}: {e}")))?;
            let config = container
                .spec()
                .map_err(|e| Error::Runtime(format!("container {id} config: {e}")))?;
            cgroup::metrics(layout, &config.cgroup_path, &id)
        })
        .await
        .map_err(|e| Error::Runtime(format!("stats task: {e}")))?
        .inspect_err(log_error)?;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    #[instrument(skip(self, _ctx))]
    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = self
            .instance(&req.id)
            .map(|i| i.init.pid() as u32)
            .unwrap_or_default();
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    #[instrument(skip(self, _ctx))]
    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        self.do_shutdown(req.now);
        Ok(Empty::new())
    }

    #[instrument(skip(self, _ctx))]
    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let process = self.instance(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            if let Some(io) = process.state().io.as_ref() {
                io.close_stdin();
            }
        }
        Ok(Empty::new())
    }

    #[instrument(skip(self, _ctx, req), fields(id = %req.id, exec_id = %req.exec_id))]
    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        self.do_exec(req).await.inspect_err(log_error)?;
        Ok(Empty::new())
    }

    #[instrument(skip(self, _ctx))]
    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let process = self.instance(&req.id)?.process(&req.exec_id)?;
        let state = process.state();
        let io = state
            .io
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("process has no stdio".into()))?;
        io.resize(req.width, req.height)?;
        Ok(Empty::new())
    }

    #[instrument(skip(self, _ctx))]
    async fn pause(&self, _ctx: &TtrpcContext, _req: PauseRequest) -> TtrpcResult<Empty> {
        Err(Error::Unimplemented("Pause").into())
    }

    #[instrument(skip(self, _ctx))]
    async fn resume(&self, _ctx: &TtrpcContext, _req: ResumeRequest) -> TtrpcResult<Empty> {
        Err(Error::Unimplemented("Resume").into())
    }

    #[instrument(skip(self, _ctx))]
    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(Error::Unimplemented("Checkpoint").into())
    }

    #[instrument(skip(self, _ctx))]
    async fn update(&self, _ctx: &TtrpcContext, _req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        Err(Error::Unimplemented("Update").into())
    }
}

fn log_error(err: &Error) {
    tracing::error!(%err, "request failed");
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use containerd_shim_protos::protobuf::MessageDyn;

    use super::*;
    use crate::observer::NoopObserver;
    use crate::reaper::Reaper;

    type Topics = Arc<StdMutex<Vec<&'static str>>>;

    /// Records the topics published, in order.
    #[derive(Default)]
    struct RecordingEvents(Topics);

    #[async_trait]
    impl EventSink for RecordingEvents {
        async fn publish(&self, topic: &'static str, _event: Box<dyn MessageDyn>) {
            self.0.lock().unwrap().push(topic);
        }
    }

    fn service() -> (
        TaskService<NoopObserver, RecordingEvents>,
        Topics,
        Arc<ExitSignal>,
    ) {
        let events = RecordingEvents::default();
        let topics = events.0.clone();
        let exit = Arc::new(ExitSignal::default());
        let reaper = Reaper::default();
        let helper = Helper::new(PathBuf::from("/nonexistent"), None, reaper.clone()).unwrap();
        let service = TaskService::new("test", helper, reaper, NoopObserver, events, exit.clone())
            .expect("cgroup v2 must be mounted to run these tests");
        (service, topics, exit)
    }

    #[tokio::test]
    async fn unknown_containers_are_not_found_and_publish_nothing() {
        let (service, topics, _) = service();
        let start = service
            .do_start(StartRequest {
                id: "nope".into(),
                ..Default::default()
            })
            .await;
        assert!(matches!(start, Err(Error::NotFound(_))), "{start:?}");
        let kill = service.do_kill(&KillRequest {
            id: "nope".into(),
            signal: 9,
            ..Default::default()
        });
        assert!(matches!(kill, Err(Error::NotFound(_))), "{kill:?}");
        let exec = service
            .do_exec(ExecProcessRequest {
                id: "nope".into(),
                exec_id: "e1".into(),
                ..Default::default()
            })
            .await;
        assert!(matches!(exec, Err(Error::NotFound(_))), "{exec:?}");
        assert!(topics.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn create_rejects_an_empty_id_and_a_bad_bundle() {
        let (service, topics, _) = service();
        let empty = service.do_create(CreateTaskRequest::default()).await;
        assert!(matches!(empty, Err(Error::InvalidArgument(_))), "{empty:?}");
        let missing = service
            .do_create(CreateTaskRequest {
                id: "c1".into(),
                bundle: "/nonexistent/bundle".into(),
                ..Default::default()
            })
            .await;
        assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
        assert!(topics.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn shutdown_exits_once_no_container_is_left() {
        let (service, _, exit) = service();
        service.do_shutdown(false);
        tokio::time::timeout(Duration::from_secs(1), exit.wait())
            .await
            .expect("shutdown with no containers must stop the shim");
    }

    #[test]
    fn exec_ids_stay_out_of_path_syntax() {
        assert_eq!(sanitize("../../etc/x"), "______etc_x");
        assert_eq!(sanitize("exec-1_a"), "exec-1_a");
    }
}
