//! Every setting, described once: its key (in the file and after
//! `io.diffkeeper.` in annotations), what it accepts, and what it changes.

use std::path::PathBuf;
use std::time::Duration;

use crate::units::{parse_duration, parse_size};

pub const DEFAULT_RECORDINGS_ROOT: &str = "/var/lib/diffkeeper/recordings";

/// The effective configuration of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Record this container at all.
    pub record: bool,
    /// Only paths matching one of these globs are recorded (`**` crosses `/`).
    pub include: Vec<String>,
    /// Paths matching one of these globs are never recorded.
    pub exclude: Vec<String>,
    /// Content of files larger than this is not stored; their events are.
    pub max_file_size: u64,
    /// How long a file held open for writing may stay dirty before its
    /// content is read anyway.
    pub debounce: Duration,
    pub baseline: BaselineMode,
    /// A root filesystem larger than this gets a manifest-only baseline.
    pub baseline_max_bytes: u64,
    pub on_failure: FailurePolicy,
    pub capture: CaptureBackend,
    pub retention: Retention,
    /// Record the Kubernetes sandbox (pause) container too.
    pub record_sandbox: bool,
    /// `<recording>@<time>`: start from another recording's state.
    pub restore_from: Option<RestoreFrom>,
    /// Node only: where finished recordings are kept.
    pub recordings_root: PathBuf,
    /// Node only: each recorded container's eBPF ring buffer size (4 MiB:
    /// measured 0 losses on the write-heavy benchmark; bigger costs start
    /// latency and memory per container).
    pub ring_buffer_size: u64,
    /// Node only: the store's commit interval.
    pub commit_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            record: true,
            include: vec!["/**".into()],
            exclude: vec!["/proc/**".into(), "/sys/**".into(), "/dev/**".into()],
            max_file_size: 256 << 20,
            debounce: Duration::from_millis(100),
            baseline: BaselineMode::Full,
            baseline_max_bytes: 1 << 30,
            on_failure: FailurePolicy::Open,
            capture: CaptureBackend::Auto,
            retention: Retention {
                keep: Some(10),
                max_age: Some(Duration::from_secs(7 * 86_400)),
                max_bytes: None,
            },
            record_sandbox: false,
            restore_from: None,
            recordings_root: PathBuf::from(DEFAULT_RECORDINGS_ROOT),
            ring_buffer_size: 4 << 20,
            commit_interval: Duration::from_millis(100),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BaselineMode {
    /// Paths, modes, hashes and content of the starting filesystem.
    Full,
    /// Paths, modes, sizes and hashes only.
    Manifest,
    /// Nothing: only changed files can be exported.
    None,
}

/// What happens to a container when its recording fails.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The container runs on; the recording is marked incomplete.
    Open,
    /// Create fails (or the container is stopped) rather than run unrecorded.
    Closed,
}

/// `restore-from`, split: which recording, and the time in it (checked
/// by the shim against that recording).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFrom {
    pub recording: String,
    pub time: String,
}

/// How a container's file changes are captured.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CaptureBackend {
    /// eBPF where the probe loads, else fanotify where it can mark, else
    /// inotify.
    Auto,
    /// eBPF or nothing (`on-failure` then decides).
    Ebpf,
    /// fanotify marks on the container's root filesystem (pids, no exec or
    /// exit; docs/probe.md).
    Fanotify,
    /// inotify on the container's root filesystem (no pids; docs/probe.md).
    Inotify,
}

impl std::str::FromStr for CaptureBackend {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(CaptureBackend::Auto),
            "ebpf" => Ok(CaptureBackend::Ebpf),
            "fanotify" => Ok(CaptureBackend::Fanotify),
            "inotify" => Ok(CaptureBackend::Inotify),
            other => Err(format!(
                "{other:?}: expected auto, ebpf, fanotify or inotify"
            )),
        }
    }
}

/// Which recordings of a container are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep: Option<usize>,
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// A value as given: annotations are strings; the file has types.
#[derive(Clone, Debug)]
pub(crate) enum Raw {
    Str(String),
    Bool(bool),
    Int(i64),
    List(Vec<String>),
}

impl Raw {
    pub(crate) fn shown(&self) -> String {
        match self {
            Raw::Str(s) => s.clone(),
            Raw::Bool(b) => b.to_string(),
            Raw::Int(i) => i.to_string(),
            Raw::List(l) => l.join(","),
        }
    }

    fn text(&self) -> String {
        self.shown()
    }

    fn boolean(&self) -> Result<bool, ()> {
        match self {
            Raw::Bool(b) => Ok(*b),
            Raw::Str(s) if s == "true" => Ok(true),
            Raw::Str(s) if s == "false" => Ok(false),
            _ => Err(()),
        }
    }

    fn list(&self) -> Vec<String> {
        match self {
            Raw::List(items) => items.clone(),
            other => other
                .text()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

/// One setting.
pub struct Setting {
    /// The key in the file; in annotations, after `io.diffkeeper.`.
    pub key: &'static str,
    /// What values are accepted, as an error message says it.
    pub accepts: &'static str,
    pub help: &'static str,
    /// Only the node file may set it (a pod must not move recordings or
    /// resize a shared ring buffer).
    pub node_only: bool,
    pub(crate) apply: fn(&mut Config, &Raw) -> Result<(), ()>,
}

fn globs(raw: &Raw) -> Result<Vec<String>, ()> {
    let list = raw.list();
    for g in &list {
        globset::Glob::new(g).map_err(|_| ())?;
        if !g.starts_with('/') && !g.starts_with("**") {
            return Err(());
        }
    }
    Ok(list)
}

fn size(raw: &Raw) -> Result<u64, ()> {
    match raw {
        Raw::Int(i) => u64::try_from(*i).map_err(|_| ()),
        other => parse_size(&other.text()).map_err(|_| ()),
    }
}

fn duration(raw: &Raw) -> Result<Duration, ()> {
    parse_duration(&raw.text()).map_err(|_| ())
}

/// All settings, in documentation order.
pub fn settings() -> &'static [Setting] {
    const SIZE: &str = "a size such as 64Mi, 1Gi or 4096";
    const DURATION: &str = "a duration such as 100ms, 30s or 7d";
    &[
        Setting {
            key: "record",
            accepts: "true or false",
            help: "record this container",
            node_only: false,
            apply: |c, v| {
                c.record = v.boolean()?;
                Ok(())
            },
        },
        Setting {
            key: "include",
            accepts: "absolute path globs, comma-separated (e.g. /app/**,/etc/**)",
            help: "record only paths matching one of these",
            node_only: false,
            apply: |c, v| {
                c.include = globs(v)?;
                Ok(())
            },
        },
        Setting {
            key: "exclude",
            accepts: "absolute path globs, comma-separated (e.g. /tmp/**)",
            help: "never record paths matching one of these",
            node_only: false,
            apply: |c, v| {
                c.exclude = globs(v)?;
                Ok(())
            },
        },
        Setting {
            key: "max-file-size",
            accepts: SIZE,
            help: "files larger than this are recorded without content",
            node_only: false,
            apply: |c, v| {
                c.max_file_size = size(v)?;
                Ok(())
            },
        },
        Setting {
            key: "debounce",
            accepts: DURATION,
            help: "longest a file held open stays unrecorded after a write",
            node_only: false,
            apply: |c, v| {
                let d = duration(v)?;
                (d <= Duration::from_secs(60)).then_some(()).ok_or(())?;
                c.debounce = d;
                Ok(())
            },
        },
        Setting {
            key: "baseline",
            accepts: "full, manifest or none",
            help: "how much of the starting filesystem to record",
            node_only: false,
            apply: |c, v| {
                c.baseline = match v.text().as_str() {
                    "full" => BaselineMode::Full,
                    "manifest" => BaselineMode::Manifest,
                    "none" => BaselineMode::None,
                    _ => return Err(()),
                };
                Ok(())
            },
        },
        Setting {
            key: "baseline-max-bytes",
            accepts: SIZE,
            help: "a larger root filesystem gets a manifest-only baseline",
            node_only: false,
            apply: |c, v| {
                c.baseline_max_bytes = size(v)?;
                Ok(())
            },
        },
        Setting {
            key: "capture",
            accepts:
                "auto (eBPF, else fanotify, else inotify), ebpf (no fallback), fanotify or inotify",
            help: "how file changes are captured",
            node_only: false,
            apply: |c, v| {
                c.capture = v.text().parse().map_err(|_| ())?;
                Ok(())
            },
        },
        Setting {
            key: "on-failure",
            accepts:
                "open (keep running, mark the recording incomplete) or closed (fail the container)",
            help: "what a recording failure does to the container",
            node_only: false,
            apply: |c, v| {
                c.on_failure = match v.text().as_str() {
                    "open" => FailurePolicy::Open,
                    "closed" => FailurePolicy::Closed,
                    _ => return Err(()),
                };
                Ok(())
            },
        },
        Setting {
            key: "retention.keep",
            accepts: "a whole number of recordings, or 0 for no limit",
            help: "recordings kept per container",
            node_only: false,
            apply: |c, v| {
                let n = match v {
                    Raw::Int(i) => usize::try_from(*i).map_err(|_| ())?,
                    other => other.text().parse().map_err(|_| ())?,
                };
                c.retention.keep = (n > 0).then_some(n);
                Ok(())
            },
        },
        Setting {
            key: "retention.max-age",
            accepts: DURATION,
            help: "recordings older than this are deleted",
            node_only: false,
            apply: |c, v| {
                c.retention.max_age = Some(duration(v)?);
                Ok(())
            },
        },
        Setting {
            key: "retention.max-bytes",
            accepts: SIZE,
            help: "the oldest recordings go once all of a container's exceed this",
            node_only: false,
            apply: |c, v| {
                c.retention.max_bytes = Some(size(v)?);
                Ok(())
            },
        },
        Setting {
            key: "record-sandbox",
            accepts: "true or false",
            help: "also record the Kubernetes sandbox (pause) container",
            node_only: false,
            apply: |c, v| {
                c.record_sandbox = v.boolean()?;
                Ok(())
            },
        },
        Setting {
            key: "restore-from",
            accepts: "<recording>@<time>, e.g. web-1@2m14s",
            help: "start the container from another recording's state at that time",
            node_only: false,
            apply: |c, v| {
                let text = v.text();
                let (recording, time) = text.rsplit_once('@').ok_or(())?;
                (!recording.is_empty() && !time.is_empty())
                    .then_some(())
                    .ok_or(())?;
                c.restore_from = Some(RestoreFrom {
                    recording: recording.to_owned(),
                    time: time.to_owned(),
                });
                Ok(())
            },
        },
        Setting {
            key: "recordings-root",
            accepts: "an absolute directory path",
            help: "where finished recordings are kept",
            node_only: true,
            apply: |c, v| {
                let path = PathBuf::from(v.text());
                path.is_absolute().then_some(()).ok_or(())?;
                c.recordings_root = path;
                Ok(())
            },
        },
        Setting {
            key: "ring-buffer-size",
            accepts: "a power of two between 64Ki and 1Gi, e.g. 16Mi",
            help: "size of each recorded container's eBPF ring buffer",
            node_only: true,
            apply: |c, v| {
                let n = size(v)?;
                crate::units::ring_buffer_size_ok(n)
                    .then_some(())
                    .ok_or(())?;
                c.ring_buffer_size = n;
                Ok(())
            },
        },
        Setting {
            key: "commit-interval",
            accepts: "a duration between 10ms and 10s",
            help: "how often recordings are committed to disk",
            node_only: true,
            apply: |c, v| {
                let d = duration(v)?;
                (Duration::from_millis(10)..=Duration::from_secs(10))
                    .contains(&d)
                    .then_some(())
                    .ok_or(())?;
                c.commit_interval = d;
                Ok(())
            },
        },
    ]
}
