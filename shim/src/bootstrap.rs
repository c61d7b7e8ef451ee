//! The shim's command line: `start`, `delete`, and serving the task API.
//!
//! containerd-shim 0.12 answers `start` with JSON for task API v3, which
//! containerd 1.6 cannot read (it wants a bare socket address and calls
//! `containerd.task.v2.Task`) and 1.7 rejects. So this bootstrap prints the
//! bare address, and the server registers the same task service under both
//! `containerd.task.v2.Task` and `containerd.task.v3.Task`. Flag parsing,
//! socket addresses, the event publisher and the log FIFO are the crate's.

use std::env;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Flags, Task};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::create_task;
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use containerd_shim_protos::ttrpc::r#async::Server;
use diffkeeper_runtime_config::NodeConfig;

use crate::cgroup::{ContainerCgroup, Layout};
use crate::cri::SANDBOX_ID;
use crate::error::{Error, Result};
use crate::events::RemoteEvents;
use crate::helper::{self, Helper, HELPER_ARG};
use crate::reaper::Reaper;
use crate::recording::{self, FlightRecorder};
use crate::service::{self, TaskService, RUNTIME_DIR};

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";
/// The exit code containerd reports for a task whose shim had to be
/// cleaned up by `delete` (runc's shim uses 128 + SIGKILL).
const KILLED: u32 = 128 + 9;

/// Runs the binary: the helper, or one of containerd's shim actions.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == HELPER_ARG) {
        return helper::helper_main(&args[2..]);
    }
    let outcome = containerd_shim::parse(&args[1..])
        .map_err(|e| Error::InvalidArgument(e.to_string()))
        .and_then(|flags| match flags.action.as_str() {
            _ if flags.version => {
                println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
                Ok(())
            }
            "start" => start(&flags),
            "delete" => delete(&flags),
            _ => serve(&flags),
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("containerd-shim-diffkeeper-v1: {err}");
            ExitCode::FAILURE
        }
    }
}

/// libcontainer's state root for a containerd namespace.
fn libcontainer_root(namespace: &str) -> PathBuf {
    Path::new(RUNTIME_DIR).join("libcontainer").join(namespace)
}

/// `start`: launch (or reuse) the server and print its bare address.
fn start(flags: &Flags) -> Result<()> {
    let cwd = env::current_dir().map_err(|e| Error::sys("current dir", e))?;
    let grouping = sandbox_id(&cwd).unwrap_or_else(|| flags.id.clone());
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &grouping);
    let socket = socket_path(&address);
    let serving = grouping != flags.id && UnixStream::connect(socket).is_ok();
    if !serving {
        let exe = env::current_exe().map_err(|e| Error::sys("locate shim binary", e))?;
        let mut command = Command::new(&exe);
        command
            .current_dir(&cwd)
            .args(["-namespace", &flags.namespace, "-id", &flags.id])
            .args(["-address", &flags.address, "-socket", &address])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Out of containerd's process group: its signals are not ours.
            .process_group(0);
        if flags.debug {
            command.arg("-debug");
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::io("spawn shim server", &exe, e))?;
        // The server closes its stdout once it listens.
        let mut ready = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_end(&mut ready);
        }
    }
    std::fs::write(cwd.join("address"), &address)
        .map_err(|e| Error::io("write", cwd.join("address"), e))?;
    let mut stdout = std::io::stdout();
    stdout
        .write_all(address.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::sys("write address", e))
}

fn sandbox_id(bundle: &Path) -> Option<String> {
    let raw = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    Some(
        spec.pointer(&format!("/annotations/{}", SANDBOX_ID.replace('/', "~1")))?
            .as_str()?
            .to_owned(),
    )
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// `delete`: containerd cleans up after a shim that is gone. This process
/// is single-threaded, so libcontainer may run here directly.
fn delete(flags: &Flags) -> Result<()> {
    let bundle = if flags.bundle.is_empty() {
        env::current_dir().map_err(|e| Error::sys("current dir", e))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    if let Err(err) = helper::delete_state(&libcontainer_root(&flags.namespace), &flags.id) {
        eprintln!("delete {}: {err}", flags.id);
    }
    recording::rescue(
        &NodeConfig::default_path(),
        &flags.namespace,
        &flags.id,
        &bundle,
    );
    let rootfs = bundle.join("rootfs");
    if service::is_mount_point(&rootfs) {
        service::unmount_rootfs(&rootfs);
    }
    if let Ok(layout) = Layout::detect() {
        ContainerCgroup::remove_shim_dir(layout, &flags.namespace, &flags.id);
    }
    let response = containerd_shim::api::DeleteResponse {
        exit_status: KILLED,
        exited_at: Some(SystemTime::now().into()).into(),
        ..Default::default()
    };
    let bytes = response
        .write_to_bytes()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(|e| Error::sys("write delete response", e))
}

/// The server: one per container (or per pod), until `Shutdown`.
fn serve(flags: &Flags) -> Result<()> {
    if flags.socket.is_empty() {
        return Err(Error::InvalidArgument("-socket is required".into()));
    }
    // Orphaned container processes come back to the shim, like runc's.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| Error::sys("become subreaper", e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::sys("start runtime", e))?;
    runtime.block_on(serve_async(flags))
}

async fn serve_async(flags: &Flags) -> Result<()> {
    if let Err(err) =
        containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
    {
        eprintln!("no containerd log: {err}");
    }
    let reaper = Reaper::start()?;
    let ttrpc_address = env::var("TTRPC_ADDRESS")
        .map_err(|_| Error::InvalidArgument("TTRPC_ADDRESS unset".into()))?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(|e| Error::Runtime(format!("connect to containerd events: {e}")))?;
    let exit = Arc::new(ExitSignal::default());
    let log = env::current_dir().ok().map(|dir| dir.join("log"));
    let helper = Helper::new(libcontainer_root(&flags.namespace), log, reaper.clone())?;
    let service = TaskService::new(
        &flags.namespace,
        helper,
        reaper,
        FlightRecorder::new(NodeConfig::default_path()),
        RemoteEvents::new(publisher, flags.namespace.as_str()),
        exit.clone(),
    )?;
    let mut server = Server::new()
        .add_listener(listen(socket_path(&flags.socket))?)
        .register_service(task_services(Arc::new(service)));
    server
        .start()
        .await
        .map_err(|e| Error::Runtime(format!("start ttrpc server: {e}")))?;
    // Tell `start` we listen: our stdout is its pipe; replace it.
    rustix::stdio::dup2_stdout(std::io::stderr()).map_err(|e| Error::sys("close stdout", e))?;
    tracing::info!(socket = %flags.socket, "shim serving");
    exit.wait().await;
    tracing::info!("shim shutting down");
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    // Fails while other shims of the namespace still have containers.
    let _ = std::fs::remove_dir(libcontainer_root(&flags.namespace));
    Ok(())
}

/// The task service under both API names containerd may call.
fn task_services(
    task: Arc<dyn Task + Send + Sync>,
) -> std::collections::HashMap<String, containerd_shim_protos::ttrpc::r#async::Service> {
    let mut services = create_task(task.clone());
    if let Some(v2) = create_task(task).remove(TASK_V3) {
        services.insert(TASK_V2.to_owned(), v2);
    }
    services
}

fn listen(path: &str) -> Result<Listener> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    // A socket nobody answers on is left over from a dead shim.
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::io("listen on", path, e))?;
    Listener::try_from(listener).map_err(|e| Error::io("listen on", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_both_task_api_versions() {
        struct Nothing;
        #[async_trait::async_trait]
        impl Task for Nothing {}
        let services = task_services(Arc::new(Nothing));
        assert!(services.contains_key(TASK_V2));
        assert!(services.contains_key(TASK_V3));
    }

    #[test]
    fn groups_pod_containers_by_sandbox_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(sandbox_id(dir.path()).as_deref(), Some("pod1"));
        assert_eq!(sandbox_id(Path::new("/nonexistent")), None);
    }
}
