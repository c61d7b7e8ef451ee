//! Test filesystems: a busybox-static rootfs and an OCI image made from it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

/// Builds a busybox rootfs in `dir`: `/bin/busybox` plus one relative
/// symlink per applet (what `busybox --install -s` does, minus its
/// absolute host paths, which would dangle inside a container).
pub fn busybox_rootfs(dir: &Path) -> io::Result<()> {
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let busybox = which("busybox")?;
    fs::copy(&busybox, dir.join("bin/busybox"))?;
    let list = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

fn which(tool: &str) -> io::Result<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{tool} not on PATH"),
        ));
    }
    fs::canonicalize(path)
}

/// A hand-built single-layer OCI image archive, for `ctr images import`.
pub struct OciImage {
    pub archive: PathBuf,
    pub reference: String,
}

impl OciImage {
    /// Packs `rootfs` (plus a marker file `/etc/diffkeeper-image`) into an
    /// OCI image layout archive under `work`. The image config sets `PATH`
    /// and runs `entrypoint` (a pod sandbox image sleeping forever), or
    /// `/bin/sh` when it is empty.
    pub fn build(
        rootfs: &Path,
        work: &Path,
        reference: &str,
        entrypoint: &[&str],
    ) -> io::Result<Self> {
        let layout = work.join("oci-layout-dir");
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        fs::write(rootfs.join("etc/diffkeeper-image"), "from-image\n")?;
        let layer = work.join("layer.tar");
        run(Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."))?;
        fs::remove_file(rootfs.join("etc/diffkeeper-image"))?;
        let (layer_digest, layer_size) = store_blob(&blobs, &fs::read(&layer)?)?;
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": if entrypoint.is_empty() {
                json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]})
            } else {
                json!({"Env": ["PATH=/bin"], "Entrypoint": entrypoint})
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        });
        let (config_digest, config_size) = store_blob(&blobs, config.to_string().as_bytes())?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest, "size": layer_size,
            }],
        });
        let (manifest_digest, manifest_size) = store_blob(&blobs, manifest.to_string().as_bytes())?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": reference,
                },
            }],
        });
        fs::write(layout.join("index.json"), index.to_string())?;
        fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let archive = work.join("image.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg("."))?;
        Ok(Self {
            archive,
            reference: reference.to_owned(),
        })
    }
}

fn store_blob(blobs: &Path, data: &[u8]) -> io::Result<(String, usize)> {
    let tmp = blobs.join("incoming");
    fs::write(&tmp, data)?;
    let out = Command::new("sha256sum").arg(&tmp).output()?;
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    fs::rename(&tmp, blobs.join(&hex))?;
    Ok((format!("sha256:{hex}"), data.len()))
}

fn run(command: &mut Command) -> io::Result<()> {
    let status = command.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{command:?} failed: {status}")))
    }
}
