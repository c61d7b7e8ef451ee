//! DiffKeeper's configuration, from three layers, later ones winning:
//!
//! 1. built-in defaults ([`Config::default`]);
//! 2. the node file, `/etc/diffkeeper/config.toml` ([`NodeConfig::load`]),
//!    or the file `$DIFFKEEPER_CONFIG` names;
//! 3. per-container annotations `io.diffkeeper.<key>`
//!    ([`NodeConfig::for_container`]), which Kubernetes users set on pods.
//!
//! Every key is described once, in [`settings`]; the same names are used in
//! the file and in annotations, and `docs/configuration.md` lists them.
//! Unknown keys and bad values are errors naming the key, the value and
//! what is accepted — never a silent default.

mod error;
mod node;
mod settings;
mod units;

pub use error::{ConfigError, Origin};
pub use node::{
    InvalidAnnotations, NodeConfig, Resolved, ANNOTATION_PREFIX, CONFIG_ENV, DEFAULT_CONFIG_PATH,
};
pub use settings::{
    settings, BaselineMode, CaptureBackend, Config, FailurePolicy, RestoreFrom, Retention, Setting,
    DEFAULT_RECORDINGS_ROOT,
};
pub use units::{parse_duration, parse_ring_buffer_size, parse_size};
