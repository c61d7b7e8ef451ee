//! The Kubernetes path: containerd's CRI plugin with our runtime as
//! handler `diffkeeper` (the entry the node installer writes), driven as
//! the kubelet drives it. Pods, their containers' recordings selected by
//! pod and container name, restarts and the previous instance, bad
//! annotations, unknown handlers, and nothing left behind.

use std::path::PathBuf;
use std::time::Duration;

use diffkeeper_tests::cri::{
    ContainerSpec, Cri, CriError, Pod, PodSpec, DIFFKEEPER_HANDLER, RUNC_HANDLER,
};
use diffkeeper_tests::{cri_or_skip, leaks, readme, Containerd, CtrOutput};
use k8s_cri::v1::ContainerState;

const EXITED: Duration = Duration::from_secs(30);

fn pod<'a>(name: &'a str, annotations: &'a [(&'a str, &'a str)]) -> PodSpec<'a> {
    PodSpec {
        namespace: "shop",
        name,
        uid: name,
        handler: DIFFKEEPER_HANDLER,
        annotations,
    }
}

fn container<'a>(name: &'a str, attempt: u32, script: &'a str) -> ContainerSpec<'a> {
    ContainerSpec {
        name,
        attempt,
        script,
        annotations: &[],
    }
}

/// Creates and starts a container; returns its id.
fn start(cri: &Cri, pod: &Pod, spec: &ContainerSpec) -> String {
    let id = cri
        .create_container(pod, spec)
        .unwrap_or_else(|e| panic!("CreateContainer {}: {e}", spec.name));
    cri.start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer {}: {e}", spec.name));
    id
}

/// Waits for the container to exit and returns its exit code.
fn exit_code(cri: &Cri, ctrd: &Containerd, id: &str) -> i32 {
    let status = cri
        .wait_state(id, ContainerState::ContainerExited, EXITED)
        .unwrap();
    assert_eq!(
        status.state,
        ContainerState::ContainerExited as i32,
        "{status:?}\n{}",
        ctrd.log()
    );
    status.exit_code
}

fn dk(ctrd: &Containerd, args: &[&str]) -> CtrOutput {
    ctrd.diffkeeper(args)
        .expect_ok(&format!("diffkeeper {args:?}"))
}

fn json(out: &CtrOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The recordings `ls --json ARGS` lists.
fn listed(ctrd: &Containerd, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["ls", "--json"];
    all.extend_from_slice(args);
    json(&dk(ctrd, &all)).as_array().unwrap().clone()
}

/// Seconds since the recording started of the first event matching.
fn first_event_secs(events: &serde_json::Value, op: &str, path: &str) -> f64 {
    events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["op"] == op && e["paths"][0] == path)
        .and_then(|e| e["offset_ms"].as_f64())
        .map(|ms| ms / 1000.0)
        .unwrap_or_else(|| panic!("no {op} of {path}: {events}"))
}

#[test]
fn a_pod_container_is_recorded_and_found_by_pod_and_container_name() {
    let Some((ctrd, cri)) = cri_or_skip() else {
        return;
    };
    let web = cri.run_pod(&pod("web", &[])).expect("RunPodSandbox");
    let info = cri.pod_status(&web).unwrap().info;
    assert!(
        info.values()
            .any(|v| v.contains("io.containerd.diffkeeper.v1")),
        "the pod runs under our runtime: {info:?}"
    );
    let script = "mkdir /data; echo one > /data/state; sleep 1; echo two > /data/state; \
                  while [ ! -e /data/stop ]; do sleep 0.05; done; exit 3";
    let id = start(&cri, &web, &container("app", 0, script));

    // ExecSync runs in the container (and its write is the container's).
    let mut seen = String::new();
    for _ in 0..100 {
        let out = cri
            .exec_sync(&id, &["cat", "/data/state"])
            .expect("ExecSync");
        seen = String::from_utf8_lossy(&out.stdout).into_owned();
        if seen == "two\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, "two\n");
    let stop = cri.exec_sync(&id, &["touch", "/data/stop"]).unwrap();
    assert_eq!(stop.exit_code, 0, "{stop:?}");
    assert_eq!(exit_code(&cri, &ctrd, &id), 3);
    cri.remove_pod(&web).expect("Stop/RemovePodSandbox");

    // Nothing of the pod is left on the host.
    let address = ctrd.address.clone();
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        leaks::shims_of(&address).is_empty()
    });
    assert!(gone, "shims left: {:?}", leaks::shims_of(&address));
    assert_eq!(leaks::mounts_under(&ctrd.dir), Vec::<PathBuf>::new());
    let cgroups = leaks::shim_cgroups(diffkeeper_tests::cri::NAMESPACE);
    assert!(
        !cgroups
            .iter()
            .any(|c| c.ends_with(&id) || c.ends_with(&web.id)),
        "{cgroups:?}"
    );
    let state = ctrd.dir.join("state");
    assert_eq!(
        leaks::task_sockets(&state, diffkeeper_tests::cri::NAMESPACE),
        Vec::<PathBuf>::new()
    );

    // One recording, the app's (the sandbox is not recorded), with its
    // Kubernetes identity.
    let rows = listed(&ctrd, &["--pod", "shop/web"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let k = &rows[0]["kubernetes"];
    assert_eq!(k["pod_namespace"], "shop");
    assert_eq!(k["pod_name"], "web");
    assert_eq!(k["pod_uid"], "web");
    assert_eq!(k["container_name"], "app");
    assert_eq!(k["sandbox_id"], web.id.as_str());
    assert_eq!(k["restart_count"], 0);
    assert_eq!(rows[0]["container"], id.as_str());
    assert_eq!(rows[0]["state"], "exited 3");

    // The container's writes, at chosen times, selected by pod.
    let sel = ["--pod", "shop/web", "--container", "app"];
    let events = json(&dk(&ctrd, &[&["timeline", "--json"][..], &sel].concat()));
    let first = first_event_secs(&events, "create", "/data/state");
    let at = |t: f64, path: &str| {
        let time = format!("{}ms", (t * 1000.0) as u64);
        dk(
            &ctrd,
            &[&["cat", "--time", &time][..], &sel, &[path]].concat(),
        )
        .stdout
    };
    assert_eq!(at(first + 0.5, "/data/state"), "one\n", "{events:#}");
    assert_eq!(at(first + 1.5, "/data/state"), "two\n", "{events:#}");
    let export = tempfile::tempdir().unwrap();
    let out = export.path().join("fs");
    let out_arg = out.to_string_lossy().into_owned();
    dk(
        &ctrd,
        &[&["export", "--changes-only", "--out", &out_arg][..], &sel].concat(),
    );
    assert_eq!(
        std::fs::read_to_string(out.join("data/state")).unwrap(),
        "two\n"
    );
    assert!(
        out.join("data/stop").is_file(),
        "ExecSync's write is recorded"
    );
    assert!(
        out.join("bin/busybox").symlink_metadata().is_err(),
        "changes only"
    );
    dk(&ctrd, &[&["verify"][..], &sel].concat());
}

#[test]
fn two_app_containers_get_a_recording_each_with_only_their_writes() {
    let Some((ctrd, cri)) = cri_or_skip() else {
        return;
    };
    let duo = cri.run_pod(&pod("duo", &[])).expect("RunPodSandbox");
    let a = start(
        &cri,
        &duo,
        &container("left", 0, "echo L > /left.txt; sleep 0.5; exit 0"),
    );
    let b = start(
        &cri,
        &duo,
        &container("right", 0, "echo R > /right.txt; sleep 0.5; exit 0"),
    );
    assert_eq!(exit_code(&cri, &ctrd, &a), 0);
    assert_eq!(exit_code(&cri, &ctrd, &b), 0);
    // One shim served the pod: sandbox and both containers.
    assert_eq!(leaks::shims_of(&ctrd.address).len(), 1);
    cri.remove_pod(&duo).unwrap();

    assert_eq!(listed(&ctrd, &["--pod", "shop/duo"]).len(), 2);
    // Without --container the choice is ambiguous, and the error says so.
    let ambiguous = ctrd.diffkeeper(&["cat", "--pod", "shop/duo", "/left.txt"]);
    assert_eq!(ambiguous.code, Some(3), "{ambiguous:?}");
    assert!(
        ambiguous.stderr.contains("left, right") && ambiguous.stderr.contains("--container"),
        "{ambiguous:?}"
    );
    for (name, mine, theirs) in [
        ("left", "/left.txt", "/right.txt"),
        ("right", "/right.txt", "/left.txt"),
    ] {
        let events = dk(
            &ctrd,
            &[
                "timeline",
                "--pod",
                "shop/duo",
                "--container",
                name,
                "--json",
            ],
        );
        assert!(events.stdout.contains(mine), "{name}: {}", events.stdout);
        assert!(!events.stdout.contains(theirs), "{name}: {}", events.stdout);
    }
}

#[test]
fn a_restarted_container_gets_a_new_recording_and_the_crashed_one_is_previous() {
    let Some((ctrd, cri)) = cri_or_skip() else {
        return;
    };
    let web = cri.run_pod(&pod("web", &[])).expect("RunPodSandbox");
    let crashed = start(
        &cri,
        &web,
        &container("app", 0, "echo crashed > /attempt; exit 7"),
    );
    assert_eq!(exit_code(&cri, &ctrd, &crashed), 7);
    // The kubelet's restart: a new container, attempt 1, same pod.
    let again = start(
        &cri,
        &web,
        &container("app", 1, "echo recovered > /attempt; exit 0"),
    );
    assert_eq!(exit_code(&cri, &ctrd, &again), 0);

    let sel = ["--pod", "shop/web", "--container", "app"];
    let cat =
        |extra: &[&str]| dk(&ctrd, &[&["cat"][..], &sel, extra, &["/attempt"]].concat()).stdout;
    // While the pod still exists, as afterwards.
    assert_eq!(cat(&[]), "recovered\n");
    assert_eq!(cat(&["--previous"]), "crashed\n");
    cri.remove_pod(&web).unwrap();
    assert_eq!(cat(&[]), "recovered\n");
    assert_eq!(cat(&["--previous"]), "crashed\n");

    let previous = listed(&ctrd, &[&sel[..], &["--previous"]].concat());
    assert_eq!(previous.len(), 1, "{previous:?}");
    assert_eq!(previous[0]["container"], crashed.as_str());
    assert_eq!(previous[0]["kubernetes"]["restart_count"], 0);
    assert_eq!(previous[0]["state"], "exited 7");
    let all = listed(&ctrd, &sel);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["kubernetes"]["restart_count"], 1);
    let none = ctrd.diffkeeper(&[
        "cat",
        "--pod",
        "shop/web",
        "--container",
        "nope",
        "/attempt",
    ]);
    assert_eq!(none.code, Some(3));
    assert!(none.stderr.contains("\"nope\""), "{none:?}");

    // The README's pod commands, as written, where a reader would type them.
    let blocks: Vec<_> = readme::diffkeeper_blocks()
        .into_iter()
        .filter(|block| block.iter().any(|c| readme::by_pod(c)))
        .collect();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    for command in &blocks[0] {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let out = ctrd.diffkeeper_in(dir.path(), &args);
        assert_eq!(out.code, Some(0), "diffkeeper {args:?}: {out:?}");
        if args[0] == "timeline" {
            assert!(out.stdout.contains("/attempt"), "{out:?}");
        }
    }
    let crashed_fs = std::fs::read_to_string(dir.path().join("crash_fs/attempt")).unwrap();
    assert_eq!(
        crashed_fs, "crashed\n",
        "--previous exports the crashed instance"
    );
}

#[test]
fn bad_annotations_fail_with_their_name_and_unknown_handlers_fail_fast() {
    let Some((_ctrd, cri)) = cri_or_skip() else {
        return;
    };
    // A pod annotation reaches the sandbox first: RunPodSandbox fails
    // (the kubelet shows it as FailedCreatePodSandBox).
    let bad_pod = cri.run_pod(&pod("typo", &[("io.diffkeeper.debounce", "soon")]));
    let err = bad_pod.expect_err("a bad pod annotation must fail the pod");
    assert!(
        err.message().contains("io.diffkeeper.debounce"),
        "the error names the annotation: {err}"
    );
    // A container annotation fails that container's start.
    let fine = cri.run_pod(&pod("fine", &[])).expect("RunPodSandbox");
    let spec = ContainerSpec {
        annotations: &[("io.diffkeeper.recrod", "true")],
        ..container("app", 0, "exit 0")
    };
    let id = cri.create_container(&fine, &spec).expect("CreateContainer");
    let err = cri
        .start_container(&id)
        .expect_err("a bad annotation must fail the start");
    assert!(err.message().contains("io.diffkeeper.recrod"), "{err}");
    cri.remove_pod(&fine).unwrap();

    // containerd's own errors, promptly: no hang.
    let unknown = cri.run_pod(&PodSpec {
        handler: "nonexistent",
        ..pod("lost", &[])
    });
    assert!(
        matches!(&unknown, Err(CriError::Status(s)) if s.message().contains("no runtime for \"nonexistent\"")),
        "{unknown:?}"
    );
    let missing = cri.run_pod(&PodSpec {
        handler: "missing-shim",
        ..pod("lost2", &[])
    });
    assert!(
        matches!(&missing, Err(CriError::Status(s)) if s.message().contains("containerd-shim-missing-v1")),
        "{missing:?}"
    );
    // The reference handler works in the same containerd.
    let runc = cri
        .run_pod(&PodSpec {
            handler: RUNC_HANDLER,
            ..pod("plain", &[])
        })
        .expect("RunPodSandbox with runc");
    cri.remove_pod(&runc).unwrap();
}
