// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * container_errors: every container error case of the type1 table in
 * docs (shared/design/semantics.md), each as its own labelled call, for a
 * TYPE1 (v1) container and then a TYPE1v2 one (label suffix .v1 / .v2).
 * Uses the edu group (VFIO_TEST_EDU) and opens the device after SET_IOMMU,
 * as real clients do.
 *
 * Per version: ioctls before any group and before SET_IOMMU, SET_IOMMU
 * variants, GET_INFO argsz, MAP argument errors, overlaps, reserved IOVA,
 * UNMAP argument errors, unknown ioctl, DIRTY_PAGES, VADDR (CPR), the DMA
 * entry limit, and last RLIMIT_MEMLOCK.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "common.h"

#define UNKNOWN_IOCTL _IO(VFIO_TYPE, VFIO_BASE + 99)
#define UNKNOWN_IOMMU_TYPE 0x5a5aUL

/* IOVA layout (all below the x86 MSI window and any sane aperture) */
#define BASE_IOVA 0x100000ULL     /* the mapping the overlap cases hit */
#define BASE_SIZE 0x4000ULL
#define ERR_IOVA0 0x1000000ULL    /* error cases: one fresh 64 KiB slot each */
#define DIRTY_IOVA 0x800000ULL
#define VADDR_IOVA 0xa00000ULL
#define VADDR_IOVA_NONE 0xb00000ULL
#define LIMIT_IOVA 0x40000000ULL  /* entry-limit run: 4 KiB steps */
#define LIMIT_TRIES 70000
#define MEMLOCK_IOVA 0x2000000ULL
#define MEMLOCK_LIMIT (1 * MIB)

static const char *bdf;
static void *buf16, *buf16b, *page, *big;

/* A fresh IOVA slot per error case, so an unexpectedly successful call
 * cannot turn the next case into EEXIST. Deterministic per version. */
static uint64_t err_slot;
static uint64_t next_slot(void)
{
	return ERR_IOVA0 + 0x10000ULL * err_slot++;
}

static void ioctls_without_iommu(const char *stage, const char *v, int cfd)
{
	struct vfio_iommu_type1_info info;
	struct vfio_iommu_type1_dirty_bitmap dirty;

	memset(&info, 0, sizeof(info));
	info.argsz = sizeof(info);
	c_ioctl_ptr(L("%s.get_info.%s", stage, v), cfd, VFIO_IOMMU_GET_INFO, &info);
	dma_map(L("%s.map.%s", stage, v), cfd, BASE_IOVA, PG, page, MAP_RW);
	dma_unmap(L("%s.unmap.%s", stage, v), cfd, BASE_IOVA, PG, 0, NULL);
	dma_unmap(L("%s.unmap_all.%s", stage, v), cfd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL, NULL);
	memset(&dirty, 0, sizeof(dirty));
	dirty.argsz = sizeof(dirty);
	dirty.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START;
	c_ioctl_ptr(L("%s.dirty_start.%s", stage, v), cfd, VFIO_IOMMU_DIRTY_PAGES, &dirty);
	c_ioctl(L("%s.unknown_ioctl.%s", stage, v), cfd, UNKNOWN_IOCTL, 0);
	/* extensions that depend on the IOMMU being set */
	{
		const char *l = L("%s.ext.update_vaddr.%s", stage, v);
		int r = c_ioctl(l, cfd, VFIO_CHECK_EXTENSION, VFIO_UPDATE_VADDR);

		if (r >= 0)
			rec_out(l, "value=%d", r);
		l = L("%s.ext.dma_cc.%s", stage, v);
		r = c_ioctl(l, cfd, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU);
		if (r >= 0)
			rec_out(l, "value=%d", r);
	}
}

static void get_info_argsz(const char *v, int cfd)
{
	static const uint32_t sizes[] = { 0, 8, 15, 16, 20 };
	unsigned i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct vfio_iommu_type1_info info;
		const char *l = L("get_info.argsz%u.%s", sizes[i], v);

		memset(&info, 0, sizeof(info));
		info.argsz = sizes[i];
		if (c_ioctl_ptr(l, cfd, VFIO_IOMMU_GET_INFO, &info) == 0) {
			rec_out(l, "argsz=%u flags=0x%x pgsizes=0x%llx cap_offset=%u", info.argsz,
				info.flags, (unsigned long long)info.iova_pgsizes, info.cap_offset);
			rec_info(l, &info, sizeof(info));
		}
	}
}

static void map_errors(const char *v, int cfd)
{
	uint64_t s;

	dma_map_argsz(L("map.argsz0.%s", v), cfd, 0, next_slot(), PG,
		      (uint64_t)(uintptr_t)page, MAP_RW);
	dma_map_argsz(L("map.argsz_short.%s", v), cfd,
		      sizeof(struct vfio_iommu_type1_dma_map) - 1, next_slot(), PG,
		      (uint64_t)(uintptr_t)page, MAP_RW);
	dma_map(L("map.flags_unknown.%s", v), cfd, next_slot(), PG, page, MAP_RW | (1u << 3));
	dma_map(L("map.flags_high.%s", v), cfd, next_slot(), PG, page, MAP_RW | (1u << 31));
	dma_map(L("map.flags_none.%s", v), cfd, next_slot(), PG, page, 0);
	dma_map(L("map.flags_read.%s", v), cfd, s = next_slot(), PG, page,
		VFIO_DMA_MAP_FLAG_READ);
	dma_unmap(L("map.flags_read.cleanup.%s", v), cfd, s, PG, 0, NULL);
	dma_map(L("map.flags_write.%s", v), cfd, s = next_slot(), PG, page,
		VFIO_DMA_MAP_FLAG_WRITE);
	dma_unmap(L("map.flags_write.cleanup.%s", v), cfd, s, PG, 0, NULL);
	dma_map(L("map.size0.%s", v), cfd, next_slot(), 0, page, MAP_RW);
	dma_map(L("map.iova_overflow.%s", v), cfd, 0xfffffffffffff000ULL, 0x2000, buf16, MAP_RW);
	dma_map_argsz(L("map.vaddr_overflow.%s", v), cfd, sizeof(struct vfio_iommu_type1_dma_map),
		      next_slot(), 0x2000, 0xfffffffffffff000ULL, MAP_RW);
	dma_map(L("map.unaligned_iova.%s", v), cfd, next_slot() + 0x800, PG, page, MAP_RW);
	dma_map(L("map.unaligned_size.%s", v), cfd, next_slot(), 0x1800, buf16, MAP_RW);
	dma_map(L("map.unaligned_vaddr.%s", v), cfd, next_slot(), PG, (char *)buf16 + 0x800,
		MAP_RW);
}

static void map_overlaps(const char *v, int cfd)
{
	const uint64_t b = BASE_IOVA, e = BASE_IOVA + BASE_SIZE;

	dma_map(L("map.base.%s", v), cfd, b, BASE_SIZE, buf16, MAP_RW);
	dma_map(L("map.overlap_exact.%s", v), cfd, b, BASE_SIZE, buf16b, MAP_RW);
	dma_map(L("map.overlap_inside.%s", v), cfd, b + PG, PG, buf16b, MAP_RW);
	dma_map(L("map.overlap_head.%s", v), cfd, b - PG, 2 * PG, buf16b, MAP_RW);
	dma_map(L("map.overlap_tail.%s", v), cfd, e - PG, 2 * PG, buf16b, MAP_RW);
	dma_map(L("map.overlap_around.%s", v), cfd, b - PG, BASE_SIZE + 2 * PG, buf16b, MAP_RW);
	dma_map(L("map.overlap_same_vaddr_elsewhere.%s", v), cfd, b + 0x10000, BASE_SIZE, buf16,
		MAP_RW);
	dma_map(L("map.adjacent_before.%s", v), cfd, b - PG, PG, page, MAP_RW);
	dma_map(L("map.adjacent_after.%s", v), cfd, e, PG, page, MAP_RW);
	dma_unmap(L("unmap.adjacent_before.%s", v), cfd, b - PG, PG, 0, NULL);
	dma_unmap(L("unmap.adjacent_after.%s", v), cfd, e, PG, 0, NULL);
	dma_unmap(L("unmap.same_vaddr_elsewhere.%s", v), cfd, b + 0x10000, BASE_SIZE, 0, NULL);
}

static void map_reserved(const char *v, int cfd, const struct iommu_caps *c)
{
	uint64_t top = 0;
	uint32_t i;

	dma_map(L("map.reserved_msi.%s", v), cfd, 0xfee00000ULL, PG, page, MAP_RW);
	dma_map(L("map.reserved_msi_straddle.%s", v), cfd, 0xfedff000ULL, 2 * PG, buf16, MAP_RW);
	if (!c->have_ranges || !c->nr_ranges) {
		rec_out(L("map.above_aperture.%s", v), "skipped=no_iova_ranges");
		return;
	}
	for (i = 0; i < c->nr_ranges && i < MAX_RANGES; i++)
		if (c->range_end[i] > top)
			top = c->range_end[i];
	if (top >= 0xffffffffffffe000ULL) {
		rec_out(L("map.above_aperture.%s", v), "skipped=aperture_reaches_top");
		return;
	}
	/* the address itself is not printed: it comes from the IOVA_RANGE cap */
	dma_map(L("map.above_aperture.%s", v), cfd, (top + 1) & ~(PG - 1), PG, page, MAP_RW);
	dma_map(L("map.aperture_straddle.%s", v), cfd, ((top + 1) & ~(PG - 1)) - PG, 2 * PG,
		buf16, MAP_RW);
}

static void unmap_errors(const char *v, int cfd)
{
	char probe[8];

	dma_unmap_argsz(L("unmap.argsz0.%s", v), cfd, 0, next_slot(), PG, 0);
	dma_unmap_argsz(L("unmap.argsz_short.%s", v), cfd,
			sizeof(struct vfio_iommu_type1_dma_unmap) - 1, next_slot(), PG, 0);
	dma_unmap(L("unmap.flags_unknown.%s", v), cfd, next_slot(), PG, 1u << 3, NULL);
	dma_unmap(L("unmap.flags_high.%s", v), cfd, next_slot(), PG, 1u << 31, NULL);
	dma_unmap(L("unmap.dirty_with_all.%s", v), cfd, 0, 0,
		  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_ALL, NULL);
	dma_unmap(L("unmap.dirty_with_vaddr.%s", v), cfd, next_slot(), PG,
		  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR, NULL);
	dma_unmap(L("unmap.size0.%s", v), cfd, next_slot(), 0, 0, NULL);
	dma_unmap(L("unmap.overflow.%s", v), cfd, 0xfffffffffffff000ULL, 0x2000, 0, NULL);
	dma_unmap(L("unmap.unaligned_iova.%s", v), cfd, next_slot() + 0x800, PG, 0, NULL);
	dma_unmap(L("unmap.unaligned_size.%s", v), cfd, next_slot(), 0x1800, 0, NULL);
	dma_unmap(L("unmap.all_with_iova.%s", v), cfd, next_slot(), 0, VFIO_DMA_UNMAP_FLAG_ALL,
		  NULL);
	dma_unmap(L("unmap.all_with_size.%s", v), cfd, 0, PG, VFIO_DMA_UNMAP_FLAG_ALL, NULL);
	dma_unmap(L("unmap.empty.%s", v), cfd, next_slot(), PG, 0, NULL);
	dma_unmap(L("unmap.empty_large.%s", v), cfd, 0x80000000ULL, 0x40000000ULL, 0, NULL);
	/* a top-of-space range with nothing mapped (no overflow: ends at 2^64-1) */
	dma_unmap(L("unmap.empty_top.%s", v), cfd, 0xffffffffffff0000ULL, 0x10000, 0, NULL);
	/* the base mapping must have survived all of the above */
	probe_range(cfd, BASE_IOVA, BASE_SIZE, probe, sizeof(probe));
	rec_state(L("after_unmap_errors.%s", v), "base=%s", probe);
}

static int dirty_pages(const char *label, int cfd, uint32_t flags)
{
	struct vfio_iommu_type1_dirty_bitmap d;

	memset(&d, 0, sizeof(d));
	d.argsz = sizeof(d);
	d.flags = flags;
	return c_ioctl_ptr(label, cfd, VFIO_IOMMU_DIRTY_PAGES, &d);
}

static void hex_out(const char *label, const char *key, const void *p, size_t n)
{
	char s[2 * 64 + 1];
	const unsigned char *b = p;
	size_t i;

	if (n > 64)
		n = 64;
	for (i = 0; i < n; i++)
		snprintf(s + 2 * i, 3, "%02x", b[i]);
	s[2 * n] = 0;
	rec_out(label, "%s=%s", key, s);
}

static int get_bitmap(const char *label, int cfd, uint64_t iova, uint64_t size,
		      uint64_t pgsize, int print)
{
	/* struct vfio_iommu_type1_dirty_bitmap followed by ..._dirty_bitmap_get */
	struct vfio_iommu_type1_dirty_bitmap d;
	struct vfio_iommu_type1_dirty_bitmap_get g;
	uint64_t raw[(sizeof(d) + sizeof(g) + 7) / 8];
	uint64_t bits[4];
	int ret;

	memset(&d, 0, sizeof(d));
	memset(&g, 0, sizeof(g));
	memset(raw, 0, sizeof(raw));
	memset(bits, 0, sizeof(bits));
	d.argsz = sizeof(d) + sizeof(g);
	d.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
	g.iova = iova;
	g.size = size;
	g.bitmap.pgsize = pgsize;
	g.bitmap.size = sizeof(uint64_t);
	g.bitmap.data = (void *)bits;
	memcpy(raw, &d, sizeof(d));
	memcpy((char *)raw + sizeof(d), &g, sizeof(g));
	ret = c_ioctl_ptr(label, cfd, VFIO_IOMMU_DIRTY_PAGES, raw);
	if (print)
		hex_out(label, "bitmap", bits, sizeof(uint64_t));
	return ret;
}

static void dirty_cases(const char *v, int cfd)
{
	/* struct vfio_iommu_type1_dma_unmap followed by struct vfio_bitmap */
	struct vfio_iommu_type1_dma_unmap u;
	struct vfio_bitmap b;
	uint64_t raw[(sizeof(u) + sizeof(b) + 7) / 8];
	uint64_t bits[4];
	const char *l;

	dma_map(L("dirty.map.%s", v), cfd, DIRTY_IOVA, 0x4000, buf16b, MAP_RW);
	get_bitmap(L("dirty.get_bitmap_not_started.%s", v), cfd, DIRTY_IOVA, 0x4000, PG, 0);
	dirty_pages(L("dirty.start.%s", v), cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	dirty_pages(L("dirty.start_again.%s", v), cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	dirty_pages(L("dirty.start_and_stop.%s", v), cfd,
		    VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	dirty_pages(L("dirty.stop_and_get.%s", v), cfd,
		    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP | VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP);
	dirty_pages(L("dirty.flags_unknown.%s", v), cfd, 1u << 3);
	get_bitmap(L("dirty.get_bitmap.%s", v), cfd, DIRTY_IOVA, 0x4000, PG, 1);
	get_bitmap(L("dirty.get_bitmap_bad_pgsize.%s", v), cfd, DIRTY_IOVA, 0x4000, 2 * PG, 0);
	get_bitmap(L("dirty.get_bitmap_bisect.%s", v), cfd, DIRTY_IOVA + PG, PG, PG, 0);
	get_bitmap(L("dirty.get_bitmap_size0.%s", v), cfd, DIRTY_IOVA, 0, PG, 0);

	/* UNMAP with GET_DIRTY_BITMAP while tracking (v2) / without (v1: EINVAL) */
	memset(&u, 0, sizeof(u));
	memset(&b, 0, sizeof(b));
	memset(raw, 0, sizeof(raw));
	memset(bits, 0, sizeof(bits));
	u.argsz = sizeof(u) + sizeof(b);
	u.flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
	u.iova = DIRTY_IOVA;
	u.size = 0x4000;
	b.pgsize = PG;
	b.size = sizeof(uint64_t);
	b.data = (void *)bits;
	memcpy(raw, &u, sizeof(u));
	memcpy((char *)raw + sizeof(u), &b, sizeof(b));
	l = L("dirty.unmap_with_bitmap.%s", v);
	c_ioctl_ptr(l, cfd, VFIO_IOMMU_UNMAP_DMA, raw);
	memcpy(&u, raw, sizeof(u));
	rec_out(l, "size=0x%llx", (unsigned long long)u.size);
	hex_out(L("dirty.unmap_with_bitmap.bits.%s", v), "bitmap", bits, sizeof(uint64_t));

	dirty_pages(L("dirty.stop.%s", v), cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	dirty_pages(L("dirty.stop_again.%s", v), cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	get_bitmap(L("dirty.get_bitmap_after_stop.%s", v), cfd, DIRTY_IOVA, 0x4000, PG, 0);
	dma_unmap(L("dirty.cleanup.%s", v), cfd, DIRTY_IOVA, 0x4000, 0, NULL);
}

static void vaddr_cases(const char *v, int cfd)
{
	const uint64_t a = VADDR_IOVA;

	dma_unmap_all(L("vaddr.reset.%s", v), cfd);
	dma_map(L("vaddr.map.%s", v), cfd, a, 0x4000, buf16, MAP_RW);
	dma_unmap(L("vaddr.invalidate.%s", v), cfd, a, 0x4000, VFIO_DMA_UNMAP_FLAG_VADDR, NULL);
	dma_unmap(L("vaddr.invalidate_again.%s", v), cfd, a, 0x4000, VFIO_DMA_UNMAP_FLAG_VADDR,
		  NULL);
	dma_map(L("vaddr.overlap_while_invalid.%s", v), cfd, a, PG, page, MAP_RW);
	dma_map(L("vaddr.update_with_rw.%s", v), cfd, a, 0x4000, buf16b,
		VFIO_DMA_MAP_FLAG_VADDR | MAP_RW);
	dma_map(L("vaddr.update_wrong_size.%s", v), cfd, a, 0x2000, buf16b,
		VFIO_DMA_MAP_FLAG_VADDR);
	dma_map(L("vaddr.update_unmapped.%s", v), cfd, VADDR_IOVA_NONE, 0x4000, buf16b,
		VFIO_DMA_MAP_FLAG_VADDR);
	dma_map(L("vaddr.update.%s", v), cfd, a, 0x4000, buf16b, VFIO_DMA_MAP_FLAG_VADDR);
	dma_map(L("vaddr.update_when_valid.%s", v), cfd, a, 0x4000, buf16,
		VFIO_DMA_MAP_FLAG_VADDR);
	/* QEMU CPR: invalidate everything at once, then re-supply vaddrs */
	dma_unmap(L("vaddr.invalidate_all.%s", v), cfd, 0, 0,
		  VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR, NULL);
	dma_map(L("vaddr.update_after_all.%s", v), cfd, a, 0x4000, buf16,
		VFIO_DMA_MAP_FLAG_VADDR);
	dma_unmap(L("vaddr.unmap.%s", v), cfd, a, 0x4000, 0, NULL);
}

static void entry_limit(const char *v, int cfd)
{
	uint64_t iova = LIMIT_IOVA;
	int n, e = 0;

	dma_unmap_all(L("limit.reset.%s", v), cfd);
	get_dma_avail(L("limit.avail_before.%s", v), cfd);
	for (n = 0; n < LIMIT_TRIES; n++) {
		e = dma_map_quiet(cfd, iova + (uint64_t)n * PG, PG, page, MAP_RW);
		if (e)
			break;
	}
	rec_out(L("limit.fill.%s", v), "tries=%d mapped=%d stop_errno=%s", LIMIT_TRIES, n,
		errname(e));
	get_dma_avail(L("limit.avail_full.%s", v), cfd);
	/* when full: an overlap still reports EEXIST (checked first), one
	 * unmap makes room for exactly one more mapping */
	dma_map(L("limit.full_overlap.%s", v), cfd, LIMIT_IOVA, PG, page, MAP_RW);
	dma_unmap(L("limit.unmap_one.%s", v), cfd, LIMIT_IOVA, PG, 0, NULL);
	dma_map(L("limit.map_again.%s", v), cfd, LIMIT_IOVA, PG, page, MAP_RW);
	dma_map(L("limit.map_over.%s", v), cfd, iova + (uint64_t)(n + 1) * PG, PG, page, MAP_RW);
	dma_unmap_all(L("limit.unmap_all.%s", v), cfd);
	get_dma_avail(L("limit.avail_after.%s", v), cfd);
}

static void memlock(const char *v, int cfd)
{
	struct rlimit old, low;
	int had_cap;

	dma_unmap_all(L("memlock.reset.%s", v), cfd);
	if (getrlimit(RLIMIT_MEMLOCK, &old) < 0)
		die("getrlimit: %s", strerror(errno));
	low = old;
	low.rlim_cur = MEMLOCK_LIMIT;
	if (old.rlim_max != RLIM_INFINITY && old.rlim_max < MEMLOCK_LIMIT)
		low.rlim_cur = old.rlim_max;
	/* type1 skips the limit for CAP_IPC_LOCK (dma->lock_cap): drop it */
	had_cap = cap_ipc_lock_drop();
	if (setrlimit(RLIMIT_MEMLOCK, &low) < 0)
		die("setrlimit: %s", strerror(errno));
	dma_map(L("memlock.over.%s", v), cfd, MEMLOCK_IOVA, 4 * MIB, big, MAP_RW);
	dma_map(L("memlock.under.%s", v), cfd, MEMLOCK_IOVA, 512 * 1024, big, MAP_RW);
	/* accounted per process: 512 KiB + 768 KiB > 1 MiB */
	dma_map(L("memlock.cumulative.%s", v), cfd, MEMLOCK_IOVA + 2 * MIB, 768 * 1024,
		(char *)big + 2 * MIB, MAP_RW);
	if (setrlimit(RLIMIT_MEMLOCK, &old) < 0)
		die("setrlimit (restore): %s", strerror(errno));
	cap_ipc_lock_restore(had_cap);
	dma_map(L("memlock.after_restore.%s", v), cfd, MEMLOCK_IOVA + 2 * MIB, 768 * 1024,
		(char *)big + 2 * MIB, MAP_RW);
	dma_unmap_all(L("memlock.unmap_all.%s", v), cfd);
}

static void run(int gfd, int v2)
{
	const char *v = v2 ? "v2" : "v1";
	unsigned long type = v2 ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU;
	unsigned long other = v2 ? VFIO_TYPE1_IOMMU : VFIO_TYPE1v2_IOMMU;
	struct iommu_caps caps;
	int cfd, dev;

	err_slot = 0;
	cfd = open_container(L("open.container.%s", v));

	/* a container without any group */
	ioctls_without_iommu("nogroup", v, cfd);
	c_ioctl(L("set_iommu.nogroup.%s", v), cfd, VFIO_SET_IOMMU, type);
	c_ioctl(L("set_iommu.nogroup_unknown_type.%s", v), cfd, VFIO_SET_IOMMU,
		UNKNOWN_IOMMU_TYPE);

	if (set_container(L("set_container.%s", v), gfd, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER failed: %s", errname(last_errno));

	/* a group but no IOMMU yet */
	ioctls_without_iommu("noiommu", v, cfd);
	c_ioctl(L("set_iommu.unknown_type.%s", v), cfd, VFIO_SET_IOMMU, UNKNOWN_IOMMU_TYPE);
	c_ioctl(L("set_iommu.spapr.%s", v), cfd, VFIO_SET_IOMMU, VFIO_SPAPR_TCE_IOMMU);
	c_ioctl(L("set_iommu.noiommu.%s", v), cfd, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU);
	if (c_ioctl(L("set_iommu.%s", v), cfd, VFIO_SET_IOMMU, type) < 0)
		die("VFIO_SET_IOMMU failed: %s", errname(last_errno));
	c_ioctl(L("set_iommu.twice.%s", v), cfd, VFIO_SET_IOMMU, type);
	c_ioctl(L("set_iommu.twice_other_type.%s", v), cfd, VFIO_SET_IOMMU, other);

	dev = hold_device(L("get_device_fd.%s", v), gfd, bdf);

	get_iommu_info(L("iommu_info.%s", v), cfd, &caps);
	get_info_argsz(v, cfd);
	c_ioctl(L("unknown_ioctl.%s", v), cfd, UNKNOWN_IOCTL, 0);
	{
		const char *l = L("ext.update_vaddr.%s", v);
		int r = c_ioctl(l, cfd, VFIO_CHECK_EXTENSION, VFIO_UPDATE_VADDR);

		if (r >= 0)
			rec_out(l, "value=%d", r);
	}

	map_errors(v, cfd);
	map_overlaps(v, cfd);
	map_reserved(v, cfd, &caps);
	unmap_errors(v, cfd);
	dirty_cases(v, cfd);
	vaddr_cases(v, cfd);
	entry_limit(v, cfd);
	memlock(v, cfd); /* last: changes RLIMIT_MEMLOCK and CAP_IPC_LOCK, restores them */

	release_device(L("close.device.%s", v), dev);
	unset_container(L("unset_container.%s", v), gfd);
	c_close(L("close.container.%s", v), cfd);
}

int main(void)
{
	int gfd;

	client_init();
	bdf = env_bdf("VFIO_TEST_EDU");
	page = map_anon(PG);
	buf16 = map_anon(0x4000);
	buf16b = map_anon(0x4000);
	big = map_anon(4 * MIB);

	gfd = open_group("open.group", group_of(bdf));
	run(gfd, 0);
	run(gfd, 1);
	c_close("close.group", gfd);
	end_ok();
}
