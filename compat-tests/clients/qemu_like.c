// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * qemu_like: the legacy VFIO sequence QEMU (hw/vfio/container.c) runs to
 * assign one PCI device (edu, VFIO_TEST_EDU):
 * group from sysfs, group open + GET_STATUS, container open, API version,
 * CHECK_EXTENSION TYPE1v2 then TYPE1 (plus a sweep of every extension 1..10
 * before SET_CONTAINER, after SET_CONTAINER and after SET_IOMMU),
 * SET_CONTAINER, SET_IOMMU(TYPE1v2), GET_INFO re-called until argsz fits,
 * GET_DEVICE_FD, device/region/irq info, RAM-like maps (2 MiB anonymous,
 * 4 KiB anonymous, 2 MiB hugetlb), GET_INFO again, QEMU's full unmap (two
 * 2^63 unmaps), close device, UNSET_CONTAINER, close everything.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include "common.h"

static void ext_sweep(const char *stage, int cfd)
{
	unsigned long ext;

	for (ext = 1; ext <= 10; ext++) {
		const char *label = L("ext.%s.%lu", stage, ext);
		int ret = c_ioctl(label, cfd, VFIO_CHECK_EXTENSION, ext);

		if (ret >= 0)
			rec_out(label, "value=%d", ret);
	}
}

static void device_info(int dev)
{
	struct vfio_device_info di;
	unsigned i;

	memset(&di, 0, sizeof(di));
	di.argsz = sizeof(di);
	if (c_ioctl_ptr("device.info", dev, VFIO_DEVICE_GET_INFO, &di) < 0)
		return;
	rec_out("device.info", "flags=0x%x num_regions=%u num_irqs=%u", di.flags,
		di.num_regions, di.num_irqs);

	for (i = 0; i < di.num_regions && i < 16; i++) {
		struct vfio_region_info ri;
		const char *label = L("device.region%u", i);

		memset(&ri, 0, sizeof(ri));
		ri.argsz = sizeof(ri);
		ri.index = i;
		if (c_ioctl_ptr(label, dev, VFIO_DEVICE_GET_REGION_INFO, &ri) == 0)
			rec_out(label, "argsz=%u flags=0x%x size=0x%llx offset=0x%llx cap_offset=%u",
				ri.argsz, ri.flags, (unsigned long long)ri.size,
				(unsigned long long)ri.offset, ri.cap_offset);
	}
	for (i = 0; i < di.num_irqs && i < 16; i++) {
		struct vfio_irq_info ii;
		const char *label = L("device.irq%u", i);

		memset(&ii, 0, sizeof(ii));
		ii.argsz = sizeof(ii);
		ii.index = i;
		if (c_ioctl_ptr(label, dev, VFIO_DEVICE_GET_IRQ_INFO, &ii) == 0)
			rec_out(label, "flags=0x%x count=%u", ii.flags, ii.count);
	}
}

int main(void)
{
	const uint64_t half = 1ULL << 63;
	struct iommu_caps caps;
	const char *bdf;
	void *ram, *small, *huge;
	int group, gfd, cfd, dev;

	client_init();
	bdf = env_bdf("VFIO_TEST_EDU");
	group = group_of(bdf);

	/* the memory QEMU would register: allocate before any VFIO call */
	ram = map_anon(2 * MIB);
	small = map_anon(PG);
	huge = map_huge(2 * MIB);

	gfd = open_group("open.group", group);
	group_status("group.status.open", gfd);

	cfd = open_container("open.container");
	c_ioctl("get_api_version", cfd, VFIO_GET_API_VERSION, 0);
	/* QEMU's probe order: v2 first, then v1 */
	c_ioctl("check_extension.type1v2", cfd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU);
	c_ioctl("check_extension.type1", cfd, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU);
	ext_sweep("nogroup", cfd);

	if (set_container("set_container", gfd, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER failed: %s", errname(last_errno));
	group_status("group.status.container_set", gfd);
	ext_sweep("group", cfd);

	if (c_ioctl("set_iommu.type1v2", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("VFIO_SET_IOMMU(TYPE1v2) failed: %s", errname(last_errno));
	ext_sweep("iommu", cfd);

	get_iommu_info("iommu_info.initial", cfd, &caps);

	dev = get_device_fd("get_device_fd", gfd, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD(%s) failed: %s", bdf, errname(last_errno));
	group_status("group.status.device_open", gfd);
	device_info(dev);

	/* the memory listener: RAM sections */
	dma_map("map.anon_2m", cfd, 0x0, 2 * MIB, ram, MAP_RW);
	dma_map("map.anon_4k", cfd, 0x400000, PG, small, MAP_RW);
	dma_map("map.hugetlb_2m", cfd, 0x600000, 2 * MIB, huge, MAP_RW);

	get_iommu_info("iommu_info.after_map", cfd, &caps);

	/* QEMU: "The unmap ioctl doesn't accept a full 64-bit span." */
	dma_unmap("unmap.full.low", cfd, 0, half, 0, NULL);
	dma_unmap("unmap.full.high", cfd, half, half, 0, NULL);

	get_dma_avail("iommu_info.after_unmap", cfd);

	c_close("close.device", dev);
	unset_container("unset_container", gfd);
	group_status("group.status.unset", gfd);
	c_close("close.container", cfd);
	c_close("close.group", gfd);
	end_ok();
}
