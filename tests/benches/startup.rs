//! Start-to-exit latency of `ctr run --rm ... /bin/true` under runc's shim
//! and ours (recording, recording without the baseline scan, not
//! recording), shim memory per container, and pod start latency through
//! CRI (handler `diffkeeper` vs `runc`), in the same run. Prints tables.
//!
//! Latencies are trimmed means (the middle 80% of the samples): `ctr run
//! --rm` latencies come in steps of ~20 ms here (samples cluster at 81,
//! 101, 121, 141 ms, runc's too: something in ctr or containerd waits on a
//! 20 ms tick), so a median jumps a whole step between runs while a mean
//! follows how often each step is hit.
//!
//! `cargo bench -p diffkeeper-tests --bench startup` (root, containerd).

use std::fs;
use std::time::{Duration, Instant};

use diffkeeper_tests::cri::{ContainerSpec, PodSpec, DIFFKEEPER_HANDLER, RUNC_HANDLER};
use diffkeeper_tests::{
    containerd_or_skip, cri_or_skip, leaks, Containerd, DIFFKEEPER_RUNTIME, RUNC_RUNTIME, RUNTIMES,
};
use k8s_cri::v1::ContainerState;

const RUNS: usize = 30;
const WARMUP: usize = 3;
const RESIDENT: usize = 5;

/// Runtime, annotation, and how the table names it. runc first: the base.
const VARIANTS: [(&str, Option<&str>, &str); 4] = [
    (RUNC_RUNTIME, None, "io.containerd.runc.v2"),
    (DIFFKEEPER_RUNTIME, None, "diffkeeper, recording (default)"),
    (
        DIFFKEEPER_RUNTIME,
        Some("io.diffkeeper.baseline=none"),
        "diffkeeper, recording without baseline",
    ),
    (
        DIFFKEEPER_RUNTIME,
        Some("io.diffkeeper.record=false"),
        "diffkeeper, not recording",
    ),
];

fn main() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };

    let means = alternate(VARIANTS.len(), RUNS, |slot, round| {
        let (runtime, annotation, _) = VARIANTS[slot];
        let rootfs = ctrd.rootfs.to_string_lossy().into_owned();
        let id = format!("b{slot}-{round}");
        let mut args = vec!["run", "--rm", "--runtime", runtime];
        if let Some(annotation) = annotation {
            args.extend(["--annotation", annotation]);
        }
        args.extend(["--rootfs", &rootfs, &id, "/bin/true"]);
        let started = Instant::now();
        let out = ctrd.ctr(&args);
        let took = started.elapsed();
        assert!(out.success(), "{runtime}: {out:?}");
        took
    });
    print_ratios(
        &format!("`ctr run --rm /bin/true`, trimmed mean of {RUNS}"),
        VARIANTS.iter().map(|v| v.2),
        &means,
    );

    let rss = RUNTIMES.map(|runtime| shim_rss_per_container(&ctrd, runtime));
    println!();
    println!("| metric | {DIFFKEEPER_RUNTIME} | {RUNC_RUNTIME} | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| shim RSS per container ({RESIDENT} running, recording) | {:.1} MiB | {:.1} MiB | {:.2} |",
        rss[0],
        rss[1],
        rss[0] / rss[1]
    );
    drop(ctrd);
    pod_start_latency();
}

/// A pod handler, the pod's annotations, and how the table names it.
type PodVariant = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// runc first: the base.
const POD_VARIANTS: [PodVariant; 3] = [
    (RUNC_HANDLER, &[], "runc"),
    (DIFFKEEPER_HANDLER, &[], "diffkeeper, recording (default)"),
    (
        DIFFKEEPER_HANDLER,
        &[("io.diffkeeper.baseline", "none")],
        "diffkeeper, recording without baseline",
    ),
];
const PODS: usize = 20;

/// RunPodSandbox + CreateContainer + StartContainer until the container
/// runs, as the kubelet sees a pod start; pods removed between runs.
fn pod_start_latency() {
    let Some((ctrd, cri)) = cri_or_skip() else {
        return;
    };
    let means = alternate(POD_VARIANTS.len(), PODS, |slot, round| {
        let (handler, annotations, _) = POD_VARIANTS[slot];
        let name = format!("bench-{slot}-{round}");
        let started = Instant::now();
        let pod = cri
            .run_pod(&PodSpec {
                namespace: "bench",
                name: &name,
                uid: &name,
                handler,
                annotations,
            })
            .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", ctrd.log()));
        let spec = ContainerSpec {
            name: "app",
            attempt: 0,
            script: "sleep 60",
            annotations: &[],
        };
        let id = cri.create_container(&pod, &spec).expect("CreateContainer");
        cri.start_container(&id).expect("StartContainer");
        let status = cri
            .wait_state(
                &id,
                ContainerState::ContainerRunning,
                Duration::from_secs(30),
            )
            .expect("ContainerStatus");
        let took = started.elapsed();
        assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        cri.remove_pod(&pod).expect("remove the pod");
        took
    });
    print_ratios(
        &format!(
            "pod start (RunPodSandbox + CreateContainer + StartContainer), trimmed mean of {PODS}"
        ),
        POD_VARIANTS.iter().map(|v| v.2),
        &means,
    );
}

/// Runs `sample(variant, round)` for every variant in each round, after
/// `WARMUP` rounds, alternating so that drift on a shared machine hits all
/// of them; returns each variant's trimmed mean.
fn alternate(
    variants: usize,
    runs: usize,
    mut sample: impl FnMut(usize, usize) -> Duration,
) -> Vec<Duration> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants];
    for round in 0..WARMUP + runs {
        for (slot, kept) in samples.iter_mut().enumerate() {
            let took = sample(slot, round);
            if round >= WARMUP {
                kept.push(took);
            }
        }
    }
    samples.into_iter().map(trimmed_mean).collect()
}

/// A table of latencies with their ratio to the first (the base).
fn print_ratios<'a>(title: &str, names: impl Iterator<Item = &'a str>, latencies: &[Duration]) {
    let base = ms(latencies[0]);
    println!();
    println!("| {title} | time | ratio to runc |");
    println!("|---|---|---|");
    for (name, latency) in names.zip(latencies) {
        println!(
            "| {name} | {:.1} ms | {:.2} |",
            ms(*latency),
            ms(*latency) / base
        );
    }
}

/// The mean of the samples left after dropping the fastest and the
/// slowest tenth.
fn trimmed_mean(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let cut = samples.len() / 10;
    let kept = &samples[cut..samples.len() - cut];
    kept.iter().sum::<Duration>() / kept.len() as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts `RESIDENT` sleeping containers and returns the shims' resident
/// memory divided by the number of containers (MiB).
fn shim_rss_per_container(ctrd: &Containerd, runtime: &str) -> f64 {
    let ids: Vec<String> = (0..RESIDENT).map(|i| format!("rss-{i}")).collect();
    for id in &ids {
        ctrd.run_detached(runtime, id, &["/bin/sleep", "600"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let kib: u64 = leaks::shims_of(&ctrd.address)
        .iter()
        .filter_map(|shim| vm_rss_kib(shim.pid))
        .sum();
    for id in &ids {
        ctrd.remove(id);
    }
    kib as f64 / 1024.0 / RESIDENT as f64
}

fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
