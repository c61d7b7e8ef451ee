/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * The syscalls traced at both sys_enter and sys_exit (close is traced at
 * sys_enter only), as an X-macro: probe.bpf.c defines its exit programs from
 * it, floor.bpf.c (the benchmark's "empty programs" baseline) everything.
 */
#ifndef DK_SYSCALLS_H
#define DK_SYSCALLS_H

#define DK_PAIRED_SYSCALLS(X) \
	X(open) \
	X(openat) \
	X(openat2) \
	X(creat) \
	X(write) \
	X(writev) \
	X(pwrite64) \
	X(pwritev) \
	X(pwritev2) \
	X(copy_file_range) \
	X(splice) \
	X(sendfile64) \
	X(truncate) \
	X(ftruncate) \
	X(fallocate) \
	X(rename) \
	X(renameat) \
	X(renameat2) \
	X(unlink) \
	X(unlinkat) \
	X(rmdir) \
	X(mkdir) \
	X(mkdirat) \
	X(symlink) \
	X(symlinkat) \
	X(link) \
	X(linkat) \
	X(chmod) \
	X(fchmod) \
	X(fchmodat) \
	X(fchmodat2) \
	X(chown) \
	X(lchown) \
	X(fchown) \
	X(fchownat) \
	X(fsync) \
	X(fdatasync) \
	X(mmap) \
	X(msync)

#endif /* DK_SYSCALLS_H */
