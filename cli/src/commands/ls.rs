//! `diffkeeper ls`

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use diffkeeper_recorder::{Archive, Archived};
use diffkeeper_store::{format_offset, KubernetesIdentity, Recording, RecordingState};
use serde::Serialize;

use crate::args::PodArgs;
use crate::locate::select;
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
    /// Pod and container name, for a container Kubernetes ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<KubernetesIdentity>,
}

pub fn run(root: &Path, namespace: Option<&str>, pod: &PodArgs, json: bool) -> Result<ExitCode> {
    let mut found = select(Archive::new(root).list(namespace)?, pod);
    // In start order (file names are start times) within each namespace.
    found.sort_by(|a, b| {
        (&a.namespace, a.path.file_name()).cmp(&(&b.namespace, b.path.file_name()))
    });
    let rows: Vec<Row> = found.into_iter().map(row).collect();
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no recordings under {}{}", root.display(), selection(pod));
        return Ok(ExitCode::SUCCESS);
    }
    let pods = rows.iter().any(|r| r.kubernetes.is_some());
    let pod_header = if pods {
        format!("{:<32} ", "POD/CONTAINER")
    } else {
        String::new()
    };
    println!(
        "{:<12} {:<24} {pod_header}{:<24} {:>10} {:>8} {:>10}  STATE",
        "NAMESPACE", "CONTAINER", "STARTED", "DURATION", "EVENTS", "SIZE"
    );
    for r in rows {
        let pod_column = match (&r.kubernetes, pods) {
            (Some(k), _) => format!("{:<32} ", pod_label(k)),
            (None, true) => format!("{:<32} ", "-"),
            (None, false) => String::new(),
        };
        println!(
            "{:<12} {:<24} {pod_column}{:<24} {:>10} {:>8} {:>10}  {}",
            r.namespace,
            short_id(&r.container),
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

/// ` for pod shop/web` and the like, for the "nothing found" message.
fn selection(pod: &PodArgs) -> String {
    let mut said = String::new();
    if let Some(name) = &pod.pod {
        said.push_str(&format!(" for pod {name}"));
    }
    if let Some(container) = &pod.container {
        said.push_str(&format!(", container {container}"));
    }
    if pod.previous {
        said.push_str(" (previous instances)");
    }
    said
}

/// `shop/web/app#2`: pod, container name, restart count.
fn pod_label(k: &KubernetesIdentity) -> String {
    let restart = k.restart_count.map(|n| format!("#{n}")).unwrap_or_default();
    format!(
        "{}/{}/{}{restart}",
        k.pod_namespace, k.pod_name, k.container_name
    )
}

/// CRI's 64-hex container ids, shortened as crictl does; others in full.
fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..13]
    } else {
        id
    }
}

/// One recording, opened only while its row is made.
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
        kubernetes: None,
    };
    let recording = match Recording::open(&found.path) {
        Ok(r) => r,
        Err(e) => {
            row.state = format!("unreadable: {e}");
            return row;
        }
    };
    let meta = recording.meta();
    // A Kubernetes container's directory is named by pod and container:
    // the row names the container instance.
    row.container = meta.subject.id.clone();
    row.started = Some(rfc3339(meta.started_unix_ns));
    row.kubernetes = meta.kubernetes.clone();
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
