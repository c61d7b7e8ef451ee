//! Finding recordings: by file, by directory, or by container id under the
//! recordings root (`<root>/<namespace>/<container-id>/<start>.redb`, as the
//! shim lays them out).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One recording file found under the root.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub namespace: String,
    pub container: String,
}

/// Every recording under `root`, optionally in one namespace, sorted by
/// namespace, container and start time.
pub fn list(root: &Path, namespace: Option<&str>) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    if !root.exists() {
        return Ok(found);
    }
    for ns in read_dirs(root)? {
        let ns_name = file_name(&ns);
        if namespace.is_some_and(|want| want != ns_name) {
            continue;
        }
        for container in read_dirs(&ns)? {
            for path in recordings_in(&container)? {
                found.push(Found {
                    path,
                    namespace: ns_name.clone(),
                    container: file_name(&container),
                });
            }
        }
    }
    found.sort_by(|a, b| {
        (&a.namespace, &a.container, &a.path).cmp(&(&b.namespace, &b.container, &b.path))
    });
    Ok(found)
}

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
    let matches: Vec<Found> = list(root, namespace)?
        .into_iter()
        .filter(|f| f.container.starts_with(arg))
        .collect();
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

/// The `*.redb` files directly in `dir`, oldest first (names start with the
/// start time, so name order is time order).
fn recordings_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "redb") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
