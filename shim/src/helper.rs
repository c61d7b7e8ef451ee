//! The single-threaded helper process that drives libcontainer.
//!
//! libcontainer clones and changes process-wide state (cwd, dumpable,
//! `oom_score_adj`, signal handling), which must never happen inside the
//! shim's multi-threaded tokio runtime. So every libcontainer call runs in a
//! short-lived helper: the shim re-executes its own binary as
//! `containerd-shim-diffkeeper-v1 helper <command> ...`, with the process's
//! stdio as the helper's fds 0-2 (inherited by the container) and a result
//! pipe as fd 3, like runc's `create`/`start`/`exec` subcommands.
//! Containers are built `as_sibling`, so their processes are children of the
//! shim, which reaps them.
//!
//! The reply on fd 3 is one line: `ok <value>` or `error <message>`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use containerd_shim::logger::FifoLogger;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use rustix::pipe::{pipe_with, PipeFlags};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Error, Result};
use crate::reaper::Reaper;

/// First argument that turns the shim binary into the helper.
pub(crate) const HELPER_ARG: &str = "helper";
/// The helper's fd carrying its reply.
const RESULT_FD: i32 = 3;
/// How long a reply may take to be readable once the helper has exited.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A filesystem containerd asks to mount as the container's rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootfsMount {
    pub fs_type: String,
    pub source: String,
    pub options: Vec<String>,
}

/// The three stdio fds a container process gets.
#[derive(Debug)]
pub(crate) struct ProcessFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Starts helpers from the shim and collects their replies.
#[derive(Clone)]
pub(crate) struct Helper {
    exe: PathBuf,
    /// libcontainer's state root for this shim's containers.
    root: PathBuf,
    /// containerd's log FIFO of this shim, if any: the helper logs there.
    log: Option<PathBuf>,
    reaper: Reaper,
}

impl Helper {
    pub(crate) fn new(root: PathBuf, log: Option<PathBuf>, reaper: Reaper) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| Error::sys("locate shim binary", e))?;
        Ok(Self {
            exe,
            root,
            log,
            reaper,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Mounts the rootfs and builds the container; returns the init pid.
    /// The init process is left blocked before `exec`.
    pub(crate) async fn create(
        &self,
        id: &str,
        bundle: &Path,
        mounts: &[RootfsMount],
        console_socket: Option<&Path>,
        fds: ProcessFds,
    ) -> Result<i32> {
        let mut args = self.base_args("create", id);
        args.push("--bundle".into());
        args.push(bundle.into());
        push_console(&mut args, console_socket);
        for mount in mounts {
            args.push("--mount".into());
            args.push(mount.fs_type.clone().into());
            args.push(mount.source.clone().into());
            args.push(mount.options.join(",").into());
        }
        parse_pid(&self.run(args, Some(fds)).await?)
    }

    /// Lets the init process `exec` the workload.
    pub(crate) async fn start(&self, id: &str) -> Result<()> {
        self.run(self.base_args("start", id), None).await.map(drop)
    }

    /// Starts the process described by `process` (an OCI process JSON file)
    /// in the container; returns its pid. With `cgroup_procs`, the helper
    /// joins that cgroup first so the process is born in it.
    pub(crate) async fn exec(
        &self,
        id: &str,
        process: &Path,
        console_socket: Option<&Path>,
        cgroup_procs: Option<&Path>,
        fds: ProcessFds,
    ) -> Result<i32> {
        let mut args = self.base_args("exec", id);
        args.push("--process".into());
        args.push(process.into());
        push_console(&mut args, console_socket);
        if let Some(procs) = cgroup_procs {
            args.push("--cgroup-procs".into());
            args.push(procs.into());
        }
        parse_pid(&self.run(args, Some(fds)).await?)
    }

    /// Deletes libcontainer's state for the container (killing what is left).
    pub(crate) async fn delete(&self, id: &str) -> Result<()> {
        self.run(self.base_args("delete", id), None).await.map(drop)
    }

    fn base_args(&self, command: &str, id: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            HELPER_ARG.into(),
            command.into(),
            "--root".into(),
            self.root.clone().into(),
            "--id".into(),
            id.into(),
        ];
        if let Some(log) = &self.log {
            args.push("--log".into());
            args.push(log.into());
        }
        args
    }

    async fn run(&self, args: Vec<OsString>, fds: Option<ProcessFds>) -> Result<String> {
        let (reader, writer) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::sys("create result pipe", e))?;
        let mut command = Command::new(&self.exe);
        command.args(&args).env_remove("RUST_BACKTRACE");
        match fds {
            Some(fds) => command
                .stdin(Stdio::from(fds.stdin))
                .stdout(Stdio::from(fds.stdout))
                .stderr(Stdio::from(fds.stderr)),
            None => command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        };
        let raw_writer = writer.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls dup2, which is async-signal-safe; `raw_writer` stays open in
        // the parent until spawn returns. dup2 clears FD_CLOEXEC on fd 3.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(raw_writer, RESULT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| Error::io("spawn helper", &self.exe, e))?;
        drop(writer);
        let exited = self.reaper.subscribe(child.id() as i32);
        // The container's init inherits the pipe and holds it until its
        // exec, so EOF cannot mark the end of the reply: the helper's exit
        // does, and by then its one-line reply sits in the pipe buffer.
        let code = exited.await.unwrap_or(u32::MAX);
        let mut reply = String::new();
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)
            .map_err(|e| Error::sys("read helper reply", e))?;
        let mut reader = BufReader::new(reader);
        let read = reader.read_line(&mut reply);
        if let Ok(Err(err)) = tokio::time::timeout(REPLY_TIMEOUT, read).await {
            return Err(Error::sys("read helper reply", err));
        }
        match reply.split_once(' ') {
            Some(("ok", value)) => Ok(value.trim_end().to_owned()),
            Some(("error", message)) => Err(Error::Runtime(message.trim_end().to_owned())),
            _ => Err(Error::Runtime(format!(
                "helper {:?} exited with {code} without a reply",
                args.get(1)
            ))),
        }
    }
}

fn push_console(args: &mut Vec<OsString>, console_socket: Option<&Path>) {
    if let Some(socket) = console_socket {
        args.push("--console-socket".into());
        args.push(socket.into());
    }
}

fn parse_pid(value: &str) -> Result<i32> {
    value
        .parse()
        .map_err(|_| Error::Runtime(format!("helper replied with a bad pid {value:?}")))
}

/// Arguments of one helper invocation.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    command: String,
    root: PathBuf,
    id: String,
    bundle: Option<PathBuf>,
    console_socket: Option<PathBuf>,
    process: Option<PathBuf>,
    cgroup_procs: Option<PathBuf>,
    log: Option<PathBuf>,
    mounts: Vec<RootfsMount>,
}

impl Request {
    fn parse(args: &[OsString]) -> std::result::Result<Self, String> {
        let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
        let mut request = Request {
            command: args.next().ok_or("missing helper command")?,
            ..Default::default()
        };
        let value = |args: &mut dyn Iterator<Item = String>, flag: &str| {
            args.next().ok_or(format!("{flag} needs a value"))
        };
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--root" => request.root = value(&mut args, &flag)?.into(),
                "--id" => request.id = value(&mut args, &flag)?,
                "--bundle" => request.bundle = Some(value(&mut args, &flag)?.into()),
                "--console-socket" => {
                    request.console_socket = Some(value(&mut args, &flag)?.into())
                }
                "--process" => request.process = Some(value(&mut args, &flag)?.into()),
                "--cgroup-procs" => request.cgroup_procs = Some(value(&mut args, &flag)?.into()),
                "--log" => request.log = Some(value(&mut args, &flag)?.into()),
                "--mount" => {
                    let fs_type = value(&mut args, &flag)?;
                    let source = value(&mut args, &flag)?;
                    let options = value(&mut args, &flag)?;
                    request.mounts.push(RootfsMount {
                        fs_type,
                        source,
                        options: options
                            .split(',')
                            .filter(|o| !o.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    });
                }
                other => return Err(format!("unknown helper flag {other}")),
            }
        }
        Ok(request)
    }
}

/// Entry point of the helper process (`args` after the `helper` word).
pub(crate) fn helper_main(args: &[OsString]) -> ExitCode {
    // SAFETY: the shim dup2'ed the result pipe onto fd 3 before exec and
    // nothing else in this fresh process owns that fd.
    let mut reply = unsafe { File::from_raw_fd(RESULT_FD) };
    let outcome = Request::parse(args).and_then(|request| {
        init_logging(request.log.as_deref());
        run_request(&request).map_err(|err| {
            tracing::error!(command = %request.command, id = %request.id, %err, "helper failed");
            err
        })
    });
    let (line, code) = match outcome {
        Ok(value) => (format!("ok {value}\n"), ExitCode::SUCCESS),
        Err(message) => (format!("error {message}\n"), ExitCode::FAILURE),
    };
    // The shim treats a missing reply as a failure; nothing more to do here.
    let _ = reply.write_all(line.as_bytes());
    code
}

/// Sends libcontainer's `tracing` events (bridged to `log`) to containerd's
/// log FIFO, without ever blocking on it.
fn init_logging(log: Option<&Path>) {
    let Some(path) = log else { return };
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return;
    };
    if log::set_boxed_logger(Box::new(FifoLogger::with_file(file))).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn run_request(request: &Request) -> std::result::Result<String, String> {
    let builder = || {
        ContainerBuilder::new(request.id.clone(), SyscallType::default())
            .with_root_path(&request.root)
            .map(|b| b.with_console_socket(request.console_socket.as_ref()))
            .map_err(|e| e.to_string())
    };
    match request.command.as_str() {
        "create" => {
            let bundle = request.bundle.as_ref().ok_or("create needs --bundle")?;
            let rootfs = bundle.join("rootfs");
            for mount in &request.mounts {
                containerd_shim::mount::mount_rootfs(
                    Some(mount.fs_type.as_str()).filter(|t| !t.is_empty()),
                    Some(mount.source.as_str()).filter(|s| !s.is_empty()),
                    &mount.options,
                    &rootfs,
                )
                .map_err(|e| format!("mount {} at {}: {e}", mount.fs_type, rootfs.display()))?;
            }
            let container = builder()?
                .as_init(bundle)
                .with_systemd(false)
                .with_detach(true)
                .as_sibling(true)
                .build()
                .map_err(|e| e.to_string())?;
            let pid = container.pid().ok_or("container has no init pid")?;
            Ok(pid.as_raw().to_string())
        }
        "start" => {
            let mut container = load(request)?;
            container.start().map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        "exec" => {
            if let Some(procs) = &request.cgroup_procs {
                std::fs::write(procs, std::process::id().to_string())
                    .map_err(|e| format!("join {}: {e}", procs.display()))?;
            }
            let pid = builder()?
                .as_tenant()
                .with_process(request.process.as_ref())
                .with_detach(true)
                .as_sibling(true)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(pid.as_raw().to_string())
        }
        "delete" => delete_state(&request.root, &request.id).map(|()| String::new()),
        other => Err(format!("unknown helper command {other}")),
    }
}

/// Deletes libcontainer's state for `id` (killing what is left of it).
/// Must run in a single-threaded process: the helper, or the shim's
/// `delete` action before any runtime exists.
pub(crate) fn delete_state(root: &Path, id: &str) -> std::result::Result<(), String> {
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    match Container::load(dir.clone()) {
        Ok(mut container) => container.delete(true).map_err(|e| e.to_string()),
        // A create that failed half-way leaves no state to load.
        Err(_) => {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))
        }
    }
}

fn load(request: &Request) -> std::result::Result<Container, String> {
    Container::load(request.root.join(&request.id)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_a_create_request() {
        let request = Request::parse(&os(&[
            "create",
            "--root",
            "/run/dk",
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--mount",
            "overlay",
            "overlay",
            "lowerdir=/a:/b,upperdir=/u,workdir=/w",
        ]))
        .unwrap();
        assert_eq!(request.command, "create");
        assert_eq!(request.root, Path::new("/run/dk"));
        assert_eq!(request.bundle.as_deref(), Some(Path::new("/b")));
        assert_eq!(
            request.mounts,
            vec![RootfsMount {
                fs_type: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "lowerdir=/a:/b".into(),
                    "upperdir=/u".into(),
                    "workdir=/w".into()
                ],
            }]
        );
    }

    #[test]
    fn rejects_unknown_flags_and_missing_values() {
        assert!(Request::parse(&os(&["start", "--bogus", "x"])).is_err());
        assert!(Request::parse(&os(&["start", "--id"])).is_err());
        assert!(Request::parse(&os(&[])).is_err());
    }
}
