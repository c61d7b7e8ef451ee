//! Resolving a RECORDING argument: a file, a directory, or a container id
//! under the recordings root (see `diffkeeper_recorder::Archive`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use diffkeeper_recorder::{recordings_in, Archive, Archived};

/// Resolves a RECORDING argument to one file.
pub fn resolve(root: &Path, arg: &str, namespace: Option<&str>) -> Result<PathBuf> {
    let as_path = Path::new(arg);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    if as_path.is_dir() {
        return recordings_in(as_path)?
            .pop()
            .with_context(|| format!("{arg}: no recording (*.redb) in this directory"));
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
        1 => Ok(matches.last().expect("one match").path.clone()),
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
