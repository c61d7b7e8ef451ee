//! containerd's log URIs for a process's stdout and stderr, as `ctr run
//! --log-uri` and nerdctl use them (containerd's `pkg/process/io.go` is the
//! reference behaviour):
//!
//! - `file:///abs/path`: both streams are appended to that file;
//! - `binary:///abs/program?k=v&k2`: the program is started with the args
//!   `k v k2`, env `CONTAINER_ID` and `CONTAINER_NAMESPACE`, the read ends
//!   of the stdout and stderr pipes as fds 3 and 4, and fd 5 to close (or
//!   write to) once it is ready; the process starts after that.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::pipe::{pipe_with, PipeFlags};

use crate::error::{Error, Result};

/// containerd gives a logging binary this long to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where output goes when the URI names a log driver.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogDriver {
    File(PathBuf),
    Binary { program: PathBuf, args: Vec<String> },
}

impl LogDriver {
    /// Parses `uri`; `None` for a plain FIFO path (or nothing).
    pub(crate) fn parse(field: &str, uri: &str) -> Result<Option<LogDriver>> {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Ok(None);
        };
        let invalid = |why: &str| Error::InvalidArgument(format!("{field} URI {uri:?}: {why}"));
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = PathBuf::from(percent_decode(path));
        if !path.is_absolute() {
            return Err(invalid("the path must be absolute"));
        }
        match scheme {
            "file" => Ok(Some(LogDriver::File(path))),
            "binary" => {
                let mut args = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    args.push(percent_decode(key));
                    if !value.is_empty() {
                        args.push(percent_decode(value));
                    }
                }
                Ok(Some(LogDriver::Binary {
                    program: path,
                    args,
                }))
            }
            other => Err(invalid(&format!(
                "scheme `{other}://` is not supported; use a FIFO path, file:// or binary://"
            ))),
        }
    }

    /// Opens the driver and returns the stdout and stderr fds to give the
    /// process.
    pub(crate) fn open(&self, id: &str, namespace: &str) -> Result<(OwnedFd, OwnedFd)> {
        match self {
            LogDriver::File(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
                }
                let file = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| Error::io("open log file", path, e))?;
                let out = OwnedFd::from(file);
                let err = out
                    .try_clone()
                    .map_err(|e| Error::io("dup log file", path, e))?;
                Ok((out, err))
            }
            LogDriver::Binary { program, args } => start_logger(program, args, id, namespace),
        }
    }
}

fn start_logger(
    program: &PathBuf,
    args: &[String],
    id: &str,
    namespace: &str,
) -> Result<(OwnedFd, OwnedFd)> {
    let pipe = || pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::sys("create log pipe", e));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let sources = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    // SAFETY: runs in the forked child before exec and only calls fcntl and
    // dup2, which are async-signal-safe; the source fds stay open in the
    // parent until spawn returns. Sources are first moved above 10 so that
    // placing one on 3, 4 or 5 cannot overwrite another, and dup2 clears
    // FD_CLOEXEC on the targets.
    unsafe {
        command.pre_exec(move || {
            let mut high = [0; 3];
            for (slot, fd) in high.iter_mut().zip(sources) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, fd) in (3..).zip(high) {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| Error::io("start logging binary", program, e))?;
    // The shim's reaper collects the logger when it exits; keep only our
    // write ends, so the logger sees EOF once the process is gone.
    drop((out_r, err_r, ready_w));
    wait_ready(ready_r, program)?;
    Ok((out_w, err_w))
}

/// Waits until the logger closes (or writes to) its readiness fd.
fn wait_ready(ready: OwnedFd, program: &Path) -> Result<()> {
    let mut fds = [PollFd::new(&ready, PollFlags::IN)];
    let timeout = rustix::time::Timespec {
        tv_sec: READY_TIMEOUT.as_secs() as i64,
        tv_nsec: 0,
    };
    let ready_now =
        poll(&mut fds, Some(&timeout)).map_err(|e| Error::sys("wait for logging binary", e))?;
    if ready_now == 0 {
        return Err(Error::Runtime(format!(
            "logging binary {} did not signal readiness (close fd 5) within {}s",
            program.display(),
            READY_TIMEOUT.as_secs()
        )));
    }
    let mut byte = [0u8; 1];
    let _ = std::fs::File::from(ready).read(&mut byte);
    Ok(())
}

/// `%XX` escapes, as URL query values carry them.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_uris_like_containerd() {
        assert_eq!(LogDriver::parse("stdout", "/run/fifo").unwrap(), None);
        assert_eq!(
            LogDriver::parse("stdout", "file:///var/log/c.log").unwrap(),
            Some(LogDriver::File("/var/log/c.log".into()))
        );
        assert_eq!(
            LogDriver::parse("stdout", "binary:///usr/bin/logger?_LOG=/a%20b&flag").unwrap(),
            Some(LogDriver::Binary {
                program: "/usr/bin/logger".into(),
                args: vec!["_LOG".into(), "/a b".into(), "flag".into()],
            })
        );
        let err = LogDriver::parse("stderr", "syslog://x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stderr") && err.contains("syslog://"), "{err}");
        assert!(LogDriver::parse("stdout", "file://relative").is_err());
    }

    #[test]
    fn a_binary_logger_gets_both_streams_and_the_container_identity() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("logger.sh");
        let out = dir.path().join("out");
        std::fs::write(
            &script,
            "#!/bin/sh\nexec 5>&-\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID $1\" > \"$2.id\"\ncat <&3 > \"$2\" & cat <&4 > \"$2.err\"; wait\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let uri = format!("binary://{}?out={}", script.display(), out.display());
        let driver = LogDriver::parse("stdout", &uri).unwrap().unwrap();
        let (stdout, stderr) = driver.open("web-1", "default").unwrap();
        std::fs::File::from(stdout)
            .write_all(b"to stdout\n")
            .unwrap();
        std::fs::File::from(stderr)
            .write_all(b"to stderr\n")
            .unwrap();
        // Both write ends are closed: the logger drains and exits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let done = std::fs::read_to_string(&out).is_ok_and(|s| !s.is_empty())
                && std::fs::read_to_string(out.with_extension("err")).is_ok_and(|s| !s.is_empty());
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "to stdout\n");
        assert_eq!(
            std::fs::read_to_string(out.with_extension("err")).unwrap(),
            "to stderr\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.with_extension("id")).unwrap(),
            "default/web-1 out\n"
        );
    }
}
