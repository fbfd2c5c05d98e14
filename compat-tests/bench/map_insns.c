/* map_insns: userspace instructions per 4 KiB MAP_DMA and per UNMAP_DMA at 1,000 live mappings,
 * counted by callgrind (deterministic, unlike time under TCG). Run under
 * `valgrind --tool=callgrind --collect-atstart=no`: collection is on only around MAP_INSNS_CALLS
 * MAPs (dumped as "map") and around as many UNMAPs ("unmap"). Under type1 the count is this
 * program's loop and libc's ioctl wrapper; under LD_PRELOAD the preload's work is added: the
 * difference of the two runs, divided by the calls, is the shim's userspace cost per call.
 * Env: VFIO_TEST_EDU (BDF), MAP_INSNS_CALLS (200), MAP_INSNS_LIVE (1000). */
#include "bench_common.h"
#include <valgrind/callgrind.h>

#define LIVE_IOVA 0x1000000ULL
#define TIMED_IOVA 0x100000000ULL

int main(void)
{
	int calls = getenv("MAP_INSNS_CALLS") ? atoi(getenv("MAP_INSNS_CALLS")) : 200;
	int live = getenv("MAP_INSNS_LIVE") ? atoi(getenv("MAP_INSNS_LIVE")) : 1000;
	struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE, .size = 4096 };
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .size = 4096 };
	char *buf;
	int i, c = container_with_group("VFIO_TEST_EDU", NULL);

	buf = mmap(NULL, (size_t)(live + calls) * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		   -1, 0);
	if (buf == MAP_FAILED)
		die("mmap");
	/* The live mappings, every other page so none is adjacent to another. */
	for (i = 0; i < live; i++) {
		m.vaddr = (uintptr_t)(buf + (size_t)i * 4096);
		m.iova = LIVE_IOVA + (uint64_t)i * 8192;
		if (ioctl(c, VFIO_IOMMU_MAP_DMA, &m))
			die("live map");
	}
	CALLGRIND_TOGGLE_COLLECT;
	for (i = 0; i < calls; i++) {
		m.vaddr = (uintptr_t)(buf + (size_t)(live + i) * 4096);
		m.iova = TIMED_IOVA + (uint64_t)i * 8192;
		if (ioctl(c, VFIO_IOMMU_MAP_DMA, &m))
			die("map");
	}
	CALLGRIND_TOGGLE_COLLECT;
	CALLGRIND_DUMP_STATS_AT("map");
	CALLGRIND_TOGGLE_COLLECT;
	for (i = 0; i < calls; i++) {
		u.iova = TIMED_IOVA + (uint64_t)i * 8192;
		u.size = 4096;
		if (ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u) || u.size != 4096)
			die("unmap");
	}
	CALLGRIND_TOGGLE_COLLECT;
	CALLGRIND_DUMP_STATS_AT("unmap");
	printf("MAP_INSNS calls=%d live=%d\n", calls, live);
	return 0;
}
