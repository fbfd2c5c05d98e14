/* The floor under the supervisor's pass-through cost: runs a program under a seccomp filter
 * that allows every call, installed as the supervisor installs its own (no_new_privs,
 * SECCOMP_FILTER_FLAG_SPEC_ALLOW). Its answer depends on nothing, so the kernel's action
 * cache answers every call without running it: what is left is seccomp's syscall entry,
 * which any filter costs. bench.sh runs passthrough_bench plain, under this and under
 * `vfio-shim run --supervise`.
 * Usage: seccomp_floor <program> [args...] */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sock_filter allow[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { .len = 1, .filter = allow };

	if (argc < 2) {
		fprintf(stderr, "usage: seccomp_floor <program> [args...]\n");
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, &prog)) {
		perror("seccomp_floor: filter");
		return 1;
	}
	execv(argv[1], argv + 1);
	perror("seccomp_floor: exec");
	return 127;
}
