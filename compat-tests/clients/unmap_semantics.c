// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * unmap_semantics: type1 v1 vs v2 UNMAP_DMA rules (edu group, VFIO_TEST_EDU).
 *
 * Every case starts from the same four mappings (plus gaps):
 *
 *   gap  0x1000000-0x1000fff
 *   A    0x1001000-0x1004fff  (16 KiB)
 *   gap  0x1005000-0x1005fff
 *   B    0x1006000-0x1009fff  (16 KiB)
 *   C    0x100a000-0x100bfff  ( 8 KiB, adjacent to B)
 *   gap  0x100c000-0x100cfff
 *   D    0x100d000-0x1010fff  (16 KiB)
 *
 * then issues one UNMAP (CALL + OUT size) and prints the surviving pages of
 * every mapping (STATE: one digit per 4 KiB page, 1 = still mapped, 0 =
 * free, found by probing with a 4 KiB MAP: EEXIST means mapped).
 * Type1 v1: an unmap starting inside a mapping succeeds with size 0; one
 * covering a mapping's first page removes the whole mapping.  v2: bisecting
 * any mapping is EINVAL.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include "common.h"

#define BASE 0x1000000ULL
#define SPAN 0x12000ULL

static const struct {
	const char *name;
	uint64_t iova, size;
} maps[] = {
	{ "A", 0x1001000ULL, 0x4000ULL },
	{ "B", 0x1006000ULL, 0x4000ULL },
	{ "C", 0x100a000ULL, 0x2000ULL },
	{ "D", 0x100d000ULL, 0x4000ULL },
};
#define NMAPS (sizeof(maps) / sizeof(maps[0]))

static const struct {
	const char *name;
	uint64_t iova, size;
	uint32_t flags;
} cases[] = {
	/* exact unmaps */
	{ "exact_a", 0x1001000ULL, 0x4000ULL, 0 },
	{ "exact_c", 0x100a000ULL, 0x2000ULL, 0 },
	/* start inside a mapping */
	{ "inside", 0x1002000ULL, 0x1000ULL, 0 },
	{ "inside_to_end", 0x1002000ULL, 0x3000ULL, 0 },
	{ "inside_past_end", 0x1002000ULL, 0x4000ULL, 0 },
	/* starts inside A and covers all of B: v1 stops at A */
	{ "inside_then_whole", 0x1003000ULL, 0x7000ULL, 0 },
	/* covers A's start and ends inside A */
	{ "head_first_page", 0x1001000ULL, 0x1000ULL, 0 },
	{ "head_from_gap", 0x1000000ULL, 0x2000ULL, 0 },
	/* covers A whole, ends inside B */
	{ "end_inside_next", 0x1001000ULL, 0x6000ULL, 0 },
	/* B and C whole, ends inside D */
	{ "end_inside_last", 0x1006000ULL, 0x8000ULL, 0 },
	/* several whole mappings */
	{ "b_and_c", 0x1006000ULL, 0x6000ULL, 0 },
	{ "all_with_gaps", 0x1000000ULL, SPAN, 0 },
	{ "a_to_c_with_gaps", 0x1000000ULL, 0xc000ULL, 0 },
	/* nothing mapped */
	{ "nothing_gap", 0x1005000ULL, 0x1000ULL, 0 },
	{ "nothing_before", 0x0f00000ULL, 0x100000ULL, 0 },
	{ "nothing_after", 0x1011000ULL, 0x1000ULL, 0 },
	/* UNMAP_ALL */
	{ "all_flag", 0, 0, VFIO_DMA_UNMAP_FLAG_ALL },
	/* QEMU's full unmap halves */
	{ "low_half", 0, 1ULL << 63, 0 },
	{ "high_half", 1ULL << 63, 1ULL << 63, 0 },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static char *buf;

static void setup(const char *prefix, int cfd)
{
	size_t i;

	dma_unmap_all(L("%s.reset", prefix), cfd);
	for (i = 0; i < NMAPS; i++)
		dma_map(L("%s.map_%s", prefix, maps[i].name), cfd, maps[i].iova, maps[i].size,
			buf + (maps[i].iova - BASE), MAP_RW);
}

static void state(const char *label, int cfd)
{
	char line[256], pages[8];
	size_t i, off = 0;

	line[0] = 0;
	for (i = 0; i < NMAPS; i++) {
		probe_range(cfd, maps[i].iova, maps[i].size, pages, sizeof(pages));
		off += snprintf(line + off, sizeof(line) - off, "%s%s=%s", i ? " " : "",
				maps[i].name, pages);
	}
	rec_state(label, "%s", line);
}

static void run(int gfd, const char *bdf, int v2)
{
	const char *v = v2 ? "v2" : "v1";
	int cfd, dev;
	size_t i;

	cfd = open_container(L("%s.open.container", v));
	if (set_container(L("%s.set_container", v), gfd, cfd) < 0)
		die("VFIO_GROUP_SET_CONTAINER failed: %s", errname(last_errno));
	if (c_ioctl(L("%s.set_iommu", v), cfd, VFIO_SET_IOMMU,
		    v2 ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU) < 0)
		die("VFIO_SET_IOMMU failed: %s", errname(last_errno));
	dev = hold_device(L("%s.get_device_fd", v), gfd, bdf);

	setup(L("unmap.%s.initial", v), cfd);
	state(L("unmap.%s.initial", v), cfd);

	for (i = 0; i < NCASES; i++) {
		const char *label = L("unmap.%s.%s", v, cases[i].name);

		setup(label, cfd);
		dma_unmap(label, cfd, cases[i].iova, cases[i].size, cases[i].flags, NULL);
		state(label, cfd);
	}

	/* v1: two-step removal of what an "inside" unmap left behind */
	setup(L("unmap.%s.sequence", v), cfd);
	dma_unmap(L("unmap.%s.sequence.step1_inside", v), cfd, 0x1002000ULL, 0x2000ULL, 0, NULL);
	dma_unmap(L("unmap.%s.sequence.step2_head", v), cfd, 0x1001000ULL, 0x1000ULL, 0, NULL);
	dma_unmap(L("unmap.%s.sequence.step3_again", v), cfd, 0x1001000ULL, 0x4000ULL, 0, NULL);
	state(L("unmap.%s.sequence", v), cfd);

	dma_unmap_all(L("unmap.%s.final", v), cfd);
	state(L("unmap.%s.final", v), cfd);

	release_device(L("%s.close.device", v), dev);
	unset_container(L("%s.unset_container", v), gfd);
	c_close(L("%s.close.container", v), cfd);
}

int main(void)
{
	const char *bdf;
	int gfd;

	client_init();
	bdf = env_bdf("VFIO_TEST_EDU");
	buf = map_anon(SPAN);
	gfd = open_group("open.group", group_of(bdf));
	run(gfd, bdf, 0);
	run(gfd, bdf, 1);
	c_close("close.group", gfd);
	end_ok();
}
