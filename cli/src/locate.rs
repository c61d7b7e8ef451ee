//! Finding recordings: a RECORDING argument (a file, a directory, or a
//! container id under the recordings root, see
//! `diffkeeper_recorder::Archive`), or a Kubernetes pod and container.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use diffkeeper_recorder::{pod_container_of, recordings_in, Archive, Archived};

use crate::args::{PodArgs, PodName, RecordingArg};

/// Resolves the recording a reading command names to one file.
pub fn resolve(root: &Path, arg: &RecordingArg) -> Result<PathBuf> {
    let previous = arg.pod.previous;
    match (&arg.recording, &arg.pod.pod) {
        (Some(name), _) => resolve_name(root, name, arg.namespace.as_deref(), previous),
        (None, Some(_)) => resolve_pod(root, arg.namespace.as_deref(), &arg.pod),
        (None, None) => bail!("name a RECORDING or a --pod"),
    }
}

/// The newest of `candidates` (oldest first), or with `previous` the one
/// before it.
fn pick<T>(mut candidates: Vec<T>, previous: bool) -> Option<T> {
    if previous {
        candidates.pop()?;
    }
    candidates.pop()
}

fn resolve_name(
    root: &Path,
    arg: &str,
    namespace: Option<&str>,
    previous: bool,
) -> Result<PathBuf> {
    let as_path = Path::new(arg);
    if as_path.is_file() {
        if previous {
            bail!("{arg} is one recording file; --previous needs a directory, a container id or --pod");
        }
        return Ok(as_path.to_path_buf());
    }
    if as_path.is_dir() {
        let found = recordings_in(as_path)?;
        let count = found.len();
        return pick(found, previous).with_context(|| match count {
            0 => format!("{arg}: no recording (*.redb) in this directory"),
            _ => format!("{arg}: one recording only, so no previous one"),
        });
    }
    let mut matches: Vec<Archived> = Archive::new(root)
        .list(namespace)?
        .into_iter()
        .filter(|f| f.container.starts_with(arg))
        .collect();
    // An exact id wins over longer ids it is a prefix of (`web`, `web-1`).
    if matches.iter().any(|f| f.container == arg) {
        matches.retain(|f| f.container == arg);
    }
    let mut containers: Vec<(&str, &str)> = matches
        .iter()
        .map(|f| (f.namespace.as_str(), f.container.as_str()))
        .collect();
    containers.dedup();
    match containers.len() {
        0 => bail!(
            "no recording file, directory or container {arg:?} under {}{}",
            root.display(),
            namespace
                .map(|n| format!(" in namespace {n:?}"))
                .unwrap_or_default()
        ),
        // Listed in name order, which is start order.
        1 => pick(matches, previous).map(|f| f.path).with_context(|| {
            format!("container {arg:?} has one recording only, so no previous one")
        }),
        _ => {
            let names: Vec<String> = containers
                .iter()
                .map(|(ns, c)| format!("{ns}/{c}"))
                .collect();
            bail!(
                "{arg:?} matches several containers ({}); give more of the id or --namespace",
                names.join(", ")
            )
        }
    }
}

fn resolve_pod(root: &Path, namespace: Option<&str>, args: &PodArgs) -> Result<PathBuf> {
    let pod = args.pod.as_ref().context("--pod is required here")?;
    let in_pod: Vec<(Archived, String)> = Archive::new(root)
        .list(namespace)?
        .into_iter()
        .filter_map(|a| {
            let name = pod_container(&a, pod)?.to_owned();
            Some((a, name))
        })
        .collect();
    let names: BTreeSet<&str> = in_pod.iter().map(|(_, name)| name.as_str()).collect();
    let container = match (&args.container, names.len()) {
        (Some(name), _) => name.clone(),
        (None, 0) => bail!("no recording of pod {pod} under {}", root.display()),
        (None, 1) => names.first().expect("one name").to_string(),
        (None, _) => bail!(
            "pod {pod} has recordings of several containers ({}); pick one with --container",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    // One directory per pod container, in start order.
    let instances: Vec<Archived> = in_pod
        .into_iter()
        .filter(|(_, name)| *name == container)
        .map(|(a, _)| a)
        .collect();
    let count = instances.len();
    pick(instances, args.previous)
        .map(|a| a.path)
        .with_context(|| match count {
            0 => format!("no recording of container {container:?} in pod {pod}"),
            _ => format!(
                "container {container:?} in pod {pod} has one recording only, so no previous one"
            ),
        })
}

/// The container name of a recording of a container of `pod`, read from
/// its directory's name (see `container_key`).
fn pod_container<'a>(found: &'a Archived, pod: &PodName) -> Option<&'a str> {
    let (namespace, name, container) = pod_container_of(&found.container)?;
    (namespace == pod.namespace && name == pod.name).then_some(container)
}

/// The recordings `args` selects (all without `--pod`), in the order
/// `Archive::list` gives; with `--previous`, for each container the
/// instance before its newest. A Kubernetes container's restarts share its
/// directory, so no recording needs to be opened.
pub fn select(found: Vec<Archived>, args: &PodArgs) -> Vec<Archived> {
    let chosen = found.into_iter().filter(|a| match &args.pod {
        None => true,
        Some(pod) => pod_container(a, pod)
            .is_some_and(|container| args.container.as_ref().is_none_or(|name| name == container)),
    });
    if !args.previous {
        return chosen.collect();
    }
    let mut previous = Vec::new();
    let mut chosen = chosen.peekable();
    while let Some(first) = chosen.next() {
        // `list` sorts by directory, then start: a container is a run.
        let mut run = vec![first];
        while let Some(next) = chosen
            .next_if(|n| (&n.namespace, &n.container) == (&run[0].namespace, &run[0].container))
        {
            run.push(next);
        }
        previous.extend(pick(run, true));
    }
    previous
}
