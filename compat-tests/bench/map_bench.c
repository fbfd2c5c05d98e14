/* MAP+UNMAP cost through the legacy container API, for comparing type1, the kernel's compat
 * layer and the shim from one VM run. Plain libc calls: the shim is reached by LD_PRELOAD.
 * Prints "BENCH <name> <value> <unit>" lines. Env: VFIO_TEST_EDU (BDF), BENCH_PAIRS,
 * BENCH_MEMORY=shared (MAP_SHARED memfd memory instead of private anonymous memory, which is
 * what vfio-shim-cuse can pin for a client without the preload), BENCH_NO_DEVICE=1 (no
 * GET_DEVICE_FD: a client without the preload on the CUSE node cannot get one). */
#include "bench_common.h"

int main(void)
{
	const char *bdf = getenv("VFIO_TEST_EDU");
	int pairs = getenv("BENCH_PAIRS") ? atoi(getenv("BENCH_PAIRS")) : 2000;
	int g;
	int c = container_with_group("VFIO_TEST_EDU", &g);
	int dev = -1;
	if (!getenv("BENCH_NO_DEVICE") && (dev = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, bdf)) < 0)
		die("GET_DEVICE_FD");

	void *page = memory(4096, 0);
	memset(page, 1, 4096);
	/* 5 rounds; the median round's per-pair time. */
	double rounds[5];
	for (int r = 0; r < 5; r++) {
		double t = now();
		for (int i = 0; i < pairs; i++)
			if (map(c, page, 0x100000, 4096) || unmap(c, 0x100000, 4096))
				die("4K pair");
		rounds[r] = (now() - t) / pairs;
	}
	qsort(rounds, 5, sizeof(double), cmp_double);
	printf("BENCH pair_4k_us %.2f us\n", rounds[2] * 1e6);
	/* The best round too: under TCG a round can take twice the time of the next (the host's
	 * scheduling, the translation cache), and the least disturbed round is the steadiest
	 * figure of the path's own cost. */
	printf("BENCH pair_4k_best_us %.2f us\n", rounds[0] * 1e6);
	printf("BENCH pairs_per_s %.0f /s\n", 1 / rounds[2]);

	size_t gib = 1ul << 30;
	void *big = memory(gib, 0);
	memset(big, 2, gib); /* fault in first: measure pinning and mapping, not page faults */
	double t = now();
	if (map(c, big, 0x40000000, gib))
		die("map 1G");
	double map_s = now() - t;
	t = now();
	if (unmap(c, 0x40000000, gib))
		die("unmap 1G");
	printf("BENCH map_1g_ms %.1f ms\n", map_s * 1e3);
	printf("BENCH unmap_1g_ms %.1f ms\n", (now() - t) * 1e3);
	if (dev >= 0)
		close(dev);
	ioctl(g, VFIO_GROUP_UNSET_CONTAINER);
	close(c);
	close(g);
	return 0;
}
