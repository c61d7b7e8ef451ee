//! `io.diffkeeper.restore-from=<recording>@<time>`: a new container starts
//! from a recorded moment ("start from the crash site").
//!
//! `<recording>` names a container of the same containerd namespace whose
//! recordings are kept under the recordings root: `<container>` for its
//! newest recording, `<container>/<file>.redb` for one of them, where
//! `<container>` is its directory there (the container id, or for a
//! Kubernetes container `<pod namespace>_<pod name>_<container name>`).
//! Nothing outside the root and the namespace can be named, and a
//! Kubernetes container can name only containers of its own pod namespace
//! (every pod shares containerd's `k8s.io`), so a pod's annotation cannot
//! read another tenant's recording or an arbitrary host file.
//!
//! The recording must verify and the time must lie within it. Its state at
//! that time is applied to the new container's root filesystem (which
//! starts as the image, like the recorded container's did) before the
//! recorder starts, so the new recording's baseline is the restored state.

use std::path::{Path, PathBuf};

use diffkeeper_recorder::{pod_container_of, recordings_in, Archive};
use diffkeeper_runtime_config::RestoreFrom;
use diffkeeper_store::{Recording, RestoreReport, TimeSpec};

use crate::cri;
use crate::observer::ContainerInfo;

/// Applies `source` (the annotation, split) to `info.rootfs`.
pub(crate) async fn restore(
    info: &ContainerInfo,
    source: &RestoreFrom,
    recordings_root: &Path,
) -> Result<(), String> {
    let RestoreFrom { recording, time } = source;
    let fail = |reason: String| format!("io.diffkeeper.restore-from={recording}@{time}: {reason}");
    let spec: TimeSpec = time
        .parse()
        .map_err(|e| fail(format!("time {time:?}: {e}")))?;
    let (root, namespace, name) = (
        recordings_root.to_path_buf(),
        info.namespace.clone(),
        recording.clone(),
    );
    let tenant = cri::identity(&info.annotations).map(|k| k.pod_namespace);
    let rootfs = info.rootfs.clone();
    // Listing, verifying and writing are file I/O: off the shim's thread.
    let (file, report) = tokio::task::spawn_blocking(move || {
        let file = locate(&root, &namespace, &name, tenant.as_deref())?;
        apply(&file, &spec, &rootfs)
            .map(|report| (file.clone(), report))
            .map_err(|reason| format!("{}: {reason}", file.display()))
    })
    .await
    .map_err(|e| fail(format!("the restore task failed: {e}")))?
    .map_err(fail)?;
    tracing::info!(
        id = %info.id,
        from = %file.display(),
        time = %time,
        written = report.written,
        removed = report.removed,
        bytes = report.bytes,
        "restored the root filesystem"
    );
    if report.gaps > 0 {
        tracing::warn!(
            id = %info.id,
            gaps = report.gaps,
            "the recording has gaps before the restored moment: the state may be wrong near them"
        );
    }
    Ok(())
}

/// The recording file `name` refers to, within `<root>/<namespace>/`, and
/// for a Kubernetes container within its pod namespace `tenant`.
fn locate(
    root: &Path,
    namespace: &str,
    name: &str,
    tenant: Option<&str>,
) -> Result<PathBuf, String> {
    let (container, file) = match name.split_once('/') {
        Some((container, file)) => (container, Some(file)),
        None => (name, None),
    };
    if let Some(tenant) = tenant {
        if pod_container_of(container).is_none_or(|(pod_namespace, _, _)| pod_namespace != tenant) {
            return Err(format!(
                "a pod may restore only from its own namespace's containers: name one as \
                 {tenant}_<pod>_<container>"
            ));
        }
    }
    // The container's own directory, the same way the archive names it
    // (which refuses `..` and the like).
    let dir = Archive::new(root)
        .container_dir(namespace, container)
        .map_err(|e| e.to_string())?;
    let found = recordings_in(&dir)
        .unwrap_or_default()
        .into_iter()
        .rfind(|path| file.is_none_or(|want| path.file_name().is_some_and(|f| f == want)));
    found.ok_or_else(|| {
        format!(
            "no recording of container {container:?}{} in namespace {namespace:?} under {} \
             (`diffkeeper ls` lists them)",
            file.map(|f| format!(" named {f:?}")).unwrap_or_default(),
            root.display()
        )
    })
}

/// Opens, verifies, resolves and restores.
fn apply(file: &Path, spec: &TimeSpec, rootfs: &Path) -> Result<RestoreReport, String> {
    let recording = Recording::open(file).map_err(|e| e.to_string())?;
    let verified = recording.verify().map_err(|e| e.to_string())?;
    if let Some(problem) = verified.problems.first() {
        return Err(format!(
            "the recording does not verify ({} problems, the first: {problem}); \
             `diffkeeper verify` shows them all",
            verified.problems.len()
        ));
    }
    let moment = recording.resolve_within(spec).map_err(|e| e.to_string())?;
    recording
        .restore_into(&moment, rootfs)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_restores_only_from_its_own_namespace() {
        let root = tempfile::tempdir().unwrap();
        let archive = Archive::new(root.path());
        for dir in ["shop_web_app", "bank_vault_app", "3f2a"] {
            let slot = archive
                .slot("k8s.io", dir, std::time::SystemTime::now())
                .unwrap();
            std::fs::write(slot, b"").unwrap();
        }
        let found = |name, tenant| locate(root.path(), "k8s.io", name, tenant);
        assert!(found("shop_web_app", Some("shop")).is_ok());
        for (name, tenant) in [("bank_vault_app", "shop"), ("3f2a", "shop")] {
            let refused = found(name, Some(tenant)).unwrap_err();
            assert!(refused.contains("shop_<pod>_<container>"), "{refused}");
        }
        // Outside Kubernetes (ctr, nerdctl), any container of the namespace.
        assert!(found("3f2a", None).is_ok());
        assert!(found("bank_vault_app", None).is_ok());
    }
}
