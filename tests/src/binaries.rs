//! Finding the binaries under test: the shim and the `diffkeeper` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The shim binary: `$DIFFKEEPER_SHIM_BIN` if set (e.g. to test a release
/// build), else built with the same cargo, profile and target directory as
/// the tests.
pub fn shim_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        locate(
            "DIFFKEEPER_SHIM_BIN",
            "diffkeeper-shim",
            "containerd-shim-diffkeeper-v1",
        )
    })
    .clone()
}

/// The `diffkeeper` CLI: `$DIFFKEEPER_CLI_BIN`, else built like the shim.
pub fn cli_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate("DIFFKEEPER_CLI_BIN", "diffkeeper-cli", "diffkeeper"))
        .clone()
}

/// The node installer: `$DIFFKEEPER_INSTALLER_BIN`, else built like the
/// shim.
pub fn installer_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        locate(
            "DIFFKEEPER_INSTALLER_BIN",
            "diffkeeper-installer",
            "diffkeeper-node-installer",
        )
    })
    .clone()
}

fn locate(env: &str, package: &str, bin: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env}={} is not a file", path.display()))
        };
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "-p",
        package,
        "--bin",
        bin,
        "--message-format=json",
    ]);
    command.arg("--manifest-path").arg(&manifest);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let out = command
        .output()
        .map_err(|e| format!("run cargo build for {bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|msg| msg.get("executable")?.as_str().map(PathBuf::from))
        .find(|exe| exe.file_name().is_some_and(|n| n == bin))
        .ok_or_else(|| format!("cargo built no {bin}"))
}
