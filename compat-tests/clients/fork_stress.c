// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * fork_stress: one TYPE1v2 container (edu group, VFIO_TEST_EDU) shared by
 * several processes, as DPDK's secondaries share it: the parent sets it up and
 * forks; each child maps and unmaps one 4 KiB page of its own memory in its own
 * IOVA window, VFIO_STRESS_PAIRS times (default 1000), all children at once
 * (VFIO_STRESS_PROCS, default 8).  A child stops at its first failure.  The
 * parent prints each child's count and first errno, then checks that the
 * container is empty again (an UNMAP_ALL that finds nothing).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include "common.h"

#define WINDOW 0x10000000ULL /* IOVA window of child i: WINDOW * (i + 1) */
#define SLOTS 16	     /* pages of the window a child cycles through */

static long env_long(const char *name, long dflt, long max)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return dflt;
	v = strtol(s, &end, 10);
	if (*end || v < 1 || v > max)
		die("%s=%s: expected 1..%ld", name, s, max);
	return v;
}

/* One child's loop; the result goes back through the pipe as two ints. */
static void child(int cfd, int i, long pairs, const char *mem, int out)
{
	uint64_t base = WINDOW * (uint64_t)(i + 1);
	int res[2] = { 0, 0 };
	long n;

	for (n = 0; n < pairs; n++) {
		uint64_t iova = base + (uint64_t)(n % SLOTS) * PG;
		uint64_t got = 0;
		int e = dma_map_quiet(cfd, iova, PG, mem + (size_t)i * PG, MAP_RW);

		if (!e)
			e = dma_unmap_quiet(cfd, iova, PG, 0, &got);
		if (!e && got != PG)
			e = -1;
		if (e) {
			res[1] = e;
			break;
		}
		res[0]++;
	}
	if (write(out, res, sizeof(res)) != (ssize_t)sizeof(res))
		_exit(3);
	_exit(0);
}

int main(void)
{
	long procs = env_long("VFIO_STRESS_PROCS", 8, 64);
	long pairs = env_long("VFIO_STRESS_PAIRS", 1000, 100000000);
	const char *bdf;
	int gfd, cfd, dev, i;
	int pipes[64][2];
	pid_t pids[64];
	char *mem;

	client_init();
	bdf = env_bdf("VFIO_TEST_EDU");
	mem = map_anon((size_t)procs * PG);
	gfd = open_group("open.group", group_of(bdf));
	cfd = open_container("open.container");
	if (set_container("set_container", gfd, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER failed: %s", errname(last_errno));
	if (c_ioctl("set_iommu", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("VFIO_SET_IOMMU failed: %s", errname(last_errno));
	dev = hold_device("get_device_fd", gfd, bdf);
	/* one recorded pair in the parent first */
	dma_map("parent.map", cfd, WINDOW / 2, PG, mem, MAP_RW);
	dma_unmap("parent.unmap", cfd, WINDOW / 2, PG, 0, NULL);

	for (i = 0; i < procs; i++) {
		if (pipe(pipes[i]) < 0)
			die("pipe: %s", strerror(errno));
		pids[i] = fork();
		if (pids[i] < 0)
			die("fork: %s", strerror(errno));
		if (pids[i] == 0) {
			close(pipes[i][0]);
			child(cfd, i, pairs, mem, pipes[i][1]);
		}
		close(pipes[i][1]);
	}
	for (i = 0; i < procs; i++) {
		int res[2] = { 0, -1 }, status = 0;
		ssize_t r = read(pipes[i][0], res, sizeof(res));

		close(pipes[i][0]);
		if (waitpid(pids[i], &status, 0) < 0)
			die("waitpid: %s", strerror(errno));
		if (r != (ssize_t)sizeof(res))
			rec_out(L("child.%d", i), "died status=0x%x", status);
		else
			rec_out(L("child.%d", i), "pairs=%d of %ld first_errno=%s", res[0], pairs,
				res[1] < 0 ? "short_unmap" : errname(res[1]));
	}
	/* nothing left behind: UNMAP_ALL finds nothing (size 0) */
	dma_unmap_all("unmap_all.after", cfd);
	release_device("close.device", dev);
	c_close("close.container", cfd);
	c_close("close.group", gfd);
	end_ok();
}
