//! What containerd's CRI plugin tells a runtime about a pod, through the
//! annotations it writes into each container's `config.json`
//! (containerd `pkg/cri/annotations`), plus the kubelet's restart count,
//! which reaches the spec only when the runtime entry lists it in
//! `container_annotations` (the node installer does).

use std::collections::HashMap;

use diffkeeper_store::KubernetesIdentity;

/// The pod a container belongs to: one shim serves the whole pod.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

/// Annotations that name the image, in the order they are trusted.
const IMAGE_ANNOTATIONS: &[&str] = &[
    "io.kubernetes.cri.image-name",
    "org.opencontainers.image.ref.name",
];

/// Whether this is a pod's sandbox (pause) container.
pub fn is_sandbox(annotations: &HashMap<String, String>) -> bool {
    annotations.get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox")
}

/// The image the container was created from, if an annotation names it.
pub fn image(annotations: &HashMap<String, String>) -> Option<&str> {
    IMAGE_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key))
        .map(String::as_str)
}

/// The pod and container identity of a CRI container; `None` for one that
/// CRI did not create (`ctr`, nerdctl).
pub fn identity(annotations: &HashMap<String, String>) -> Option<KubernetesIdentity> {
    let get = |key: &str| annotations.get(key).cloned().unwrap_or_default();
    let sandbox_id = annotations.get(SANDBOX_ID)?.clone();
    Some(KubernetesIdentity {
        pod_namespace: get(SANDBOX_NAMESPACE),
        pod_name: get(SANDBOX_NAME),
        pod_uid: get(SANDBOX_UID),
        // The sandbox container has no name of its own in the pod spec.
        container_name: annotations
            .get(CONTAINER_NAME)
            .cloned()
            .unwrap_or_else(|| "POD".into()),
        sandbox_id,
        restart_count: annotations.get(RESTART_COUNT).and_then(|n| n.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_app_container_carries_its_pod_and_restart_count() {
        let found = identity(&annotations(&[
            (SANDBOX_ID, "abc"),
            (CONTAINER_TYPE, "container"),
            (SANDBOX_NAMESPACE, "shop"),
            (SANDBOX_NAME, "web-7d9"),
            (SANDBOX_UID, "uid-1"),
            (CONTAINER_NAME, "app"),
            (RESTART_COUNT, "2"),
        ]))
        .unwrap();
        assert_eq!(
            found,
            KubernetesIdentity {
                pod_namespace: "shop".into(),
                pod_name: "web-7d9".into(),
                pod_uid: "uid-1".into(),
                container_name: "app".into(),
                sandbox_id: "abc".into(),
                restart_count: Some(2),
            }
        );
    }

    #[test]
    fn only_cri_containers_have_an_identity() {
        assert_eq!(identity(&annotations(&[(CONTAINER_NAME, "app")])), None);
        let sandbox = annotations(&[(SANDBOX_ID, "abc"), (CONTAINER_TYPE, "sandbox")]);
        assert!(is_sandbox(&sandbox));
        assert_eq!(identity(&sandbox).unwrap().container_name, "POD");
        assert_eq!(identity(&sandbox).unwrap().restart_count, None);
    }

    #[test]
    fn the_cri_image_name_wins() {
        let both = annotations(&[
            ("org.opencontainers.image.ref.name", "1.36"),
            (
                "io.kubernetes.cri.image-name",
                "docker.io/library/busybox:1.36",
            ),
        ]);
        assert_eq!(image(&both), Some("docker.io/library/busybox:1.36"));
        assert_eq!(image(&HashMap::new()), None);
    }
}
