//! The shim against a real containerd, and the same cases against runc's
//! shim to prove the harness. Each test starts its own containerd.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use diffkeeper_tests::{containerd_or_skip, leaks, DIFFKEEPER_RUNTIME, RUNTIMES};

#[test]
fn runs_to_completion_with_stdout_and_exact_exit_codes() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    for runtime in RUNTIMES {
        let out = ctrd.run_rootfs(runtime, "ok", &["/bin/sh", "-c", "echo hello-stdout"]);
        assert_eq!(out.code, Some(0), "{runtime}: {out:?}\n{}", ctrd.log());
        assert_eq!(out.stdout.trim(), "hello-stdout", "{runtime}");

        let out = ctrd.run_rootfs(runtime, "three", &["/bin/sh", "-c", "exit 3"]);
        assert_eq!(out.code, Some(3), "{runtime}: {out:?}");

        let killed = std::thread::scope(|scope| {
            let run = scope.spawn(|| ctrd.run_rootfs(runtime, "killed", &["/bin/sleep", "600"]));
            assert!(
                ctrd.wait_status("killed", "RUNNING", Duration::from_secs(20)),
                "{runtime}: never running\n{}",
                ctrd.log()
            );
            ctrd.ctr(&["task", "kill", "-s", "KILL", "killed"])
                .expect_ok("kill");
            run.join().unwrap()
        });
        assert_eq!(killed.code, Some(137), "{runtime}: {killed:?}");
    }
}

#[test]
fn supplies_the_default_path_when_the_spec_has_none() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    // `ctr run --rootfs` puts no PATH in the spec; runc 1.1 then fails to
    // find a bare `sh`, our shim adds runc's documented default.
    let out = ctrd.run_rootfs(DIFFKEEPER_RUNTIME, "path", &["sh", "-c", "echo $PATH"]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", ctrd.log());
    assert_eq!(
        out.stdout.trim(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn runs_an_imported_oci_image_on_overlayfs() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let image = ctrd.import_test_image();
    for runtime in RUNTIMES {
        let out = ctrd.ctr(&[
            "run", "--rm", "--runtime", runtime, &image.reference, "img",
            "/bin/sh", "-c", "cat /etc/diffkeeper-image; grep -q ' / overlay' /proc/mounts && echo overlay-root; exit 7",
        ]);
        assert_eq!(out.code, Some(7), "{runtime}: {out:?}\n{}", ctrd.log());
        assert!(out.stdout.contains("from-image"), "{runtime}: {out:?}");
        assert!(out.stdout.contains("overlay-root"), "{runtime}: {out:?}");
    }
}

#[test]
fn exec_into_a_running_container() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    for runtime in RUNTIMES {
        ctrd.run_detached(runtime, "svc", &["/bin/sleep", "600"]);
        let out = ctrd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "svc",
            "/bin/sh",
            "-c",
            "echo in-exec; exit 5",
        ]);
        assert_eq!(out.code, Some(5), "{runtime}: {out:?}\n{}", ctrd.log());
        assert_eq!(out.stdout.trim(), "in-exec", "{runtime}");
        let pids = ctrd.ctr(&["task", "ps", "svc"]).expect_ok("ps");
        assert!(pids.stdout.lines().count() >= 2, "{runtime}: {pids:?}");
        let metrics = ctrd.ctr(&["task", "metrics", "svc"]).expect_ok("metrics");
        assert!(metrics.stdout.contains("memory"), "{runtime}: {metrics:?}");
        ctrd.remove("svc");
    }
}

#[test]
fn terminal_with_run_t_and_exec_t() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    for runtime in RUNTIMES {
        let rootfs = ctrd.rootfs.to_string_lossy().into_owned();
        let out = ctrd.ctr_with_tty(&[
            "run",
            "--rm",
            "-t",
            "--runtime",
            runtime,
            "--rootfs",
            &rootfs,
            "tty",
            "/bin/sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo on-a-tty; exit 4",
        ]);
        assert_eq!(out.code, Some(4), "{runtime}: {out:?}\n{}", ctrd.log());
        assert!(out.stdout.contains("on-a-tty"), "{runtime}: {out:?}");

        ctrd.run_detached(runtime, "svc", &["/bin/sleep", "600"]);
        let out = ctrd.ctr_with_tty(&[
            "task",
            "exec",
            "-t",
            "--exec-id",
            "sh1",
            "svc",
            "/bin/sh",
            "-c",
            "tty; exit 6",
        ]);
        assert_eq!(out.code, Some(6), "{runtime}: {out:?}\n{}", ctrd.log());
        assert!(out.stdout.contains("/dev/pts/"), "{runtime}: {out:?}");
        ctrd.remove("svc");
    }
}

#[test]
fn ten_parallel_containers_leave_nothing_behind() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    for runtime in RUNTIMES {
        let ids: Vec<String> = (0..10).map(|i| format!("par{i}")).collect();
        thread::scope(|scope| {
            for id in &ids {
                let ctrd = &ctrd;
                scope.spawn(move || ctrd.run_detached(runtime, id, &["/bin/sleep", "600"]));
            }
        });
        let tasks = ctrd.tasks();
        let running: HashSet<&str> = tasks
            .iter()
            .filter(|(_, _, status)| status == "RUNNING")
            .map(|(id, _, _)| id.as_str())
            .collect();
        assert_eq!(running.len(), 10, "{runtime}: {tasks:?}");
        let pids: Vec<i32> = tasks.iter().map(|(_, pid, _)| *pid).collect();
        let shims = leaks::shims_of(&ctrd.address);
        assert!(!shims.is_empty(), "{runtime}: no shim processes found");
        let sockets = leaks::task_sockets(&ctrd.dir.join("state"), &ctrd.namespace);
        assert_eq!(sockets.len(), 10, "{runtime}: {sockets:?}");
        if runtime == DIFFKEEPER_RUNTIME {
            // The recording hook: every container has its own v2 cgroup.
            let own: HashSet<String> = pids.iter().map(|pid| v2_cgroup(*pid)).collect();
            assert_eq!(own.len(), 10, "{own:?}");
            assert!(!own.contains("/"), "{own:?}");
        }
        thread::scope(|scope| {
            for id in &ids {
                let ctrd = &ctrd;
                scope.spawn(move || ctrd.remove(id));
            }
        });
        assert!(ctrd.tasks().is_empty(), "{runtime}: {:?}", ctrd.tasks());
        assert!(ctrd
            .ctr(&["container", "ls", "-q"])
            .stdout
            .trim()
            .is_empty());

        let deadline = Instant::now() + Duration::from_secs(10);
        let leaked = || {
            let mut leaked: Vec<String> = Vec::new();
            leaked.extend(
                pids.iter()
                    .filter(|p| leaks::alive(**p))
                    .map(|p| format!("container pid {p}")),
            );
            leaked.extend(
                shims
                    .iter()
                    .filter(|s| leaks::alive(s.pid))
                    .map(|s| format!("shim {}", s.pid)),
            );
            leaked.extend(
                sockets
                    .iter()
                    .filter(|s| s.exists())
                    .map(|s| format!("socket {}", s.display())),
            );
            leaked.extend(
                leaks::mounts_under(&ctrd.dir)
                    .iter()
                    .map(|m| format!("mount {}", m.display())),
            );
            leaked.extend(
                leaks::shim_cgroups(&ctrd.namespace)
                    .iter()
                    .map(|c| format!("cgroup {}", c.display())),
            );
            leaked.extend(
                leaks::libcontainer_states(&ctrd.namespace)
                    .iter()
                    .map(|s| format!("state {}", s.display())),
            );
            leaked
        };
        while !leaked().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(leaked(), Vec::<String>::new(), "{runtime} leaked");
        assert!(ctrd.healthy());
    }
}

#[test]
fn impossible_spec_fails_create_and_containerd_stays_healthy() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    // Lowering oom_score_adj needs CAP_SYS_RESOURCE; where the shim has it,
    // a spec asking for an unknown namespace is impossible instead.
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin"], "oomScoreAdj": -1000,
        },
        "root": {"path": ctrd.rootfs},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    });
    let path: PathBuf = ctrd.dir.join("impossible.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let path = path.to_string_lossy().into_owned();
    for runtime in RUNTIMES {
        let out = ctrd.ctr(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--config",
            &path,
            "bad",
        ]);
        assert_ne!(out.code, Some(0), "{runtime}: {out:?}");
        if runtime == DIFFKEEPER_RUNTIME && !out.stderr.contains("process.oomScoreAdj") {
            assert!(caps_include_sys_resource(), "{out:?}");
        }
        assert!(ctrd.healthy(), "{runtime}: containerd unhealthy");
        assert!(ctrd.tasks().is_empty(), "{runtime}: {:?}", ctrd.tasks());
        let _ = ctrd.ctr(&["container", "rm", "bad"]);
        let out = ctrd.run_rootfs(runtime, "after", &["/bin/sh", "-c", "exit 0"]);
        assert_eq!(
            out.code,
            Some(0),
            "{runtime} after a failed create: {out:?}"
        );
    }
}

/// The cgroup v2 path of `pid` (the `0::` line of `/proc/<pid>/cgroup`).
fn v2_cgroup(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned()
}

fn caps_include_sys_resource() -> bool {
    let status = Command::new("grep")
        .args(["CapEff", "/proc/self/status"])
        .output();
    status
        .ok()
        .and_then(|o| {
            let hex = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)?
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

#[test]
fn publishes_task_events_in_containerds_order() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    for runtime in RUNTIMES {
        let mut events = ctrd
            .ctr_unbounded(&["events"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        ctrd.run_detached(runtime, "ev", &["/bin/sleep", "600"]);
        ctrd.ctr(&["task", "exec", "--exec-id", "x1", "ev", "/bin/true"])
            .expect_ok("exec");
        ctrd.remove("ev");
        thread::sleep(Duration::from_millis(300));
        let _ = events.kill();
        let output = events.wait_with_output().unwrap();
        let topics: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains(r#""container_id":"ev""#))
            .filter_map(|line| line.split_whitespace().find(|w| w.starts_with("/tasks/")))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            topics,
            [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exec-added",
                "/tasks/exec-started",
                "/tasks/exit",
                "/tasks/exit",
                "/tasks/delete",
            ],
            "{runtime}"
        );
    }
}

#[test]
fn honours_seccomp_capabilities_and_cwd() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let rootfs = ctrd.rootfs.to_string_lossy().into_owned();
    for runtime in RUNTIMES {
        let out = ctrd.ctr(&[
            "run",
            "--rm",
            "--seccomp",
            "--cwd",
            "/tmp",
            "--cap-drop",
            "CAP_NET_RAW",
            "--runtime",
            runtime,
            "--rootfs",
            &rootfs,
            "conf",
            "/bin/sh",
            "-c",
            "grep -E '^(Seccomp|CapEff):' /proc/self/status; pwd",
        ]);
        assert_eq!(out.code, Some(0), "{runtime}: {out:?}\n{}", ctrd.log());
        let field = |name: &str| {
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(field("Seccomp:"), "2", "{runtime}: seccomp filter mode");
        let caps = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
        assert_eq!(
            caps & (1 << 13),
            0,
            "{runtime}: CAP_NET_RAW still effective"
        );
        assert_ne!(caps, 0, "{runtime}: no capabilities at all");
        assert_eq!(out.stdout.lines().last(), Some("/tmp"), "{runtime}");
    }
}

#[test]
fn log_uris_send_output_to_a_file_or_a_logging_binary() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let logger = dir.path().join("logger.sh");
    std::fs::write(
        &logger,
        "#!/bin/sh\nexec 5>&-\n{ cat <&3 & cat <&4; wait; } > \"$2\"\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" >> \"$2\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rootfs = ctrd.rootfs.to_string_lossy().into_owned();
    for runtime in RUNTIMES {
        let short = runtime.rsplit('.').nth(1).unwrap_or("rt");
        let logged = dir.path().join(format!("{short}-binary.log"));
        let file_log = dir.path().join(format!("{short}-file.log"));
        let uris = [
            (
                format!("binary://{}?out={}", logger.display(), logged.display()),
                &logged,
            ),
            (format!("file://{}", file_log.display()), &file_log),
        ];
        for (i, (uri, log)) in uris.iter().enumerate() {
            let id = format!("logged-{i}");
            let out = ctrd.ctr(&[
                "run",
                "--rm",
                "--runtime",
                runtime,
                "--log-uri",
                uri,
                "--rootfs",
                &rootfs,
                &id,
                "/bin/sh",
                "-c",
                "echo to-stdout; echo to-stderr >&2",
            ]);
            assert_eq!(
                out.code,
                Some(0),
                "{runtime} {uri}: {out:?}\n{}",
                ctrd.log()
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            // containerd 1.6's runc shim writes only stdout to a file:// log.
            let needs_stderr = uri.starts_with("binary") || runtime == DIFFKEEPER_RUNTIME;
            let wanted = |text: &str| {
                text.contains("to-stdout") && (!needs_stderr || text.contains("to-stderr"))
            };
            while !std::fs::read_to_string(log).is_ok_and(|t| wanted(&t))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(wanted(&text), "{runtime} {uri}: {text:?}");
        }
    }
}
