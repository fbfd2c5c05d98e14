// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * noiommu_dma: the legacy no-IOMMU API (vfio.enable_unsafe_noiommu_mode=1, no IOMMU in the
 * machine) with QEMU's edu device (VFIO_TEST_EDU), as DPDK drives it: /dev/vfio/noiommu-N,
 * a container set to VFIO_NOIOMMU_IOMMU, and DMA to physical addresses read from
 * /proc/self/pagemap (edu needs dma_mask wide enough for them: vm.sh's no-IOMMU machine).
 *
 * Recorded: the extensions before and after each step, every call the no-IOMMU container
 * refuses (type1's map ioctls), the CAP_SYS_RAWIO checks at each point the kernel makes them
 * (the capability is dropped from the effective set for those calls only), and one DMA
 * RAM -> edu -> RAM whose bytes must land (DMA edu.roundtrip). Needs root (pagemap PFNs).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/pci_regs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

/* The extensions a legacy program asks about: TYPE1, TYPE1v2, UNMAP_ALL, NOIOMMU, UPDATE_VADDR, DMA_CC. */
static void extensions(const char *when, int cfd)
{
	static const unsigned long ext[] = { VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_UNMAP_ALL,
					     VFIO_NOIOMMU_IOMMU, VFIO_UPDATE_VADDR, VFIO_DMA_CC_IOMMU };

	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++)
		c_ioctl(L("ext.%s.%lu", when, ext[i]), cfd, VFIO_CHECK_EXTENSION, ext[i]);
}

/* The physical address behind vaddr, from /proc/self/pagemap; dies when it cannot tell. */
static uint64_t phys_of(const void *vaddr)
{
	uint64_t entry;
	off_t off = (off_t)((uintptr_t)vaddr / PG * sizeof(entry));
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		die("open /proc/self/pagemap: %s", strerror(errno));
	if (pread(fd, &entry, sizeof(entry), off) != sizeof(entry))
		die("pread pagemap: %s", strerror(errno));
	close(fd);
	if (!(entry & (1ULL << 63)) || !(entry & ((1ULL << 55) - 1)))
		die("pagemap gives no PFN (present %d): is this root?", (int)(entry >> 63));
	return (entry & ((1ULL << 55) - 1)) * PG + (uintptr_t)vaddr % PG;
}

/* Writes vfio.enable_unsafe_noiommu_mode ("Y" or "N"); 0 or -1 (recorded as OUT). */
static int set_noiommu_mode(const char *v)
{
	int fd = open("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", O_WRONLY);
	int ok = fd >= 0 && write(fd, v, 1) == 1;

	if (fd >= 0)
		close(fd);
	rec_out(L("mode.%s", v), "written=%d", ok);
	return ok ? 0 : -1;
}

/* Closes what a call that type1 refuses returned anyway (another container may give it). */
static void unwanted(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* Records whether the device's PCI_COMMAND has bus mastering on. */
static void bus_master(const char *label, int dev)
{
	struct vfio_region_info cfg = { .argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	uint16_t cmd;

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cfg) < 0 ||
	    pread(dev, &cmd, sizeof(cmd), (off_t)(cfg.offset + PCI_COMMAND)) != sizeof(cmd))
		die("reading PCI_COMMAND: %s", strerror(errno));
	rec_out(label, "master=%d", !!(cmd & PCI_COMMAND_MASTER));
}

/* A recorded call with CAP_SYS_RAWIO out of the effective set. */
#define WITHOUT_RAWIO(call)                                                                      \
	do {                                                                                     \
		int was_ = cap_effective_drop(CAP_SYS_RAWIO);                                    \
		call;                                                                            \
		cap_effective_restore(CAP_SYS_RAWIO, was_);                                      \
	} while (0)

int main(void)
{
	struct vfio_iommu_type1_info info = { .argsz = sizeof(info) };
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map), .flags = MAP_RW, .size = PG };
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap), .size = PG };
	struct vfio_iommu_type1_dirty_bitmap dirty = { .argsz = sizeof(dirty),
						       .flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START };
	char path[64], iommu_path[64];
	const char *bdf;
	volatile void *bar;
	size_t bar_size;
	unsigned char *buf;
	int group, cfd, gfd, dev, fd;

	client_init();
	bdf = env_bdf("VFIO_TEST_EDU");
	group = group_of(bdf);
	snprintf(path, sizeof(path), "/dev/vfio/noiommu-%d", group);
	snprintf(iommu_path, sizeof(iommu_path), "/dev/vfio/%d", group);

	cfd = open_container("open.container");
	c_ioctl("api_version", cfd, VFIO_GET_API_VERSION, 0);
	extensions("empty", cfd);

	/* The group has no IOMMU: no /dev/vfio/<N>, only its no-IOMMU node. */
	unwanted(c_open("open.group.iommu_name", iommu_path, O_RDWR));
	WITHOUT_RAWIO(unwanted(c_open("open.group.norawio", path, O_RDWR)));
	gfd = c_open("open.group", path, O_RDWR);
	if (gfd < 0)
		die("open %s: %s", path, strerror(last_errno));
	unwanted(c_open("open.group.again", path, O_RDWR));
	group_status("status.unset", gfd);
	unwanted(get_device_fd("get_device_fd.unset", gfd, bdf));
	c_ioctl("set_iommu.no_group", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU);

	WITHOUT_RAWIO(fd = set_container("set_container.norawio", gfd, cfd));
	/* type1 refuses it; a container that took it anyway gives it back, so the run goes on. */
	if (fd == 0)
		unset_container("unset_container.norawio", gfd);
	if (set_container("set_container", gfd, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER failed: %s", errname(last_errno));
	set_container("set_container.again", gfd, cfd);
	group_status("status.set", gfd);
	extensions("group_set", cfd);
	unwanted(get_device_fd("get_device_fd.no_iommu_set", gfd, bdf));
	c_ioctl_ptr("get_info.no_iommu_set", cfd, VFIO_IOMMU_GET_INFO, &info);

	c_ioctl("set_iommu.type1", cfd, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU);
	c_ioctl("set_iommu.type1v2", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
	c_ioctl("set_iommu.unknown", cfd, VFIO_SET_IOMMU, 99);
	WITHOUT_RAWIO(c_ioctl("set_iommu.norawio", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU));
	WITHOUT_RAWIO(c_ioctl("set_iommu.type1v2.norawio", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
	if (c_ioctl("set_iommu", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU) < 0)
		die("VFIO_SET_IOMMU(VFIO_NOIOMMU_IOMMU) failed: %s", errname(last_errno));
	c_ioctl("set_iommu.again", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU);
	extensions("iommu_set", cfd);

	/* No DMA mapping at all in this mode. */
	c_ioctl_ptr("get_info", cfd, VFIO_IOMMU_GET_INFO, &info);
	c_ioctl_ptr("map_dma", cfd, VFIO_IOMMU_MAP_DMA, &map);
	c_ioctl_ptr("unmap_dma", cfd, VFIO_IOMMU_UNMAP_DMA, &unmap);
	c_ioctl_ptr("dirty_pages", cfd, VFIO_IOMMU_DIRTY_PAGES, &dirty);
	c_ioctl("unknown_ioctl", cfd, VFIO_BASE + 60, 0);

	WITHOUT_RAWIO(unwanted(get_device_fd("get_device_fd.norawio", gfd, bdf)));
	dev = get_device_fd("get_device_fd", gfd, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD(%s) failed: %s", bdf, errname(last_errno));
	unwanted(get_device_fd("get_device_fd.missing", gfd, "0000:ff:1f.7"));
	bar = edu_bar("noiommu", dev, &bar_size);

	/* Two locked pages; edu copies the first into its buffer and back into the second. */
	buf = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE,
		   -1, 0);
	if (buf == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	fill_pattern(buf, PG, 31);
	fill_pattern(buf + PG, PG, 32);
	if (edu_dma(bar, phys_of(buf), EDU_BUF, PG, 0) < 0 || edu_dma(bar, EDU_BUF, phys_of(buf + PG), PG, 1) < 0)
		rec_dma("edu.roundtrip", "error");
	else
		rec_dma("edu.roundtrip", memcmp(buf, buf + PG, PG) ? "mismatch" : "ok");

	munmap((void *)bar, bar_size);
	munmap(buf, 2 * PG);

	/* CAP_SYS_RAWIO is checked at a device's first open only: another file of the open device
	 * comes without it; once every file is closed (the device's last close, which quiesces it:
	 * bus mastering off) the next open needs it again. */
	WITHOUT_RAWIO({
		int second = get_device_fd("get_device_fd.open.norawio", gfd, bdf);
		c_close("close.device.first.norawio", dev);
		if (second >= 0)
			c_close("close.device.second.norawio", second);
		unwanted(get_device_fd("get_device_fd.closed.norawio", gfd, bdf));
	});
	dev = get_device_fd("get_device_fd.reopen", gfd, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD(%s) after its last close failed: %s", bdf, errname(last_errno));
	bus_master("bus_master.after_last_close", dev);
	c_close("close.device", dev);
	unset_container("unset_container", gfd);
	group_status("status.unset_again", gfd);
	extensions("group_unset", cfd);
	c_close("close.group", gfd);
	c_close("close.container", cfd);

	/* A second container sees the mode again, and the group is free to reopen. */
	cfd = open_container("open.container.second");
	gfd = c_open("open.group.second", path, O_RDWR);
	if (gfd >= 0) {
		set_container("set_container.second", gfd, cfd);
		c_ioctl("set_iommu.second", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU);
		c_close("close.container.second", cfd);
		group_status("status.container_closed", gfd);
		c_close("close.group.second", gfd);
	} else {
		c_close("close.container.second", cfd);
	}

	/* The mode is read at each call (the parameter is writable at run time): off, the
	 * no-IOMMU type is no longer offered, even on a container that holds the group. */
	cfd = open_container("open.container.mode_off");
	gfd = c_open("open.group.mode_off", path, O_RDWR);
	if (gfd >= 0 && set_container("set_container.mode_off", gfd, cfd) == 0) {
		if (set_noiommu_mode("N") == 0) {
			extensions("mode_off", cfd);
			c_ioctl("set_iommu.mode_off", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU);
			if (set_noiommu_mode("Y") < 0)
				die("cannot turn vfio's no-IOMMU mode back on");
		}
		unset_container("unset_container.mode_off", gfd);
	}
	if (gfd >= 0)
		c_close("close.group.mode_off", gfd);
	c_close("close.container.mode_off", cfd);
	end_ok();
}
