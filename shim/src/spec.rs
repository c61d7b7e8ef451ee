//! What the shim checks and completes in a spec before libcontainer sees it.
//!
//! Two rules. A process without `PATH` in its environment gets runc's
//! default (images without an `Env` config, `ctr run --rootfs`): runc
//! tolerates a missing PATH, libcontainer refuses it. And a field
//! libcontainer would silently ignore fails `Create` with an error naming
//! it, so nobody believes a container is confined when it is not.
//!
//! The spec is handled as JSON values so that fields this shim does not
//! know survive the rewrite untouched.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cgroup::Layout;
use crate::error::{Error, Result};

/// runc's default, used when the process environment has no `PATH`
/// (runc `libcontainer/init_linux.go`).
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `CAP_SYS_RESOURCE`, needed to lower `oom_score_adj`.
const CAP_SYS_RESOURCE: u32 = 24;

/// What the shim needs from a bundle's `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleSpec {
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
    pub annotations: HashMap<String, String>,
}

/// Reads `bundle/config.json`, fills in a missing `PATH`, rejects what
/// libcontainer cannot honour on this host and writes the spec back when it
/// changed.
pub(crate) fn prepare_bundle(bundle: &Path, layout: Layout) -> Result<BundleSpec> {
    let path = bundle.join("config.json");
    let raw = fs::read(&path).map_err(|e| Error::io("read spec", &path, e))?;
    let mut spec: Value = serde_json::from_slice(&raw)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    let process = spec
        .get_mut("process")
        .ok_or_else(|| Error::InvalidArgument("spec has no `process`".into()))?;
    let changed = ensure_path(process)?;
    validate(&spec, layout, sys_resource_capable())?;
    if changed {
        let bytes = serde_json::to_vec(&spec)
            .map_err(|e| Error::InvalidArgument(format!("re-encode spec: {e}")))?;
        fs::write(&path, bytes).map_err(|e| Error::io("write spec", &path, e))?;
    }
    let root = spec
        .pointer("/root/path")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidArgument("spec has no `root.path`".into()))?;
    let annotations = spec
        .get("annotations")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok(BundleSpec {
        rootfs: bundle.join(root),
        annotations,
    })
}

/// Fills in a missing `PATH` in an exec process spec (JSON) and checks it.
pub(crate) fn prepare_process(raw: &[u8]) -> Result<Vec<u8>> {
    let mut process: Value = serde_json::from_slice(raw)
        .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
    ensure_path(&mut process)?;
    if process.get("selinuxLabel").is_some_and(is_set) {
        return Err(selinux_unsupported());
    }
    serde_json::to_vec(&process).map_err(|e| Error::InvalidArgument(format!("exec spec: {e}")))
}

/// Appends the default `PATH` when `process.env` has none; returns whether
/// anything changed.
fn ensure_path(process: &mut Value) -> Result<bool> {
    let object = process
        .as_object_mut()
        .ok_or_else(|| Error::InvalidArgument("`process` is not an object".into()))?;
    let env = object
        .entry("env")
        .or_insert_with(|| Value::Array(Vec::new()));
    let env = env
        .as_array_mut()
        .ok_or_else(|| Error::InvalidArgument("`process.env` is not an array".into()))?;
    let has_path = env
        .iter()
        .any(|v| v.as_str().is_some_and(|s| s.starts_with("PATH=")));
    if !has_path {
        env.push(Value::String(DEFAULT_PATH.to_owned()));
    }
    Ok(!has_path)
}

fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

fn selinux_unsupported() -> Error {
    Error::UnsupportedSpec {
        field: "process.selinuxLabel",
        reason: "libcontainer does not apply SELinux process labels".into(),
    }
}

/// Rejects fields libcontainer would drop without a word.
fn validate(spec: &Value, layout: Layout, sys_resource: bool) -> Result<()> {
    if spec.pointer("/process/selinuxLabel").is_some_and(is_set) {
        return Err(selinux_unsupported());
    }
    if layout == Layout::Hybrid {
        // libcgroups' v1 manager has no place for these and skips them.
        if spec.pointer("/linux/resources/unified").is_some_and(is_set) {
            return Err(Error::UnsupportedSpec {
                field: "linux.resources.unified",
                reason: "cgroup v2 settings need a cgroup v2 host; this host's controllers are v1"
                    .into(),
            });
        }
        if spec.pointer("/linux/resources/rdma").is_some_and(is_set) {
            return Err(Error::UnsupportedSpec {
                field: "linux.resources.rdma",
                reason: "libcontainer's cgroup v1 manager has no rdma controller".into(),
            });
        }
    }
    if let Some(adj) = spec.pointer("/process/oomScoreAdj").and_then(Value::as_i64) {
        if adj < current_oom_score_adj() && !sys_resource {
            return Err(Error::UnsupportedSpec {
                field: "process.oomScoreAdj",
                reason: format!(
                    "lowering oom_score_adj to {adj} needs CAP_SYS_RESOURCE, which this shim lacks"
                ),
            });
        }
    }
    Ok(())
}

fn current_oom_score_adj() -> i64 {
    fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether the shim's effective capabilities include `CAP_SYS_RESOURCE`.
fn sys_resource_capable() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn adds_default_path_when_missing() {
        let mut process = json!({"args": ["/bin/true"], "env": ["HOME=/"]});
        assert!(ensure_path(&mut process).unwrap());
        assert_eq!(process["env"][1], DEFAULT_PATH);
        assert!(!ensure_path(&mut process).unwrap());
    }

    #[test]
    fn keeps_an_existing_path() {
        let mut process = json!({"env": ["PATH=/opt/bin"]});
        assert!(!ensure_path(&mut process).unwrap());
        assert_eq!(process["env"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn adds_env_when_absent() {
        let mut process = json!({"args": ["sh"]});
        assert!(ensure_path(&mut process).unwrap());
        assert_eq!(process["env"][0], DEFAULT_PATH);
    }

    #[test]
    fn rejects_silently_ignored_fields_by_name() {
        let cases = [
            (
                json!({"process": {"selinuxLabel": "system_u:system_r:container_t:s0"}}),
                "process.selinuxLabel",
            ),
            (
                json!({"linux": {"resources": {"unified": {"memory.high": "1M"}}}}),
                "linux.resources.unified",
            ),
            (
                json!({"linux": {"resources": {"rdma": {"mlx": {"hcaHandles": 1}}}}}),
                "linux.resources.rdma",
            ),
            (
                json!({"process": {"oomScoreAdj": -1000}}),
                "process.oomScoreAdj",
            ),
        ];
        for (spec, field) in cases {
            match validate(&spec, Layout::Hybrid, false) {
                Err(Error::UnsupportedSpec { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected UnsupportedSpec, got {other:?}"),
            }
        }
    }

    #[test]
    fn accepts_what_libcontainer_honours() {
        let spec = json!({
            "process": {"oomScoreAdj": 500, "selinuxLabel": ""},
            "linux": {"resources": {"unified": {"memory.high": "1M"}}}
        });
        validate(&spec, Layout::Unified, false).unwrap();
        validate(
            &json!({"process": {"oomScoreAdj": -1000}}),
            Layout::Hybrid,
            true,
        )
        .unwrap();
    }

    #[test]
    fn prepare_bundle_rewrites_only_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        fs::write(
            &config,
            r#"{"process":{"args":["sh"],"env":[]},"root":{"path":"rootfs"},"annotations":{"a":"b"},"x-unknown":1}"#,
        )
        .unwrap();
        let spec = prepare_bundle(dir.path(), Layout::Unified).unwrap();
        assert_eq!(spec.rootfs, dir.path().join("rootfs"));
        assert_eq!(spec.annotations["a"], "b");
        let rewritten: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
        assert_eq!(rewritten["process"]["env"][0], DEFAULT_PATH);
        assert_eq!(rewritten["x-unknown"], 1);
    }

    #[test]
    fn exec_process_gets_path() {
        let out = prepare_process(br#"{"args":["ls"],"cwd":"/"}"#).unwrap();
        let process: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(process["env"][0], DEFAULT_PATH);
    }
}
