//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Read DiffKeeper flight recordings: what changed in a container's
/// filesystem, when, and by whom.
#[derive(Debug, Parser)]
#[command(name = "diffkeeper", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Where the shim keeps finished recordings.
    #[arg(
        long,
        global = true,
        env = "DIFFKEEPER_ROOT",
        default_value = "/var/lib/diffkeeper/recordings"
    )]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
RECORDING is a recording file (*.redb), a directory holding recordings (the
newest is used), or a container id or unique id prefix under --root
(narrowed with --namespace).

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
    /// Delete old recordings under --root.
    Gc(GcArgs),
}

#[derive(Debug, Args)]
pub struct RecordingArg {
    /// File, directory, or container id (prefix).
    #[arg(value_name = "RECORDING")]
    pub recording: String,
    /// Namespace to look the container id up in.
    #[arg(long, short)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep at most this many recordings per container (newest first).
    #[arg(long)]
    pub keep: Option<usize>,
    /// Delete recordings older than this (e.g. 7d, 12h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Delete the oldest recordings until all together take at most this
    /// many bytes (suffixes K, M, G accepted).
    #[arg(long, value_parser = parse_size)]
    pub max_bytes: Option<u64>,
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 500M or 10G"))?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("unknown size unit {unit:?}; use K, M, G or T")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("10X").unwrap_err().contains("unknown size unit"));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
