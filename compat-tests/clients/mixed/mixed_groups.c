// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * mixed_groups: an IOMMU group (edu, VFIO_TEST_EDU) and a no-IOMMU group (the edu that
 * bypasses the IOMMU in vm.sh's mixed machine, VFIO_TEST_NOIOMMU_EDU) offered to one
 * container, in both orders: the legacy kernel never lets the two kinds share a container
 * (container.c: "Real groups and fake groups cannot mix"), and which kind the container holds
 * decides what CHECK_EXTENSION and SET_IOMMU offer. Once the last group leaves, the container
 * takes either kind again.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include "common.h"

static void extensions(const char *when, int cfd)
{
	static const unsigned long ext[] = { VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_NOIOMMU_IOMMU };

	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++)
		c_ioctl(L("ext.%s.%lu", when, ext[i]), cfd, VFIO_CHECK_EXTENSION, ext[i]);
}

int main(void)
{
	const char *edu, *nedu;
	char path[64];
	int cfd, gi, gn;

	client_init();
	edu = env_bdf("VFIO_TEST_EDU");
	nedu = env_bdf("VFIO_TEST_NOIOMMU_EDU");
	gi = open_group("open.group.iommu", group_of(edu));
	snprintf(path, sizeof(path), "/dev/vfio/noiommu-%d", group_of(nedu));
	gn = c_open("open.group.noiommu", path, O_RDWR);
	if (gn < 0)
		die("open %s: %s", path, errname(last_errno));
	cfd = open_container("open.container");
	extensions("empty", cfd);

	/* The IOMMU group first: the no-IOMMU one is refused, before and after SET_IOMMU. */
	if (set_container("iommu_first.set.iommu", gi, cfd) < 0)
		die("SET_CONTAINER of the IOMMU group: %s", errname(last_errno));
	extensions("iommu_first", cfd);
	set_container("iommu_first.set.noiommu", gn, cfd);
	c_ioctl("iommu_first.set_iommu.noiommu", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU);
	c_ioctl("iommu_first.set_iommu.type1v2", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
	set_container("iommu_first.set.noiommu.after", gn, cfd);
	group_status("iommu_first.status.noiommu", gn);
	unset_container("iommu_first.unset.iommu", gi);
	extensions("iommu_first.emptied", cfd);

	/* Then the no-IOMMU group first, on the same container: the IOMMU one is refused. (A
	 * refusal here is a result, not a broken precondition: the kernel compat gives one.) */
	set_container("noiommu_first.set.noiommu", gn, cfd);
	extensions("noiommu_first", cfd);
	set_container("noiommu_first.set.iommu", gi, cfd);
	c_ioctl("noiommu_first.set_iommu.type1", cfd, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU);
	c_ioctl("noiommu_first.set_iommu.noiommu", cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU);
	set_container("noiommu_first.set.iommu.after", gi, cfd);
	group_status("noiommu_first.status.iommu", gi);
	extensions("noiommu_first.set", cfd);
	unset_container("noiommu_first.unset.noiommu", gn);

	/* Emptied again: the IOMMU group and type1 are back. */
	set_container("again.set.iommu", gi, cfd);
	c_ioctl("again.set_iommu.type1v2", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
	extensions("again", cfd);
	unset_container("again.unset.iommu", gi);

	c_close("close.container", cfd);
	c_close("close.group.noiommu", gn);
	c_close("close.group.iommu", gi);
	end_ok();
}
