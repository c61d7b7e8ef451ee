//! A watcher's ring buffer, registered in `dk_rings` before any cgroup is
//! routed to it.
//!
//! Registering is the slow half of a watch: every update of a map-in-map
//! waits for an RCU grace period (~8 ms measured) and the ring itself takes
//! a few milliseconds to allocate. A recorder does it while the container
//! is still being built, so that [`Ring::watch`] (a plain hash insert) is
//! all that stands between the container's cgroup existing and its
//! workload starting.

use std::sync::Arc;

use aya::maps::{Map, MapData, RingBuf};
use aya_obj::generated::bpf_map_type;

use crate::abi::RawDrops;
use crate::probe::{map_errno, map_error, Shared, BPF_NOEXIST};
use crate::watch::Watch;
use crate::Error;

/// A registered ring buffer with no cgroup routed to it yet. Dropping it
/// unregisters it (waiting out an RCU grace period).
pub struct Ring {
    shared: Arc<Shared>,
    buffer: Option<RingBuf<MapData>>,
    /// Its kernel map id: with our pid, its key in `dk_rings`.
    id: u32,
}

impl Ring {
    pub(crate) fn register(shared: Arc<Shared>, bytes: u32) -> Result<Self, Error> {
        let def = aya_obj::Map::new_from_params(
            bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
            0,
            0,
            bytes,
            0,
        );
        let data = MapData::create(def, "dk_ring", None).map_err(|e| map_error("dk_ring", e))?;
        let id = data.info().map_err(|e| map_error("dk_ring", e))?.id();
        let key = ring_key(std::process::id(), id);
        shared
            .rings()
            .insert(key, &data, BPF_NOEXIST)
            .map_err(|e| map_error("dk_rings", e))?;
        // From here on, dropping `ring` unregisters it.
        let mut ring = Ring {
            shared,
            buffer: None,
            id,
        };
        // Awake: the reader polls at first (see `Watch::next`).
        ring.shared
            .sleepers()
            .insert(key, AWAKE, 0)
            .map_err(|e| map_error("dk_sleepers", e))?;
        ring.buffer = Some(
            Map::from_map_data(data)
                .and_then(RingBuf::try_from)
                .map_err(|e| map_error("dk_ring", e))?,
        );
        Ok(ring)
    }

    /// Routes the events of cgroup `cgroup_id` to this ring and starts
    /// reading them (see [`crate::Probe::watch`]). Must be called within a
    /// tokio runtime. Fails with [`Error::AlreadyWatched`] if another
    /// watcher has the cgroup.
    pub fn watch(mut self, cgroup_id: u64) -> Result<Watch, Error> {
        // The route is also the claim on the cgroup: inserted exclusively,
        // so a second watcher fails without touching the first's route.
        let route = RawDrops {
            owner_pid: std::process::id(),
            ring_id: self.id,
            ..RawDrops::default()
        };
        self.shared
            .drops
            .lock()
            .expect("drops map lock")
            .insert(cgroup_id, route, BPF_NOEXIST)
            .map_err(|err| match map_errno(&err) {
                Some(libc::EEXIST) => Error::AlreadyWatched(cgroup_id),
                _ => map_error("dk_drops", err),
            })?;
        let buffer = self.buffer.take().expect("a ring not yet watched");
        Watch::start(Arc::clone(&self.shared), cgroup_id, buffer, self)
    }

    /// Tells the programs that the reader is about to sleep until woken:
    /// the next record that needs it acted on at once wakes it (and clears
    /// this). While it has not said so, records do not interrupt the
    /// workload to wake it: the reader drains on a timer.
    pub(crate) fn announce_sleep(&self) -> Result<(), Error> {
        self.shared
            .sleepers()
            .insert(self.key(), ASLEEP, 0)
            .map_err(|e| map_error("dk_sleepers", e))
    }

    fn key(&self) -> u64 {
        ring_key(std::process::id(), self.id)
    }
}

/// Values of `dk_sleepers` (bpf/probe.bpf.c).
const AWAKE: u32 = 0;
const ASLEEP: u32 = 1;

impl Drop for Ring {
    fn drop(&mut self) {
        let key = self.key();
        if let Err(err) = self.shared.rings().remove(&key) {
            tracing::warn!(key, %err, "cannot unregister the ring buffer");
        }
        if let Err(err) = self.shared.sleepers().remove(&key) {
            tracing::debug!(key, %err, "no sleep flag to remove");
        }
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// `dk_ring_key()` of bpf/dk_event.h: unique while the ring lives (map ids
/// are), and names the process that registered it.
fn ring_key(owner_pid: u32, ring_id: u32) -> u64 {
    u64::from(owner_pid) << 32 | u64::from(ring_id)
}

/// The process that registered the ring under `key`.
pub(crate) fn ring_owner(key: u64) -> u32 {
    (key >> 32) as u32
}
