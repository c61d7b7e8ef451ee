//! The wire format shared with the eBPF programs: the Rust twin of
//! `bpf/dk_event.h`. Both sides assert the same sizes and offsets, so a field
//! moved on one side fails the build instead of garbling events.

use std::mem::{offset_of, size_of};

/// Version of [`RawEvent`] and [`RawGap`]; `DK_EVENT_VERSION` in C.
pub const EVENT_VERSION: u16 = 4;

pub const KIND_EVENT: u16 = 1;
pub const KIND_GAP: u16 = 2;

pub const F_PATH_TRUNCATED: u16 = 1 << 0;
pub const F_PATH_OUTSIDE_ROOT: u16 = 1 << 1;
pub const F_PATH2_TRUNCATED: u16 = 1 << 2;
pub const F_PATH2_OUTSIDE_ROOT: u16 = 1 << 3;
pub const F_PATH2_RAW: u16 = 1 << 4;
pub const F_PATH_UNREADABLE: u16 = 1 << 5;
pub const F_PATH2_UNREADABLE: u16 = 1 << 6;

/// `struct dk_event`: the fixed part of an event record; paths follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawEvent {
    pub version: u16,
    pub kind: u16,
    pub op: u16,
    pub flags: u16,
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub ret: i64,
    pub fd: i32,
    pub mode: u32,
    pub op_flags: u64,
    pub offset: u64,
    pub len: u64,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; 16],
    pub path_len: u16,
    pub path2_len: u16,
    pub syscall_nr: u32,
    pub ns_pid: u32,
    pub ns_tid: u32,
}

/// `struct dk_gap`: losses the kernel reports in-band.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawGap {
    pub version: u16,
    pub kind: u16,
    pub reserved: u32,
    pub dropped_total: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub cgroup_id: u64,
}

/// `struct dk_drops`: a watched cgroup's route (its ring) and loss counter,
/// value of the `dk_drops` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RawDrops {
    pub dropped: u64,
    pub reported: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub owner_pid: u32,
    /// Kernel map id of the watcher's ring buffer.
    pub ring_id: u32,
}

/// `struct dk_dirty_key`: an fd of a process, key of the `dk_dirty` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawDirtyKey {
    pub tgid: u32,
    pub fd: i32,
}

// SAFETY: the four structs are repr(C), made only of integers and byte arrays,
// with no padding (sizes asserted below), so any bit pattern is a valid value.
unsafe impl aya::Pod for RawEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for RawGap {}
// SAFETY: as above.
unsafe impl aya::Pod for RawDrops {}
// SAFETY: as above.
unsafe impl aya::Pod for RawDirtyKey {}

const _: () = {
    assert!(size_of::<RawEvent>() == 112);
    assert!(offset_of!(RawEvent, ts_ns) == 8);
    assert!(offset_of!(RawEvent, cgroup_id) == 16);
    assert!(offset_of!(RawEvent, pid) == 24);
    assert!(offset_of!(RawEvent, ret) == 32);
    assert!(offset_of!(RawEvent, fd) == 40);
    assert!(offset_of!(RawEvent, mode) == 44);
    assert!(offset_of!(RawEvent, op_flags) == 48);
    assert!(offset_of!(RawEvent, offset) == 56);
    assert!(offset_of!(RawEvent, len) == 64);
    assert!(offset_of!(RawEvent, uid) == 72);
    assert!(offset_of!(RawEvent, comm) == 80);
    assert!(offset_of!(RawEvent, path_len) == 96);
    assert!(offset_of!(RawEvent, path2_len) == 98);
    assert!(offset_of!(RawEvent, syscall_nr) == 100);
    assert!(offset_of!(RawEvent, ns_pid) == 104);
    assert!(offset_of!(RawEvent, ns_tid) == 108);
    assert!(size_of::<RawGap>() == 40);
    assert!(offset_of!(RawGap, dropped_total) == 8);
    assert!(offset_of!(RawGap, first_ns) == 16);
    assert!(offset_of!(RawGap, last_ns) == 24);
    assert!(offset_of!(RawGap, cgroup_id) == 32);
    assert!(size_of::<RawDrops>() == 40);
    assert!(offset_of!(RawDrops, owner_pid) == 32);
    assert!(offset_of!(RawDrops, ring_id) == 36);
    assert!(size_of::<RawDirtyKey>() == 8);
    assert!(offset_of!(RawDirtyKey, fd) == 4);
};

/// Reads a `T` from the start of `bytes`, or `None` if it is too short.
pub fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked; read_unaligned copes with the ring
    // buffer's alignment differing from T's; Pod types are valid for any bit
    // pattern.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}
