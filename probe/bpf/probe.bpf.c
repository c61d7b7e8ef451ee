// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * DiffKeeper's eBPF programs: every successful file change made by a task of a
 * watched cgroup, as one record in that cgroup's own ring buffer.
 *
 * Shape (docs/probe.md has the full design):
 *   sys_enter_<syscall>  one map lookup (is the task's cgroup watched?); if so,
 *                        stash the arguments in dk_inflight keyed by thread.
 *   sys_exit_<syscall>   one map lookup (anything stashed for this thread?);
 *                        on success tail-call the handler that builds the record.
 *   dk_handle_*          resolve paths, fill the record, write it to the ring
 *                        buffer its route names, count a loss if it is full.
 *   sched_process_*      exec and whole-process exit of watched tasks.
 *
 * Kernel requirements: syscall and sched tracepoints, BTF for CO-RE, ring
 * buffers as inner maps (5.8), global functions (5.6), bpf_link for
 * tracepoints so the loader can pin them (5.15). sys_enter_fchmodat2 exists
 * from 6.6; the loader skips tracepoints the running kernel does not have.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "dk_event.h"
#include "dk_path.h"
#include "dk_syscalls.h"

char LICENSE[] SEC("license") = "GPL";

/* Watched cgroups at once, host-wide. */
#define DK_MAX_WATCHES 4096

/* open(2) flags (include/uapi/asm-generic/fcntl.h) */
#define DK_O_WRONLY 00000001
#define DK_O_RDWR 00000002
#define DK_O_CREAT 00000100
#define DK_O_TRUNC 00001000
#define DK_WRITE_INTENT (DK_O_WRONLY | DK_O_RDWR | DK_O_CREAT | DK_O_TRUNC)
#define DK_AT_REMOVEDIR 0x200
/* mmap(2) */
#define DK_PROT_WRITE 0x2
#define DK_MAP_TYPE 0x0f
#define DK_MAP_SHARED 0x01
#define DK_MAP_SHARED_VALIDATE 0x03
/* inode modes */
#define DK_S_IFMT 00170000
#define DK_S_IFREG 0100000
#define DK_S_IFDIR 0040000

/* Handlers, indexes of dk_handlers. */
enum dk_handler {
	DK_H_FD = 0,
	DK_H_PATH = 1,
	DK_H_PATH2 = 2,
};

/* How a handler completes a stashed call (dk_inflight.how). */
enum dk_how {
	DK_HOW_FD_FROM_RET = 1 << 0,   /* the fd is the return value (open) */
	DK_HOW_LEN_FROM_RET = 1 << 1,  /* the length is the return value (writes) */
	DK_HOW_OFF_FROM_POS = 1 << 2,  /* the offset is f_pos minus the length */
	DK_HOW_ADDR_FROM_RET = 1 << 3, /* the offset field carries the mmap address */
	DK_HOW_PATH2_RAW = 1 << 4,     /* path2 is not resolved (symlink target) */
	DK_HOW_DIRTIES = 1 << 5,       /* marks the fd written, for the close event */
};

/* A syscall in flight: what its sys_enter saw, for its sys_exit. */
struct dk_inflight {
	__u64 path_ptr;
	__u64 path2_ptr;
	__u64 op_flags;
	__u64 offset;
	__u64 len;
	__s64 ret;
	__s32 fd;
	__s32 dfd;
	__s32 dfd2;
	__u32 mode;
	__u32 uid;
	__u32 gid;
	__u32 nr;
	__u16 op;
	__u16 handler;
	__u16 how;
	__u16 active; /* set by sys_enter, cleared when its sys_exit is done */
};

/* One watcher's ring buffer; the size here is only the template's. */
struct dk_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
};

/*
 * dk_ring_key(owner, ring map id) -> a watcher's ring buffer. Two levels, not
 * cgroup -> ring: every update of a map-in-map waits for an RCU grace period
 * (~8 ms), so a watcher registers its ring while the container is still being
 * built, and routing the cgroup to it (a plain hash insert) is what remains
 * before the workload may start.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, DK_MAX_WATCHES);
	__type(key, __u64);
	__array(values, struct dk_ring);
} dk_rings SEC(".maps");

/* cgroup id -> its route (ring) and loss accounting. The only lookup unwatched tasks pay on enter. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DK_MAX_WATCHES);
	__type(key, __u64);
	__type(value, struct dk_drops);
} dk_drops SEC(".maps");

/*
 * dk_ring_key -> 1 while that ring's reader sleeps until woken, 0 while it
 * drains on a short timer (it saw events a moment ago). Set by the reader,
 * cleared by the record that wakes it; see wakeup().
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DK_MAX_WATCHES);
	__type(key, __u64);
	__type(value, __u32);
} dk_sleepers SEC(".maps");

/*
 * Each thread's syscall in flight: its stashed arguments. Task-local storage,
 * not a hash keyed by pid_tgid: a thread that never made a watched call has
 * none, so an unwatched task's sys_exit costs a pointer test instead of a
 * hash lookup, and a watched one's stash is a store instead of a hash update
 * (and delete). Created on a watched task's first stash; freed with the
 * task. A failed creation is counted as a loss.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dk_inflight);
} dk_inflight SEC(".maps");

/*
 * (tgid, fd) -> the file written through it, so close reports only written
 * files; and whether a write through it was reported since the reader last
 * read the file. Later writes through the fd are then folded into that
 * report (no record, no path walk: a log's appends cost a lookup each) until
 * the reader, about to read the file, deletes the entry
 * (`MergedWrites::report_next_write` in src/watch.rs): it reads everything
 * written before, and the next write is reported again.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dk_dirty_key);
	__type(value, struct dk_written);
} dk_dirty SEC(".maps");

/*
 * tgid -> 1 for processes that made a shared writable mapping (an mmap record
 * went out): only their exec or exit (address space gone, the recorder reads
 * what they stored) must wake the reader at once. Bounded: a mapper evicted
 * by newer ones is seen within DRAIN_INTERVAL instead.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} dk_mappers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dk_scratch);
} dk_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u32);
} dk_handlers SEC(".maps");

/* The current task's ring buffer and route, if its cgroup is watched. */
static __always_inline void *watched_ring(__u64 *cgroup_id, struct dk_drops **route)
{
	__u64 key;

	*cgroup_id = bpf_get_current_cgroup_id();
	*route = bpf_map_lookup_elem(&dk_drops, cgroup_id);
	if (!*route)
		return NULL;
	key = dk_ring_key((*route)->owner_pid, (*route)->ring_id);
	return bpf_map_lookup_elem(&dk_rings, &key);
}

/* This thread's in-flight slot; `create` makes one if it has none. */
static __always_inline struct dk_inflight *inflight(__u64 create)
{
	return bpf_task_storage_get(&dk_inflight, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static __always_inline struct dk_scratch *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&dk_scratch, &zero);
}

/*
 * The number a struct pid has in the innermost pid namespace that sees it: the
 * pid a container's own tools show. numbers[] is indexed by namespace level.
 */
static __always_inline __u32 pid_nr_in_own_ns(struct pid *pid)
{
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid upid = {};

	bpf_probe_read_kernel(&upid, sizeof(upid),
			      (void *)pid + bpf_core_field_offset(struct pid, numbers) +
				      (__u64)(level & 31) * bpf_core_type_size(struct upid));
	return upid.nr;
}

static __always_inline void begin_event(struct dk_event *ev, __u16 op, __u64 cgroup_id, __u32 nr)
{
	struct task_struct *task = current_task();

	__u64 id = bpf_get_current_pid_tgid();

	ev->version = DK_EVENT_VERSION;
	ev->kind = DK_KIND_EVENT;
	ev->op = op;
	ev->flags = 0;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = cgroup_id;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->ns_pid = pid_nr_in_own_ns(BPF_CORE_READ(task, group_leader, thread_pid));
	ev->ns_tid = pid_nr_in_own_ns(BPF_CORE_READ(task, thread_pid));
	ev->ret = 0;
	ev->fd = -1;
	ev->mode = 0;
	ev->op_flags = 0;
	ev->offset = 0;
	ev->len = 0;
	ev->uid = (__u32)-1;
	ev->gid = (__u32)-1;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	ev->path_len = 0;
	ev->path2_len = 0;
	ev->syscall_nr = nr;
}

static __always_inline void count_loss(struct dk_drops *drops, __u64 now)
{
	if (drops->dropped == drops->reported)
		drops->first_ns = now;
	drops->last_ns = now;
	__sync_fetch_and_add(&drops->dropped, 1);
}

/* Whether the current process made shared writable mappings; forgets it. */
static __always_inline bool forget_mappings(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!bpf_map_lookup_elem(&dk_mappers, &tgid))
		return false;
	bpf_map_delete_elem(&dk_mappers, &tgid);
	return true;
}

/*
 * Whether this record must interrupt the reader: only if it sleeps, and then
 * once (the flag is taken). A reader that saw events a moment ago drains on a
 * short timer instead (POLL_INTERVAL in src/watch.rs), so a burst of closes
 * costs no interrupt each. A reader without a flag is woken every time.
 */
static __always_inline __u64 wake_sleeper(const struct dk_drops *route)
{
	__u64 key = dk_ring_key(route->owner_pid, route->ring_id);
	__u32 *asleep = bpf_map_lookup_elem(&dk_sleepers, &key);

	if (!asleep)
		return BPF_RB_FORCE_WAKEUP;
	if (*asleep && __sync_lock_test_and_set(asleep, 0))
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/*
 * A wakeup costs the writer an interrupt (irq_work raised by a self-IPI: in a
 * VM, an exit to the hypervisor) and the reader a context switch: at 200k
 * events/s a wakeup per record halved throughput, and one per close was the
 * largest cost the probe added to a file-churning shell. So a record wakes
 * a sleeping reader only for the events it must act on before the file
 * changes again: the moments it reads content (close, fsync, msync), the
 * ones that make content unreachable (rename, unlink), and the exec or exit
 * of a process that made shared writable mappings (the rest of process churn,
 * half the wakeups of a fork-heavy workload, needs nothing at once); and any
 * reader once when the waiting data crosses 1/16 of the ring.
 * Only the crossing: a reader busy storing content leaves the ring above the
 * mark, and waking it again for every write of a database's burst made each
 * write raise an interrupt (measured: sqlite3's own kernel time x4). Writes
 * otherwise never wake it; the reader also drains on a timer.
 */
static __always_inline __u64 wakeup(void *ring, const struct dk_drops *route, __u16 op,
				    __u32 size)
{
	__u64 mark, waiting;

	switch (op) {
	case DK_OP_CLOSE:
	case DK_OP_FSYNC:
	case DK_OP_MSYNC:
	case DK_OP_RENAME:
	case DK_OP_UNLINK:
		return wake_sleeper(route);
	case DK_OP_EXEC:
	case DK_OP_EXIT:
		if (forget_mappings())
			return wake_sleeper(route);
	}
	mark = bpf_ringbuf_query(ring, BPF_RB_RING_SIZE) / 16;
	waiting = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	if (waiting < mark && waiting + size >= mark)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/*
 * Writes s->ev plus `paths` bytes of s->a. Losses since the last gap record go
 * first, as a gap record, so the stream says where they happened. False if
 * the record was lost.
 */
static __always_inline bool emit(void *ring, struct dk_drops *drops, struct dk_scratch *s,
				 __u32 paths)
{
	__u64 cgroup_id = s->ev.cgroup_id;
	__u64 now = s->ev.ts_ns;
	__u32 size;

	if (drops->dropped != drops->reported) {
		__u64 dropped = drops->dropped;
		struct dk_gap *gap = bpf_ringbuf_reserve(ring, sizeof(*gap), 0);

		if (!gap) {
			count_loss(drops, now);
			return false;
		}
		gap->version = DK_EVENT_VERSION;
		gap->kind = DK_KIND_GAP;
		gap->_reserved = 0;
		gap->dropped_total = dropped;
		gap->first_ns = drops->first_ns;
		gap->last_ns = drops->last_ns;
		gap->cgroup_id = cgroup_id;
		drops->reported = dropped;
		bpf_ringbuf_submit(gap, BPF_RB_NO_WAKEUP);
	}
	if (paths > 2 * DK_WALK_END)
		paths = 2 * DK_WALK_END;
	size = sizeof(s->ev) + (paths & DK_SLOT_MASK);
	if (bpf_ringbuf_output(ring, &s->ev, size, wakeup(ring, drops, s->ev.op, size))) {
		count_loss(drops, now);
		return false;
	}
	return true;
}

/* Moves the second path (composed in s->b) right after the first one in s->a. */
static __always_inline __u32 append_path2(struct dk_scratch *s, __u32 len1, __u32 len2)
{
	if (len1 > DK_WALK_END)
		len1 = DK_WALK_END;
	if (len2 > DK_WALK_END)
		len2 = DK_WALK_END;
	bpf_probe_read_kernel(&s->a[len1 & DK_WALK_MASK], len2 & DK_WALK_MASK, s->b);
	s->ev.path_len = len1;
	s->ev.path2_len = len2;
	return len1 + len2;
}

static __always_inline bool pseudo_fs(unsigned long magic)
{
	switch (magic) {
	case 0x9fa0:     /* proc */
	case 0x62656572: /* sysfs */
	case 0x27e0eb:   /* cgroup */
	case 0x63677270: /* cgroup2 */
	case 0x64626720: /* debugfs */
	case 0x74726163: /* tracefs */
	case 0x73636673: /* securityfs */
	case 0xcafe4a11: /* bpf */
		return true;
	default:
		return false;
	}
}

/*
 * Files whose changes are filesystem state: regular files (and directories for
 * chmod/chown), not pipes, sockets, devices or kernel pseudo files.
 */
static __always_inline bool recordable(struct file *file, __u16 op)
{
	umode_t mode = BPF_CORE_READ(file, f_inode, i_mode);

	if (pseudo_fs(BPF_CORE_READ(file, f_inode, i_sb, s_magic)))
		return false;
	if ((mode & DK_S_IFMT) == DK_S_IFREG)
		return true;
	return (op == DK_OP_CHMOD || op == DK_OP_CHOWN) && (mode & DK_S_IFMT) == DK_S_IFDIR;
}

/* Whether a write through (tgid, fd) to `file` was reported and not yet read. */
static __always_inline bool write_reported(__u64 id, int fd, struct file *file)
{
	struct dk_dirty_key key = { .tgid = id >> 32, .fd = fd };
	struct dk_written *known = bpf_map_lookup_elem(&dk_dirty, &key);

	return known && known->file == (__u64)file && known->write_reported;
}

/* Marks the fd written (for close); `reported`: by a write record that went out. */
static __always_inline void mark_dirty(__u64 id, int fd, struct file *file, bool reported)
{
	struct dk_dirty_key key = { .tgid = id >> 32, .fd = fd };
	struct dk_written value = { .file = (__u64)file, .write_reported = reported };
	struct dk_written *known = bpf_map_lookup_elem(&dk_dirty, &key);

	if (!known || known->file != value.file || (reported && !known->write_reported))
		bpf_map_update_elem(&dk_dirty, &key, &value, BPF_ANY);
}

static __always_inline void copy_common(struct dk_event *ev, struct dk_inflight *in)
{
	ev->ret = in->ret;
	ev->fd = in->fd;
	ev->mode = in->mode;
	ev->op_flags = in->op_flags;
	ev->offset = in->offset;
	ev->len = in->len;
	ev->uid = in->uid;
	ev->gid = in->gid;
}

/* Operations on an fd: the path is the file's own, walked from its dentry. */
static __always_inline void handle_fd(struct dk_inflight *in)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct dk_scratch *s = scratch();
	struct file *file = NULL;
	struct dk_drops *route;
	bool sent;
	__u64 cgroup_id;
	void *ring;
	__u32 len = 0;

	ring = watched_ring(&cgroup_id, &route);
	if (!ring || !s)
		return;
	begin_event(&s->ev, in->op, cgroup_id, in->nr);
	copy_common(&s->ev, in);
	if (in->how & DK_HOW_FD_FROM_RET)
		s->ev.fd = in->ret;
	if (in->how & DK_HOW_LEN_FROM_RET)
		s->ev.len = in->ret;
	if (in->how & DK_HOW_ADDR_FROM_RET)
		s->ev.offset = in->ret;
	if (s->ev.fd >= 0) {
		if (in->op == DK_OP_OPEN) {
			/*
			 * A new fd: an entry under its number is about a file
			 * closed without a close (exec, dup2, exit), which the
			 * new one may even share an address with.
			 */
			struct dk_dirty_key key = { .tgid = id >> 32, .fd = s->ev.fd };

			bpf_map_delete_elem(&dk_dirty, &key);
		}
		file = fd_file(s->ev.fd);
		if (!file || !recordable(file, in->op))
			return;
		if (in->how & DK_HOW_OFF_FROM_POS)
			s->ev.offset = BPF_CORE_READ(file, f_pos) - s->ev.len;
		len = file_path(s, s->a, file, &s->ev.flags, DK_F_PATH_TRUNCATED,
				DK_F_PATH_OUTSIDE_ROOT);
		s->ev.path_len = len;
		if (in->op == DK_OP_MMAP) {
			__u32 tgid = id >> 32;
			__u8 one = 1;

			bpf_map_update_elem(&dk_mappers, &tgid, &one, BPF_ANY);
		}
	}
	sent = emit(ring, route, s, len);
	/* Only a write whose record went out may stand for the ones after it. */
	if (file && (in->how & DK_HOW_DIRTIES))
		mark_dirty(id, s->ev.fd, file, in->op == DK_OP_WRITE && sent);
}

/* Operations on one path argument (dfd-relative). */
static __always_inline void handle_path(struct dk_inflight *in)
{
	struct dk_scratch *s = scratch();
	struct dk_drops *route;
	__u64 cgroup_id;
	void *ring;
	__u32 len;

	ring = watched_ring(&cgroup_id, &route);
	if (!ring || !s)
		return;
	begin_event(&s->ev, in->op, cgroup_id, in->nr);
	copy_common(&s->ev, in);
	len = user_path(s, s->a, in->dfd, (const char *)in->path_ptr, &s->ev.flags,
			DK_F_PATH_TRUNCATED, DK_F_PATH_OUTSIDE_ROOT, DK_F_PATH_UNREADABLE);
	if (len > DK_WALK_END)
		len = DK_WALK_END;
	s->ev.path_len = len;
	emit(ring, route, s, len);
}

/* rename (from, to), link (new, existing), symlink (new, raw target). */
static __always_inline void handle_path2(struct dk_inflight *in)
{
	struct dk_scratch *s = scratch();
	__u32 len1, len2;
	struct dk_drops *route;
	__u64 cgroup_id;
	void *ring;

	ring = watched_ring(&cgroup_id, &route);
	if (!ring || !s)
		return;
	begin_event(&s->ev, in->op, cgroup_id, in->nr);
	copy_common(&s->ev, in);
	len1 = user_path(s, s->a, in->dfd, (const char *)in->path_ptr, &s->ev.flags,
			 DK_F_PATH_TRUNCATED, DK_F_PATH_OUTSIDE_ROOT, DK_F_PATH_UNREADABLE);
	if (in->how & DK_HOW_PATH2_RAW) {
		long n = bpf_probe_read_user_str(s->b, DK_PATH_MAX, (const char *)in->path2_ptr);

		s->ev.flags |= DK_F_PATH2_RAW;
		if (n <= 0)
			s->ev.flags |= DK_F_PATH2_UNREADABLE;
		len2 = n > 0 ? n - 1 : 0;
	} else {
		len2 = user_path(s, s->b, in->dfd2, (const char *)in->path2_ptr, &s->ev.flags,
				 DK_F_PATH2_TRUNCATED, DK_F_PATH2_OUTSIDE_ROOT,
				 DK_F_PATH2_UNREADABLE);
	}
	emit(ring, route, s, append_path2(s, len1, len2));
}

#define DK_HANDLER(name, call)                                            \
	SEC("tracepoint")                                                 \
	int dk_handle_##name(void *ctx)                                   \
	{                                                                 \
		struct dk_inflight *in = inflight(0);                     \
		if (!in)                                                  \
			return 0;                                         \
		if (in->active)                                           \
			call;                                             \
		in->active = 0;                                           \
		return 0;                                                 \
	}

DK_HANDLER(fd, handle_fd(in))
DK_HANDLER(path, handle_path(in))
DK_HANDLER(path2, handle_path2(in))

/* ---- sys_enter: one lookup for unwatched tasks, a stash for watched ones ---- */

static __always_inline bool watched(void)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();

	return bpf_map_lookup_elem(&dk_drops, &cgroup_id) != NULL;
}

static __always_inline int stash(struct dk_inflight *in)
{
	struct dk_inflight *slot = inflight(1);
	__u64 cgroup_id;
	struct dk_drops *drops;

	if (slot) {
		*slot = *in;
		slot->active = 1;
		return 0;
	}
	cgroup_id = bpf_get_current_cgroup_id();
	drops = bpf_map_lookup_elem(&dk_drops, &cgroup_id);
	if (drops)
		count_loss(drops, bpf_ktime_get_ns());
	return 0;
}

#define ARG(n) ((__u64)ctx->args[n])
#define DK_ENTER(sys)                                                     \
	static __always_inline int enter_##sys(struct trace_event_raw_sys_enter *ctx, \
					       struct dk_inflight *in);      \
	SEC("tracepoint/syscalls/sys_enter_" #sys)                        \
	int dk_enter_##sys(struct trace_event_raw_sys_enter *ctx)         \
	{                                                                 \
		struct dk_inflight in = {                                 \
			.fd = -1, .dfd = DK_AT_FDCWD, .dfd2 = DK_AT_FDCWD, \
			.uid = (__u32)-1, .gid = (__u32)-1, .nr = ctx->id, \
		};                                                        \
		if (!watched() || !enter_##sys(ctx, &in))                 \
			return 0;                                         \
		return stash(&in);                                        \
	}                                                                 \
	static __always_inline int enter_##sys(struct trace_event_raw_sys_enter *ctx, \
					       struct dk_inflight *in)

/* sys_exit: pairs with the stash; only successful calls become events. */
static __always_inline int finish(struct trace_event_raw_sys_exit *ctx)
{
	struct dk_inflight *in = inflight(0);

	if (!in || !in->active)
		return 0;
	if (ctx->ret >= 0) {
		in->ret = ctx->ret;
		/* Folded into the write reported before (see dk_dirty): done. */
		if (in->op == DK_OP_WRITE &&
		    write_reported(bpf_get_current_pid_tgid(), in->fd, fd_file(in->fd))) {
			in->active = 0;
			return 0;
		}
		bpf_tail_call(ctx, &dk_handlers, in->handler);
	}
	in->active = 0;
	return 0;
}

#define DK_EXIT(sys)                                                      \
	SEC("tracepoint/syscalls/sys_exit_" #sys)                         \
	int dk_exit_##sys(struct trace_event_raw_sys_exit *ctx)           \
	{                                                                 \
		return finish(ctx);                                       \
	}

static __always_inline int on_fd(struct dk_inflight *in, __u16 op, __u64 fd, __u16 how)
{
	in->op = op;
	in->handler = DK_H_FD;
	in->fd = fd;
	in->how = how;
	return 1;
}

static __always_inline int on_path(struct dk_inflight *in, __u16 op, __u64 dfd, __u64 path)
{
	in->op = op;
	in->handler = DK_H_PATH;
	in->dfd = dfd;
	in->path_ptr = path;
	return 1;
}

static __always_inline int on_path2(struct dk_inflight *in, __u16 op, __u64 dfd, __u64 path,
				    __u64 dfd2, __u64 path2)
{
	in->op = op;
	in->handler = DK_H_PATH2;
	in->dfd = dfd;
	in->path_ptr = path;
	in->dfd2 = dfd2;
	in->path2_ptr = path2;
	return 1;
}

static __always_inline int on_open(struct dk_inflight *in, __u64 flags, __u64 mode)
{
	__u16 how = DK_HOW_FD_FROM_RET;

	if (!(flags & DK_WRITE_INTENT))
		return 0;
	if (flags & (DK_O_TRUNC | DK_O_CREAT))
		how |= DK_HOW_DIRTIES;
	in->op_flags = flags;
	in->mode = mode;
	return on_fd(in, DK_OP_OPEN, -1, how);
}

/* A user-space offset pointer (copy_file_range, splice): NULL means "at f_pos". */
static __always_inline int on_copy_into(struct dk_inflight *in, __u64 fd_out, __u64 off_out)
{
	__u16 how = DK_HOW_LEN_FROM_RET | DK_HOW_DIRTIES;

	if (off_out)
		bpf_probe_read_user(&in->offset, sizeof(in->offset), (void *)off_out);
	else
		how |= DK_HOW_OFF_FROM_POS;
	return on_fd(in, DK_OP_WRITE, fd_out, how);
}

#define DK_WRITES (DK_HOW_LEN_FROM_RET | DK_HOW_DIRTIES)

DK_ENTER(open) { return on_open(in, ARG(1), ARG(2)); }
DK_ENTER(openat) { return on_open(in, ARG(2), ARG(3)); }
DK_ENTER(openat2)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), (void *)ARG(2));
	return on_open(in, how.flags, how.mode);
}
DK_ENTER(creat) { return on_open(in, DK_O_CREAT | DK_O_WRONLY | DK_O_TRUNC, ARG(1)); }

DK_ENTER(write) { return on_fd(in, DK_OP_WRITE, ARG(0), DK_WRITES | DK_HOW_OFF_FROM_POS); }
DK_ENTER(writev) { return on_fd(in, DK_OP_WRITE, ARG(0), DK_WRITES | DK_HOW_OFF_FROM_POS); }
DK_ENTER(pwrite64)
{
	in->offset = ARG(3);
	return on_fd(in, DK_OP_WRITE, ARG(0), DK_WRITES);
}
DK_ENTER(pwritev)
{
	in->offset = ARG(3);
	return on_fd(in, DK_OP_WRITE, ARG(0), DK_WRITES);
}
DK_ENTER(pwritev2)
{
	/* offset -1 means "at and advancing f_pos", like writev */
	__u16 how = (__s64)ARG(3) == -1 ? DK_WRITES | DK_HOW_OFF_FROM_POS : DK_WRITES;

	in->offset = ARG(3);
	in->op_flags = ARG(5);
	return on_fd(in, DK_OP_WRITE, ARG(0), how);
}
DK_ENTER(copy_file_range) { return on_copy_into(in, ARG(2), ARG(3)); }
DK_ENTER(splice)
{
	in->op_flags = ARG(5);
	return on_copy_into(in, ARG(2), ARG(3));
}
DK_ENTER(sendfile64) { return on_copy_into(in, ARG(0), 0); }

DK_ENTER(truncate)
{
	in->len = ARG(1);
	return on_path(in, DK_OP_TRUNCATE, DK_AT_FDCWD, ARG(0));
}
DK_ENTER(ftruncate)
{
	in->len = ARG(1);
	return on_fd(in, DK_OP_TRUNCATE, ARG(0), DK_HOW_DIRTIES);
}
DK_ENTER(fallocate)
{
	in->op_flags = ARG(1);
	in->offset = ARG(2);
	in->len = ARG(3);
	return on_fd(in, DK_OP_FALLOCATE, ARG(0), DK_HOW_DIRTIES);
}

DK_ENTER(rename)
{
	return on_path2(in, DK_OP_RENAME, DK_AT_FDCWD, ARG(0), DK_AT_FDCWD, ARG(1));
}
DK_ENTER(renameat) { return on_path2(in, DK_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3)); }
DK_ENTER(renameat2)
{
	in->op_flags = ARG(4);
	return on_path2(in, DK_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3));
}

DK_ENTER(unlink) { return on_path(in, DK_OP_UNLINK, DK_AT_FDCWD, ARG(0)); }
DK_ENTER(unlinkat)
{
	in->op_flags = ARG(2);
	return on_path(in, ARG(2) & DK_AT_REMOVEDIR ? DK_OP_RMDIR : DK_OP_UNLINK, ARG(0), ARG(1));
}
DK_ENTER(rmdir) { return on_path(in, DK_OP_RMDIR, DK_AT_FDCWD, ARG(0)); }
DK_ENTER(mkdir)
{
	in->mode = ARG(1);
	return on_path(in, DK_OP_MKDIR, DK_AT_FDCWD, ARG(0));
}
DK_ENTER(mkdirat)
{
	in->mode = ARG(2);
	return on_path(in, DK_OP_MKDIR, ARG(0), ARG(1));
}

/* symlink(target, linkpath): path is the new link, path2 the target as given. */
DK_ENTER(symlink)
{
	in->how = DK_HOW_PATH2_RAW;
	return on_path2(in, DK_OP_SYMLINK, DK_AT_FDCWD, ARG(1), DK_AT_FDCWD, ARG(0));
}
DK_ENTER(symlinkat)
{
	in->how = DK_HOW_PATH2_RAW;
	return on_path2(in, DK_OP_SYMLINK, ARG(1), ARG(2), DK_AT_FDCWD, ARG(0));
}
/* link(existing, new): path is the new name, path2 the existing file. */
DK_ENTER(link)
{
	return on_path2(in, DK_OP_LINK, DK_AT_FDCWD, ARG(1), DK_AT_FDCWD, ARG(0));
}
DK_ENTER(linkat)
{
	in->op_flags = ARG(4);
	return on_path2(in, DK_OP_LINK, ARG(2), ARG(3), ARG(0), ARG(1));
}

DK_ENTER(chmod)
{
	in->mode = ARG(1);
	return on_path(in, DK_OP_CHMOD, DK_AT_FDCWD, ARG(0));
}
DK_ENTER(fchmod)
{
	in->mode = ARG(1);
	return on_fd(in, DK_OP_CHMOD, ARG(0), 0);
}
DK_ENTER(fchmodat)
{
	in->mode = ARG(2);
	return on_path(in, DK_OP_CHMOD, ARG(0), ARG(1));
}
DK_ENTER(fchmodat2)
{
	in->mode = ARG(2);
	in->op_flags = ARG(3);
	return on_path(in, DK_OP_CHMOD, ARG(0), ARG(1));
}
DK_ENTER(chown)
{
	in->uid = ARG(1);
	in->gid = ARG(2);
	return on_path(in, DK_OP_CHOWN, DK_AT_FDCWD, ARG(0));
}
DK_ENTER(lchown)
{
	in->uid = ARG(1);
	in->gid = ARG(2);
	return on_path(in, DK_OP_CHOWN, DK_AT_FDCWD, ARG(0));
}
DK_ENTER(fchown)
{
	in->uid = ARG(1);
	in->gid = ARG(2);
	return on_fd(in, DK_OP_CHOWN, ARG(0), 0);
}
DK_ENTER(fchownat)
{
	in->uid = ARG(2);
	in->gid = ARG(3);
	in->op_flags = ARG(4);
	return on_path(in, DK_OP_CHOWN, ARG(0), ARG(1));
}

DK_ENTER(fsync) { return on_fd(in, DK_OP_FSYNC, ARG(0), 0); }
DK_ENTER(fdatasync) { return on_fd(in, DK_OP_FSYNC, ARG(0), 0); }

/* Shared writable file mappings: the file may change without a write(2). */
DK_ENTER(mmap)
{
	__u64 type = ARG(3) & DK_MAP_TYPE;

	if (!(ARG(2) & DK_PROT_WRITE) || (type != DK_MAP_SHARED && type != DK_MAP_SHARED_VALIDATE) ||
	    (__s64)ARG(4) < 0)
		return 0;
	in->len = ARG(1);
	in->mode = ARG(2);
	in->op_flags = ARG(3);
	return on_fd(in, DK_OP_MMAP, ARG(4), DK_HOW_ADDR_FROM_RET | DK_HOW_DIRTIES);
}
/* msync names an address range, not a file: userspace maps it back via DK_OP_MMAP. */
DK_ENTER(msync)
{
	in->offset = ARG(0);
	in->len = ARG(1);
	in->op_flags = ARG(2);
	return on_fd(in, DK_OP_MSYNC, -1, 0);
}

/*
 * close is reported at sys_enter, while the fd still names the file, and only
 * for an fd this process wrote through (and still the same struct file).
 */
SEC("tracepoint/syscalls/sys_enter_close")
int dk_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct dk_dirty_key key = { .tgid = id >> 32, .fd = ARG(0) };
	struct dk_inflight in = {
		.fd = ARG(0), .uid = (__u32)-1, .gid = (__u32)-1, .nr = ctx->id,
		.op = DK_OP_CLOSE, .handler = DK_H_FD,
	};
	struct dk_inflight *slot;
	struct dk_written *written;

	if (!watched())
		return 0;
	written = bpf_map_lookup_elem(&dk_dirty, &key);
	if (!written)
		return 0;
	if (written->file != (__u64)fd_file(key.fd)) {
		bpf_map_delete_elem(&dk_dirty, &key);
		return 0;
	}
	bpf_map_delete_elem(&dk_dirty, &key);
	stash(&in);
	bpf_tail_call(ctx, &dk_handlers, DK_H_FD);
	slot = inflight(0);
	if (slot)
		slot->active = 0;
	return 0;
}

DK_PAIRED_SYSCALLS(DK_EXIT)

/* ---- processes ---- */

/* exec: path is the new executable (resolved), path2 the filename as passed. */
SEC("tracepoint/sched/sched_process_exec")
int dk_sched_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct dk_scratch *s = scratch();
	struct file *exe;
	__u32 len1, len2 = 0;
	struct dk_drops *route;
	__u64 cgroup_id;
	void *ring;
	long n;

	ring = watched_ring(&cgroup_id, &route);
	if (!ring || !s)
		return 0;
	begin_event(&s->ev, DK_OP_EXEC, cgroup_id, (__u32)-1);
	exe = BPF_CORE_READ(current_task(), mm, exe_file);
	len1 = exe ? file_path(s, s->a, exe, &s->ev.flags, DK_F_PATH_TRUNCATED,
			      DK_F_PATH_OUTSIDE_ROOT)
		   : 0;
	n = bpf_probe_read_kernel_str(s->b, DK_PATH_MAX,
				      (void *)ctx + (ctx->__data_loc_filename & 0xFFFF));
	if (n > 0)
		len2 = n - 1;
	s->ev.flags |= DK_F_PATH2_RAW;
	emit(ring, route, s, append_path2(s, len1, len2));
	return 0;
}

/* exit of a whole thread group (the last thread), with its exit code. */
SEC("tracepoint/sched/sched_process_exit")
int dk_sched_exit(void *ctx)
{
	struct task_struct *task = current_task();
	struct dk_scratch *s;
	struct dk_drops *route;
	__u64 cgroup_id;
	void *ring;

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	ring = watched_ring(&cgroup_id, &route);
	s = scratch();
	if (!ring || !s)
		return 0;
	begin_event(&s->ev, DK_OP_EXIT, cgroup_id, (__u32)-1);
	s->ev.ret = BPF_CORE_READ(task, exit_code);
	emit(ring, route, s, 0);
	return 0;
}
