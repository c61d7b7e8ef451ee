//! `diffkeeper record -- CMD`: a recording of a plain command, for CI.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{bail, Context, Result};
use diffkeeper_probe::{AnyWatch, ChildCgroup, FanotifyWatch, InotifyWatch, Probe, ProbeConfig};
use diffkeeper_recorder::{
    capture_of, create_private_dir, recording_file_name, run as drive, BaselineScan, PathFilter,
    RootView, Session, SessionOptions,
};
use diffkeeper_runtime_config::CaptureBackend;
use diffkeeper_store::{
    monotonic_now_ns, unix_now_ns, Recorder, RecorderOptions, RecordingMeta, Subject,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::args::RecordArgs;
use crate::output::{bytes, short};

/// The largest baseline kept with content; past it, files are hashed only.
const BASELINE_CONTENT_BUDGET: u64 = 1 << 30;

pub fn run(args: &RecordArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(record(args))
}

async fn record(args: &RecordArgs) -> Result<ExitCode> {
    let out = prepare_out(&args.out)?;
    let watched = watched_dirs(&args.watch)?;
    let mut include = args.include.clone();
    if include.is_empty() {
        include = watched.iter().map(|w| glob_below(w)).collect();
    }
    let mut exclude = args.exclude.clone();
    exclude.push(glob_below(&out));
    let filter = PathFilter::new(&include, &exclude).context("--include/--exclude")?;

    let backend = if args.require_ebpf {
        CaptureBackend::Ebpf
    } else {
        args.backend
    };
    // parse_ring_buffer_size bounds it to 1 GiB.
    let ring_buffer = u32::try_from(args.ring_buffer).expect("at most 1 GiB");
    let mut capture = start_capture(backend, &watched, &out, ring_buffer)?;

    let file = out.join(recording_file_name(std::time::SystemTime::now()));
    let meta = RecordingMeta {
        subject: Subject {
            kind: "command".into(),
            id: command_line(&args.command),
            rootfs: watched
                .iter()
                .map(|w| w.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            ..Default::default()
        },
        started_unix_ns: unix_now_ns(),
        mono_base_ns: monotonic_now_ns(),
        capture: capture_of(&capture.watch),
        labels: [(
            "cwd".to_string(),
            std::env::current_dir()?.display().to_string(),
        )]
        .into(),
        kubernetes: None,
    };
    let store = Recorder::create(&file, &meta, RecorderOptions::default())
        .with_context(|| format!("creating {}", file.display()))?;
    let options = SessionOptions {
        filter: filter.clone(),
        max_file_size: args.max_file_size,
        debounce: args.debounce,
        // Only eBPF reports the exec that starts the command.
        wait_for_exec: capture.cgroup.is_some(),
    };
    let session = Session::new(store, RootView::open(Path::new("/"))?, options);

    let baseline = (!args.no_baseline).then(|| {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        BaselineScan {
            root: PathBuf::from("/"),
            subtrees: watched.clone(),
            filter,
            max_file_size: args.max_file_size,
            max_total_bytes: BASELINE_CONTENT_BUDGET,
            with_content: true,
        }
        .spawn(tx);
        rx
    });

    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    if let Some(cgroup) = &capture.cgroup {
        cgroup.spawn_inside(&mut command);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {:?}", args.command[0]))?;
    let pid = child.id();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let forwarding = tokio::spawn(forward_signals(pid));
    let (status_tx, status_rx) = std::sync::mpsc::channel();
    let session = drive(&mut capture.watch, session, baseline, async move {
        let status = done_rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("waiter vanished")));
        let _ = status_tx.send(status);
    })
    .await;
    forwarding.abort();
    let status = status_rx
        .recv()
        .context("the command's status was lost")??;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let final_status = session.finish(monotonic_now_ns(), Some(code))?;
    drop(capture.cgroup);

    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "diffkeeper: recorded {} to {} ({}); {} exited {code}",
        short(&command_line(&args.command)),
        file.display(),
        bytes(size),
        args.command[0].to_string_lossy(),
    );
    for reason in &final_status.incomplete {
        eprintln!("diffkeeper: incomplete: {reason}");
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// The capture of a recording: a watch, and the cgroup it watches (eBPF).
struct Capture {
    watch: AnyWatch,
    cgroup: Option<ChildCgroup>,
    /// Kept loaded while the watch runs.
    _probe: Option<Probe>,
}

/// Starts `backend`; `auto` falls back to fanotify or inotify, saying why.
fn start_capture(
    backend: CaptureBackend,
    watched: &[PathBuf],
    out: &Path,
    ring_buffer: u32,
) -> Result<Capture> {
    let (root, skip) = (Path::new("/"), [out.to_path_buf()]);
    let without_ebpf = |watch: AnyWatch| Capture {
        watch,
        cgroup: None,
        _probe: None,
    };
    match backend {
        CaptureBackend::Fanotify => FanotifyWatch::start(root, watched, &skip)
            .map(|w| without_ebpf(AnyWatch::Fanotify(w)))
            .context("starting fanotify (it needs Linux 5.17)"),
        CaptureBackend::Inotify => InotifyWatch::start(root, watched, &skip)
            .map(|w| without_ebpf(AnyWatch::Inotify(w)))
            .context("starting inotify"),
        CaptureBackend::Ebpf => start_ebpf(ring_buffer).context(
            "the eBPF probe could not be used (it needs root and a kernel with BTF); \
             --backend auto falls back to fanotify or inotify instead",
        ),
        CaptureBackend::Auto => start_ebpf(ring_buffer).or_else(|err| {
            let watch = AnyWatch::fallback(root, watched, &skip)
                .context("starting fanotify, then inotify")?;
            let capture = capture_of(&watch);
            eprintln!(
                "diffkeeper: eBPF unavailable ({err:#}); recording with {}: {} \
                 (--require-ebpf refuses instead)",
                capture.backend,
                capture.limits.join("; ")
            );
            Ok(without_ebpf(watch))
        }),
    }
}

fn start_ebpf(ring_buffer_bytes: u32) -> Result<Capture> {
    let probe = Probe::load(ProbeConfig {
        ring_buffer_bytes,
        ..ProbeConfig::default()
    })?;
    let cgroup = ChildCgroup::create(format!("diffkeeper/record-{}", std::process::id()))?;
    let watch = probe.watch(cgroup.id())?;
    Ok(Capture {
        watch: AnyWatch::Ebpf(watch),
        cgroup: Some(cgroup),
        _probe: Some(probe),
    })
}

/// Ctrl-C reaches the command directly (same process group); we only
/// survive it to finish the recording. SIGTERM and SIGHUP are passed on.
async fn forward_signals(pid: u32) -> Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        let signal = tokio::select! {
            _ = interrupt.recv() => continue,
            _ = terminate.recv() => rustix::process::Signal::TERM,
            _ = hangup.recv() => rustix::process::Signal::HUP,
        };
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

fn prepare_out(out: &Path) -> Result<PathBuf> {
    create_private_dir(out)?;
    Ok(out.canonicalize()?)
}

fn watched_dirs(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let defaults = [std::env::current_dir()?, PathBuf::from("/tmp")];
    let dirs: Vec<PathBuf> = if given.is_empty() {
        defaults.to_vec()
    } else {
        given.to_vec()
    };
    let mut canonical = Vec::new();
    for dir in dirs {
        let path = dir
            .canonicalize()
            .with_context(|| format!("--watch {}", dir.display()))?;
        if !path.is_dir() {
            bail!("--watch {}: not a directory", dir.display());
        }
        // A watched directory inside another is already covered.
        if !canonical.iter().any(|c: &PathBuf| path.starts_with(c)) {
            canonical.retain(|c: &PathBuf| !c.starts_with(&path));
            canonical.push(path);
        }
    }
    Ok(canonical)
}

fn glob_below(dir: &Path) -> String {
    let text = dir.display().to_string();
    let escaped = globset::escape(&text);
    if text == "/" {
        "/**".into()
    } else {
        format!("{escaped}/**")
    }
}

fn command_line(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
