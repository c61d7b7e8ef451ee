//! `diffkeeper ls`

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use diffkeeper_recorder::{Archive, Archived};
use diffkeeper_store::{format_offset, Recording, RecordingState};
use serde::Serialize;

use crate::output::{bytes, print_json, rfc3339};

#[derive(Serialize)]
struct Row {
    namespace: String,
    container: String,
    path: String,
    started: Option<String>,
    duration_ms: Option<u64>,
    events: Option<u64>,
    state: String,
    size: u64,
}

pub fn run(root: &Path, namespace: Option<&str>, json: bool) -> Result<ExitCode> {
    let rows: Vec<Row> = Archive::new(root)
        .list(namespace)?
        .into_iter()
        .map(row)
        .collect();
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no recordings under {}", root.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:<24} {:<24} {:>10} {:>8} {:>10}  STATE",
        "NAMESPACE", "CONTAINER", "STARTED", "DURATION", "EVENTS", "SIZE"
    );
    for r in rows {
        println!(
            "{:<12} {:<24} {:<24} {:>10} {:>8} {:>10}  {}",
            r.namespace,
            r.container,
            r.started.unwrap_or_else(|| "?".into()),
            r.duration_ms
                .map(|ms| format_offset(std::time::Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into()),
            r.events
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            bytes(r.size),
            r.state
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn row(found: Archived) -> Row {
    let mut row = Row {
        namespace: found.namespace,
        container: found.container,
        path: found.path.display().to_string(),
        started: None,
        duration_ms: None,
        events: None,
        state: String::new(),
        size: found.size,
    };
    let recording = match Recording::open(&found.path) {
        Ok(r) => r,
        Err(e) => {
            row.state = format!("unreadable: {e}");
            return row;
        }
    };
    let meta = recording.meta();
    row.started = Some(rfc3339(meta.started_unix_ns));
    row.events = recording.event_count().ok();
    match recording.status() {
        Ok(status) => {
            row.duration_ms = status
                .ended_unix_ns
                .map(|end| ((end - meta.started_unix_ns).max(0) / 1_000_000) as u64);
            row.state = match (status.state, status.exit_code) {
                (RecordingState::Finished, Some(code)) => format!("exited {code}"),
                (RecordingState::Finished, None) => "finished".into(),
                (RecordingState::Recording, _) if found.active => "recording".into(),
                (RecordingState::Recording, _) => "cut short".into(),
            };
            if !status.incomplete.is_empty() {
                row.state.push_str(", incomplete");
            }
        }
        Err(e) => row.state = format!("status unreadable: {e}"),
    }
    row
}
