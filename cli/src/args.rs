//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use diffkeeper_runtime_config::CaptureBackend;

/// Read DiffKeeper flight recordings: what changed in a container's
/// filesystem, when, and by whom.
#[derive(Debug, Parser)]
#[command(name = "diffkeeper", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Where the shim keeps recordings [default: the node config's
    /// recordings-root, /var/lib/diffkeeper/recordings unless set].
    #[arg(long, global = true, env = "DIFFKEEPER_ROOT")]
    pub root: Option<PathBuf>,
    /// The node config file (recordings root, retention).
    #[arg(
        long,
        global = true,
        env = diffkeeper_runtime_config::CONFIG_ENV,
        default_value = diffkeeper_runtime_config::DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
RECORDING is a recording file (*.redb), a directory holding recordings (the
newest is used), or a container id or unique id prefix under --root
(narrowed with --namespace). Instead of RECORDING, --pod NAMESPACE/NAME
(with --container NAME when the pod has several) picks a Kubernetes
container's newest recording; --previous picks the one before it, the
instance that ran before the latest restart.

TIME is `latest`, a duration since the recording started (2m14s, 1500ms,
0.5s), an RFC 3339 timestamp, or an event number (#1234).

Exit codes: 0 success; 1 a negative answer (verify found problems, diff
found differences); 2 usage error; 3 any other error (not found, damaged
recording, I/O).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List recordings under --root.
    Ls {
        /// Only this containerd namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        #[command(flatten)]
        pod: PodArgs,
        #[arg(long)]
        json: bool,
    },
    /// Events in order, with time since start, pid and paths.
    Timeline {
        #[command(flatten)]
        recording: RecordingArg,
        /// Only events touching a path matching this glob (`**` crosses `/`).
        #[arg(long = "path", value_name = "GLOB")]
        paths: Vec<String>,
        /// Only events of this process.
        #[arg(long)]
        pid: Option<u32>,
        /// Only these operations (create, write, rename, unlink, …). Gaps are always shown.
        #[arg(long = "op", value_name = "OP")]
        ops: Vec<String>,
        /// Only events at or after this time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only events up to this time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print a file as it was at a time.
    // With --pod, the one positional given is PATH.
    #[command(allow_missing_positional = true)]
    Cat {
        #[command(flatten)]
        recording: RecordingArg,
        /// The file's path inside the container (or the host path in record mode).
        path: String,
        #[arg(long, short, default_value = "latest", value_name = "TIME")]
        time: String,
    },
    /// What changed between two times (with unified diffs of text files).
    Diff {
        #[command(flatten)]
        recording: RecordingArg,
        #[arg(long, value_name = "TIME")]
        from: String,
        #[arg(long, default_value = "latest", value_name = "TIME")]
        to: String,
        /// Only list paths; no text diffs.
        #[arg(long)]
        name_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write the filesystem as it was at a time into a new directory.
    Export {
        #[command(flatten)]
        recording: RecordingArg,
        #[arg(long, short, default_value = "latest", value_name = "TIME")]
        time: String,
        /// Target directory (must not exist, or be empty).
        #[arg(long, short)]
        out: PathBuf,
        /// Only files that differ from the container's starting state.
        #[arg(long)]
        changes_only: bool,
        /// Restore owners and setuid/setgid bits (needs root).
        #[arg(long)]
        preserve_owner: bool,
    },
    /// Re-hash every stored version; exit 1 and name what is damaged.
    Verify {
        #[command(flatten)]
        recording: RecordingArg,
        #[arg(long)]
        json: bool,
    },
    /// Run a command and record every file change it and its children make
    /// (a fresh cgroup under the eBPF probe); exits with the command's code.
    Record(RecordArgs),
    /// Delete old recordings under --root (by default as the --config
    /// file's retention says).
    Gc(GcArgs),
}

#[derive(Debug, Args)]
pub struct RecordingArg {
    /// File, directory, or container id (prefix).
    #[arg(
        value_name = "RECORDING",
        required_unless_present = "pod",
        conflicts_with = "pod"
    )]
    pub recording: Option<String>,
    /// Namespace to look the container id up in.
    #[arg(long, short)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub pod: PodArgs,
}

/// Kubernetes selection: a pod's containers and their restarts.
#[derive(Debug, Args)]
pub struct PodArgs {
    /// A Kubernetes pod's recordings, by the pod's namespace and name.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub pod: Option<PodName>,
    /// The container's name in the pod.
    #[arg(long, value_name = "NAME", requires = "pod")]
    pub container: Option<String>,
    /// The instance before the newest: what ran (and perhaps crashed)
    /// before the latest restart, like `kubectl logs --previous`.
    #[arg(long)]
    pub previous: bool,
}

/// `NAMESPACE/NAME` of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for PodName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(PodName {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!(
                "expected NAMESPACE/NAME (e.g. default/web-0), got {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for PodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Directory for the recording (created 0700; never itself recorded).
    #[arg(long, short, default_value = "diffkeeper-trace")]
    pub out: PathBuf,
    /// Directories to record (default: the current directory and /tmp).
    #[arg(long = "watch", value_name = "PATH")]
    pub watch: Vec<PathBuf>,
    /// Record only paths matching these globs (default: everything watched).
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never record paths matching these globs.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read a file held open for writing at least this often.
    #[arg(long, default_value = "100ms", value_parser = diffkeeper_runtime_config::parse_duration)]
    pub debounce: std::time::Duration,
    /// Record larger files without their content.
    #[arg(long, default_value = "256Mi", value_parser = diffkeeper_runtime_config::parse_size)]
    pub max_file_size: u64,
    /// Skip the starting snapshot of the watched directories (exports then
    /// hold only what changed).
    #[arg(long)]
    pub no_baseline: bool,
    /// How changes are captured: `auto` is eBPF where it loads (root, a
    /// kernel with BTF), else fanotify (pids as root; no exec/exit,
    /// coalesced writes), else inotify (no pids); or one of them by name.
    #[arg(long, default_value = "auto", value_parser = str::parse::<CaptureBackend>)]
    pub backend: CaptureBackend,
    /// Bytes of the eBPF ring buffer between the kernel and the recorder
    /// (a power of two from 64Ki to 1Gi): raise it if a recording shows
    /// gaps.
    #[arg(long, default_value = "8Mi", value_parser = diffkeeper_runtime_config::parse_ring_buffer_size)]
    pub ring_buffer: u64,
    /// Fail instead of falling back when eBPF is unavailable (the same as
    /// `--backend ebpf`).
    #[arg(long, conflicts_with = "backend")]
    pub require_ebpf: bool,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep at most this many recordings per container (newest first).
    #[arg(long)]
    pub keep: Option<usize>,
    /// Delete recordings older than this (e.g. 7d, 12h).
    #[arg(long, value_parser = diffkeeper_runtime_config::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Delete a container's oldest recordings until its recordings take at
    /// most this many bytes (e.g. 500Mi, 10Gi).
    #[arg(long, value_parser = diffkeeper_runtime_config::parse_size)]
    pub max_bytes: Option<u64>,
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
