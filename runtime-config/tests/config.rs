//! Layering and validation, as a node operator and a pod author meet them.

use std::path::Path;
use std::time::Duration;

use diffkeeper_runtime_config::{
    settings, BaselineMode, ConfigError, FailurePolicy, InvalidAnnotations, NodeConfig,
};

const FILE: &str = r#"
record = true
exclude = ["/tmp/**", "/var/cache/**"]
max-file-size = "64Mi"
debounce = "50ms"
baseline = "manifest"
on-failure = "closed"
recordings-root = "/srv/recordings"
ring-buffer-size = "32Mi"
invalid-annotations = "warn"

[retention]
keep = 3
max-age = "2d"
max-bytes = "10Gi"
"#;

fn node(text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(text, Path::new("/etc/diffkeeper/config.toml"))
}

#[test]
fn the_node_file_overrides_defaults() {
    let node = node(FILE).unwrap();
    let c = &node.config;
    assert_eq!(c.exclude, ["/tmp/**", "/var/cache/**"]);
    assert_eq!(c.max_file_size, 64 << 20);
    assert_eq!(c.debounce, Duration::from_millis(50));
    assert_eq!(c.baseline, BaselineMode::Manifest);
    assert_eq!(c.on_failure, FailurePolicy::Closed);
    assert_eq!(c.recordings_root, Path::new("/srv/recordings"));
    assert_eq!(c.ring_buffer_size, 32 << 20);
    assert_eq!(c.retention.keep, Some(3));
    assert_eq!(c.retention.max_age, Some(Duration::from_secs(2 * 86_400)));
    assert_eq!(c.retention.max_bytes, Some(10 << 30));
    assert_eq!(node.invalid_annotations, InvalidAnnotations::Warn);
    // Untouched keys keep their defaults.
    assert_eq!(c.include, ["/**"]);
}

#[test]
fn a_missing_file_means_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeConfig::load(&dir.path().join("absent.toml")).unwrap();
    assert_eq!(node, NodeConfig::default());
}

#[test]
fn file_errors_name_the_file_key_and_accepted_values() {
    let err = node("recrod = true").unwrap_err().to_string();
    assert!(
        err.starts_with("/etc/diffkeeper/config.toml: unknown key \"recrod\""),
        "{err}"
    );
    assert!(err.contains("known keys: record, include"), "{err}");

    let err = node("debounce = \"soon\"").unwrap_err().to_string();
    assert!(
        err.contains("debounce = \"soon\" is invalid: expected a duration"),
        "{err}"
    );

    let err = node("[retention]\nkeep = -1").unwrap_err().to_string();
    assert!(err.contains("retention.keep = \"-1\""), "{err}");

    let err = node("ring-buffer-size = \"3Mi\"").unwrap_err().to_string();
    assert!(err.contains("a power of two"), "{err}");

    let err = node("record = ").unwrap_err().to_string();
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn annotations_override_the_node_file() {
    let node = node("").unwrap();
    let resolved = node
        .for_container([
            ("io.diffkeeper.include", "/app/**, /etc/**"),
            ("io.diffkeeper.debounce", "250ms"),
            ("io.diffkeeper.retention.keep", "0"),
            ("io.kubernetes.cri.container-name", "web"),
        ])
        .unwrap();
    assert_eq!(resolved.config.include, ["/app/**", "/etc/**"]);
    assert_eq!(resolved.config.debounce, Duration::from_millis(250));
    assert_eq!(resolved.config.retention.keep, None);
    assert!(resolved.warnings.is_empty());

    let off = node
        .for_container([("io.diffkeeper.record", "false")])
        .unwrap();
    assert!(!off.config.record);
}

#[test]
fn bad_annotations_are_rejected_with_the_annotation_named() {
    let node = node("").unwrap();
    let err = node
        .for_container([("io.diffkeeper.recrod", "true")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("annotation: unknown key \"io.diffkeeper.recrod\""),
        "{err}"
    );
    assert!(err.contains("io.diffkeeper.record,"), "{err}");
    assert!(
        !err.contains("recordings-root"),
        "node-only keys are not offered: {err}"
    );

    let err = node
        .for_container([("io.diffkeeper.baseline", "everything")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "io.diffkeeper.baseline = \"everything\" is invalid: expected full, manifest or none"
        ),
        "{err}"
    );

    let err = node
        .for_container([("io.diffkeeper.include", "relative/**")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("absolute path globs"), "{err}");

    let err = node
        .for_container([("io.diffkeeper.recordings-root", "/tmp/steal")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("can only be set in /etc/diffkeeper/config.toml"),
        "{err}"
    );
}

#[test]
fn in_warn_mode_a_bad_annotation_disables_recording_loudly() {
    let node = node("invalid-annotations = \"warn\"").unwrap();
    let resolved = node
        .for_container([("io.diffkeeper.debounce", "forever")])
        .unwrap();
    assert!(!resolved.config.record);
    assert_eq!(resolved.warnings.len(), 1);
    assert!(
        resolved.warnings[0].starts_with("recording disabled: annotation: io.diffkeeper.debounce")
    );
}

#[test]
fn every_setting_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .unwrap();
    for setting in settings() {
        assert!(
            docs.contains(&format!("`{}`", setting.key)),
            "docs/configuration.md lacks `{}`",
            setting.key
        );
    }
}
