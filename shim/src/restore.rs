//! `io.diffkeeper.restore-from=<recording>@<time>`: a new container starts
//! from a recorded moment ("start from the crash site").
//!
//! `<recording>` names a container of the same containerd namespace whose
//! recordings are kept under the recordings root: `<container-id>` for its
//! newest recording, `<container-id>/<file>.redb` for one of them. Nothing
//! outside the root and the namespace can be named, so a pod's annotation
//! cannot read another tenant's recording or an arbitrary host file.
//!
//! The recording must verify and the time must lie within it. Its state at
//! that time is applied to the new container's root filesystem (which
//! starts as the image, like the recorded container's did) before the
//! recorder starts, so the new recording's baseline is the restored state.

use std::path::{Path, PathBuf};

use diffkeeper_recorder::{recordings_in, Archive};
use diffkeeper_runtime_config::RestoreFrom;
use diffkeeper_store::{Recording, RestoreReport, TimeSpec};

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
    let rootfs = info.rootfs.clone();
    // Listing, verifying and writing are file I/O: off the shim's thread.
    let (file, report) = tokio::task::spawn_blocking(move || {
        let file = locate(&root, &namespace, &name)?;
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

/// The recording file `name` refers to, within `<root>/<namespace>/`.
fn locate(root: &Path, namespace: &str, name: &str) -> Result<PathBuf, String> {
    let (container, file) = match name.split_once('/') {
        Some((container, file)) => (container, Some(file)),
        None => (name, None),
    };
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
