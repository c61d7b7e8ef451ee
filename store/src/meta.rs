//! What a recording is of, and how it ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Written once when a recording is created. Stored as JSON, so fields
/// added later must be optional (`#[serde(default)]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    /// What was recorded: a container (`container`) or a command
    /// (`command`, from `diffkeeper record`).
    pub subject: Subject,
    /// Wall-clock start, nanoseconds since the Unix epoch.
    pub started_unix_ns: i64,
    /// Kernel `CLOCK_MONOTONIC` at that same instant: event timestamps
    /// minus this are times since the start.
    pub mono_base_ns: u64,
    /// The capture backend (`ebpf`, `fanotify`, …) and what it cannot see.
    pub capture: Capture,
    /// Free-form identity: annotations, CI job…
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod and container, for a container Kubernetes ran (CRI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesIdentity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// `container` or `command`.
    pub kind: String,
    /// The container id, or the command line for record mode.
    pub id: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub image: String,
    /// Where the root file system was (container rootfs or watched paths).
    #[serde(default)]
    pub rootfs: String,
}

/// Who a CRI container was, from the annotations containerd's CRI plugin
/// sets (and the kubelet's restart count, where the runtime passes it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesIdentity {
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// The pod sandbox's containerd id.
    pub sandbox_id: String,
    /// How many times the kubelet restarted this container before.
    #[serde(default)]
    pub restart_count: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    pub backend: String,
    /// Known blind spots of that backend, shown by `timeline`.
    #[serde(default)]
    pub limits: Vec<String>,
}

/// Rewritten as a recording progresses. A recording whose writer died
/// keeps `state = Recording`: readers report it as cut short.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: RecordingState,
    /// Why the recording may be missing changes (gaps, failures).
    #[serde(default)]
    pub incomplete: Vec<String>,
    #[serde(default)]
    pub baseline: BaselineStatus,
    /// Wall-clock end, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub ended_unix_ns: Option<i64>,
    /// The workload's exit code, when known.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingState {
    /// Being written (or its writer died: see `Recording::is_being_written`).
    #[default]
    Recording,
    /// Closed cleanly.
    Finished,
}

/// The tree as it was at the start, written in the background.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineStatus {
    pub mode: BaselineMode,
    /// All entries were written.
    pub complete: bool,
    pub entries: u64,
    /// Why the mode or completeness is not what was asked for.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineMode {
    /// No baseline: only changed files can be exported.
    #[default]
    None,
    /// Paths, modes, sizes and hashes, without content.
    Manifest,
    /// Everything, content included (deduplicated).
    Full,
}
