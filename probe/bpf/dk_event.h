/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The records DiffKeeper's eBPF programs put in a watcher's ring buffer.
 *
 * This header is the single C definition of the wire format; its Rust twin is
 * probe/src/abi.rs. Both sides assert every size and offset below, so a field
 * moved on one side only fails the build. Any change to a layout, or to what
 * a record means, bumps DK_EVENT_VERSION (and with it the bpffs pin directory,
 * so two builds never share maps of different layouts). docs/probe.md
 * describes every field.
 */
#ifndef DK_EVENT_H
#define DK_EVENT_H

#define DK_EVENT_VERSION 4

/* Longest path (in bytes, no NUL) a record carries; longer ones are cut and flagged. */
#define DK_PATH_MAX 4096

enum dk_kind {
	DK_KIND_EVENT = 1,
	DK_KIND_GAP = 2,
};

enum dk_op {
	DK_OP_OPEN = 1,
	DK_OP_WRITE = 2,
	DK_OP_TRUNCATE = 3,
	DK_OP_FALLOCATE = 4,
	DK_OP_RENAME = 5,
	DK_OP_UNLINK = 6,
	DK_OP_MKDIR = 7,
	DK_OP_RMDIR = 8,
	DK_OP_SYMLINK = 9,
	DK_OP_LINK = 10,
	DK_OP_CHMOD = 11,
	DK_OP_CHOWN = 12,
	DK_OP_CLOSE = 13,
	DK_OP_FSYNC = 14,
	DK_OP_MMAP = 15,
	DK_OP_MSYNC = 16,
	DK_OP_EXEC = 17,
	DK_OP_EXIT = 18,
};

/* Bits of dk_event.flags. */
enum dk_flag {
	/* The path walk hit DK_PATH_MAX or the component limit: path is a suffix. */
	DK_F_PATH_TRUNCATED = 1 << 0,
	/* The walk never met the task's root: the file lies outside the container root. */
	DK_F_PATH_OUTSIDE_ROOT = 1 << 1,
	DK_F_PATH2_TRUNCATED = 1 << 2,
	DK_F_PATH2_OUTSIDE_ROOT = 1 << 3,
	/* path2 is a string as the process passed it (symlink target, exec filename). */
	DK_F_PATH2_RAW = 1 << 4,
	/* A user string could not be read: the path is missing or partial. */
	DK_F_PATH_UNREADABLE = 1 << 5,
	DK_F_PATH2_UNREADABLE = 1 << 6,
};

/* One observed operation; path bytes (path_len, then path2_len) follow it, no NULs. */
struct dk_event {
	__u16 version;      /* DK_EVENT_VERSION */
	__u16 kind;         /* DK_KIND_EVENT */
	__u16 op;           /* enum dk_op */
	__u16 flags;        /* enum dk_flag bits */
	__u64 ts_ns;        /* bpf_ktime_get_ns() at syscall exit (CLOCK_MONOTONIC) */
	__u64 cgroup_id;    /* cgroup v2 id (inode of the cgroup directory) */
	__u32 pid;          /* host thread-group id */
	__u32 tid;          /* host thread id */
	__s64 ret;          /* syscall return value (>= 0); wait status for DK_OP_EXIT */
	__s32 fd;           /* file descriptor the operation used, -1 if none */
	__u32 mode;         /* mode for open/creat/mkdir/chmod, prot for mmap */
	__u64 op_flags;     /* open flags, rename/link/at flags, fallocate mode, mmap flags */
	__u64 offset;       /* file offset of a write/fallocate/truncate; address for mmap/msync */
	__u64 len;          /* bytes written / new size / range length */
	__u32 uid;          /* new owner for chown, (u32)-1 when unchanged */
	__u32 gid;          /* new group for chown, (u32)-1 when unchanged */
	char comm[16];      /* task comm, NUL-padded */
	__u16 path_len;     /* bytes of the first path */
	__u16 path2_len;    /* bytes of the second path (rename/link/symlink/exec) */
	__u32 syscall_nr;   /* x86-64 syscall number, (u32)-1 for sched events */
	__u32 ns_pid;       /* thread-group id in the task's own pid namespace */
	__u32 ns_tid;       /* thread id in the task's own pid namespace */
};

/*
 * Emitted in place of lost events, before the next event that fits. Counts are
 * cumulative per cgroup, so userspace derives the loss since the last gap it
 * reported without double counting (see docs/probe.md, "Back-pressure").
 */
struct dk_gap {
	__u16 version;      /* DK_EVENT_VERSION */
	__u16 kind;         /* DK_KIND_GAP */
	__u32 _reserved;
	__u64 dropped_total; /* events lost for this cgroup since the watch began */
	__u64 first_ns;     /* time of the first loss not yet reported */
	__u64 last_ns;      /* time of the latest loss */
	__u64 cgroup_id;
};

/*
 * A watched cgroup's route and loss accounting, value of the dk_drops map.
 * The watcher's ring is dk_rings[dk_ring_key(owner_pid, ring_id)]. The map
 * keeps its first name and layout (ring_id was reserved) so that every build
 * can tell whether another build's probe set still has live watchers.
 */
struct dk_drops {
	__u64 dropped;      /* reservations that failed */
	__u64 reported;     /* dropped as of the last in-band gap record */
	__u64 first_ns;     /* first loss after `reported` */
	__u64 last_ns;      /* latest loss */
	__u32 owner_pid;    /* process that watches this cgroup, for stale-entry cleanup */
	__u32 ring_id;      /* kernel map id of the watcher's ring buffer */
};

/* Key of dk_dirty: an fd of a process. The reader deletes entries by it. */
struct dk_dirty_key {
	__u32 tgid;
	__s32 fd;
};

/* Value of dk_dirty: the file written through the fd, and whether a write record went out. */
struct dk_written {
	__u64 file;           /* struct file * */
	__u64 write_reported; /* 1: later writes through the fd are folded into that record */
};

/* Key of a ring in dk_rings: unique while the ring lives, and names its owner. */
static __always_inline __u64 dk_ring_key(__u32 owner_pid, __u32 ring_id)
{
	return (__u64)owner_pid << 32 | ring_id;
}

#define DK_ASSERT_OFFSET(type, field, off) \
	_Static_assert(__builtin_offsetof(struct type, field) == (off), #type "." #field)

_Static_assert(sizeof(struct dk_event) == 112, "dk_event size");
DK_ASSERT_OFFSET(dk_event, ts_ns, 8);
DK_ASSERT_OFFSET(dk_event, cgroup_id, 16);
DK_ASSERT_OFFSET(dk_event, pid, 24);
DK_ASSERT_OFFSET(dk_event, ret, 32);
DK_ASSERT_OFFSET(dk_event, fd, 40);
DK_ASSERT_OFFSET(dk_event, mode, 44);
DK_ASSERT_OFFSET(dk_event, op_flags, 48);
DK_ASSERT_OFFSET(dk_event, offset, 56);
DK_ASSERT_OFFSET(dk_event, len, 64);
DK_ASSERT_OFFSET(dk_event, uid, 72);
DK_ASSERT_OFFSET(dk_event, comm, 80);
DK_ASSERT_OFFSET(dk_event, path_len, 96);
DK_ASSERT_OFFSET(dk_event, path2_len, 98);
DK_ASSERT_OFFSET(dk_event, syscall_nr, 100);
DK_ASSERT_OFFSET(dk_event, ns_pid, 104);
DK_ASSERT_OFFSET(dk_event, ns_tid, 108);
_Static_assert(sizeof(struct dk_gap) == 40, "dk_gap size");
DK_ASSERT_OFFSET(dk_gap, dropped_total, 8);
DK_ASSERT_OFFSET(dk_gap, first_ns, 16);
DK_ASSERT_OFFSET(dk_gap, last_ns, 24);
DK_ASSERT_OFFSET(dk_gap, cgroup_id, 32);
_Static_assert(sizeof(struct dk_drops) == 40, "dk_drops size");
DK_ASSERT_OFFSET(dk_drops, owner_pid, 32);
DK_ASSERT_OFFSET(dk_drops, ring_id, 36);
_Static_assert(sizeof(struct dk_dirty_key) == 8, "dk_dirty_key size");
DK_ASSERT_OFFSET(dk_dirty_key, fd, 4);
_Static_assert(sizeof(struct dk_written) == 16, "dk_written size: [u64; 2] in probe/src/probe.rs");

#endif /* DK_EVENT_H */
