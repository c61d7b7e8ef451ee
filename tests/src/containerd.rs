//! A private containerd 1.6 for one test, torn down by `Drop`.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binaries::{cli_binary, shim_binary};
use crate::bounded::{self, read_all, Hung, Running};
use crate::cri::{self, Cri, Setup};
use crate::image::busybox_rootfs;
use crate::image::OciImage;
use crate::leaks;

/// The busybox image [`Containerd::import_test_image`] imports.
pub const TEST_IMAGE: &str = "docker.io/diffkeeper/busybox:e2e";

/// Output of a `ctr` invocation.
#[derive(Debug, Clone)]
pub struct CtrOutput {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtrOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the output unless the command succeeded.
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(self.success(), "{what} failed: {self:?}");
        self
    }
}

/// A running private containerd with its own root, state, sockets and
/// namespace, our shim on its `PATH`, and a busybox rootfs.
pub struct Containerd {
    child: Child,
    /// The gRPC socket (`ctr -a`).
    pub address: PathBuf,
    /// The namespace tests use; unique per instance.
    pub namespace: String,
    /// A busybox-static rootfs for `ctr run --rootfs`.
    pub rootfs: PathBuf,
    /// The directory holding everything of this instance.
    pub dir: PathBuf,
    /// The node config file the shim reads (`DIFFKEEPER_CONFIG`).
    pub node_config: PathBuf,
    /// The recordings root that config names.
    pub recordings: PathBuf,
    path_env: String,
    _dir: TempDir,
}

impl Containerd {
    /// Starts containerd (CRI plugin disabled) and waits until it answers.
    pub fn start() -> Result<Self, String> {
        Self::launch(None, None)
    }

    /// [`Containerd::start`] with containerd's state directory (bundles,
    /// and in them the live recordings) at `state` instead of beside the
    /// rest: on a tmpfs, as `/run/containerd` is on a typical node.
    pub fn start_with_state_in(state: &Path) -> Result<Self, String> {
        Self::launch(None, Some(state))
    }

    /// Starts containerd with its CRI plugin (see [`crate::cri`]): the
    /// handlers `runc` and `diffkeeper` (written by the node installer),
    /// host-network pods only, namespace `k8s.io`.
    pub fn start_cri() -> Result<(Self, Cri), String> {
        let containerd = Self::launch(Some(Setup), None)?;
        let cri = Cri::connect(&containerd.address)?;
        Setup.import_images(&containerd, &cri)?;
        Ok((containerd, cri))
    }

    fn launch(cri: Option<Setup>, state: Option<&Path>) -> Result<Self, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let shim = shim_binary()?;
        let tmp = tempfile::Builder::new()
            .prefix("dk-e2e-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
        // With CRI, the node installer puts it there.
        if cri.is_none() {
            symlink(&shim, bin.join("containerd-shim-diffkeeper-v1")).map_err(|e| e.to_string())?;
        }
        let address = dir.join("containerd.sock");
        let mut config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = {disabled}
# Debug: containerd then starts shims with -debug, and a failing test's
# output (`log()`) shows what the shim did.
[debug]
  level = "debug"
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = dir.join("root").display(),
            state = state
                .map_or_else(|| dir.join("state"), Path::to_path_buf)
                .display(),
            address = address.display(),
            opt = dir.join("opt").display(),
            disabled = if cri.is_some() {
                "[]"
            } else {
                r#"["io.containerd.grpc.v1.cri"]"#
            },
        );
        if let Some(setup) = &cri {
            config.push_str(&setup.plugin_config(&dir));
        }
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).map_err(|e| e.to_string())?;
        if let Some(setup) = &cri {
            setup.install_runtime(&config_path, &bin)?;
        }
        let recordings = dir.join("recordings");
        let node_config = dir.join("diffkeeper.toml");
        fs::write(
            &node_config,
            format!("recordings-root = {:?}\n", recordings.display().to_string()),
        )
        .map_err(|e| e.to_string())?;
        let rootfs = dir.join("rootfs");
        busybox_rootfs(&rootfs).map_err(|e| format!("busybox rootfs: {e}"))?;
        let path_env = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let log = fs::File::create(dir.join("containerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", &path_env)
            .env(diffkeeper_runtime_config::CONFIG_ENV, &node_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn containerd: {e}"))?;
        let containerd = Self {
            child,
            address,
            namespace: if cri.is_some() {
                cri::NAMESPACE.to_owned()
            } else {
                format!(
                    "dk{}-{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                )
            },
            rootfs,
            dir,
            node_config,
            recordings,
            path_env,
            _dir: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr(&["version"]).success() {
            if Instant::now() > deadline {
                return Err(format!("containerd did not start: {}", containerd.log()));
            }
            sleep(Duration::from_millis(100));
        }
        Ok(containerd)
    }

    /// A `ctr` command without a time limit (`ctr events`): the caller
    /// kills it.
    pub fn ctr_unbounded(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        self.ctr_args(&mut command, args);
        command
    }

    /// This containerd's address and namespace, then `args`.
    fn ctr_args(&self, command: &mut Command, args: &[&str]) {
        command
            .arg("-a")
            .arg(&self.address)
            .args(["-n", &self.namespace])
            .args(args)
            .env("PATH", &self.path_env)
            .stdin(Stdio::null());
    }

    /// Runs `ctr` with `args` and collects its output; a call that hangs
    /// is reported and killed (see [`crate::bounded`]).
    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        let spawned = self
            .ctr_unbounded(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map(|mut child| Running {
                stdout: read_all(child.stdout.take().expect("piped stdout")),
                stderr: Some(read_all(child.stderr.take().expect("piped stderr"))),
                child,
            });
        self.finish(spawned)
    }

    /// Runs `ctr` with `args` on a pseudo-terminal of its own (stdin,
    /// stdout and stderr, and its controlling terminal), as from a user's
    /// shell; `stdout` holds what the terminal showed.
    pub fn ctr_with_tty(&self, args: &[&str]) -> CtrOutput {
        let spawned = open_pty().and_then(|(master, terminal)| {
            let mut command = self.ctr_unbounded(args);
            command
                .stdin(terminal.try_clone()?)
                .stdout(terminal.try_clone()?)
                .stderr(terminal);
            // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the
            // terminal set up above.
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn()?;
            // `command` (dropped here) held the last terminal fds of ours, so
            // the master reads EIO once ctr is gone.
            drop(command);
            Ok(Running {
                child,
                stdout: read_all(fs::File::from(master)),
                stderr: None,
            })
        });
        self.finish(spawned)
    }

    fn finish(&self, spawned: std::io::Result<Running>) -> CtrOutput {
        match spawned {
            Ok(running) => bounded::finish(
                running,
                &Hung {
                    pid: self.child.id(),
                    address: &self.address,
                    log: &self.log_path(),
                },
            ),
            Err(err) => CtrOutput {
                code: None,
                stdout: String::new(),
                stderr: format!("spawn ctr: {err}"),
            },
        }
    }

    /// Builds the test image from the busybox rootfs (see [`OciImage`])
    /// and imports it as `docker.io/diffkeeper/busybox:e2e`.
    pub fn import_test_image(&self) -> OciImage {
        self.import_image(TEST_IMAGE, &[])
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Builds an image `reference` from the busybox rootfs with
    /// `entrypoint` (none: `/bin/sh`) and imports it.
    pub fn import_image(&self, reference: &str, entrypoint: &[&str]) -> Result<OciImage, String> {
        let work = self
            .dir
            .join("images")
            .join(reference.replace(['/', ':'], "_"));
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let image = OciImage::build(&self.rootfs, &work, reference, entrypoint)
            .map_err(|e| format!("build {reference}: {e}"))?;
        let archive = image.archive.to_string_lossy().into_owned();
        let out = self.ctr(&["images", "import", &archive]);
        if !out.success() {
            return Err(format!("import {reference}: {out:?}"));
        }
        Ok(image)
    }

    /// `ctr run -d --runtime RUNTIME --rootfs <busybox> ID ARGS...`, which
    /// must succeed.
    pub fn run_detached(&self, runtime: &str, id: &str, args: &[&str]) {
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        let mut all = vec!["run", "-d", "--runtime", runtime, "--rootfs", &rootfs, id];
        all.extend_from_slice(args);
        self.ctr(&all).expect_ok("ctr run -d");
    }

    /// `ctr run --rm --runtime RUNTIME --rootfs <busybox> ID ARGS...`.
    pub fn run_rootfs(&self, runtime: &str, id: &str, args: &[&str]) -> CtrOutput {
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        let mut all = vec!["run", "--rm", "--runtime", runtime, "--rootfs", &rootfs, id];
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    /// Task ids with their pid and status, from `ctr task ls`.
    pub fn tasks(&self) -> Vec<(String, i32, String)> {
        self.ctr(&["task", "ls"])
            .stdout
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let id = fields.next()?.to_owned();
                let pid = fields.next()?.parse().ok()?;
                Some((id, pid, fields.next()?.to_owned()))
            })
            .collect()
    }

    /// Waits until task `id` has `status` (e.g. `RUNNING`).
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> bool {
        self.poll_status(id, status, timeout, Duration::from_millis(50))
    }

    /// [`Containerd::wait_status`], asking every `interval` (each asking
    /// runs `ctr`, which costs CPU a benchmark's workload would share).
    pub fn poll_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
        interval: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.tasks().iter().any(|(t, _, s)| t == id && s == status) {
                return true;
            }
            sleep(interval);
        }
        false
    }

    /// Kills, deletes and removes container `id` (task and metadata).
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-a", "-s", "KILL", id]);
        self.wait_status(id, "STOPPED", Duration::from_secs(10));
        let _ = self.ctr(&["task", "rm", "-f", id]);
        let _ = self.ctr(&["container", "rm", id]);
    }

    /// Runs the `diffkeeper` CLI with this instance's node config (so its
    /// recordings root).
    pub fn diffkeeper(&self, args: &[&str]) -> CtrOutput {
        self.diffkeeper_in(Path::new("."), args)
    }

    /// [`Containerd::diffkeeper`] in directory `dir` (relative paths in
    /// `args` are below it).
    pub fn diffkeeper_in(&self, dir: &Path, args: &[&str]) -> CtrOutput {
        let out = cli_binary().and_then(|cli| {
            Command::new(&cli)
                .env(diffkeeper_runtime_config::CONFIG_ENV, &self.node_config)
                .current_dir(dir)
                .args(args)
                .output()
                .map_err(|e| format!("run {}: {e}", cli.display()))
        });
        match out {
            Ok(out) => CtrOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(err) => CtrOutput {
                code: None,
                stdout: String::new(),
                stderr: err,
            },
        }
    }

    /// containerd's log so far (shim logs included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// Whether containerd still answers.
    pub fn healthy(&self) -> bool {
        self.ctr(&["version"]).success()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for (id, _, _) in self.tasks() {
            self.remove(&id);
        }
        for line in self.ctr(&["container", "ls", "-q"]).stdout.lines() {
            let _ = self.ctr(&["container", "rm", line.trim()]);
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, not yet reaped, so it cannot have been reused.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for shim in leaks::shims_of(&self.address) {
            // SAFETY: as above; a shim of this instance, found by its
            // command line a moment ago.
            unsafe { libc::kill(shim.pid, libc::SIGKILL) };
            if let Some(socket) = &shim.socket {
                let _ = fs::remove_file(socket);
            }
        }
        for mount in leaks::mounts_under(&self.dir).into_iter().rev() {
            let _ = Command::new("umount").args(["-l"]).arg(&mount).status();
        }
        // runc's shim leaves its (empty) per-namespace state directory.
        let _ = fs::remove_dir(PathBuf::from("/run/containerd/runc").join(&self.namespace));
    }
}

/// A new pseudo-terminal: (master, terminal).
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut terminal) = (-1, -1);
    // SAFETY: openpty writes two fds into the locals; name, termios and
    // winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just opened and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(terminal)) })
}
