//! Kubernetes without a kubelet: containerd's CRI plugin, driven through
//! its gRPC API (the `k8s-cri` crate) the way the kubelet drives it.
//!
//! [`Containerd::start_cri`] enables the plugin with two handlers: `runc`
//! and `diffkeeper`, whose entry the node installer writes (the same
//! binary and code path a cluster's installer DaemonSet runs). Pods use
//! the host network, so no CNI plugin is needed (containerd logs one CNI
//! error and reports NetworkReady=false, which does not matter here).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, ImageStatusRequest,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PodSandboxStatusResponse,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::binaries::installer_binary;
use crate::containerd::Containerd;

/// The containerd namespace the CRI plugin uses.
pub const NAMESPACE: &str = "k8s.io";
/// Our handler: the runtime entry the node installer adds.
pub const DIFFKEEPER_HANDLER: &str = "diffkeeper";
/// The reference handler.
pub const RUNC_HANDLER: &str = "runc";
/// The pod sandbox image: busybox sleeping forever.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:diffkeeper-e2e";
/// The app containers' image: busybox.
pub const APP_IMAGE: &str = crate::containerd::TEST_IMAGE;
/// How long one CRI call may take before the test reports a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How [`Containerd::start_cri`] configures the CRI plugin.
pub(crate) struct Setup;

impl Setup {
    /// The CRI plugin's part of containerd's config.
    pub(crate) fn plugin_config(&self, dir: &Path) -> String {
        format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # Parallel test instances must not fight over the default port 10010.
  stream_server_port = "0"
  # This machine's bounding set lacks CAP_SYS_RESOURCE (see CONTEXT).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "{RUNC_HANDLER}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNC_HANDLER}]
    runtime_type = "io.containerd.runc.v2"
  # A handler whose shim binary does not exist.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.missing-shim]
    runtime_type = "io.containerd.missing.v1"
"#,
            cni = dir.join("cni").display(),
        )
    }

    /// Adds our handler to `config` and our binaries to `bin` with the
    /// node installer, as a cluster's DaemonSet would (without restarting
    /// anything: containerd has not started yet).
    pub(crate) fn install_runtime(&self, config: &Path, bin: &Path) -> Result<(), String> {
        let installer = installer_binary()?;
        let shim = crate::binaries::shim_binary()?;
        let cli = crate::binaries::cli_binary()?;
        // The installer copies from one directory; the binaries under test
        // may come from two (`DIFFKEEPER_*_BIN`).
        let from = config.with_file_name("dist");
        std::fs::create_dir_all(&from).map_err(|e| e.to_string())?;
        for (source, name) in [(shim, "containerd-shim-diffkeeper-v1"), (cli, "diffkeeper")] {
            std::os::unix::fs::symlink(&source, from.join(name))
                .map_err(|e| format!("link {}: {e}", source.display()))?;
        }
        let out = Command::new(&installer)
            .arg("install")
            .arg("--containerd-config")
            .arg(config)
            .arg("--bin-dir")
            .arg(bin)
            .arg("--from")
            .arg(&from)
            .args(["--runtime-name", DIFFKEEPER_HANDLER, "--restart", "none"])
            .output()
            .map_err(|e| format!("run {}: {e}", installer.display()))?;
        if !out.status.success() {
            return Err(format!(
                "node installer failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Imports the sandbox and app images and waits until CRI sees them
    /// (it learns of images from containerd's events).
    pub(crate) fn import_images(&self, ctrd: &Containerd, cri: &Cri) -> Result<(), String> {
        for (reference, entrypoint) in [
            (SANDBOX_IMAGE, &["/bin/sleep", "infinity"][..]),
            (APP_IMAGE, &[][..]),
        ] {
            ctrd.import_image(reference, entrypoint)?;
            cri.wait_for_image(reference)?;
        }
        Ok(())
    }
}

/// A failed CRI call: the gRPC status, or a call that did not return.
#[derive(Debug)]
pub enum CriError {
    Status(tonic::Status),
    Hung(&'static str),
}

impl CriError {
    /// The message containerd returned (for assertions on its text).
    pub fn message(&self) -> String {
        match self {
            CriError::Status(status) => status.message().to_owned(),
            CriError::Hung(call) => format!("{call} did not return within {CALL_TIMEOUT:?}"),
        }
    }
}

impl fmt::Display for CriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CriError::Status(status) => write!(f, "{:?}: {}", status.code(), status.message()),
            CriError::Hung(_) => f.write_str(&self.message()),
        }
    }
}

pub type CriResult<T> = Result<T, CriError>;

/// A pod the test started: its id and the config later calls repeat.
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

/// What a pod looks like to the kubelet: name, namespace, uid, handler.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub handler: &'a str,
    pub annotations: &'a [(&'a str, &'a str)],
}

/// One app container of a pod.
pub struct ContainerSpec<'a> {
    pub name: &'a str,
    /// The restart attempt (0 for the first start).
    pub attempt: u32,
    /// A busybox `sh -c` script.
    pub script: &'a str,
    pub annotations: &'a [(&'a str, &'a str)],
}

/// A blocking CRI client (runtime and image services) on its own runtime.
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    runtime_service: RuntimeServiceClient<Channel>,
    image_service: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to `ctrd`'s gRPC socket.
    pub fn connect(socket: &Path) -> Result<Cri, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let socket: PathBuf = socket.to_path_buf();
        let channel = runtime
            .block_on(async move {
                // The URI is required and ignored: the connector dials the
                // Unix socket.
                Endpoint::try_from("http://[::]:0")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(socket).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .map_err(|e| format!("connect to CRI: {e}"))?;
        Ok(Cri {
            runtime,
            runtime_service: RuntimeServiceClient::new(channel.clone()),
            image_service: ImageServiceClient::new(channel),
        })
    }

    /// Runs a CRI call with the time limit.
    fn call<T, F>(&self, name: &'static str, call: F) -> CriResult<T>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, call).await })
            .map_err(|_| CriError::Hung(name))?
            .map(tonic::Response::into_inner)
            .map_err(CriError::Status)
    }

    fn wait_for_image(&self, reference: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut images = self.image_service.clone();
            let found = self.call("ImageStatus", async move {
                images
                    .image_status(ImageStatusRequest {
                        image: Some(image_spec(reference)),
                        verbose: false,
                    })
                    .await
            });
            match found {
                Ok(status) if status.image.is_some() => return Ok(()),
                Ok(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(_) => return Err(format!("CRI does not see image {reference}")),
                Err(err) => return Err(format!("ImageStatus {reference}: {err}")),
            }
        }
    }

    /// RunPodSandbox with the host's network, pid namespace of its own.
    pub fn run_pod(&self, spec: &PodSpec) -> CriResult<Pod> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.into(),
                uid: spec.uid.into(),
                namespace: spec.namespace.into(),
                attempt: 0,
            }),
            // A host-network pod must leave the hostname empty.
            hostname: String::new(),
            annotations: pairs(spec.annotations),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut client = self.runtime_service.clone();
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: spec.handler.into(),
        };
        let response = self.call("RunPodSandbox", async move {
            client.run_pod_sandbox(request).await
        })?;
        Ok(Pod {
            id: response.pod_sandbox_id,
            config,
        })
    }

    /// CreateContainer of a busybox script in `pod`; returns its id.
    pub fn create_container(&self, pod: &Pod, spec: &ContainerSpec) -> CriResult<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.name.into(),
                attempt: spec.attempt,
            }),
            image: Some(image_spec(APP_IMAGE)),
            command: vec!["/bin/sh".into(), "-c".into(), spec.script.into()],
            // What the kubelet adds to every container it creates.
            annotations: pairs(spec.annotations)
                .into_iter()
                .chain([(
                    "io.kubernetes.container.restartCount".to_string(),
                    spec.attempt.to_string(),
                )])
                .collect(),
            ..Default::default()
        };
        let mut client = self.runtime_service.clone();
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let response = self.call("CreateContainer", async move {
            client.create_container(request).await
        })?;
        Ok(response.container_id)
    }

    pub fn start_container(&self, id: &str) -> CriResult<()> {
        let mut client = self.runtime_service.clone();
        let request = StartContainerRequest {
            container_id: id.into(),
        };
        self.call("StartContainer", async move {
            client.start_container(request).await
        })
        .map(drop)
    }

    pub fn container_status(&self, id: &str) -> CriResult<ContainerStatus> {
        let mut client = self.runtime_service.clone();
        let request = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let response = self.call("ContainerStatus", async move {
            client.container_status(request).await
        })?;
        response
            .status
            .ok_or_else(|| CriError::Status(tonic::Status::not_found("no status")))
    }

    /// Polls ContainerStatus until the container is in `state`.
    pub fn wait_state(
        &self,
        id: &str,
        state: ContainerState,
        timeout: Duration,
    ) -> CriResult<ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.container_status(id)?;
            if status.state == state as i32 || Instant::now() > deadline {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> CriResult<ExecSyncResponse> {
        let mut client = self.runtime_service.clone();
        let request = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        self.call("ExecSync", async move { client.exec_sync(request).await })
    }

    pub fn stop_container(&self, id: &str) -> CriResult<()> {
        let mut client = self.runtime_service.clone();
        let request = StopContainerRequest {
            container_id: id.into(),
            timeout: 5,
        };
        self.call("StopContainer", async move {
            client.stop_container(request).await
        })
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> CriResult<()> {
        let mut client = self.runtime_service.clone();
        let request = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call("RemoveContainer", async move {
            client.remove_container(request).await
        })
        .map(drop)
    }

    /// PodSandboxStatus, verbose (its `info` names the handler and
    /// runtime type used).
    pub fn pod_status(&self, pod: &Pod) -> CriResult<PodSandboxStatusResponse> {
        let mut client = self.runtime_service.clone();
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        };
        self.call("PodSandboxStatus", async move {
            client.pod_sandbox_status(request).await
        })
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet does when a
    /// pod is deleted.
    pub fn remove_pod(&self, pod: &Pod) -> CriResult<()> {
        let mut client = self.runtime_service.clone();
        let id = pod.id.clone();
        self.call("StopPodSandbox", async move {
            client
                .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        })?;
        let mut client = self.runtime_service.clone();
        let id = pod.id.clone();
        self.call("RemovePodSandbox", async move {
            client
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .map(drop)
    }
}

fn image_spec(reference: &str) -> ImageSpec {
    ImageSpec {
        image: reference.into(),
        ..Default::default()
    }
}

fn pairs(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
