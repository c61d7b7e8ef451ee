//! One set of attached programs per host, shared by every process that watches.
//!
//! The first [`Probe::load`] on a host loads the object, attaches every
//! tracepoint and pins the links and the two routing maps under
//! `<pin_root>/v<event version>-<object id>/`; later loads (other shims, other
//! `diffkeeper record` runs) only open the pinned maps. Pinned links keep the
//! programs attached after the loading process exits, so cost stays one set of
//! programs whatever the number of watchers; `rm -r` of the pin directory (or
//! [`Probe::remove_pinned`]) detaches them. docs/probe.md has the design.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{HashMap, HashOfMaps, Map, MapData, ProgramArray};
use aya::programs::links::FdLink;
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};

use crate::abi::{self, RawDirtyKey, RawDrops};
use crate::ring::{ring_owner, Ring};
use crate::watch::Watch;
use crate::{sys, Error};

/// Default bpffs directory for the shared programs.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/diffkeeper";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe.bpf.o"));
const OBJECT_ID: &str = env!("DIFFKEEPER_PROBE_OBJECT_ID");

/// Tail-call targets, in `enum dk_handler` order (bpf/probe.bpf.c).
const HANDLERS: [&str; 3] = ["dk_handle_fd", "dk_handle_path", "dk_handle_path2"];
const RINGS_MAP: &str = "dk_rings";
const SLEEPERS_MAP: &str = "dk_sleepers";
const DIRTY_MAP: &str = "dk_dirty";
/// Routes and loss counters. Every build since the first names and lays it
/// out the same way (see `struct dk_drops`), so any build can read another's.
const DROPS_MAP: &str = "dk_drops";
const HANDLERS_MAP: &str = "dk_handlers";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TRACEFS_MAGIC: i64 = 0x7472_6163;
/// `BPF_NOEXIST`: map insert fails if the key exists.
pub(crate) const BPF_NOEXIST: u64 = 1;

/// How to load the probe.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// bpffs directory under which the shared programs are pinned.
    /// Default: [`DEFAULT_PIN_ROOT`].
    pub pin_root: PathBuf,
    /// Bytes of each watcher's ring buffer: a power of two, at least a page.
    /// Default: 8 MiB (about 60,000 typical events of headroom).
    pub ring_buffer_bytes: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            ring_buffer_bytes: 8 << 20,
        }
    }
}

/// This process's handle on the host's shared programs. Cheap to keep; make
/// one per process and call [`Probe::watch`] for each cgroup (or
/// [`Probe::ring`] ahead of time and [`Ring::watch`] once the cgroup exists).
#[derive(Debug)]
pub struct Probe {
    shared: Arc<Shared>,
    ring_buffer_bytes: u32,
}

/// The routing maps, shared by a probe and its watches.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `dk_rings`: ring key -> ring buffer (`None`: a set another build
    /// made, opened only to see whether it has live watchers).
    pub(crate) rings: Option<Mutex<HashOfMaps<MapData, u64>>>,
    /// `dk_sleepers`: ring key -> whether its reader sleeps until woken
    /// (`None` like `rings`).
    sleepers: Option<Mutex<HashMap<MapData, u64, u32>>>,
    /// `dk_dirty`: (tgid, fd) -> `struct dk_written` (`None` like
    /// `sleepers`). Only ever deleted from here.
    dirty: Option<Mutex<HashMap<MapData, RawDirtyKey, [u64; 2]>>>,
    /// `dk_drops`: cgroup id -> route and loss counters.
    pub(crate) drops: Mutex<HashMap<MapData, u64, RawDrops>>,
    pin_dir: PathBuf,
    /// The inode of the `dk_drops` pin these maps were opened from: a set
    /// retired and installed again by another process has the same path
    /// but a new pin (bpffs never reuses inode numbers soon).
    pinned_ino: u64,
}

impl Probe {
    /// Attaches the shared programs if no process on this host has yet, then
    /// opens them. Blocking: the first load on a host verifies ~80 programs
    /// (about a second); later ones take milliseconds. Mounts bpffs and
    /// tracefs if they are not mounted.
    pub fn load(config: ProbeConfig) -> Result<Self, Error> {
        let page = page_size();
        let size = config.ring_buffer_bytes;
        if !size.is_power_of_two() || size < page {
            return Err(Error::RingBufferSize(size));
        }
        if config.pin_root.starts_with("/sys/fs/bpf") {
            ensure_mounted(Path::new("/sys/fs/bpf"), c"bpf", BPF_FS_MAGIC)?;
        }
        if !Path::new("/sys/kernel/debug/tracing/events").exists() {
            ensure_mounted(Path::new("/sys/kernel/tracing"), c"tracefs", TRACEFS_MAGIC)?;
        }
        let pin_dir = pin_dir(&config.pin_root);
        fs::create_dir_all(&config.pin_root).map_err(|source| Error::Io {
            what: "creating pin root",
            path: config.pin_root.clone(),
            source,
        })?;

        let lock = install_lock(true)?;
        if !pin_dir.exists() {
            install(&pin_dir)?;
        }
        retire_unused_sets(&config.pin_root, &pin_dir);
        let shared = Shared::open(pin_dir, true)?;
        drop(lock);
        shared.forget_dead_watchers();
        Ok(Self {
            shared: Arc::new(shared),
            ring_buffer_bytes: size,
        })
    }

    /// Starts delivering the events of cgroup `cgroup_id` (see
    /// [`crate::cgroup_id_of`]). Only that exact cgroup is matched, not its
    /// descendants. Must be called within a tokio runtime. Dropping the
    /// [`Watch`] stops it. One watcher per cgroup host-wide.
    pub fn watch(&self, cgroup_id: u64) -> Result<Watch, Error> {
        self.ring()?.watch(cgroup_id)
    }

    /// A ring buffer registered with the programs but not yet routed to: the
    /// slow part of a watch (~10 ms, mostly an RCU grace period), to do
    /// while the cgroup is still being made. [`Ring::watch`] finishes it.
    pub fn ring(&self) -> Result<Ring, Error> {
        // A set without watchers may be retired (and installed afresh) by
        // other loads, which hold the lock exclusively: shared, that cannot
        // happen between this check and the registration that makes the set
        // live.
        let _lock = install_lock(false)?;
        if !self.shared.is_current() {
            return Err(Error::Retired(self.shared.pin_dir.clone()));
        }
        Ring::register(Arc::clone(&self.shared), self.ring_buffer_bytes)
    }

    /// The bpffs directory holding this build's programs.
    pub fn pin_dir(&self) -> &Path {
        &self.shared.pin_dir
    }

    /// Detaches the shared programs of every build by removing `pin_root`.
    /// Watches still open keep their ring buffers but receive nothing more.
    pub fn remove_pinned(pin_root: &Path) -> Result<(), Error> {
        match fs::remove_dir_all(pin_root) {
            Err(source) if source.kind() != io::ErrorKind::NotFound => Err(Error::Io {
                what: "removing pins",
                path: pin_root.into(),
                source,
            }),
            _ => Ok(()),
        }
    }
}

fn pin_dir(pin_root: &Path) -> PathBuf {
    pin_root.join(format!("v{}-{OBJECT_ID}", abi::EVENT_VERSION))
}

impl Shared {
    /// Opens the maps of the set at `pin_dir`; with `ours`, a set of this
    /// build, else one only read for its watchers (any build's: it may
    /// have no `dk_rings`).
    fn open(pin_dir: PathBuf, ours: bool) -> Result<Self, Error> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join(name))
                .and_then(Map::from_map_data)
                .map_err(|e| map_error(name, e))
        };
        let pinned_ino =
            Self::pinned_ino(&pin_dir).ok_or_else(|| Error::Retired(pin_dir.clone()))?;
        let (rings, sleepers, dirty) = if ours {
            let rings = HashOfMaps::try_from(open(RINGS_MAP)?);
            let sleepers = HashMap::try_from(open(SLEEPERS_MAP)?);
            let dirty = HashMap::try_from(open(DIRTY_MAP)?);
            (
                Some(rings.map_err(|e| map_error(RINGS_MAP, e))?),
                Some(sleepers.map_err(|e| map_error(SLEEPERS_MAP, e))?),
                Some(dirty.map_err(|e| map_error(DIRTY_MAP, e))?),
            )
        } else {
            let rings = open(RINGS_MAP)
                .ok()
                .and_then(|m| HashOfMaps::try_from(m).ok());
            (rings, None, None)
        };
        let drops = HashMap::try_from(open(DROPS_MAP)?).map_err(|e| map_error(DROPS_MAP, e))?;
        Ok(Self {
            rings: rings.map(Mutex::new),
            sleepers: sleepers.map(Mutex::new),
            dirty: dirty.map(Mutex::new),
            drops: Mutex::new(drops),
            pin_dir,
            pinned_ino,
        })
    }

    fn pinned_ino(pin_dir: &Path) -> Option<u64> {
        fs::metadata(pin_dir.join(DROPS_MAP)).ok().map(|m| m.ino())
    }

    /// `dk_rings` of this build's set.
    pub(crate) fn rings(&self) -> MutexGuard<'_, HashOfMaps<MapData, u64>> {
        this_builds(&self.rings, RINGS_MAP)
    }

    /// `dk_sleepers` of this build's set.
    pub(crate) fn sleepers(&self) -> MutexGuard<'_, HashMap<MapData, u64, u32>> {
        this_builds(&self.sleepers, SLEEPERS_MAP)
    }

    /// `dk_dirty` of this build's set.
    pub(crate) fn dirty(&self) -> MutexGuard<'_, HashMap<MapData, RawDirtyKey, [u64; 2]>> {
        this_builds(&self.dirty, DIRTY_MAP)
    }

    /// Whether these maps are still the pinned ones (the set was not
    /// retired since they were opened). Call under the install lock.
    fn is_current(&self) -> bool {
        Self::pinned_ino(&self.pin_dir) == Some(self.pinned_ino)
    }

    /// Whether a live process routes a cgroup or holds a ring here.
    fn has_live_watchers(&self) -> bool {
        let drops = self.drops.lock().expect("drops map lock");
        let routed = drops
            .iter()
            .filter_map(Result::ok)
            .any(|(_, d)| process_alive(d.owner_pid));
        routed
            || self.rings.as_ref().is_some_and(|rings| {
                let rings = rings.lock().expect("rings map lock");
                rings
                    .keys()
                    .filter_map(Result::ok)
                    .any(|key| process_alive(ring_owner(key)))
            })
    }

    /// Removes the routes and rings of watchers whose process died without
    /// dropping them (killed shims), so their cgroups stop costing events
    /// and their ring buffers are freed.
    fn forget_dead_watchers(&self) {
        let mut drops = self.drops.lock().expect("drops map lock");
        let dead: Vec<u64> = drops
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, d)| !process_alive(d.owner_pid))
            .map(|(cgroup, _)| cgroup)
            .collect();
        for cgroup in dead {
            tracing::info!(cgroup, "removing the route of a watcher that died");
            if let Err(err) = drops.remove(&cgroup) {
                tracing::debug!(cgroup, %err, "stale route already gone");
            }
        }
        drop(drops);
        let mut rings = self.rings();
        let dead: Vec<u64> = rings
            .keys()
            .filter_map(Result::ok)
            .filter(|&key| !process_alive(ring_owner(key)))
            .collect();
        for key in dead {
            tracing::info!(key, "removing the ring of a watcher that died");
            if let Err(err) = rings.remove(&key) {
                tracing::debug!(key, %err, "stale ring already gone");
            }
            // Registered after the ring (see `Ring::register`), so never
            // left behind without one.
            if let Err(err) = self.sleepers().remove(&key) {
                tracing::debug!(key, %err, "stale sleep flag already gone");
            }
        }
    }
}

/// A map only this build's sets have (opened with `ours`), locked.
fn this_builds<'a, T>(map: &'a Option<Mutex<T>>, name: &str) -> MutexGuard<'a, T> {
    map.as_ref()
        .unwrap_or_else(|| panic!("this build's set has {name}"))
        .lock()
        .unwrap_or_else(|_| panic!("{name} map lock"))
}

/// The host-wide lock on probe sets: exclusive to install and retire sets,
/// shared to claim a watch. A flock on /run, which every process sees.
fn install_lock(exclusive: bool) -> Result<File, Error> {
    let lock_path = PathBuf::from("/run/diffkeeper-probe.lock");
    File::create(&lock_path)
        .and_then(|file| {
            if exclusive {
                file.lock()
            } else {
                file.lock_shared()
            }
            .map(|()| file)
        })
        .map_err(|source| Error::Io {
            what: "locking",
            path: lock_path,
            source,
        })
}

/// Detaches the probe sets of other builds (upgrades, development builds) that
/// no live process watches with, so they stop costing every traced syscall.
/// Sets this build cannot read are kept. Runs under the install lock, so a
/// `-partial` directory is a crashed install.
fn retire_unused_sets(pin_root: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(pin_root) else {
        return;
    };
    for dir in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        if dir == current {
            continue;
        }
        let partial = dir.as_os_str().as_bytes().ends_with(b"-partial");
        if !partial {
            match Shared::open(dir.clone(), false) {
                Ok(set) if set.has_live_watchers() => continue,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(?dir, %err, "keeping a probe set this build cannot read");
                    continue;
                }
            }
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(?dir, "retired an unused probe set"),
            Err(err) => tracing::warn!(?dir, %err, "cannot retire an unused probe set"),
        }
    }
}

/// Loads and attaches everything into `<pin_dir>-partial`, then renames it into
/// place, so a crash mid-install never leaves a directory that looks complete.
fn install(pin_dir: &Path) -> Result<(), Error> {
    // bpffs refuses names with dots (kernel/bpf/inode.c reserves them).
    let mut partial = pin_dir.as_os_str().to_owned();
    partial.push("-partial");
    let partial = PathBuf::from(partial);
    let io_error = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io_error("removing", &partial))?;
    }
    fs::create_dir_all(partial.join("links")).map_err(io_error("creating", &partial))?;

    // aya has no user-space type for task storage (dk_inflight); only the
    // programs use it, so it is created as a plain map.
    let mut ebpf = EbpfLoader::new().allow_unsupported_maps().load(OBJECT)?;
    for name in [RINGS_MAP, SLEEPERS_MAP, DIRTY_MAP, DROPS_MAP, HANDLERS_MAP] {
        let map = ebpf.map(name).ok_or_else(|| missing("map", name))?;
        let path = partial.join(name);
        map.pin(&path).map_err(|e| Error::Pin {
            path,
            source: e.into(),
        })?;
    }
    // Kept open until every program is loaded: their instructions name its fd.
    let _handlers = load_handlers(&mut ebpf)?;
    let mut attached = 0;
    for (name, program) in ebpf.programs_mut() {
        let Some((category, event)) = tracepoint_of(name) else {
            continue;
        };
        if !tracepoint_exists(category, &event) {
            tracing::warn!(
                program = name,
                "kernel has no tracepoint {category}/{event}: not seen"
            );
            continue;
        }
        let tracepoint: &mut TracePoint = program.try_into().map_err(program_error(name))?;
        tracepoint.load().map_err(program_error(name))?;
        let id = tracepoint
            .attach(category, &event)
            .map_err(program_error(name))?;
        let link = tracepoint.take_link(id).map_err(program_error(name))?;
        let link = FdLink::try_from(link).map_err(program_error(name))?;
        let path = partial.join("links").join(name);
        link.pin(&path).map_err(|e| Error::Pin {
            path,
            source: e.into(),
        })?;
        attached += 1;
    }
    fs::rename(&partial, pin_dir).map_err(io_error("renaming", &partial))?;
    tracing::info!(?pin_dir, attached, "attached the shared probe programs");
    Ok(())
}

/// Loads the tail-call targets and registers them in `dk_handlers`.
fn load_handlers(ebpf: &mut Ebpf) -> Result<ProgramArray<MapData>, Error> {
    let map = ebpf
        .take_map(HANDLERS_MAP)
        .ok_or_else(|| missing("map", HANDLERS_MAP))?;
    let mut handlers = ProgramArray::try_from(map).map_err(|e| map_error(HANDLERS_MAP, e))?;
    for (index, name) in (0u32..).zip(HANDLERS) {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| missing("program", name))?;
        let tracepoint: &mut TracePoint = program.try_into().map_err(program_error(name))?;
        tracepoint.load().map_err(program_error(name))?;
        let fd = tracepoint.fd().map_err(program_error(name))?;
        handlers
            .set(index, fd, 0)
            .map_err(|e| map_error(HANDLERS_MAP, e))?;
    }
    Ok(handlers)
}

/// Program names encode their tracepoint: `dk_enter_<syscall>`,
/// `dk_exit_<syscall>`, `dk_sched_<exec|exit>`.
fn tracepoint_of(program: &str) -> Option<(&'static str, String)> {
    if let Some(syscall) = program.strip_prefix("dk_enter_") {
        Some(("syscalls", format!("sys_enter_{syscall}")))
    } else if let Some(syscall) = program.strip_prefix("dk_exit_") {
        Some(("syscalls", format!("sys_exit_{syscall}")))
    } else {
        program
            .strip_prefix("dk_sched_")
            .map(|what| ("sched", format!("sched_process_{what}")))
    }
}

fn tracepoint_exists(category: &str, event: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|root| {
            Path::new(root)
                .join("events")
                .join(category)
                .join(event)
                .exists()
        })
}

fn ensure_mounted(target: &Path, fstype: &CStr, magic: i64) -> Result<(), Error> {
    if sys::fs_magic(target).is_ok_and(|found| found == magic) {
        return Ok(());
    }
    let c_target = CString::new(target.as_os_str().as_bytes()).expect("mount points have no NUL");
    // SAFETY: all strings are NUL-terminated and outlive the call; no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c_target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Io {
            what: "mounting",
            path: target.into(),
            source: io::Error::last_os_error(),
        });
    }
    tracing::info!(?target, ?fstype, "mounted");
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe {
        libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// The errno of a failed map syscall, if that is what `err` is.
pub(crate) fn map_errno(err: &aya::maps::MapError) -> Option<i32> {
    match err {
        aya::maps::MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) => {
            io_error.raw_os_error()
        }
        _ => None,
    }
}

pub(crate) fn map_error(map: &'static str, err: aya::maps::MapError) -> Error {
    Error::Map {
        map,
        source: Box::new(err),
    }
}

/// Keeps aya's message, which for load failures ends with the verifier log.
fn program_error<E>(program: &str) -> impl FnOnce(E) -> Error + '_
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| Error::Program {
        program: program.to_string(),
        source: Box::new(source),
    }
}

fn missing(kind: &'static str, name: &str) -> Error {
    Error::Missing {
        kind,
        name: name.to_string(),
    }
}
