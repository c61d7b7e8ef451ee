//! Start-to-exit latency of `ctr run --rm ... /bin/true` and shim memory per
//! container, for our runtime and runc's in the same run. Prints a table.
//!
//! `cargo bench -p diffkeeper-tests --bench startup` (root, containerd).

use std::fs;
use std::time::{Duration, Instant};

use diffkeeper_tests::{
    containerd_or_skip, leaks, Containerd, DIFFKEEPER_RUNTIME, RUNC_RUNTIME, RUNTIMES,
};

const RUNS: usize = 30;
const WARMUP: usize = 3;
const RESIDENT: usize = 5;

fn main() {
    let Some(ctrd) = containerd_or_skip() else {
        return;
    };

    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..WARMUP + RUNS {
        // Alternate runtimes so that drift on a shared machine hits both.
        for (slot, runtime) in RUNTIMES.iter().enumerate() {
            let id = format!("b{slot}-{round}");
            let started = Instant::now();
            let out = ctrd.run_rootfs(runtime, &id, &["/bin/true"]);
            let took = started.elapsed();
            assert!(out.success(), "{runtime}: {out:?}");
            if round >= WARMUP {
                samples[slot].push(took);
            }
        }
    }
    let [ours, runc] = samples.map(median);

    let rss = RUNTIMES.map(|runtime| shim_rss_per_container(&ctrd, runtime));

    println!();
    println!("| metric | {DIFFKEEPER_RUNTIME} | {RUNC_RUNTIME} | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| `ctr run --rm /bin/true`, median of {RUNS} | {:.1} ms | {:.1} ms | {:.2} |",
        ms(ours),
        ms(runc),
        ms(ours) / ms(runc)
    );
    println!(
        "| shim RSS per container ({RESIDENT} running) | {:.1} MiB | {:.1} MiB | {:.2} |",
        rss[0],
        rss[1],
        rss[0] / rss[1]
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
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
