/* Holds one legacy container for `vfio-shim status` to list (compat-tests/status/check.py):
 * the group of <bdf> set on a TYPE1v2 container, <pages> 4 KiB mappings of its own memory,
 * the device's fd. Prints "READY <pid>" and waits until its stdin closes, then exits
 * (closing everything). Plain libc calls (the clients' common.c for the group number and the
 * memory, no transcript): the shim is reached through `vfio-shim run`.
 * Usage: hold <bdf> <pages> */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv)
{
	char path[64], byte;
	int c, g, dev, pages;

	if (argc != 3) {
		fprintf(stderr, "usage: hold <bdf> <pages>\n");
		return 2;
	}
	pages = atoi(argv[2]);
	snprintf(path, sizeof(path), "/dev/vfio/%d", group_of(argv[1]));
	c = open("/dev/vfio/vfio", O_RDWR);
	g = open(path, O_RDWR);
	if (c < 0 || g < 0)
		die("open: %s", strerror(errno));
	if (ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) || ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("SET_CONTAINER / SET_IOMMU: %s", strerror(errno));
	char *mem = map_anon((size_t)pages * 4096);
	for (int i = 0; i < pages; i++) {
		struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m),
			.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
			.vaddr = (uintptr_t)(mem + i * 4096), .iova = 0x100000 + (uint64_t)i * 0x10000, .size = 4096 };
		if (ioctl(c, VFIO_IOMMU_MAP_DMA, &m))
			die("MAP_DMA: %s", strerror(errno));
	}
	dev = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, argv[1]);
	if (dev < 0)
		die("GET_DEVICE_FD: %s", strerror(errno));
	printf("READY %d\n", getpid());
	fflush(stdout);
	while (read(0, &byte, 1) > 0)
		;
	return 0;
}
