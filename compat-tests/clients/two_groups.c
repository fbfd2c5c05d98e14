// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * two_groups: the edu group (VFIO_TEST_EDU) and the ivshmem group
 * (VFIO_TEST_IVSHMEM) in ONE container, plus the group-level error cases:
 * opening a group twice, GET_STATUS argsz, SET_CONTAINER with a bad fd, a
 * pipe, the group fd itself and twice, GET_DEVICE_FD before SET_CONTAINER /
 * before SET_IOMMU / with an unknown name, a device opened twice through
 * its group, UNSET_CONTAINER while a device is open, mappings surviving one
 * group leaving, the container losing its IOMMU when the last group leaves
 * and needing a group again for SET_IOMMU.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

#define IOVA_A 0x100000ULL
#define SIZE_A 0x4000ULL
#define IOVA_B 0x200000ULL
#define SIZE_B 0x1000ULL

static void probe_state(const char *label, int cfd)
{
	char a[8], b[8];

	probe_range(cfd, IOVA_A, SIZE_A, a, sizeof(a));
	probe_range(cfd, IOVA_B, SIZE_B, b, sizeof(b));
	rec_state(label, "a=%s b=%s", a, b);
}

static void ext(const char *label, int cfd, unsigned long e)
{
	int r = c_ioctl(label, cfd, VFIO_CHECK_EXTENSION, e);

	if (r >= 0)
		rec_out(label, "value=%d", r);
}

int main(void)
{
	struct vfio_group_status st;
	struct vfio_iommu_type1_info info;
	struct iommu_caps caps;
	const char *edu, *ivs;
	char path[64];
	void *buf_a, *buf_b;
	int ge, gi, gfe, gfi, cfd, de, de2, di, fd, bad, pfd[2];

	client_init();
	edu_and_ivshmem(&edu, &ivs, &ge, &gi);
	buf_a = map_anon(SIZE_A);
	buf_b = map_anon(SIZE_B);
	if (pipe(pfd) < 0)
		die("pipe: %s", strerror(errno));

	gfe = open_group("open.group.edu", ge);
	group_status("status.edu.open", gfe);
	gfi = open_group("open.group.ivshmem", gi);
	group_status("status.ivshmem.open", gfi);

	/* a group node can be open once */
	snprintf(path, sizeof(path), "/dev/vfio/%d", ge);
	fd = c_open("open.group.edu.again", path, O_RDWR);
	if (fd >= 0)
		c_close("close.group.edu.again", fd);

	memset(&st, 0, sizeof(st));
	st.argsz = sizeof(st) - 1;
	c_ioctl_ptr("status.argsz_short", gfe, VFIO_GROUP_GET_STATUS, &st);
	memset(&st, 0, sizeof(st));
	st.argsz = 0;
	c_ioctl_ptr("status.argsz0", gfe, VFIO_GROUP_GET_STATUS, &st);
	memset(&st, 0, sizeof(st));
	st.argsz = sizeof(st) + 8;
	if (c_ioctl_ptr("status.argsz_long", gfe, VFIO_GROUP_GET_STATUS, &st) == 0)
		rec_out("status.argsz_long", "flags=0x%x", st.flags);
	c_ioctl("group.unknown_ioctl", gfe, _IO(VFIO_TYPE, VFIO_BASE + 99), 0);
	unset_container("unset.edu.none", gfe);

	cfd = open_container("open.container");

	get_device_fd("get_device_fd.edu.no_container", gfe, edu);
	bad = -1;
	c_ioctl_ptr("set_container.bad_fd", gfe, VFIO_GROUP_SET_CONTAINER, &bad);
	c_ioctl_ptr("set_container.pipe", gfe, VFIO_GROUP_SET_CONTAINER, &pfd[0]);
	c_ioctl_ptr("set_container.group_fd", gfe, VFIO_GROUP_SET_CONTAINER, &gfi);
	group_status("status.edu.after_bad_set", gfe);

	if (set_container("set_container.edu", gfe, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER(edu) failed: %s", errname(last_errno));
	group_status("status.edu.container_set", gfe);
	set_container("set_container.edu.twice", gfe, cfd);
	get_device_fd("get_device_fd.edu.no_iommu", gfe, edu);
	get_device_fd("get_device_fd.unknown.no_iommu", gfe, "0000:ff:1f.7");

	if (set_container("set_container.ivshmem", gfi, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER(ivshmem) failed: %s", errname(last_errno));
	group_status("status.ivshmem.container_set", gfi);

	if (c_ioctl("set_iommu", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("VFIO_SET_IOMMU failed: %s", errname(last_errno));
	ext("ext.update_vaddr", cfd, VFIO_UPDATE_VADDR);
	get_iommu_info("iommu_info", cfd, &caps);

	dma_map("map.a", cfd, IOVA_A, SIZE_A, buf_a, MAP_RW);
	dma_map("map.b", cfd, IOVA_B, SIZE_B, buf_b, MAP_RW);
	get_dma_avail("avail.mapped", cfd);

	get_device_fd("get_device_fd.unknown", gfe, "0000:ff:1f.7");
	get_device_fd("get_device_fd.edu.in_ivshmem_group", gfi, edu);
	de = get_device_fd("get_device_fd.edu", gfe, edu);
	if (de < 0)
		die("VFIO_GROUP_GET_DEVICE_FD(%s) failed: %s", edu, errname(last_errno));
	/* the group path lets a device be opened more than once */
	de2 = get_device_fd("get_device_fd.edu.second", gfe, edu);
	if (de2 >= 0)
		c_close("close.device.edu.second", de2);
	di = get_device_fd("get_device_fd.ivshmem", gfi, ivs);
	if (di < 0)
		die("VFIO_GROUP_GET_DEVICE_FD(%s) failed: %s", ivs, errname(last_errno));
	group_status("status.edu.device_open", gfe);
	group_status("status.ivshmem.device_open", gfi);

	/* a group with an open device cannot leave */
	unset_container("unset.edu.device_open", gfe);
	c_close("close.device.edu", de);
	unset_container("unset.edu", gfe);
	group_status("status.edu.unset", gfe);
	unset_container("unset.edu.again", gfe);
	/* the container keeps its IOMMU and mappings while ivshmem stays */
	probe_state("after_unset_edu", cfd);
	get_dma_avail("avail.after_unset_edu", cfd);
	ext("ext.update_vaddr.after_unset_edu", cfd, VFIO_UPDATE_VADDR);
	/* the edu group may come back into the live container */
	set_container("set_container.edu.rejoin", gfe, cfd);
	group_status("status.edu.rejoin", gfe);
	unset_container("unset.edu.rejoin", gfe);

	c_close("close.device.ivshmem", di);
	unset_container("unset.ivshmem", gfi);
	group_status("status.ivshmem.unset", gfi);

	/* the last group left: the container is back to "no IOMMU" */
	memset(&info, 0, sizeof(info));
	info.argsz = sizeof(info);
	c_ioctl_ptr("nogroup.get_info", cfd, VFIO_IOMMU_GET_INFO, &info);
	dma_map("nogroup.map", cfd, 0x300000, SIZE_B, buf_b, MAP_RW);
	dma_unmap("nogroup.unmap", cfd, IOVA_A, SIZE_A, 0, NULL);
	ext("nogroup.ext.update_vaddr", cfd, VFIO_UPDATE_VADDR);
	ext("nogroup.ext.type1v2", cfd, VFIO_TYPE1v2_IOMMU);
	c_ioctl("nogroup.set_iommu", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);

	/* a group again: SET_IOMMU works, the old mappings are gone */
	/* (failures from here on are results, not broken preconditions) */
	set_container("set_container.edu.again", gfe, cfd);
	c_ioctl("set_iommu.again", cfd, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU);
	probe_state("after_reattach", cfd);
	get_dma_avail("avail.after_reattach", cfd);
	/* the new IOMMU is v1: an unmap inside a mapping succeeds with size 0 */
	dma_map("again.map.a", cfd, IOVA_A, SIZE_A, buf_a, MAP_RW);
	dma_unmap("again.unmap.inside", cfd, IOVA_A + PG, PG, 0, NULL);
	dma_unmap_all("again.unmap_all", cfd);

	unset_container("unset.edu.final", gfe);
	c_close("close.container", cfd);
	group_status("status.edu.final", gfe);
	c_close("close.group.edu", gfe);
	c_close("close.group.ivshmem", gfi);
	close(pfd[0]);
	close(pfd[1]);
	end_ok();
}
