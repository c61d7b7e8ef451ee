//! The node's configuration file, and applying a container's annotations
//! on top of it.

use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};
use crate::settings::{settings, Config, Raw, Setting};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/diffkeeper/config.toml";
/// Environment variable naming another node file (the shim inherits
/// containerd's environment; the CLI reads it too).
pub const CONFIG_ENV: &str = "DIFFKEEPER_CONFIG";
pub const ANNOTATION_PREFIX: &str = "io.diffkeeper.";
/// File-only key choosing what a bad annotation does.
const INVALID_ANNOTATIONS_KEY: &str = "invalid-annotations";

/// What a bad `io.diffkeeper.*` annotation does.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum InvalidAnnotations {
    /// Container creation fails with the error (the default).
    #[default]
    Reject,
    /// The container runs unrecorded, with a warning in the shim's log.
    Warn,
}

/// Defaults overlaid with the node file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    pub config: Config,
    pub invalid_annotations: InvalidAnnotations,
    /// The file read, if any.
    pub path: Option<PathBuf>,
}

/// A container's configuration, and anything the user should be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl NodeConfig {
    /// The node file to read: `$DIFFKEEPER_CONFIG`, else the default path.
    pub fn default_path() -> PathBuf {
        std::env::var_os(CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Reads the node file; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => NodeConfig::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses the text of a node file (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    detail: e.message().to_string(),
                })?;
        let origin = Origin::File(path.to_path_buf());
        let mut node = NodeConfig {
            path: Some(path.to_path_buf()),
            ..NodeConfig::default()
        };
        let mut entries = Vec::new();
        flatten("", &table, &mut entries);
        for (key, value) in entries {
            if key == INVALID_ANNOTATIONS_KEY {
                node.invalid_annotations = match value.shown().as_str() {
                    "reject" => InvalidAnnotations::Reject,
                    "warn" => InvalidAnnotations::Warn,
                    _ => return Err(invalid(&origin, &key, &value, "reject or warn")),
                };
                continue;
            }
            let setting = find(&origin, &key)?;
            (setting.apply)(&mut node.config, &value)
                .map_err(|()| invalid(&origin, &key, &value, setting.accepts))?;
        }
        Ok(node)
    }

    /// Applies a container's `io.diffkeeper.*` annotations (other
    /// annotations are ignored).
    pub fn for_container<'a>(
        &self,
        annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Resolved, ConfigError> {
        let mut config = self.config.clone();
        let mut warnings = Vec::new();
        for (name, value) in annotations {
            let Some(key) = name.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            if let Err(err) = apply_annotation(&mut config, key, value) {
                match self.invalid_annotations {
                    InvalidAnnotations::Reject => return Err(err),
                    InvalidAnnotations::Warn => {
                        warnings.push(format!("recording disabled: {err}"));
                        config.record = false;
                    }
                }
            }
        }
        Ok(Resolved { config, warnings })
    }
}

fn apply_annotation(config: &mut Config, key: &str, value: &str) -> Result<(), ConfigError> {
    let origin = Origin::Annotation;
    let full = format!("{ANNOTATION_PREFIX}{key}");
    let setting = find(&origin, key).map_err(|_| ConfigError::UnknownKey {
        origin: Origin::Annotation,
        key: full.clone(),
        known: known_keys(false),
    })?;
    let raw = Raw::Str(value.to_string());
    if setting.node_only {
        return Err(invalid(
            &origin,
            &full,
            &raw,
            &format!(
                "no annotation: {key} can only be set in {}",
                crate::DEFAULT_CONFIG_PATH
            ),
        ));
    }
    (setting.apply)(config, &raw).map_err(|()| invalid(&origin, &full, &raw, setting.accepts))
}

fn find(origin: &Origin, key: &str) -> Result<&'static Setting, ConfigError> {
    settings()
        .iter()
        .find(|s| s.key == key)
        .ok_or_else(|| ConfigError::UnknownKey {
            origin: origin.clone(),
            key: key.to_string(),
            known: known_keys(true),
        })
}

fn known_keys(node: bool) -> String {
    let prefix = if node { "" } else { ANNOTATION_PREFIX };
    let keys: Vec<String> = settings()
        .iter()
        .filter(|s| node || !s.node_only)
        .map(|s| format!("{prefix}{}", s.key))
        .collect();
    keys.join(", ")
}

fn invalid(origin: &Origin, key: &str, value: &Raw, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        origin: origin.clone(),
        key: key.to_string(),
        value: value.shown(),
        expected: expected.to_string(),
    }
}

/// `[retention] keep = 3` becomes `("retention.keep", 3)`.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, Raw)>) {
    for (key, value) in table {
        let key = format!("{prefix}{key}");
        let raw = match value {
            toml::Value::Table(inner) => {
                flatten(&format!("{key}."), inner, out);
                continue;
            }
            toml::Value::String(s) => Raw::Str(s.clone()),
            toml::Value::Boolean(b) => Raw::Bool(*b),
            toml::Value::Integer(i) => Raw::Int(*i),
            toml::Value::Array(items) => Raw::List(
                items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect(),
            ),
            other => Raw::Str(other.to_string()),
        };
        out.push((key, raw));
    }
}
