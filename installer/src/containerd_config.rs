//! The runtime entry in containerd's config file. Edited with `toml_edit`
//! so the user's comments, layout and every other key survive; the file is
//! rewritten only when the entry changes.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Key, Table, Value};

use crate::atomic_file::write_atomically;
use crate::Outcome;

/// The runtime type containerd maps to the binary `containerd-shim-diffkeeper-v1`.
const RUNTIME_TYPE: &str = "io.containerd.diffkeeper.v1";

/// The comment above our table's header: what tells our entry from one a
/// user wrote by hand, which we never touch without `--force`.
const MARKER: &str = "# managed by diffkeeper-node-installer; `uninstall` removes it";

/// containerd's CRI plugin passes the shim only the annotations its runtime
/// entry lists. The kubelet's restart count lets a recording name the
/// restart attempt it belongs to.
const POD_ANNOTATIONS: [&str; 1] = ["io.diffkeeper.*"];
const CONTAINER_ANNOTATIONS: [&str; 2] =
    ["io.diffkeeper.*", "io.kubernetes.container.restartCount"];

/// The mode of a config file we create (containerd's packages ship 0644).
const NEW_FILE_MODE: u32 = 0o644;

/// containerd's config file versions, which differ in where CRI runtimes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigVersion {
    /// No `version` key: containerd before 1.3, still read by 1.x.
    V1,
    /// containerd 1.3–1.7 (also read by 2.x).
    V2,
    /// containerd 2.x.
    V3,
}

impl ConfigVersion {
    /// containerd reads a config without `version` as version 1; an empty
    /// one is version 2 here, because that is what we write into it.
    fn of(doc: &DocumentMut, path: &Path) -> Result<Self, ConfigError> {
        let Some(item) = doc.get("version") else {
            let empty = doc.as_table().is_empty();
            return Ok(if empty { Self::V2 } else { Self::V1 });
        };
        match item.as_integer() {
            Some(1) => Ok(Self::V1),
            Some(2) => Ok(Self::V2),
            Some(3) => Ok(Self::V3),
            _ => Err(ConfigError::UnknownVersion {
                path: path.into(),
                found: item.to_string().trim().to_owned(),
            }),
        }
    }

    /// The table holding CRI runtimes (containerd's `docs/cri/config.md`).
    fn runtimes_path(self) -> [&'static str; 4] {
        let cri = match self {
            Self::V1 => "cri",
            Self::V2 => "io.containerd.grpc.v1.cri",
            Self::V3 => "io.containerd.cri.v1.runtime",
        };
        ["plugins", cri, "containerd", "runtimes"]
    }

    /// The runtime's table as a TOML header names it.
    fn table_name(self, runtime: &str) -> String {
        dotted(self.runtimes_path().into_iter().chain([runtime]))
    }
}

/// Keys joined as in a TOML header, quoted where needed.
fn dotted<'k>(keys: impl IntoIterator<Item = &'k str>) -> String {
    let keys: Vec<_> = keys
        .into_iter()
        .map(|key| Key::new(key).display_repr().into_owned())
        .collect();
    keys.join(".")
}

/// The runtime to register.
#[derive(Debug, Clone)]
pub struct RuntimeEntry {
    /// The entry's name, which a RuntimeClass names as its `handler`.
    pub name: String,
    /// The node config file the shim should read, as a path on the host;
    /// `None` leaves the shim's default (`/etc/diffkeeper/config.toml`).
    pub node_config: Option<String>,
}

impl RuntimeEntry {
    fn table(&self) -> Table {
        let mut table = Table::new();
        table.insert("runtime_type", value(RUNTIME_TYPE));
        table.insert("pod_annotations", value(Array::from_iter(POD_ANNOTATIONS)));
        let container_annotations = Array::from_iter(CONTAINER_ANNOTATIONS);
        table.insert("container_annotations", value(container_annotations));
        if let Some(path) = &self.node_config {
            // Options of a runtime containerd does not know are decoded as
            // its generic runtimeoptions.Options, whose file is `ConfigPath`.
            let mut options = Table::new();
            options.insert("ConfigPath", value(path.as_str()));
            table.insert("options", Item::Table(options));
        }
        table
    }
}

/// What an edit did, and to which table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub outcome: Outcome,
    /// The runtime's table as a TOML header names it.
    pub table: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read containerd config {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid TOML, so containerd cannot load it either; fix the file and retry: {source}")]
    Parse {
        path: PathBuf,
        source: toml_edit::TomlError,
    },
    #[error("{path}: `version = {found}` is not a containerd config version (1, 2 or 3); fix the file and retry")]
    UnknownVersion { path: PathBuf, found: String },
    #[error("{path}: `{key}` is not a [table] (an inline table or a value?); rewrite it as a table and retry")]
    NotATable { path: PathBuf, key: String },
    #[error("{path}: [{table}] was not added by diffkeeper-node-installer (no marker comment, or another runtime_type); pass --force to {action} it anyway, or choose another --runtime-name")]
    Foreign {
        path: PathBuf,
        table: String,
        action: &'static str,
    },
    #[error("cannot write containerd config {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Adds `entry` to the config at `path`, or updates it if ours; an entry of
/// that name not ours is an error unless `force`. A missing or empty file
/// becomes a version 2 config.
pub fn add_runtime(path: &Path, entry: &RuntimeEntry, force: bool) -> Result<Edit, ConfigError> {
    edit(path, &entry.name, |doc, version| {
        if doc.as_table().is_empty() {
            doc.insert("version", value(2));
        }
        let runtimes = runtimes_mut(doc, version, path)?;
        let mut wanted = entry.table();
        let outcome = match runtimes.get(&entry.name) {
            None => {
                wanted.decor_mut().set_prefix(format!("\n{MARKER}\n"));
                Outcome::Added
            }
            Some(Item::Table(old)) if is_ours(old) => {
                if same_table(old, &wanted) {
                    return Ok(Outcome::Unchanged);
                }
                // Keeps the header's comments and the table's place in the file.
                *wanted.decor_mut() = old.decor().clone();
                wanted.set_position(old.position());
                Outcome::Updated
            }
            Some(_) if !force => return Err(foreign(path, version, &entry.name, "replace")),
            Some(old) => {
                let old = old.as_table();
                let prefix = old
                    .and_then(|t| t.decor().prefix()?.as_str())
                    .unwrap_or("\n");
                wanted.decor_mut().set_prefix(format!("{prefix}{MARKER}\n"));
                wanted.set_position(old.and_then(Table::position));
                Outcome::Replaced
            }
        };
        runtimes.insert(&entry.name, Item::Table(wanted));
        Ok(outcome)
    })
}

/// Removes the runtime `name` from the config at `path` if ours (any entry
/// of that name with `force`). Parent tables stay: they may be the user's.
pub fn remove_runtime(path: &Path, name: &str, force: bool) -> Result<Edit, ConfigError> {
    edit(path, name, |doc, version| {
        let runtimes = version
            .runtimes_path()
            .into_iter()
            .try_fold(doc.as_table_mut(), |parent, key| {
                parent.get_mut(key)?.as_table_mut()
            });
        let Some(runtimes) = runtimes.filter(|runtimes| runtimes.contains_key(name)) else {
            return Ok(Outcome::Absent);
        };
        let ours = runtimes
            .get(name)
            .and_then(Item::as_table)
            .is_some_and(is_ours);
        if !ours && !force {
            return Err(foreign(path, version, name, "remove"));
        }
        runtimes.remove(name);
        Ok(Outcome::Removed)
    })
}

/// Applies `change` to the config at `path` (a missing file is an empty
/// one) and writes the file back if it changed, keeping its mode.
fn edit(
    path: &Path,
    runtime: &str,
    change: impl FnOnce(&mut DocumentMut, ConfigVersion) -> Result<Outcome, ConfigError>,
) -> Result<Edit, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.into(),
        source,
    };
    let (text, mode) = match fs::read_to_string(path) {
        Ok(text) => (
            text,
            fs::metadata(path).map_err(read_error)?.permissions().mode() & 0o7777,
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => (String::new(), NEW_FILE_MODE),
        Err(err) => return Err(read_error(err)),
    };
    let mut doc = text
        .parse::<DocumentMut>()
        .map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
    let version = ConfigVersion::of(&doc, path)?;
    let outcome = change(&mut doc, version)?;
    if outcome.changed() {
        write_atomically(path, doc.to_string().as_bytes(), mode).map_err(|source| {
            ConfigError::Write {
                path: path.into(),
                source,
            }
        })?;
    }
    Ok(Edit {
        outcome,
        table: version.table_name(runtime),
    })
}

fn foreign(path: &Path, version: ConfigVersion, name: &str, action: &'static str) -> ConfigError {
    let (path, table) = (path.into(), version.table_name(name));
    ConfigError::Foreign {
        path,
        table,
        action,
    }
}

/// The runtimes table, with missing parents created implicit (no header of
/// their own), so the file gains only our table.
fn runtimes_mut<'d>(
    doc: &'d mut DocumentMut,
    version: ConfigVersion,
    path: &Path,
) -> Result<&'d mut Table, ConfigError> {
    let mut table = doc.as_table_mut();
    for (depth, key) in version.runtimes_path().into_iter().enumerate() {
        let item = table.entry(key).or_insert_with(|| {
            let mut parent = Table::new();
            parent.set_implicit(true);
            Item::Table(parent)
        });
        table = item.as_table_mut().ok_or_else(|| ConfigError::NotATable {
            path: path.into(),
            key: dotted(version.runtimes_path()[..=depth].iter().copied()),
        })?;
    }
    Ok(table)
}

/// Ours: the marker is the line right above the header (a comment further
/// up may quote it) and the runtime type is ours.
fn is_ours(table: &Table) -> bool {
    let prefix = table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("");
    let last_line = prefix
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty());
    last_line == Some(MARKER)
        && table.get("runtime_type").and_then(Item::as_str) == Some(RUNTIME_TYPE)
}

/// Equal keys and values, whatever their formatting.
fn same_table(a: &Table, b: &Table) -> bool {
    a.len() == b.len()
        && a.iter().all(|(key, item)| {
            b.get(key).is_some_and(|other| match (item, other) {
                (Item::Table(a), Item::Table(b)) => same_table(a, b),
                (Item::Value(a), Item::Value(b)) => same_value(a, b),
                _ => false,
            })
        })
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.value() == b.value(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(a, b)| same_value(a, b))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const V2: &str = r#"# containerd config, hand-tuned
version = 2
root = "/var/lib/containerd" # the big disk

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    # the default runtime
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"#;

    const FOREIGN: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.diffkeeper]
  runtime_type = "io.containerd.runc.v2"
"#;

    fn entry(node_config: Option<&str>) -> RuntimeEntry {
        let node_config = node_config.map(Into::into);
        RuntimeEntry {
            name: "diffkeeper".into(),
            node_config,
        }
    }

    /// A config file holding `text` (none: no file) in a fresh directory.
    fn config(text: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/containerd/config.toml");
        if let Some(text) = text {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
        }
        (dir, path)
    }

    fn add(path: &Path, node_config: Option<&str>) -> Outcome {
        add_runtime(path, &entry(node_config), false)
            .unwrap()
            .outcome
    }

    fn parsed(path: &Path) -> DocumentMut {
        fs::read_to_string(path).unwrap().parse().unwrap()
    }

    /// The table at `keys`, which must exist.
    fn table<'d>(doc: &'d DocumentMut, keys: &[&str]) -> &'d Table {
        let mut table = doc.as_table();
        for key in keys {
            table = table[key].as_table().expect(key);
        }
        table
    }

    fn strings(item: &Item) -> Vec<&str> {
        let array = item.as_array().unwrap();
        array.iter().map(|v| v.as_str().unwrap()).collect()
    }

    /// Our entry in the file at `path`, checked to hold what install writes.
    fn our_entry(path: &Path, version: ConfigVersion) -> Table {
        let doc = parsed(path);
        let ours = table(&doc, &version.runtimes_path())["diffkeeper"]
            .as_table()
            .unwrap();
        assert!(is_ours(ours), "{doc}");
        assert_eq!(ours["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        assert_eq!(strings(&ours["pod_annotations"]), POD_ANNOTATIONS);
        assert_eq!(
            strings(&ours["container_annotations"]),
            CONTAINER_ANNOTATIONS
        );
        ours.clone()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn v2_entry_is_added_and_removed_keeping_the_users_file() {
        let (_dir, path) = config(Some(V2));
        let edit = add_runtime(&path, &entry(None), false).unwrap();
        assert_eq!(edit.outcome, Outcome::Added);
        let table_name = r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes.diffkeeper"#;
        assert_eq!(edit.table, table_name);
        assert!(!our_entry(&path, ConfigVersion::V2).contains_key("options"));
        let doc = parsed(&path);
        let cri = table(&doc, &["plugins", "io.containerd.grpc.v1.cri"]);
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.9")
        );
        let text = doc.to_string();
        for comment in [
            "# containerd config, hand-tuned",
            "# the big disk",
            "# the default runtime",
        ] {
            assert!(text.contains(comment), "{comment} lost:\n{text}");
        }

        let edit = remove_runtime(&path, "diffkeeper", false).unwrap();
        assert_eq!(edit.outcome, Outcome::Removed);
        assert_eq!(fs::read_to_string(&path).unwrap(), V2);
        let again = remove_runtime(&path, "diffkeeper", false).unwrap();
        assert_eq!(again.outcome, Outcome::Absent);
    }

    #[test]
    fn a_symlinked_config_is_refused_not_replaced_by_a_file() {
        let (dir, target) = config(Some(V2));
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = add_runtime(&link, &entry(None), false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), V2);
    }

    #[test]
    fn v3_entry_goes_under_the_cri_runtime_plugin() {
        let v3 = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"runc\"\n";
        let (_dir, path) = config(Some(v3));
        assert_eq!(add(&path, None), Outcome::Added);
        our_entry(&path, ConfigVersion::V3);
        let plugins = table(&parsed(&path), &["plugins"]).clone();
        assert!(!plugins.contains_key("io.containerd.grpc.v1.cri"));
    }

    #[test]
    fn without_version_the_entry_goes_under_v1_cri_and_no_version_is_added() {
        let (_dir, path) = config(Some(
            "[plugins.cri.containerd]\n  snapshotter = \"overlayfs\"\n",
        ));
        let edit = add_runtime(&path, &entry(None), false).unwrap();
        assert_eq!(edit.table, "plugins.cri.containerd.runtimes.diffkeeper");
        our_entry(&path, ConfigVersion::V1);
        let doc = parsed(&path);
        assert!(!doc.contains_key("version"));
        let containerd = table(&doc, &["plugins", "cri", "containerd"]);
        assert_eq!(containerd["snapshotter"].as_str(), Some("overlayfs"));
    }

    #[test]
    fn a_missing_file_is_created_as_version_2() {
        let (_dir, path) = config(None);
        assert_eq!(add(&path, None), Outcome::Added);
        assert_eq!(parsed(&path)["version"].as_integer(), Some(2));
        our_entry(&path, ConfigVersion::V2);
        assert_eq!(mode(&path), NEW_FILE_MODE);
    }

    #[test]
    fn an_empty_file_becomes_version_2_keeping_its_mode() {
        let (_dir, path) = config(Some(""));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(add(&path, None), Outcome::Added);
        assert_eq!(parsed(&path)["version"].as_integer(), Some(2));
        our_entry(&path, ConfigVersion::V2);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_second_install_leaves_the_file_untouched() {
        let (_dir, path) = config(Some(V2));
        add(&path, Some("/etc/diffkeeper/config.toml"));
        let (before, inode) = (fs::read(&path).unwrap(), fs::metadata(&path).unwrap().ino());
        assert_eq!(
            add(&path, Some("/etc/diffkeeper/config.toml")),
            Outcome::Unchanged
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(
            fs::metadata(&path).unwrap().ino(),
            inode,
            "rewritten although unchanged"
        );
    }

    #[test]
    fn our_entry_is_updated_in_place() {
        let (_dir, path) = config(Some(V2));
        add(&path, None);
        assert_eq!(
            add(&path, Some("/etc/diffkeeper/node.toml")),
            Outcome::Updated
        );
        let ours = our_entry(&path, ConfigVersion::V2);
        let config_path = ours["options"]["ConfigPath"].as_str();
        assert_eq!(config_path, Some("/etc/diffkeeper/node.toml"));

        assert_eq!(add(&path, None), Outcome::Updated);
        assert!(!our_entry(&path, ConfigVersion::V2).contains_key("options"));
        remove_runtime(&path, "diffkeeper", false).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), V2);
    }

    #[test]
    fn a_foreign_entry_is_refused_unless_forced() {
        let (_dir, path) = config(Some(FOREIGN));
        let err = add_runtime(&path, &entry(None), false).unwrap_err();
        let named = matches!(&err, ConfigError::Foreign { table, .. } if table.ends_with("runtimes.diffkeeper"));
        assert!(named && err.to_string().contains("--force"), "{err}");
        let err = remove_runtime(&path, "diffkeeper", false).unwrap_err();
        assert!(matches!(err, ConfigError::Foreign { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), FOREIGN);

        let forced = add_runtime(&path, &entry(None), true).unwrap();
        assert_eq!(forced.outcome, Outcome::Replaced);
        our_entry(&path, ConfigVersion::V2);
    }

    #[test]
    fn ours_needs_the_marker_right_above_the_header_and_our_runtime_type() {
        let other_type = FOREIGN.replace("[plugins", &format!("{MARKER}\n[plugins"));
        let ours = other_type.replace("io.containerd.runc.v2", RUNTIME_TYPE);
        let marker_higher_up = ours.replace(MARKER, &format!("{MARKER}\n# written by hand"));
        for foreign in [other_type, marker_higher_up] {
            let (_dir, path) = config(Some(&foreign));
            let err = add_runtime(&path, &entry(None), false).unwrap_err();
            assert!(matches!(err, ConfigError::Foreign { .. }), "{err}");
            let forced = remove_runtime(&path, "diffkeeper", true).unwrap();
            assert_eq!(forced.outcome, Outcome::Removed);
            assert_eq!(fs::read_to_string(&path).unwrap(), "version = 2\n");
        }
        let (_dir, path) = config(Some(&ours));
        assert_eq!(add(&path, None), Outcome::Updated);
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let (_dir, path) = config(Some("version = 4\n"));
        let err = add_runtime(&path, &entry(None), false).unwrap_err();
        let found_4 = matches!(&err, ConfigError::UnknownVersion { found, .. } if found == "4");
        assert!(found_4, "{err}");
    }
}
