//! Configuration errors: each names where the bad input came from, the key,
//! and what would have been accepted.

use std::fmt;
use std::path::PathBuf;

/// Where a setting was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Annotation,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Annotation => f.write_str("annotation"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{origin}: unknown key {key:?}; known keys: {known}")]
    UnknownKey {
        origin: Origin,
        key: String,
        known: String,
    },
    #[error("{origin}: {key} = {value:?} is invalid: expected {expected}")]
    InvalidValue {
        origin: Origin,
        key: String,
        value: String,
        expected: String,
    },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid TOML: {detail}")]
    Syntax { path: PathBuf, detail: String },
}
