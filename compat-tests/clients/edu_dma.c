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
#include <time.h>
#include <unistd.h>
#include <linux/pci_regs.h>
#include "common.h"

#define EDU_IDENT 0x00
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_CMD_RUN 0x1
#define EDU_CMD_TO_RAM 0x2
#define EDU_BUF 0x40000ULL
#define EDU_IDENT_VALUE 0x010000edu

#define IOVA_SRC 0x100000ULL
#define IOVA_DST 0x200000ULL
#define DMA_TIMEOUT_MS 10000

static volatile uint64_t *reg64(volatile void *bar, unsigned off)
{
	return (volatile uint64_t *)((volatile char *)bar + off);
}

/* Starts one edu DMA and waits for the busy bit to clear. 0 = done, -1 = timeout. */
static int edu_dma(volatile void *bar, uint64_t src, uint64_t dst, uint64_t cnt, int to_ram)
{
	struct timespec t0, t;
	long ms;

	*reg64(bar, EDU_DMA_SRC) = src;
	*reg64(bar, EDU_DMA_DST) = dst;
	*reg64(bar, EDU_DMA_CNT) = cnt;
	*reg64(bar, EDU_DMA_CMD) = EDU_CMD_RUN | (to_ram ? EDU_CMD_TO_RAM : 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (!(*reg64(bar, EDU_DMA_CMD) & EDU_CMD_RUN))
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &t);
		ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
		if (ms > DMA_TIMEOUT_MS) {
			fprintf(stderr, "edu DMA did not complete within %d ms\n", DMA_TIMEOUT_MS);
			return -1;
		}
		usleep(1000);
	}
}

static int region_info(const char *label, int dev, unsigned index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	if (c_ioctl_ptr(label, dev, VFIO_DEVICE_GET_REGION_INFO, ri) < 0)
		return -1;
	rec_out(label, "flags=0x%x size=0x%llx", ri->flags, (unsigned long long)ri->size);
	return 0;
}

static void phase(int gfd, const char *bdf, int v2)
{
	const char *v = v2 ? "v2" : "v1";
	struct vfio_region_info bar0, cfg;
	volatile void *bar;
	unsigned char *src, *dst, *expect;
	uint16_t cmd;
	uint32_t ident;
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

	if (region_info(L("region.bar0.%s", v), dev, VFIO_PCI_BAR0_REGION_INDEX, &bar0) < 0)
		die("BAR0 region info failed: %s", errname(last_errno));
	if (region_info(L("region.config.%s", v), dev, VFIO_PCI_CONFIG_REGION_INDEX, &cfg) < 0)
		die("config region info failed: %s", errname(last_errno));
	if (!(bar0.flags & VFIO_REGION_INFO_FLAG_MMAP) || bar0.size < 0x100)
		die("edu BAR0 cannot be mmapped (flags 0x%x size 0x%llx)", bar0.flags,
		    (unsigned long long)bar0.size);

	/* memory decoding and bus mastering on */
	if (pread(dev, &cmd, sizeof(cmd), (off_t)(cfg.offset + PCI_COMMAND)) != sizeof(cmd))
		die("pread PCI_COMMAND: %s", strerror(errno));
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (pwrite(dev, &cmd, sizeof(cmd), (off_t)(cfg.offset + PCI_COMMAND)) != sizeof(cmd))
		die("pwrite PCI_COMMAND: %s", strerror(errno));

	bar = mmap(NULL, bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, (off_t)bar0.offset);
	if (bar == MAP_FAILED)
		die("mmap BAR0: %s", strerror(errno));
	ident = *(volatile uint32_t *)((volatile char *)bar + EDU_IDENT);
	rec_out(L("ident.%s", v), "ident=0x%08x", ident);
	if (ident != EDU_IDENT_VALUE)
		die("edu ident 0x%08x, expected 0x%08x: is %s an edu device?", ident,
		    EDU_IDENT_VALUE, bdf);

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

	munmap((void *)bar, bar0.size);
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
