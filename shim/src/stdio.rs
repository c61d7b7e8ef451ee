//! A process's stdio: containerd's FIFOs, or a pseudo-terminal.
//!
//! Without a terminal, stdout and stderr FIFOs are handed to the process
//! directly (opened read-write so the open never blocks; runc's shim
//! copies through pipes instead, which costs a copy per byte). stdin goes
//! through a pipe the shim feeds, because only the shim knows when
//! containerd closes it (`CloseIO`). With a terminal, libcontainer sends
//! the pty master over a console socket and the shim copies between the
//! master and the FIFOs; `ResizePty` sets the master's window size.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::termios::{tcsetwinsize, Winsize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::helper::ProcessFds;
use crate::logging::LogDriver;

/// How long stdin may stay quiet after `CloseIO` before it is closed.
const STDIN_DRAIN: Duration = Duration::from_millis(50);
/// How long libcontainer gets to send the pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The stdio containerd asks for (FIFO paths; empty means none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StdioRequest {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Stdio being set up: the fds for the helper, and what the shim keeps.
pub(crate) struct PendingIo {
    request: StdioRequest,
    stdin_writer: Option<OwnedFd>,
    console: Option<ConsoleSocket>,
}

/// A listening console socket; removed when dropped.
struct ConsoleSocket {
    path: PathBuf,
    accept: JoinHandle<Result<OwnedFd>>,
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl PendingIo {
    /// Prepares stdio for a process. With a terminal, listens on
    /// `console_path` for the pty master.
    /// `id` and `namespace` name the container to a logging binary.
    pub(crate) fn prepare(
        request: &StdioRequest,
        console_path: PathBuf,
        id: &str,
        namespace: &str,
    ) -> Result<(Self, ProcessFds)> {
        if let Some((scheme, _)) = request.stdin.split_once("://") {
            return Err(Error::InvalidArgument(format!(
                "stdin URI scheme `{scheme}://` is not supported; stdin must be a FIFO path"
            )));
        }
        // containerd sends both streams through stdout's log driver.
        let driver = LogDriver::parse("stdout", &request.stdout)?;
        let stderr_driver = LogDriver::parse("stderr", &request.stderr)?;
        if stderr_driver.is_some() && stderr_driver != driver {
            return Err(Error::InvalidArgument(
                "stderr names a log driver different from stdout's; use the same URI for both"
                    .into(),
            ));
        }
        if request.terminal && driver.is_some() {
            return Err(Error::InvalidArgument(
                "a log URI (file://, binary://) cannot be combined with a terminal".into(),
            ));
        }
        let mut pending = PendingIo {
            request: request.clone(),
            stdin_writer: None,
            console: None,
        };
        if request.terminal {
            if let Some(dir) = console_path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            }
            let _ = std::fs::remove_file(&console_path);
            let listener = UnixListener::bind(&console_path)
                .map_err(|e| Error::io("listen on console socket", &console_path, e))?;
            pending.console = Some(ConsoleSocket {
                path: console_path,
                accept: tokio::spawn(receive_master(listener)),
            });
            let fds = ProcessFds {
                stdin: dev_null(false)?,
                stdout: dev_null(true)?,
                stderr: dev_null(true)?,
            };
            return Ok((pending, fds));
        }
        let stdin = if request.stdin.is_empty() {
            dev_null(false)?
        } else {
            let (reader, writer) =
                pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::sys("create stdin pipe", e))?;
            pending.stdin_writer = Some(writer);
            reader
        };
        let (stdout, stderr) = match driver {
            Some(driver) => driver.open(id, namespace)?,
            None => (open_output(&request.stdout)?, open_output(&request.stderr)?),
        };
        let fds = ProcessFds {
            stdin,
            stdout,
            stderr,
        };
        Ok((pending, fds))
    }

    /// The console socket libcontainer should connect to, if any.
    pub(crate) fn console_socket(&self) -> Option<&Path> {
        self.console.as_ref().map(|c| c.path.as_path())
    }

    /// Once the process exists: starts copying and returns the handle the
    /// shim keeps for `CloseIO` and `ResizePty`.
    pub(crate) async fn finish(mut self) -> Result<ProcessIo> {
        let (close_tx, close_rx) = oneshot::channel();
        let mut io = ProcessIo {
            close_stdin: Mutex::new(Some(close_tx)),
            console: None,
            stdin_copier: None,
            output_copier: None,
        };
        if let Some(mut console) = self.console.take() {
            let master = (&mut console.accept)
                .await
                .map_err(|e| Error::Runtime(format!("console socket: {e}")))??;
            rustix::io::ioctl_fionbio(&master, true)
                .map_err(|e| Error::sys("make pty master non-blocking", e))?;
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(|e| Error::sys("duplicate pty master", e))
            };
            let to_master = pipe::Sender::from_owned_fd_unchecked(dup(&master)?)
                .map_err(|e| Error::sys("register pty master", e))?;
            let from_master = pipe::Receiver::from_owned_fd_unchecked(dup(&master)?)
                .map_err(|e| Error::sys("register pty master", e))?;
            if !self.request.stdin.is_empty() {
                let fifo = open_input_fifo(&self.request.stdin)?;
                io.stdin_copier = Some(tokio::spawn(copy_stdin(fifo, to_master, close_rx)));
            }
            if !self.request.stdout.is_empty() {
                let out = pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&self.request.stdout)
                    .map_err(|e| Error::io("open stdout", &self.request.stdout, e))?;
                io.output_copier = Some(tokio::spawn(copy_output(from_master, out)));
            }
            io.console = Some(master);
        } else if let Some(writer) = self.stdin_writer.take() {
            let fifo = open_input_fifo(&self.request.stdin)?;
            let to_process = pipe::Sender::from_owned_fd(writer)
                .map_err(|e| Error::sys("register stdin pipe", e))?;
            io.stdin_copier = Some(tokio::spawn(copy_stdin(fifo, to_process, close_rx)));
        }
        Ok(io)
    }
}

/// What the shim keeps of a running process's stdio.
pub(crate) struct ProcessIo {
    close_stdin: Mutex<Option<oneshot::Sender<()>>>,
    console: Option<OwnedFd>,
    stdin_copier: Option<JoinHandle<()>>,
    /// Copies the terminal's output to the stdout FIFO.
    output_copier: Option<JoinHandle<()>>,
}

impl ProcessIo {
    /// containerd closed stdin: deliver what is buffered, then EOF.
    pub(crate) fn close_stdin(&self) {
        if let Some(tx) = self.close_stdin.lock().expect("stdin lock").take() {
            let _ = tx.send(());
        }
    }

    /// Sets the terminal's window size.
    pub(crate) fn resize(&self, width: u32, height: u32) -> Result<()> {
        let master = self
            .console
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("process has no terminal".into()))?;
        let size = Winsize {
            ws_row: height.try_into().unwrap_or(u16::MAX),
            ws_col: width.try_into().unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(master, size).map_err(|e| Error::sys("resize pty", e))
    }

    /// Waits (bounded) until terminal output is flushed to containerd.
    pub(crate) async fn drain(&mut self, limit: Duration) {
        if let Some(copier) = &mut self.output_copier {
            let _ = tokio::time::timeout(limit, copier).await;
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        for copier in [&self.stdin_copier, &self.output_copier]
            .into_iter()
            .flatten()
        {
            copier.abort();
        }
    }
}

fn dev_null(write: bool) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open", "/dev/null", e))
}

/// Opens an output FIFO for the process. Read-write so that the open does
/// not block while containerd has not opened its end yet.
fn open_output(path: &str) -> Result<OwnedFd> {
    if path.is_empty() {
        return dev_null(true);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(|f: File| OwnedFd::from(f))
        .map_err(|e| Error::io("open output", path, e))
}

/// Opens the stdin FIFO without blocking. No spurious EOF before the
/// client's writer connects: Linux reports hang-up on a FIFO only once a
/// writer that came after our open has gone (`pipe_poll`), and tokio reads
/// only on readiness. The client closing its writer (ctr) or `CloseIO`
/// (CRI) ends the stream.
fn open_input_fifo(path: &str) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| Error::io("open stdin", path, e))
}

async fn copy_stdin<W>(mut from: pipe::Receiver, mut to: W, mut close: oneshot::Receiver<()>)
where
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
            _ = &mut close => {
                // Everything the client wrote before CloseIO is in the FIFO;
                // forward it, then stop once nothing more arrives.
                while let Ok(Ok(n)) = tokio::time::timeout(STDIN_DRAIN, from.read(&mut buf)).await {
                    if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                break;
            }
        }
    }
}

async fn copy_output<R>(mut from: R, mut to: pipe::Sender)
where
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    // The master reads EIO once the last slave fd is closed: the end.
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Accepts libcontainer's connection and receives the pty master.
async fn receive_master(listener: UnixListener) -> Result<OwnedFd> {
    let accept = tokio::time::timeout(CONSOLE_TIMEOUT, listener.accept());
    let (stream, _) = accept
        .await
        .map_err(|_| Error::Runtime("no terminal received on the console socket".into()))?
        .map_err(|e| Error::sys("accept on console socket", e))?;
    loop {
        stream
            .readable()
            .await
            .map_err(|e| Error::sys("console socket", e))?;
        let received = stream.try_io(Interest::READABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut name = [0u8; 4096];
            recvmsg(
                stream.as_fd(),
                &mut [IoSliceMut::new(&mut name)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            let fd = control.drain().find_map(|message| match message {
                RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                _ => None,
            });
            Ok(fd)
        });
        match received {
            Ok(Some(fd)) => return Ok(fd),
            Ok(None) => return Err(Error::Runtime("console socket sent no fd".into())),
            Err(err) if err.kind() == ErrorKind::WouldBlock => continue,
            Err(err) => return Err(Error::sys("receive pty master", err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets up stdin from a fresh FIFO; returns the FIFO path, the
    /// process's end and the shim's handle.
    async fn stdin_fixture(dir: &Path) -> (PathBuf, File, ProcessIo) {
        let fifo = dir.join("stdin");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600)).unwrap();
        let request = StdioRequest {
            stdin: fifo.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let (pending, fds) = PendingIo::prepare(&request, dir.join("c.sock"), "id", "ns").unwrap();
        let io = pending.finish().await.unwrap();
        (fifo, File::from(fds.stdin), io)
    }

    async fn read_all(mut reader: File) -> String {
        tokio::task::spawn_blocking(move || {
            let mut got = String::new();
            std::io::Read::read_to_string(&mut reader, &mut got).unwrap();
            got
        })
        .await
        .unwrap()
    }

    #[test]
    fn unsupported_stdio_uris_are_refused_by_name() {
        for (request, field, scheme) in [
            (
                StdioRequest {
                    stdout: "syslog://local0".into(),
                    ..Default::default()
                },
                "stdout",
                "syslog://",
            ),
            (
                StdioRequest {
                    stdin: "binary:///bin/cat".into(),
                    ..Default::default()
                },
                "stdin",
                "binary://",
            ),
        ] {
            match PendingIo::prepare(&request, PathBuf::from("/nonexistent.sock"), "id", "ns") {
                Err(Error::InvalidArgument(message)) => {
                    assert!(
                        message.contains(field) && message.contains(scheme),
                        "{message}"
                    )
                }
                other => panic!("expected InvalidArgument, got {:?}", other.err()),
            }
        }
    }

    #[tokio::test]
    async fn stdin_ends_when_the_client_closes_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, process_end, _io) = stdin_fixture(dir.path()).await;
        let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut writer, b"hello").unwrap();
        drop(writer);
        assert_eq!(read_all(process_end).await, "hello");
    }

    #[tokio::test]
    async fn stdin_is_delivered_then_closed_on_close_io() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, process_end, io) = stdin_fixture(dir.path()).await;
        let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut writer, b"hello").unwrap();
        io.close_stdin();
        assert_eq!(read_all(process_end).await, "hello");
        drop(writer);
    }
}
