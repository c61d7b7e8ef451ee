//! A tour of a recording without containerd: a "flaky service" writes its
//! config, takes a lock, logs, rewrites its state file and crashes; the
//! recording then answers what a debugging user asks. This is the README's
//! main command until the shim records real containers.
//!
//! Usage: cargo run -p diffkeeper-store --example demo [-- OUT_DIR]

use std::time::Duration;

use anyhow::{Context, Result};
use diffkeeper_store::{
    format_offset, Actor, Capture, ExportOptions, Op, RecPath, Recorder, RecorderOptions,
    Recording, RecordingMeta, Subject, TimelineFilter,
};

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("diffkeeper-demo-{}", std::process::id()))
        });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let file = out.join("flaky-service.redb");

    let meta = RecordingMeta {
        subject: Subject {
            kind: "container".into(),
            id: "flaky-service".into(),
            namespace: "demo".into(),
            image: "busybox".into(),
            rootfs: "(simulated)".into(),
        },
        // The scripted history happened over the last three seconds.
        started_unix_ns: diffkeeper_store::unix_now_ns() - 3_000_000_000,
        mono_base_ns: diffkeeper_store::monotonic_now_ns() - 3_000_000_000,
        capture: Capture {
            backend: "simulated".into(),
            limits: vec!["events are scripted by this demo, not captured from a kernel".into()],
        },
        labels: Default::default(),
    };
    let base = meta.mono_base_ns;
    let mut rec = Recorder::create(&file, &meta, RecorderOptions::default())?;
    let sh = |pid| Actor::Process {
        pid,
        tid: pid,
        comm: "flaky".into(),
    };
    let path = |s: &str| RecPath::new(s).expect("valid demo path");
    let ms = |n: u64| base + Duration::from_millis(n).as_nanos() as u64;

    let write = |rec: &mut Recorder, t: u64, p: &str, data: &[u8]| -> Result<()> {
        let content = rec.store_content(&path(p), data)?;
        rec.record(
            ms(t),
            sh(42),
            Op::Write {
                path: path(p),
                content,
            },
        )?;
        Ok(())
    };
    rec.record(
        ms(10),
        sh(42),
        Op::Mkdir {
            path: path("/etc/flaky"),
            mode: 0o755,
        },
    )?;
    write(
        &mut rec,
        20,
        "/etc/flaky/config.toml",
        b"workers = 4\nmode = \"safe\"\n",
    )?;
    write(&mut rec, 30, "/run/flaky.lock", b"42\n")?;
    let mut log = String::new();
    for (i, t) in [100u64, 600, 1100, 1600, 2100].into_iter().enumerate() {
        log.push_str(&format!(
            "{} processed batch {i}\n",
            format_offset(Duration::from_millis(t))
        ));
        write(&mut rec, t, "/var/log/flaky.log", log.as_bytes())?;
        write(
            &mut rec,
            t + 5,
            "/var/lib/flaky/state.json",
            format!("{{\"batch\": {i}}}\n").as_bytes(),
        )?;
    }
    // The fatal change: someone flips the mode, and the service dies.
    write(
        &mut rec,
        2300,
        "/etc/flaky/config.toml",
        b"workers = 64\nmode = \"fast\"\n",
    )?;
    log.push_str("2.400s panic: worker pool exhausted\n");
    write(&mut rec, 2400, "/var/log/flaky.log", log.as_bytes())?;
    rec.record(ms(2410), sh(42), Op::Exit { code: 134 })?;
    rec.finish(Some(134))?;

    let recording = Recording::open(&file)?;
    println!("recording: {}\n", file.display());
    println!("timeline:");
    for event in recording.timeline(&TimelineFilter::default())? {
        let paths: Vec<String> = event.op.paths().iter().map(|p| p.to_string()).collect();
        println!(
            "  {:>8}  #{:<3} {:<6} {}",
            format_offset(recording.offset_of(event.time_ns)),
            event.seq,
            event.op.kind().name(),
            paths.join(" -> ")
        );
    }

    let before = recording.moment("2s")?;
    let crash = recording.moment("latest")?;
    println!("\nwhat changed in the last half second (2s → latest):");
    for change in recording.diff(&before, &crash)? {
        println!("  {:<8} {}", change.kind(), change.path);
        if let Some(text) = recording.text_diff(&change)? {
            for line in text.lines().skip(2) {
                println!("           {line}");
            }
        }
    }

    let export_dir = out.join("before-crash");
    let at = recording.moment("2200ms")?;
    let report = recording.export(&at, &export_dir, &ExportOptions::default())?;
    println!(
        "\nexported the filesystem as it was at {} ({} files, {} bytes) to {}",
        at,
        report.files,
        report.bytes,
        export_dir.display()
    );
    let config = std::fs::read_to_string(export_dir.join("etc/flaky/config.toml"))?;
    println!("its config.toml, before the fatal edit:\n{config}");
    let verify = recording.verify()?;
    anyhow::ensure!(
        verify.is_ok(),
        "verify found problems: {:?}",
        verify.problems
    );
    println!(
        "verify: {} versions, {} pieces, all intact",
        verify.versions, verify.pieces
    );
    Ok(())
}
