/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * legacy.h: the only indirection between the compat-test clients and the
 * legacy VFIO interface (see compat-tests/README.md, "The client contract").
 *
 *   lg_open/lg_ioctl/lg_close are libc open/ioctl/close. Shim mode runs the
 *   same binary under LD_PRELOAD=libvfio_shim_preload.so, which serves
 *   /dev/vfio/vfio, /dev/vfio/<N> and the fds they produce in-process.
 *
 * All three return like libc: -1 and errno on failure.
 *
 * It also supplies fallback definitions for uapi constants that an older
 * <linux/vfio.h> may lack (values from the Linux 7.3 uapi header).
 */
#ifndef VFIO_COMPAT_LEGACY_H
#define VFIO_COMPAT_LEGACY_H

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>

static inline int lg_open(const char *path, int flags)
{
	return open(path, flags);
}

static inline int lg_ioctl(int fd, unsigned long req, unsigned long arg)
{
	return ioctl(fd, req, arg);
}

static inline int lg_close(int fd)
{
	return close(fd);
}

/* ---- uapi fallbacks (kernel values) ---- */
#ifndef VFIO_TYPE1_IOMMU
#define VFIO_TYPE1_IOMMU 1
#endif
#ifndef VFIO_SPAPR_TCE_IOMMU
#define VFIO_SPAPR_TCE_IOMMU 2
#endif
#ifndef VFIO_TYPE1v2_IOMMU
#define VFIO_TYPE1v2_IOMMU 3
#endif
#ifndef VFIO_DMA_CC_IOMMU
#define VFIO_DMA_CC_IOMMU 4
#endif
#ifndef VFIO_EEH
#define VFIO_EEH 5
#endif
#ifndef VFIO_TYPE1_NESTING_IOMMU
#define VFIO_TYPE1_NESTING_IOMMU 6
#endif
#ifndef VFIO_SPAPR_TCE_v2_IOMMU
#define VFIO_SPAPR_TCE_v2_IOMMU 7
#endif
#ifndef VFIO_NOIOMMU_IOMMU
#define VFIO_NOIOMMU_IOMMU 8
#endif
#ifndef VFIO_UNMAP_ALL
#define VFIO_UNMAP_ALL 9
#endif
#ifndef VFIO_UPDATE_VADDR
#define VFIO_UPDATE_VADDR 10
#endif
#ifndef VFIO_DMA_MAP_FLAG_VADDR
#define VFIO_DMA_MAP_FLAG_VADDR (1 << 2)
#endif
#ifndef VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
#define VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (1 << 0)
#endif
#ifndef VFIO_DMA_UNMAP_FLAG_ALL
#define VFIO_DMA_UNMAP_FLAG_ALL (1 << 1)
#endif
#ifndef VFIO_DMA_UNMAP_FLAG_VADDR
#define VFIO_DMA_UNMAP_FLAG_VADDR (1 << 2)
#endif
#ifndef VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
#define VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE 1
#endif
#ifndef VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION
#define VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION 2
#endif
#ifndef VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
#define VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL 3
#endif
#ifndef VFIO_IOMMU_DIRTY_PAGES
#define VFIO_IOMMU_DIRTY_PAGES _IO(VFIO_TYPE, VFIO_BASE + 17)
#define VFIO_IOMMU_DIRTY_PAGES_FLAG_START (1 << 0)
#define VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP (1 << 1)
#define VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP (1 << 2)
#endif

#endif /* VFIO_COMPAT_LEGACY_H */
