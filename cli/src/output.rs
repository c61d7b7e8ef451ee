//! How results are printed: human tables, JSON for scripts, exit codes.

use std::time::Duration;

use diffkeeper_store::{format_offset, Event, Op, Recording};
use serde::Serialize;

/// A negative answer: verify found problems, diff found differences.
pub const EXIT_NEGATIVE: u8 = 1;
/// Anything else that went wrong (clap uses 2 for usage errors).
pub const EXIT_ERROR: u8 = 3;

/// An event as JSON: paths as (lossy) text, times as offsets and RFC 3339.
#[derive(Serialize)]
pub struct EventView {
    pub seq: u64,
    pub offset_ms: f64,
    pub time: String,
    /// Who: `process` (with `pid` and `comm`), `recorder` (gaps, rescans)
    /// or `unknown` (a backend that reports no process: inotify).
    pub by: &'static str,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub op: &'static str,
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl EventView {
    pub fn new(recording: &Recording, event: &Event) -> EventView {
        let (by, pid, comm) = match &event.actor {
            diffkeeper_store::Actor::Process { pid, comm, .. } => {
                ("process", Some(*pid), Some(comm.clone()))
            }
            diffkeeper_store::Actor::Recorder => ("recorder", None, None),
            diffkeeper_store::Actor::Unknown => ("unknown", None, None),
        };
        EventView {
            seq: event.seq,
            offset_ms: recording.offset_of(event.time_ns).as_secs_f64() * 1e3,
            time: rfc3339(recording.wall_time_of(event.time_ns)),
            by,
            pid,
            comm,
            op: event.op.kind().name(),
            paths: event.op.paths().iter().map(|p| p.to_string()).collect(),
            size: event.op.content().map(|c| c.size),
            detail: detail(&event.op),
        }
    }

    /// One aligned line: `  2m14.250s  #1234  pid 42 (sh)  write  /etc/x (120 B)`.
    pub fn line(&self) -> String {
        let who = match (self.pid, &self.comm) {
            (Some(pid), Some(comm)) => format!("{pid} ({comm})"),
            _ => self.by.into(),
        };
        let mut line = format!(
            "{:>11}  #{:<6} {:<20} {:<8} {}",
            format_offset(Duration::from_secs_f64(self.offset_ms / 1e3)),
            self.seq,
            who,
            self.op,
            self.paths.join(" -> ")
        );
        if let Some(size) = self.size {
            line.push_str(&format!(" ({})", bytes(size)));
        }
        if let Some(detail) = &self.detail {
            line.push_str(&format!(" {detail}"));
        }
        line
    }
}

fn detail(op: &Op) -> Option<String> {
    match op {
        Op::Create { mode, .. } | Op::Mkdir { mode, .. } | Op::Chmod { mode, .. } => {
            Some(format!("mode {mode:o}"))
        }
        Op::Chown { uid, gid, .. } => Some(format!("{uid}:{gid}")),
        Op::Symlink { target, .. } => Some(format!("-> {}", String::from_utf8_lossy(target))),
        Op::Exec { path } => Some(String::from_utf8_lossy(path).into_owned()),
        Op::Exit { code } => Some(format!("code {code}")),
        Op::Gap {
            lost,
            from_ns,
            to_ns,
            reason,
        } => Some(format!(
            "!! {} lost over {} ({reason}): the recording is incomplete here",
            diffkeeper_store::lost_events(*lost),
            format_offset(Duration::from_nanos(to_ns.saturating_sub(*from_ns)))
        )),
        _ => None,
    }
}

/// A one-line, bounded rendering of a subject id (a command line may span
/// lines).
pub fn short(text: &str) -> String {
    const LIMIT: usize = 60;
    let line = text.trim().lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(LIMIT).collect();
    if out.len() < text.trim().len() {
        out.push('…');
    }
    out
}

pub fn rfc3339(unix_ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
