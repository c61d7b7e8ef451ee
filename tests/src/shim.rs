//! Finding the shim binary under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SHIM: &str = "containerd-shim-diffkeeper-v1";

/// The shim binary: `$DIFFKEEPER_SHIM_BIN` (the Makefile sets it), else
/// built with the same cargo, profile and target directory as the tests.
pub fn shim_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(locate).clone()
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("DIFFKEEPER_SHIM_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "DIFFKEEPER_SHIM_BIN={} is not a file",
                path.display()
            ))
        };
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "-p",
        "diffkeeper-shim",
        "--bin",
        SHIM,
        "--message-format=json",
    ]);
    command.arg("--manifest-path").arg(&manifest);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let out = command
        .output()
        .map_err(|e| format!("run cargo build for {SHIM}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p diffkeeper-shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|msg| msg.get("executable")?.as_str().map(PathBuf::from))
        .find(|exe| exe.file_name().is_some_and(|n| n == SHIM))
        .ok_or_else(|| format!("cargo built no {SHIM}"))
}
