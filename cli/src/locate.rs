//! Finding recordings: a RECORDING argument (a file, a directory, or a
//! container id under the recordings root, see
//! `diffkeeper_recorder::Archive`), or a Kubernetes pod and container.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use diffkeeper_recorder::{recordings_in, Archive, Archived};
use diffkeeper_store::{KubernetesIdentity, Recording};

use crate::args::{PodArgs, RecordingArg};

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
    let all = catalogue(root, namespace)?;
    let in_pod: Vec<Entry> = all
        .into_iter()
        .filter(|e| e.kubernetes().is_some_and(|k| pod.matches(k)))
        .collect();
    let names: BTreeSet<&str> = in_pod
        .iter()
        .filter_map(|e| e.kubernetes())
        .map(|k| k.container_name.as_str())
        .collect();
    let container = match (&args.container, names.len()) {
        (Some(name), _) => name.clone(),
        (None, 0) => bail!("no recording of pod {pod} under {}", root.display()),
        (None, 1) => names.first().expect("one name").to_string(),
        (None, _) => bail!(
            "pod {pod} has recordings of several containers ({}); pick one with --container",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    let instances: Vec<Entry> = in_pod
        .into_iter()
        .filter(|e| {
            e.kubernetes()
                .is_some_and(|k| k.container_name == container)
        })
        .collect();
    let count = instances.len();
    pick(instances, args.previous)
        .map(|e| e.archived.path)
        .with_context(|| match count {
            0 => format!("no recording of container {container:?} in pod {pod}"),
            _ => format!(
                "container {container:?} in pod {pod} has one recording only, so no previous one"
            ),
        })
}

/// A recording under the root, opened to read what it says about itself.
pub struct Entry {
    pub archived: Archived,
    pub recording: diffkeeper_store::Result<Recording>,
}

impl Entry {
    pub fn kubernetes(&self) -> Option<&KubernetesIdentity> {
        self.recording.as_ref().ok()?.meta().kubernetes.as_ref()
    }

    fn started_unix_ns(&self) -> i64 {
        self.recording
            .as_ref()
            .map(|r| r.meta().started_unix_ns)
            .unwrap_or(i64::MIN)
    }

    /// Recordings of one container over its restarts: a Kubernetes
    /// container by pod and name (each restart has a new id), any other
    /// by namespace and id.
    fn instances_of(&self) -> (String, String, String) {
        match self.kubernetes() {
            Some(k) => (
                k.pod_namespace.clone(),
                k.pod_name.clone(),
                k.container_name.clone(),
            ),
            None => (
                self.archived.namespace.clone(),
                self.archived.container.clone(),
                String::new(),
            ),
        }
    }
}

/// Every recording under `root` (in `namespace`), oldest first.
pub fn catalogue(root: &Path, namespace: Option<&str>) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Archive::new(root)
        .list(namespace)?
        .into_iter()
        .map(|archived| Entry {
            recording: Recording::open(&archived.path),
            archived,
        })
        .collect();
    entries.sort_by_key(Entry::started_unix_ns);
    Ok(entries)
}

/// The entries `args` selects (all without `--pod`); with `--previous`,
/// for each container the instance before its newest.
pub fn select(entries: Vec<Entry>, args: &PodArgs) -> Vec<Entry> {
    let mut chosen: Vec<Entry> = entries
        .into_iter()
        .filter(|e| match &args.pod {
            None => true,
            Some(pod) => e.kubernetes().is_some_and(|k| {
                pod.matches(k)
                    && args
                        .container
                        .as_ref()
                        .is_none_or(|name| &k.container_name == name)
            }),
        })
        .collect();
    if args.previous {
        // Walk newest first: the second entry seen for a container is
        // its previous instance.
        let mut seen = std::collections::HashMap::new();
        let mut previous: Vec<Entry> = chosen
            .drain(..)
            .rev()
            .filter(|e| {
                let count = seen.entry(e.instances_of()).or_insert(0);
                *count += 1;
                *count == 2
            })
            .collect();
        previous.reverse();
        chosen = previous;
    }
    chosen
}
