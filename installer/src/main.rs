//! `diffkeeper-node-installer`: puts DiffKeeper on a node (binaries, the
//! containerd runtime entry, a containerd restart) and takes it off again.
//! One line per thing changed or found in place; exit code 1 on error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use diffkeeper_installer::{
    add_runtime, install_binary, remove_binary, remove_runtime, restart_containerd, Outcome,
    Restart, RuntimeEntry, BINARIES,
};
use diffkeeper_runtime_config::DEFAULT_RECORDINGS_ROOT;

/// Exists while a containerd restart the config needs has not succeeded.
const RESTART_PENDING: &str = "/run/diffkeeper-installer.restart-pending";

/// One line of the report. A closed stdout (`| head -1`) must not stop the
/// installer half-way, as `println!`'s panic would: the lines are only news.
macro_rules! say {
    ($($line:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($line)*);
    }};
}

#[derive(Debug, Parser)]
#[command(name = "diffkeeper-node-installer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy the shim and the CLI onto the node, add the runtime to
    /// containerd's config and restart containerd if the config changed.
    Install {
        #[command(flatten)]
        node: Node,
        /// Where containerd-shim-diffkeeper-v1 and diffkeeper are
        /// [default: the directory of this executable].
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// The node config file the shim reads, as a path on the host
        /// (the entry's options.ConfigPath) [default: none, the shim's own].
        #[arg(long, value_name = "PATH", value_parser = absolute)]
        node_config: Option<String>,
    },
    /// Remove the runtime entry and the binaries `install` added
    /// (recordings stay), and restart containerd if the config changed.
    Uninstall {
        #[command(flatten)]
        node: Node,
    },
}

/// Where things are on the node.
#[derive(Debug, Args)]
struct Node {
    /// The host's root file system; --containerd-config and --bin-dir are
    /// taken under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    /// containerd's config file (created as a version 2 config if missing).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/containerd/config.toml"
    )]
    containerd_config: PathBuf,
    /// Where the binaries go; must be on containerd's PATH, which is how
    /// containerd finds the shim.
    #[arg(long, value_name = "DIR", default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// The runtime entry's name: a RuntimeClass's `handler`.
    #[arg(long, value_name = "NAME", default_value = "diffkeeper")]
    runtime_name: String,
    /// How to restart containerd when its config changed.
    #[arg(long, value_enum, default_value_t = Restart::Systemd)]
    restart: Restart,
    /// Replace (install) or remove (uninstall) an entry of that name that
    /// this installer did not add.
    #[arg(long)]
    force: bool,
}

impl Node {
    fn on_host(&self, path: &Path) -> PathBuf {
        self.host_root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn report_config(&self, config: &Path, outcome: Outcome, table: &str) {
        let name = &self.runtime_name;
        say!(
            "containerd config: runtime `{name}` {outcome} ({}, [{table}])",
            config.display()
        );
    }

    fn restart_if(&self, changed: bool) -> anyhow::Result<()> {
        // Noted before restarting: if the restart fails, the next run (whose
        // config edit then changes nothing) still restarts. On /run, which a
        // reboot (restarting containerd anyway) clears.
        let pending = self.on_host(Path::new(RESTART_PENDING));
        match (changed || pending.exists(), self.restart) {
            (false, _) => say!("containerd: config unchanged, not restarted"),
            (true, Restart::Systemd) => {
                std::fs::write(&pending, b"")
                    .with_context(|| format!("noting a pending restart in {}", pending.display()))?;
                let command = restart_containerd(&self.host_root)?;
                let _ = std::fs::remove_file(&pending);
                say!("containerd: restarted (`{command}`)");
            }
            (true, Restart::None) => say!(
                "containerd: not restarted (--restart none); run `systemctl restart containerd` on the node for the change to take effect"
            ),
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Install {
            node,
            from,
            node_config,
        } => install(&node, from, node_config),
        Command::Uninstall { node } => uninstall(&node),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("diffkeeper-node-installer: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn install(node: &Node, from: Option<PathBuf>, node_config: Option<String>) -> anyhow::Result<()> {
    let from = match from {
        Some(dir) => dir,
        None => {
            let exe = std::env::current_exe().context(
                "cannot locate this executable to find the binaries next to it; pass --from",
            )?;
            exe.parent()
                .context("this executable has no directory; pass --from")?
                .to_path_buf()
        }
    };
    // Binaries first: containerd must never see an entry whose shim is missing.
    let bin_dir = node.on_host(&node.bin_dir);
    for name in BINARIES {
        let outcome = install_binary(&from, &bin_dir, name)?;
        say!("binary: {} {outcome}", bin_dir.join(name).display());
    }
    let config = node.on_host(&node.containerd_config);
    let entry = RuntimeEntry {
        name: node.runtime_name.clone(),
        node_config,
    };
    let edit = add_runtime(&config, &entry, node.force)?;
    node.report_config(&config, edit.outcome, &edit.table);
    node.restart_if(edit.outcome.changed())
}

fn uninstall(node: &Node) -> anyhow::Result<()> {
    // The entry first, so that a refusal leaves everything in place.
    let config = node.on_host(&node.containerd_config);
    let edit = remove_runtime(&config, &node.runtime_name, node.force)?;
    node.report_config(&config, edit.outcome, &edit.table);
    let bin_dir = node.on_host(&node.bin_dir);
    for name in BINARIES {
        let outcome = remove_binary(&bin_dir, name)?;
        say!("binary: {} {outcome}", bin_dir.join(name).display());
    }
    say!("recordings: left in place under {DEFAULT_RECORDINGS_ROOT} (or the node config's recordings-root); delete them by hand when no longer needed");
    node.restart_if(edit.outcome.changed())
}

/// The shim reads the file on the host, so only a host path means anything.
fn absolute(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        Ok(path.to_owned())
    } else {
        Err("give the absolute path of the file on the host".into())
    }
}
