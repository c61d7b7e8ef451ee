// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Empty programs on exactly the tracepoints probe.bpf.c uses. The benchmark
 * attaches them instead of the probe to measure what the kernel's syscall
 * tracepoint machinery costs by itself, so the probe's own share is visible.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "dk_syscalls.h"

char LICENSE[] SEC("license") = "GPL";

#define DK_FLOOR(sys)                                         \
	SEC("tracepoint/syscalls/sys_enter_" #sys)            \
	int dk_enter_##sys(void *ctx) { return 0; }            \
	SEC("tracepoint/syscalls/sys_exit_" #sys)             \
	int dk_exit_##sys(void *ctx) { return 0; }

DK_PAIRED_SYSCALLS(DK_FLOOR)

SEC("tracepoint/syscalls/sys_enter_close")
int dk_enter_close(void *ctx) { return 0; }

SEC("tracepoint/sched/sched_process_exec")
int dk_sched_exec(void *ctx) { return 0; }

SEC("tracepoint/sched/sched_process_exit")
int dk_sched_exit(void *ctx) { return 0; }
