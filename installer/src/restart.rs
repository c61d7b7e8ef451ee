//! Restarting containerd, which reads its config only when it starts.
//! Running containers survive it: their shims are separate processes.

use std::path::Path;
use std::process::{Command, ExitStatus};

/// How to restart containerd after its config changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Restart {
    /// `systemctl restart containerd` on the host.
    Systemd,
    /// Only say that a restart is needed.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("cannot run `{command}`: {source}; restart containerd on the node by hand")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); see `journalctl -u containerd` on the node and restart it by hand")]
    Failed { command: String, status: ExitStatus },
}

/// The command restarting the host's containerd. Under another host root
/// the installer runs in a container: it enters the namespaces of the host's
/// PID 1 (the DaemonSet has `hostPID: true`), so that `systemctl` is the
/// host's and reaches the host's systemd.
fn restart_command(host_root: &Path) -> Command {
    let mut command = if host_root == Path::new("/") {
        Command::new("systemctl")
    } else {
        let mut nsenter = Command::new("nsenter");
        let host_namespaces = [
            "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid",
        ];
        nsenter.args(host_namespaces).args(["--", "systemctl"]);
        nsenter
    };
    command.args(["restart", "containerd"]);
    command
}

/// Restarts containerd; returns the command that did.
pub fn restart_containerd(host_root: &Path) -> Result<String, RestartError> {
    let mut command = restart_command(host_root);
    let shown = shown(&command);
    let status = command.status().map_err(|source| RestartError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if status.success() {
        Ok(shown)
    } else {
        Err(RestartError::Failed {
            command: shown,
            status,
        })
    }
}

fn shown(command: &Command) -> String {
    let words = [command.get_program()]
        .into_iter()
        .chain(command.get_args());
    words
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_the_host_systemctl_runs_directly() {
        assert_eq!(
            shown(&restart_command(Path::new("/"))),
            "systemctl restart containerd"
        );
    }

    #[test]
    fn from_a_container_it_enters_the_hosts_namespaces() {
        assert_eq!(
            shown(&restart_command(Path::new("/host"))),
            "nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd"
        );
    }
}
