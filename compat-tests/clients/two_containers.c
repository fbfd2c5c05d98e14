// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * two_containers: two containers in one process.  c1 holds the edu group
 * (VFIO_TEST_EDU) with TYPE1 (v1), c2 the ivshmem group (VFIO_TEST_IVSHMEM)
 * with TYPE1v2.  The same IOVA is mapped in both; an unmap in one leaves the
 * other; DMA_AVAIL and the v1/v2 unmap rules are per container; a group
 * cannot join a second container.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include "common.h"

#define IOVA 0x100000ULL
#define SIZE 0x4000ULL
#define IOVA_X 0x200000ULL

static void probe_state(const char *label, int c1, int c2)
{
	char a[8], b[8];

	probe_range(c1, IOVA, SIZE, a, sizeof(a));
	probe_range(c2, IOVA, SIZE, b, sizeof(b));
	rec_state(label, "c1=%s c2=%s", a, b);
}

int main(void)
{
	struct iommu_caps caps;
	const char *edu, *ivs;
	void *buf, *buf2;
	int ge, gi, gfe, gfi, c1, c2, de, di;

	client_init();
	edu_and_ivshmem(&edu, &ivs, &ge, &gi);
	buf = map_anon(SIZE);
	buf2 = map_anon(SIZE);

	gfe = open_group("open.group.edu", ge);
	gfi = open_group("open.group.ivshmem", gi);
	c1 = open_container("open.container.c1");
	c2 = open_container("open.container.c2");

	if (set_container("set_container.edu.c1", gfe, c1) < 0)
		die("VFIO_GROUP_SET_CONTAINER(edu) failed: %s", errname(last_errno));
	if (set_container("set_container.ivshmem.c2", gfi, c2) < 0)
		die("VFIO_GROUP_SET_CONTAINER(ivshmem) failed: %s", errname(last_errno));
	/* a group belongs to one container */
	set_container("set_container.ivshmem.c1", gfi, c1);

	if (c_ioctl("set_iommu.c1.type1", c1, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0)
		die("VFIO_SET_IOMMU(c1, TYPE1) failed: %s", errname(last_errno));
	if (c_ioctl("set_iommu.c2.type1v2", c2, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("VFIO_SET_IOMMU(c2, TYPE1v2) failed: %s", errname(last_errno));

	get_iommu_info("iommu_info.c1", c1, &caps);
	get_iommu_info("iommu_info.c2", c2, &caps);

	de = hold_device("get_device_fd.edu", gfe, edu);
	di = hold_device("get_device_fd.ivshmem", gfi, ivs);

	/* the same IOVA (and the same memory) in both */
	dma_map("map.c1", c1, IOVA, SIZE, buf, MAP_RW);
	dma_map("map.c2", c2, IOVA, SIZE, buf, MAP_RW);
	dma_map("map.c1.extra", c1, IOVA_X, SIZE, buf2, MAP_RW);
	probe_state("after_map", c1, c2);
	get_dma_avail("avail.c1.after_map", c1);
	get_dma_avail("avail.c2.after_map", c2);

	/* unmap in c1 leaves c2 */
	dma_unmap("unmap.c1", c1, IOVA, SIZE, 0, NULL);
	probe_state("after_unmap_c1", c1, c2);
	get_dma_avail("avail.c1.after_unmap", c1);
	get_dma_avail("avail.c2.after_unmap", c2);

	/* the unmap rules follow each container's type */
	dma_map("map.c1.again", c1, IOVA, SIZE, buf, MAP_RW);
	dma_unmap("unmap.c1.inside", c1, IOVA + 0x1000, 0x1000, 0, NULL);
	dma_unmap("unmap.c2.inside", c2, IOVA + 0x1000, 0x1000, 0, NULL);
	dma_unmap("unmap.c1.head", c1, IOVA, 0x1000, 0, NULL);
	dma_unmap("unmap.c2.head", c2, IOVA, 0x1000, 0, NULL);
	probe_state("after_partial_unmaps", c1, c2);

	/* UNMAP_ALL in c2 leaves c1's extra mapping */
	dma_unmap_all("unmap_all.c2", c2);
	dma_unmap_all("unmap_all.c1", c1);

	release_device("close.device.edu", de);
	release_device("close.device.ivshmem", di);
	unset_container("unset.edu", gfe);
	unset_container("unset.ivshmem", gfi);
	c_close("close.container.c1", c1);
	c_close("close.container.c2", c2);
	c_close("close.group.edu", gfe);
	c_close("close.group.ivshmem", gfi);
	end_ok();
}
