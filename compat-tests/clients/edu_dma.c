// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * edu_dma: real DMA through the IOMMU with QEMU's edu device
 * (VFIO_TEST_EDU), once with a TYPE1v2 container and once with TYPE1 (v1).
 *
 * Per phase: container + group + SET_IOMMU, GET_DEVICE_FD, BAR0 and config
 * region info, bus mastering on, BAR0 mmap + ident check, map a source and a
 * destination buffer, edu DMA RAM -> device buffer -> RAM, compare
 * (DMA edu.roundtrip.<v>); then unmap the destination, refill it and DMA
 * device -> RAM into the unmapped IOVA: the IOMMU must block it
 * (DMA edu.after_unmap.<v> result=blocked).
 *
 * edu registers (BAR0): 0x00 ident (32-bit, 0x010000ed), 0x80 DMA source,
 * 0x88 DMA destination, 0x90 count, 0x98 command (bit0 start/busy, bit1
 * device->RAM, bit2 irq), all 64-bit; device buffer at 0x40000, 4 KiB;
 * DMA addresses must fit in 28 bits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

#define IOVA_SRC 0x100000ULL
#define IOVA_DST 0x200000ULL

static void phase(int gfd, const char *bdf, int v2)
{
	const char *v = v2 ? "v2" : "v1";
	volatile void *bar;
	size_t bar_size;
	unsigned char *src, *dst, *expect;
	int cfd, dev, ok_src, ok_dst;

	cfd = open_container(L("open.container.%s", v));
	if (set_container(L("set_container.%s", v), gfd, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER failed: %s", errname(last_errno));
	if (c_ioctl(L("set_iommu.%s", v), cfd, VFIO_SET_IOMMU,
		    v2 ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU) < 0)
		die("VFIO_SET_IOMMU failed: %s", errname(last_errno));
	dev = get_device_fd(L("get_device_fd.%s", v), gfd, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD(%s) failed: %s", bdf, errname(last_errno));

	bar = edu_bar(v, dev, &bar_size);

	src = map_anon(PG);
	dst = map_anon(PG);
	expect = malloc(PG);
	if (!expect)
		die("out of memory");
	fill_pattern(src, PG, v2 ? 11 : 21);
	fill_pattern(dst, PG, v2 ? 12 : 22);

	ok_src = dma_map(L("map.src.%s", v), cfd, IOVA_SRC, PG, src, MAP_RW) == 0;
	ok_dst = dma_map(L("map.dst.%s", v), cfd, IOVA_DST, PG, dst, MAP_RW) == 0;

	/* RAM -> device buffer -> RAM */
	if (!ok_src || !ok_dst) {
		rec_dma(L("edu.roundtrip.%s", v), "error");
	} else if (edu_dma(bar, IOVA_SRC, EDU_BUF, PG, 0) < 0 ||
		   edu_dma(bar, EDU_BUF, IOVA_DST, PG, 1) < 0) {
		rec_dma(L("edu.roundtrip.%s", v), "error");
	} else {
		rec_dma(L("edu.roundtrip.%s", v), memcmp(src, dst, PG) ? "mismatch" : "ok");
	}

	/* unmap the destination: a device -> RAM DMA there must be blocked */
	dma_unmap(L("unmap.dst.%s", v), cfd, IOVA_DST, PG, 0, NULL);
	fill_pattern(dst, PG, v2 ? 13 : 23);
	memcpy(expect, dst, PG);
	if (edu_dma(bar, EDU_BUF, IOVA_DST, PG, 1) < 0)
		rec_dma(L("edu.after_unmap.%s", v), "error");
	else
		rec_dma(L("edu.after_unmap.%s", v), memcmp(expect, dst, PG) ? "ok" : "blocked");

	/* the source mapping still works: device buffer -> RAM at IOVA_SRC */
	memset(src, 0, PG);
	if (edu_dma(bar, EDU_BUF, IOVA_SRC, PG, 1) < 0) {
		rec_dma(L("edu.still_mapped.%s", v), "error");
	} else {
		fill_pattern(expect, PG, v2 ? 11 : 21);
		rec_dma(L("edu.still_mapped.%s", v), memcmp(expect, src, PG) ? "mismatch" : "ok");
	}

	munmap((void *)bar, bar_size);
	dma_unmap(L("unmap.src.%s", v), cfd, IOVA_SRC, PG, 0, NULL);
	c_close(L("close.device.%s", v), dev);
	unset_container(L("unset_container.%s", v), gfd);
	c_close(L("close.container.%s", v), cfd);
	munmap(src, PG);
	munmap(dst, PG);
	free(expect);
}

int main(void)
{
	const char *bdf;
	int gfd;

	client_init();
	bdf = env_bdf("VFIO_TEST_EDU");
	gfd = open_group("open.group", group_of(bdf));
	phase(gfd, bdf, 1);
	phase(gfd, bdf, 0);
	c_close("close.group", gfd);
	end_ok();
}
