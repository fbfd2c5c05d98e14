/* MAP+UNMAP cost through the legacy container API, for comparing type1, the kernel's compat
 * layer and the shim from one VM run. Plain libc calls: the shim is reached by LD_PRELOAD.
 * Prints "BENCH <name> <value> <unit>" lines. Env: VFIO_TEST_EDU (BDF), BENCH_PAIRS,
 * BENCH_MEMORY=shared (MAP_SHARED memfd memory instead of private anonymous memory, which is
 * what vfio-shim-cuse can pin for a client without the preload), BENCH_NO_DEVICE=1 (no
 * GET_DEVICE_FD: a client without the preload on the CUSE node cannot get one). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "map_bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int map(int c, void *va, uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)va, .iova = iova, .size = size };
	return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

static int unmap(int c, uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = size };
	if (ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u))
		return -1;
	return u.size == size ? 0 : (errno = EIO, -1);
}

/* Private anonymous memory, or MAP_SHARED memfd memory with BENCH_MEMORY=shared. */
static void *memory(size_t size)
{
	const char *m = getenv("BENCH_MEMORY");
	void *p;

	if (m && strcmp(m, "shared") == 0) {
		int fd = memfd_create("map_bench", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)size))
			die("memfd");
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
	} else {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(void)
{
	const char *bdf = getenv("VFIO_TEST_EDU");
	int pairs = getenv("BENCH_PAIRS") ? atoi(getenv("BENCH_PAIRS")) : 2000;
	char path[PATH_MAX], link[PATH_MAX];
	if (!bdf)
		die("VFIO_TEST_EDU unset");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		die("readlink iommu_group");
	link[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%s", strrchr(link, '/') + 1);
	int g = open(path, O_RDWR);
	int c = open("/dev/vfio/vfio", O_RDWR);
	if (g < 0 || c < 0)
		die("open group/container");
	if (ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) || ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("SET_CONTAINER/SET_IOMMU");
	int dev = -1;
	if (!getenv("BENCH_NO_DEVICE") && (dev = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, bdf)) < 0)
		die("GET_DEVICE_FD");

	void *page = memory(4096);
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
	printf("BENCH pairs_per_s %.0f /s\n", 1 / rounds[2]);

	size_t gib = 1ul << 30;
	void *big = memory(gib);
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
