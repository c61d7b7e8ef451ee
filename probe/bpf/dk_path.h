/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * Full-path resolution in the kernel, relative to the current task's root.
 *
 * bpf_d_path() is not allowed from tracepoints and kprobes/fentry do not load
 * on our kernels (see docs/probe.md), so the walk is done by hand with CO-RE
 * reads, the way the kernel's own prepend_path() (fs/d_path.c) does it:
 * climb d_parent until the mount's root, then jump to the mountpoint in the
 * parent mount, and stop at the task's fs->root. A walk that reaches the
 * global root without meeting fs->root started outside the container root
 * (an fd inherited from the host, a memfd): it is flagged, never passed off as
 * a container path.
 */
#ifndef DK_PATH_H
#define DK_PATH_H

#include "dk_event.h"

/* Components climbed per path; deeper paths are cut (and flagged). */
#define DK_MAX_COMPONENTS 64
/* Longest single name the kernel allows (NAME_MAX). */
#define DK_NAME_MAX 255
/* Paths are assembled right-aligned ending here, so every length fits in 12 bits. */
#define DK_WALK_END (DK_PATH_MAX - 1)
#define DK_WALK_MASK (DK_PATH_MAX - 1)
#define DK_SLOT_MASK (2 * DK_PATH_MAX - 1)

#define DK_AT_FDCWD -100

/*
 * Per-CPU work area: the event header followed by its path bytes, so one
 * bpf_ringbuf_output() copies a record of exactly the size it needs.
 */
struct dk_scratch {
	struct dk_event ev;
	char a[2 * DK_PATH_MAX];            /* first path, then the second appended */
	char b[2 * DK_PATH_MAX];            /* second path while it is composed */
	char walk[DK_PATH_MAX + DK_NAME_MAX + 1]; /* right-aligned walk output */
	char str[DK_PATH_MAX];              /* a user string as the process passed it */
};

static __always_inline struct task_struct *current_task(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

/* The struct file behind `fd` in the current task, or NULL. */
static __always_inline struct file *fd_file(int fd)
{
	struct file **fds;
	struct file *file = NULL;
	struct fdtable *fdt;

	if (fd < 0)
		return NULL;
	fdt = BPF_CORE_READ(current_task(), files, fdt);
	if ((unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* Bits above the start offset in dk_walk()'s result. */
#define DK_WALK_TRUNCATED (1 << 16)
#define DK_WALK_OUTSIDE (1 << 17)

/*
 * Writes "/c1/c2/.../cn" right-aligned in s->walk, ending at DK_WALK_END, and
 * returns where it starts (an empty result is the task's root itself) with the
 * DK_WALK_* bits.
 *
 * A global function, so the verifier checks it once, not once per call site
 * and loop exit: inlined, the loop's 64 exits multiplied the code after it
 * past the verifier's 1M instruction budget. Kernel pointers travel as __u64
 * because pointer arguments of global functions must be verifiable memory.
 */
__noinline int dk_walk(struct dk_scratch *s, __u64 dentry_ptr, __u64 vfsmnt_ptr)
{
	struct fs_struct *fs = BPF_CORE_READ(current_task(), fs);
	struct dentry *dentry = (struct dentry *)dentry_ptr;
	struct vfsmount *vfsmnt = (struct vfsmount *)vfsmnt_ptr;
	/* libbpf's container_of does not relocate; the field offset does. */
	__u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	struct mount *mnt = (void *)vfsmnt - mnt_off;
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct path root = {};
	__u32 off = DK_WALK_END;
	int i;

	if (!s)
		return off;
	/* Whole structs in one read each: every probe read costs ~25 ns. */
	bpf_core_read(&root, sizeof(root), &fs->root);
	for (i = 0; i < DK_MAX_COMPONENTS; i++) {
		struct dentry *parent;
		struct qstr name = {};
		__u32 len;

		if (dentry == root.dentry && vfsmnt == root.mnt)
			return off;
		parent = BPF_CORE_READ(dentry, d_parent);
		if (dentry == mnt_root || dentry == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);

			if (dentry != mnt_root || mnt == mnt_parent)
				return off | DK_WALK_OUTSIDE;
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = (void *)mnt + mnt_off;
			mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
			continue;
		}
		bpf_core_read(&name, sizeof(name), &dentry->d_name);
		len = name.len;
		if (len > DK_NAME_MAX)
			len = DK_NAME_MAX;
		if (off < len + 1)
			return off | DK_WALK_TRUNCATED;
		off = (off - len - 1) & DK_WALK_MASK;
		s->walk[off] = '/';
		bpf_probe_read_kernel(&s->walk[off + 1], len, name.name);
		dentry = parent;
	}
	return off | DK_WALK_TRUNCATED;
}

static __always_inline __u32 walk(struct dk_scratch *s, struct dentry *dentry,
				  struct vfsmount *vfsmnt, __u16 *flags,
				  __u16 truncated, __u16 outside)
{
	int result = dk_walk(s, (__u64)dentry, (__u64)vfsmnt);

	if (result & DK_WALK_TRUNCATED)
		*flags |= truncated;
	if (result & DK_WALK_OUTSIDE)
		*flags |= outside;
	return result & DK_WALK_MASK;
}

/* Copies a walk result into `slot`; returns its length ("/" for the root). */
static __always_inline __u32 walk_to_slot(struct dk_scratch *s, char *slot, __u32 off)
{
	__u32 len;

	if (off > DK_WALK_END)
		off = DK_WALK_END;
	len = DK_WALK_END - off;
	if (len == 0) {
		slot[0] = '/';
		return 1;
	}
	bpf_probe_read_kernel(slot, len & DK_WALK_MASK, &s->walk[off & DK_WALK_MASK]);
	return len;
}

/* The full path of an open file, into `slot`. */
static __always_inline __u32 file_path(struct dk_scratch *s, char *slot, struct file *file,
				       __u16 *flags, __u16 truncated, __u16 outside)
{
	struct path path = {};
	__u32 off;

	bpf_core_read(&path, sizeof(path), &file->f_path);
	off = walk(s, path.dentry, path.mnt, flags, truncated, outside);
	return walk_to_slot(s, slot, off);
}

/*
 * A path argument as the kernel resolves it: absolute strings are already
 * relative to the task's root; relative ones are joined to the walk of `dfd`
 * (or of the cwd for AT_FDCWD). The join is lexical: "." and ".." stay for
 * userspace to normalise.
 */
static __always_inline __u32 user_path(struct dk_scratch *s, char *slot, int dfd,
				       const char *uptr, __u16 *flags, __u16 truncated,
				       __u16 outside, __u16 unreadable)
{
	struct dentry *dentry;
	struct vfsmount *mnt;
	__u32 slen, plen, off, total;
	long n;

	n = bpf_probe_read_user_str(s->str, sizeof(s->str), uptr);
	if (n <= 0) {
		*flags |= unreadable;
		return 0;
	}
	slen = (n - 1) & DK_WALK_MASK;
	if (slen > 0 && s->str[0] == '/') {
		bpf_probe_read_kernel(slot, slen, s->str);
		return slen;
	}
	if (dfd == DK_AT_FDCWD) {
		dentry = BPF_CORE_READ(current_task(), fs, pwd.dentry);
		mnt = BPF_CORE_READ(current_task(), fs, pwd.mnt);
	} else {
		struct file *dir = fd_file(dfd);

		if (!dir) {
			*flags |= unreadable;
			return 0;
		}
		dentry = BPF_CORE_READ(dir, f_path.dentry);
		mnt = BPF_CORE_READ(dir, f_path.mnt);
	}
	off = walk(s, dentry, mnt, flags, truncated, outside);
	if (off > DK_WALK_END)
		off = DK_WALK_END;
	plen = DK_WALK_END - off;
	if (plen > DK_WALK_END)
		plen = DK_WALK_END;
	bpf_probe_read_kernel(slot, plen, &s->walk[off & DK_WALK_MASK]);
	slot[plen & DK_SLOT_MASK] = '/';
	bpf_probe_read_kernel(&slot[(plen + 1) & DK_SLOT_MASK], slen, s->str);
	total = plen + 1 + slen;
	if (total > DK_WALK_END) {
		*flags |= truncated;
		total = DK_WALK_END;
	}
	return total;
}

#endif /* DK_PATH_H */
