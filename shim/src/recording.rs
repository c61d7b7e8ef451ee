//! The flight recorder: the observer that gives every container the shim
//! runs a recording (docs/recording.md).
//!
//! Each recording runs on a thread of its own with its own small async
//! runtime, so reading and storing file content never stalls the shim's
//! task API, and a recorder that fails or panics takes nothing else down.
//! `prepare` starts that thread while libcontainer builds the container: it
//! loads the probe and registers a ring buffer (the slow part of watching,
//! ~10 ms). `before_start` then waits until the thread routes the
//! container's cgroup to that ring, so the workload's first write is
//! recorded; `after_exit` waits (bounded)
//! until the recording is finished, so it is complete when containerd
//! reports the exit; `on_delete` moves it from the bundle to the
//! recordings root and applies retention. A container annotated with
//! `io.diffkeeper.restore-from` gets its recorded state first (`restore`).
//!
//! Failures follow `on-failure`: `open` (the default) lets the container
//! run unrecorded or partly recorded, logged to containerd's log and noted
//! in the recording; `closed` fails `Create` instead.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use diffkeeper_probe::{AnyWatch, FanotifyWatch, InotifyWatch, Probe, ProbeConfig, Ring};
use diffkeeper_recorder::{
    capture_of, container_key, run as drive, Archive, BaselineScan, PathFilter, RootView, Session,
    SessionOptions,
};
use diffkeeper_runtime_config::{
    BaselineMode, CaptureBackend, Config, FailurePolicy, NodeConfig, Retention, ANNOTATION_PREFIX,
};
use diffkeeper_store::{
    monotonic_now_ns, Capture, Recorder, RecorderOptions, RecordingMeta, Status, Subject,
};
use tokio::sync::oneshot;

use crate::cri;
use crate::observer::{
    ContainerInfo, ContainerObserver, ContainerProcess, ExitInfo, ObserverError,
};
use crate::restore::restore;

/// The recording's name inside the bundle while the container runs.
pub const BUNDLE_RECORDING: &str = "diffkeeper.redb";
/// How long `before_start` waits for the recorder to watch (the first
/// probe load on a host verifies the programs: about a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the exit containerd sees may wait for the recording to finish.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Records every container of this shim.
pub struct FlightRecorder {
    config_path: PathBuf,
    probe: Arc<Mutex<Option<Arc<Probe>>>>,
    prepared: Mutex<HashMap<String, Prepared>>,
    running: Mutex<HashMap<String, Running>>,
}

/// What `prepare` found and started for a container, until `before_start`.
struct Prepared {
    /// The container's configuration and the node's retention; `Ok(None)`:
    /// the node config is broken, so nothing is recorded.
    resolved: Result<Option<(Config, Retention)>, ObserverError>,
    /// The recorder thread (or why it could not start), if the container
    /// is to be recorded.
    recorder: Option<Result<Starting, String>>,
}

/// A recorder thread between `prepare` and its first record.
struct Starting {
    file: PathBuf,
    /// Sends it the built container (dropped: the container was never
    /// built, so the thread gives up).
    go: oneshot::Sender<ContainerProcess>,
    ready: oneshot::Receiver<Result<SystemTime, String>>,
    stop: oneshot::Sender<Option<i32>>,
    finished: oneshot::Receiver<Result<Status, String>>,
}

/// One container's recording, from `before_start` to `on_delete`.
struct Running {
    file: PathBuf,
    /// The slot in the recordings root, holding a symlink to `file`.
    slot: Option<PathBuf>,
    config: Config,
    /// The node's retention, for the other containers' recordings.
    node_retention: Retention,
    stop: Option<oneshot::Sender<Option<i32>>>,
    finished: Option<oneshot::Receiver<Result<Status, String>>>,
}

impl FlightRecorder {
    /// Reads the node config at each `Create` from `config_path`, so edits
    /// apply to the next container without restarting anything.
    pub fn new(config_path: PathBuf) -> FlightRecorder {
        FlightRecorder {
            config_path,
            probe: Arc::default(),
            prepared: Mutex::default(),
            running: Mutex::default(),
        }
    }

    /// The container's configuration and the node's retention; `Ok(None)`:
    /// the node config is broken, so record nothing.
    fn resolve(&self, info: &ContainerInfo) -> Result<Option<(Config, Retention)>, ObserverError> {
        let path = info.config_path.as_deref().unwrap_or(&self.config_path);
        let node = match NodeConfig::load(path) {
            Ok(node) => node,
            Err(err) => {
                // A broken node file must not stop every container on the
                // node: they run unrecorded, and every Create says why.
                tracing::error!(id = %info.id, %err, "not recording: the node config is invalid");
                return Ok(None);
            }
        };
        let annotations = info
            .annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let resolved = node.for_container(annotations)?;
        for warning in &resolved.warnings {
            tracing::warn!(id = %info.id, "{warning}");
        }
        Ok(Some((resolved.config, node.config.retention)))
    }

    /// Resolves the container's configuration and, if it is to be
    /// recorded, starts its recorder thread (which waits for `go`).
    fn prepare_now(&self, info: &ContainerInfo) -> Prepared {
        let resolved = self.resolve(info);
        let recorder = match &resolved {
            Ok(Some((config, _))) if records(config, info) => {
                Some(self.spawn_recorder(info, config))
            }
            _ => None,
        };
        Prepared { resolved, recorder }
    }

    fn spawn_recorder(&self, info: &ContainerInfo, config: &Config) -> Result<Starting, String> {
        let filter = PathFilter::new(&config.include, &config.exclude)
            .map_err(|e| format!("include/exclude: {e}"))?;
        let file = info.bundle.join(BUNDLE_RECORDING);
        let plan = Plan {
            info: info.clone(),
            file: file.clone(),
            config: config.clone(),
            filter,
        };
        let (go_tx, go_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let probe = self.probe.clone();
        std::thread::Builder::new()
            .name(format!("dk-rec-{}", short_id(&info.id)))
            .spawn(move || plan.record(&probe, go_rx, ready_tx, stop_rx, done_tx))
            .map_err(|e| format!("starting the recorder thread: {e}"))?;
        Ok(Starting {
            file,
            go: go_tx,
            ready: ready_rx,
            stop: stop_tx,
            finished: done_rx,
        })
    }

    /// Lets the prepared recorder watch `process` and waits until it does.
    async fn start(
        &self,
        info: &ContainerInfo,
        process: &ContainerProcess,
        starting: Result<Starting, String>,
        config: Config,
        node_retention: Retention,
    ) -> Result<Running, String> {
        let starting = starting?;
        if starting.go.send(process.clone()).is_err() {
            return Err("the recorder thread died while starting".into());
        }
        let started = match tokio::time::timeout(START_TIMEOUT, starting.ready).await {
            Ok(Ok(Ok(started))) => started,
            Ok(Ok(Err(err))) => return Err(err),
            Ok(Err(_)) => return Err("the recorder thread died while starting".into()),
            Err(_) => {
                return Err(format!(
                    "the recorder did not start within {START_TIMEOUT:?}"
                ))
            }
        };
        let file = starting.file;
        let slot = Archive::new(&config.recordings_root)
            .slot(&info.namespace, &recordings_dir_of(info), started)
            .and_then(|slot| Archive::link_active(&slot, &file).map(|()| slot));
        let slot = match slot {
            Ok(slot) => Some(slot),
            Err(err) => {
                tracing::error!(id = %info.id, %err, "the recording cannot be kept after the container is deleted");
                None
            }
        };
        Ok(Running {
            file,
            slot,
            config,
            node_retention,
            stop: Some(starting.stop),
            finished: Some(starting.finished),
        })
    }

    /// Stops `id`'s recording (with the exit code, if known) and waits for
    /// it to be finished.
    async fn finish(&self, id: &str, exit_code: Option<i32>) {
        let finished = {
            let mut running = self.running.lock().expect("recordings lock");
            let Some(entry) = running.get_mut(id) else {
                return;
            };
            if let Some(stop) = entry.stop.take() {
                let _ = stop.send(exit_code);
            }
            entry.finished.take()
        };
        let Some(finished) = finished else { return };
        match tokio::time::timeout(FINISH_TIMEOUT, finished).await {
            Ok(Ok(Ok(status))) => {
                for reason in &status.incomplete {
                    tracing::warn!(id, "recording incomplete: {reason}");
                }
            }
            Ok(Ok(Err(err))) => tracing::error!(id, %err, "recording not finished cleanly"),
            Ok(Err(_)) => tracing::error!(id, "the recorder thread died; the recording ends at its last commit"),
            Err(_) => tracing::error!(id, "the recording did not finish within {FINISH_TIMEOUT:?}; it ends at its last commit"),
        }
    }
}

#[async_trait::async_trait]
impl ContainerObserver for FlightRecorder {
    fn prepare(&self, info: &ContainerInfo) {
        let prepared = self.prepare_now(info);
        self.prepared
            .lock()
            .expect("prepared lock")
            .insert(info.id.clone(), prepared);
    }

    async fn before_start(
        &self,
        info: &ContainerInfo,
        process: &ContainerProcess,
    ) -> Result<(), ObserverError> {
        let prepared = self
            .prepared
            .lock()
            .expect("prepared lock")
            .remove(&info.id);
        let Prepared { resolved, recorder } = prepared.unwrap_or_else(|| self.prepare_now(info));
        let Some((config, node_retention)) = resolved? else {
            let restore_key = format!("{ANNOTATION_PREFIX}restore-from");
            if info.annotations.contains_key(&restore_key) {
                return Err(format!(
                    "{restore_key} cannot be honoured: the node config is invalid (see containerd's log)"
                )
                .into());
            }
            return Ok(());
        };
        // Before the recorder starts: its baseline is the restored state.
        // A failed restore always fails Create: running from the wrong
        // state is worse than not running.
        if let Some(source) = &config.restore_from {
            restore(info, source, &config.recordings_root).await?;
        }
        // `prepare` started no recorder: the config says not to record.
        let Some(recorder) = recorder else {
            tracing::info!(id = %info.id, "recording disabled");
            return Ok(());
        };
        let policy = config.on_failure;
        match self
            .start(info, process, recorder, config, node_retention)
            .await
        {
            Ok(running) => {
                tracing::info!(id = %info.id, file = %running.file.display(), "recording");
                self.running
                    .lock()
                    .expect("recordings lock")
                    .insert(info.id.clone(), running);
                Ok(())
            }
            Err(err) if policy == FailurePolicy::Open => {
                tracing::error!(id = %info.id, %err, "recording failed to start; the container runs unrecorded (on-failure = open)");
                Ok(())
            }
            Err(err) => Err(format!(
                "recording failed to start and on-failure is `closed`, so the container is not run: {err}"
            )
            .into()),
        }
    }

    async fn after_exit(&self, info: &ContainerInfo, exit: ExitInfo) {
        self.finish(&info.id, Some(exit.exit_status as i32)).await;
    }

    async fn on_delete(&self, info: &ContainerInfo) {
        // Built never (or never started): its recorder thread, if any, sees
        // `go` dropped and ends without a recording.
        self.prepared
            .lock()
            .expect("prepared lock")
            .remove(&info.id);
        self.finish(&info.id, None).await;
        let Some(running) = self
            .running
            .lock()
            .expect("recordings lock")
            .remove(&info.id)
        else {
            return;
        };
        let Some(slot) = running.slot.clone() else {
            tracing::error!(id = %info.id, file = %running.file.display(), "recording lost with the bundle: no slot in the recordings root");
            return;
        };
        // A copy when the root is on another file system, and a listing of
        // the root: file I/O, off the shim's thread.
        let (namespace, id, dir) = (
            info.namespace.clone(),
            info.id.clone(),
            recordings_dir_of(info),
        );
        let kept = tokio::task::spawn_blocking(move || {
            match Archive::keep(&running.file, &slot) {
                Ok(()) => tracing::info!(id, path = %slot.display(), "recording kept"),
                Err(err) => tracing::error!(id, %err, "recording not moved out of the bundle"),
            }
            apply_retention(&running, &namespace, &dir);
        });
        if let Err(err) = kept.await {
            tracing::error!(id = %info.id, %err, "keeping the recording failed");
        }
    }
}

/// Whether `config` records the container (a pod's sandbox only if asked).
fn records(config: &Config, info: &ContainerInfo) -> bool {
    config.record && (config.record_sandbox || !cri::is_sandbox(&info.annotations))
}

/// The directory of the container's recordings under the recordings root:
/// a Kubernetes container's restarts share one (see `container_key`).
fn recordings_dir_of(info: &ContainerInfo) -> String {
    container_key(&info.id, cri::identity(&info.annotations).as_ref())
}

/// Deletes what retention lets go: this container's recordings (its
/// directory `dir`) by its own rules (annotations included), every other
/// container's by the node's (an annotation must not reach beyond its own
/// container). Failures are logged, never fatal.
fn apply_retention(running: &Running, namespace: &str, dir: &str) {
    let archive = Archive::new(&running.config.recordings_root);
    let rules_for = |ns: &str, container: &str| {
        if (ns, container) == (namespace, dir) {
            &running.config.retention
        } else {
            &running.node_retention
        }
    };
    match archive.expired(rules_for, SystemTime::now()) {
        Ok(expired) => {
            for entry in expired {
                match archive.remove(&entry) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path.display(), "retention deleted a recording")
                    }
                    Err(err) => tracing::warn!(%err, "retention"),
                }
            }
        }
        Err(err) => tracing::warn!(%err, "retention"),
    }
}

/// For `delete` after a shim died: moves the recording it left in the
/// bundle to the slot it noted, so the recording outlives the bundle. It
/// ends at its last commit and says it was cut short.
pub fn rescue(config_path: &Path, namespace: &str, id: &str, bundle: &Path) {
    let file = bundle.join(BUNDLE_RECORDING);
    if !file.exists() {
        return;
    }
    let slot = match Archive::noted_slot(&file) {
        Some(slot) => Ok(slot),
        // The shim died before noting one: make one under the node root.
        None => {
            let root = NodeConfig::load(config_path)
                .map(|node| node.config.recordings_root)
                .unwrap_or_else(|_| Config::default().recordings_root);
            Archive::new(root).slot(namespace, id, SystemTime::now())
        }
    };
    let kept = slot.and_then(|slot| Archive::keep(&file, &slot).map(|()| slot));
    match kept {
        Ok(slot) => eprintln!("recording of {id} cut short, kept at {}", slot.display()),
        Err(err) => eprintln!("recording of {id} lost with the bundle: {err}"),
    }
}

fn create_store(
    info: &ContainerInfo,
    config: &Config,
    file: &Path,
    started: SystemTime,
    capture: Capture,
) -> Result<Recorder, String> {
    let started_unix_ns = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let meta = RecordingMeta {
        subject: Subject {
            kind: "container".into(),
            id: info.id.clone(),
            namespace: info.namespace.clone(),
            image: cri::image(&info.annotations).unwrap_or_default().into(),
            rootfs: info.rootfs.display().to_string(),
        },
        started_unix_ns,
        mono_base_ns: monotonic_now_ns(),
        capture,
        labels: info
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        kubernetes: cri::identity(&info.annotations),
    };
    let options = RecorderOptions {
        commit_interval: config.commit_interval,
        ..RecorderOptions::default()
    };
    Recorder::create(file, &meta, options).map_err(|e| format!("creating {}: {e}", file.display()))
}

/// What the recorder thread needs.
struct Plan {
    info: ContainerInfo,
    /// The recording file to create.
    file: PathBuf,
    config: Config,
    filter: PathFilter,
}

impl Plan {
    /// The recorder thread: beside the build, load the probe and register
    /// a ring buffer; once built (`go`), watch, create the recording,
    /// signal ready (with the recording's start), record until stopped,
    /// finish.
    fn record(
        self,
        probe: &Mutex<Option<Arc<Probe>>>,
        go: oneshot::Receiver<ContainerProcess>,
        ready: oneshot::Sender<Result<SystemTime, String>>,
        stop: oneshot::Receiver<Option<i32>>,
        done: oneshot::Sender<Result<Status, String>>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = ready.send(Err(format!("recorder runtime: {err}")));
                return;
            }
        };
        runtime.block_on(async move {
            let ring = match self.config.capture {
                CaptureBackend::Ebpf | CaptureBackend::Auto => Some(self.ring(probe)),
                CaptureBackend::Fanotify | CaptureBackend::Inotify => None,
            };
            let Ok(process) = go.await else {
                return;
            };
            let watching = self.watch(ring, process.cgroup_id);
            // The root as the container's processes see it, mounts included;
            // the descriptor stays valid after they are gone.
            let live_root = PathBuf::from(format!("/proc/{}/root", process.init_pid));
            let root = RootView::open(&live_root)
                .map_err(|e| format!("opening {}: {e}", live_root.display()));
            let started = SystemTime::now();
            let (mut watch, root) = match (watching, root) {
                (Ok(watch), Ok(root)) => (watch, root),
                (Err(err), _) | (_, Err(err)) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            let capture = capture_of(&watch);
            let store = match create_store(&self.info, &self.config, &self.file, started, capture) {
                Ok(store) => store,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            let options = SessionOptions {
                filter: self.filter.clone(),
                max_file_size: self.config.max_file_size,
                debounce: self.config.debounce,
                // Only eBPF reports the exec that starts the workload.
                wait_for_exec: matches!(watch, AnyWatch::Ebpf(_)),
            };
            let session = Session::new(store, root, options);
            let baseline = baseline_scan(&self.config, &self.info.rootfs, self.filter);
            let _ = ready.send(Ok(started));

            let exit_code = Cell::new(None);
            let session = drive(&mut watch, session, baseline, async {
                exit_code.set(stop.await.ok().flatten());
            })
            .await;
            // Unwatching waits for an RCU grace period (8-13 ms measured),
            // and the shim cannot exit while it does: done beside finishing,
            // which the exit containerd reports waits for.
            let unwatch = std::thread::spawn(move || drop(watch));
            let status = session
                .finish(monotonic_now_ns(), exit_code.get())
                .map_err(|e| e.to_string());
            let _ = done.send(status);
            let _ = unwatch.join();
        });
    }

    /// A ring buffer registered with this shim's probe (loaded on first
    /// use, and again if another build retired its programs).
    fn ring(&self, probe: &Mutex<Option<Arc<Probe>>>) -> Result<Ring, String> {
        let ring = || loaded_probe(probe, &self.config).map(|p| p.ring());
        let registered = match ring()? {
            // A pod's shim outlives an upgrade: a newer build's load
            // retires our programs while no container of ours records.
            Err(diffkeeper_probe::Error::Retired(dir)) => {
                tracing::info!(?dir, "probe set retired by another build; loading it again");
                *probe.lock().expect("probe lock") = None;
                ring()?
            }
            registered => registered,
        };
        registered.map_err(|e| format!("registering a ring buffer: {e}"))
    }

    /// The container's capture, as `capture` asks: eBPF on its cgroup
    /// through `ring` (prepared for eBPF and `auto`), or fanotify or
    /// inotify on its root filesystem (the fallback of `auto`).
    fn watch(
        &self,
        ring: Option<Result<Ring, String>>,
        cgroup_id: u64,
    ) -> Result<AnyWatch, String> {
        let ebpf = || {
            ring.expect("a ring is prepared for eBPF capture")?
                .watch(cgroup_id)
                .map(AnyWatch::Ebpf)
                .map_err(|e| format!("watching cgroup {cgroup_id}: {e}"))
        };
        // The host's view of the rootfs: the container's mounts (/proc,
        // volumes) are not in it, so only the rootfs's own file system is
        // watched.
        let rootfs = self.info.rootfs.as_path();
        let everything = [PathBuf::from("/")];
        let on_rootfs = |backend: &'static str| {
            move |e: std::io::Error| format!("{backend} on {}: {e}", rootfs.display())
        };
        match self.config.capture {
            CaptureBackend::Ebpf => ebpf(),
            CaptureBackend::Fanotify => FanotifyWatch::start(rootfs, &everything, &[])
                .map(AnyWatch::Fanotify)
                .map_err(on_rootfs("fanotify")),
            CaptureBackend::Inotify => InotifyWatch::start(rootfs, &everything, &[])
                .map(AnyWatch::Inotify)
                .map_err(on_rootfs("inotify")),
            CaptureBackend::Auto => ebpf().or_else(|err| {
                let fallback = AnyWatch::fallback(rootfs, &everything, &[])
                    .map_err(|fallback| format!("{err}; the fallback (fanotify, then inotify) failed too: {fallback}"))?;
                let backend = capture_of(&fallback).backend;
                tracing::warn!(id = %self.info.id, %err, "eBPF unavailable; recording with {backend} (no exec/exit, writes coalesced)");
                Ok(fallback)
            }),
        }
    }
}

/// Starts the baseline scan of the rootfs the config asks for.
fn baseline_scan(
    config: &Config,
    rootfs: &Path,
    filter: PathFilter,
) -> Option<tokio::sync::mpsc::Receiver<diffkeeper_recorder::BaselineItem>> {
    if config.baseline == BaselineMode::None {
        return None;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    BaselineScan {
        root: rootfs.to_path_buf(),
        subtrees: vec![PathBuf::from("/")],
        filter,
        max_file_size: config.max_file_size,
        max_total_bytes: config.baseline_max_bytes,
        with_content: config.baseline == BaselineMode::Full,
    }
    .spawn(tx);
    Some(rx)
}

/// The probe of this shim process, loaded on first use (a failed load is
/// tried again by the next container).
fn loaded_probe(slot: &Mutex<Option<Arc<Probe>>>, config: &Config) -> Result<Arc<Probe>, String> {
    let mut slot = slot.lock().expect("probe lock");
    if let Some(probe) = slot.as_ref() {
        return Ok(probe.clone());
    }
    let ring_buffer_bytes = u32::try_from(config.ring_buffer_size)
        .map_err(|_| format!("ring-buffer-size {} is over 4 GiB", config.ring_buffer_size))?;
    let probe = Probe::load(ProbeConfig {
        ring_buffer_bytes,
        ..ProbeConfig::default()
    })
    .map(Arc::new)
    .map_err(|e| format!("loading the eBPF probe: {e}"))?;
    *slot = Some(probe.clone());
    Ok(probe)
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(8)]
}
