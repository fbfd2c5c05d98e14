// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * threads_stress: 8 threads x 1000 MAP_DMA + UNMAP_DMA pairs at distinct IOVAs on one TYPE1v2
 * container (edu's group, device open), while a ninth thread keeps reading GET_INFO and dup'ing
 * and closing the container fd.  Every call must succeed and every unmap must return the size
 * it was asked for; afterwards nothing is mapped and DMA_AVAIL is back to the limit.
 * Records only totals, so the transcript is deterministic.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

#define THREADS 8
#define PAIRS 1000
#define SIZE 0x1000ULL

static int cfd;
static void *buf;
static atomic_int stop_reader;
static atomic_long failures, pairs_done, reader_rounds, reader_failures;

static void *worker(void *arg)
{
	uint64_t iova = 0x1000000ULL + (uint64_t)(uintptr_t)arg * 0x100000ULL;

	for (int i = 0; i < PAIRS; i++) {
		uint64_t got = 0;
		uint64_t at = iova + (uint64_t)(i % 16) * SIZE;

		if (dma_map_quiet(cfd, at, SIZE, buf, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE) ||
		    dma_unmap_quiet(cfd, at, SIZE, 0, &got) || got != SIZE)
			atomic_fetch_add(&failures, 1);
		else
			atomic_fetch_add(&pairs_done, 1);
	}
	return NULL;
}

static void *reader(void *unused)
{
	(void)unused;
	while (!atomic_load(&stop_reader)) {
		struct vfio_iommu_type1_info info = { .argsz = sizeof(info) };
		int d = dup(cfd);

		if (d < 0 || ioctl(d, VFIO_IOMMU_GET_INFO, &info) || close(d))
			atomic_fetch_add(&reader_failures, 1);
		atomic_fetch_add(&reader_rounds, 1);
	}
	return NULL;
}

int main(void)
{
	pthread_t t[THREADS], r;
	const char *edu;
	int gfd, dev;

	client_init();
	edu = env_bdf("VFIO_TEST_EDU");
	buf = map_anon(SIZE);
	gfd = open_group("open.group", group_of(edu));
	cfd = open_container("open.container");
	if (set_container("set_container", gfd, cfd) < 0 ||
	    c_ioctl("set_iommu", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("setup failed: %s", errname(last_errno));
	dev = hold_device("get_device_fd", gfd, edu);

	pthread_create(&r, NULL, reader, NULL);
	for (uintptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&stop_reader, 1);
	pthread_join(r, NULL);

	rec_out("workers", "pairs_ok=%ld failures=%ld", atomic_load(&pairs_done), atomic_load(&failures));
	rec_out("reader", "ran=%d failures=%ld", atomic_load(&reader_rounds) > 0,
		atomic_load(&reader_failures));
	get_dma_avail("after.avail", cfd);
	dma_unmap_all("after.unmap_all", cfd);
	release_device("close.device", dev);
	c_close("close.container", cfd);
	c_close("close.group", gfd);
	printf("END status=ok\n");
	return 0;
}
