//! The built installer run against a host root in a temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use toml_edit::DocumentMut;

const CONFIG: &str = "# the node's own config\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n";

fn installer(host: &Path, args: &[&str]) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_diffkeeper-node-installer"))
        .args(args)
        .args([
            "--host-root".as_ref(),
            host.as_os_str(),
            "--restart".as_ref(),
            "none".as_ref(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    (output, stdout)
}

#[test]
fn install_twice_then_uninstall() {
    let (host, from) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = host.path().join("etc/containerd/config.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(&config, CONFIG).unwrap();
    for name in ["containerd-shim-diffkeeper-v1", "diffkeeper"] {
        fs::write(from.path().join(name), format!("#!/bin/sh\necho {name}\n")).unwrap();
    }
    let from_arg = from.path().to_str().unwrap();
    let install = [
        "install",
        "--from",
        from_arg,
        "--node-config",
        "/etc/diffkeeper/config.toml",
    ];

    let (output, stdout) = installer(host.path(), &install);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches(" added").count(), 3, "{stdout}");
    assert!(
        stdout.contains("containerd: not restarted (--restart none)"),
        "{stdout}"
    );
    let doc: DocumentMut = fs::read_to_string(&config).unwrap().parse().unwrap();
    let entry =
        &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["diffkeeper"];
    assert_eq!(
        entry["runtime_type"].as_str(),
        Some("io.containerd.diffkeeper.v1")
    );
    assert_eq!(
        entry["options"]["ConfigPath"].as_str(),
        Some("/etc/diffkeeper/config.toml")
    );
    for name in ["containerd-shim-diffkeeper-v1", "diffkeeper"] {
        let meta = fs::metadata(host.path().join("usr/local/bin").join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    }

    let installed = fs::read(&config).unwrap();
    let (output, stdout) = installer(host.path(), &install);
    assert!(output.status.success());
    assert_eq!(
        stdout.matches("already present, unchanged").count(),
        3,
        "{stdout}"
    );
    assert!(
        stdout.contains("containerd: config unchanged, not restarted"),
        "{stdout}"
    );
    assert_eq!(fs::read(&config).unwrap(), installed);

    let (output, stdout) = installer(host.path(), &["uninstall"]);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.matches(" removed").count(), 3, "{stdout}");
    assert!(stdout.contains("recordings: left in place"), "{stdout}");
    assert_eq!(fs::read_to_string(&config).unwrap(), CONFIG);
    assert!(!host.path().join("usr/local/bin/diffkeeper").exists());
}

#[test]
fn a_foreign_entry_fails_with_exit_code_1_naming_the_file() {
    let host = tempfile::tempdir().unwrap();
    let config = host.path().join("etc/containerd/config.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    let foreign = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.diffkeeper]\n  runtime_type = \"io.containerd.runc.v2\"\n";
    fs::write(&config, foreign).unwrap();

    let (output, _) = installer(host.path(), &["uninstall"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(config.to_str().unwrap()) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), foreign);
}
