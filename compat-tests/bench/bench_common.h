/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * What the VM benchmarks share: a clock, dying with errno, one 4 KiB-or-more MAP and UNMAP
 * through the legacy container, the memory they map (BENCH_MEMORY=shared: a MAP_SHARED memfd,
 * which vfio-shim-cuse can pin for a client without the preload; else private anonymous
 * memory), and a TYPE1v2 container with the group of a device (by env var) set on it.
 * Plain libc calls: the shim is reached by LD_PRELOAD. Header-only: each benchmark is one
 * translation unit, built by its script with `gcc -O2 -Wall -Wextra -Werror`.
 */
#ifndef VFIO_SHIM_BENCH_COMMON_H
#define VFIO_SHIM_BENCH_COMMON_H

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

static inline double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(errno));
	exit(1);
}

static inline int map(int c, void *va, uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)va, .iova = iova, .size = size };

	return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

/* 0 when exactly `size` bytes were unmapped. */
static inline int unmap(int c, uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = size };

	if (ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u))
		return -1;
	return u.size == size ? 0 : (errno = EIO, -1);
}

/* `size` bytes of benchmark memory (see above); faulted in when `populate`. */
static inline void *memory(size_t size, int populate)
{
	const char *m = getenv("BENCH_MEMORY");
	int more = populate ? MAP_POPULATE : 0;
	void *p;

	if (m && strcmp(m, "shared") == 0) {
		int fd = memfd_create(program_invocation_short_name, MFD_CLOEXEC);

		if (fd < 0 || ftruncate(fd, (off_t)size))
			die("memfd");
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | more, fd, 0);
		close(fd);
	} else {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | more, -1, 0);
	}
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* A TYPE1v2 container with the group of the device at env var `var` (a PCI address) set on
 * it; the group's fd in *group when asked. */
static inline int container_with_group(const char *var, int *group)
{
	const char *bdf = getenv(var);
	char path[PATH_MAX], link[PATH_MAX];
	ssize_t n;
	int g, c;

	if (!bdf || !*bdf) {
		errno = EINVAL;
		die(var);
	}
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		die("iommu_group");
	link[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%s", strrchr(link, '/') + 1);
	g = open(path, O_RDWR);
	c = open("/dev/vfio/vfio", O_RDWR);
	if (g < 0 || c < 0)
		die("open group/container");
	if (ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) || ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("SET_CONTAINER/SET_IOMMU");
	if (group)
		*group = g;
	return c;
}

#endif
