/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * Shared helpers of the compat-test clients: transcript records, recorded
 * legacy calls, device lookup, type1 helpers.  See compat-tests/README.md for
 * the transcript format.  Nothing here prints an fd number or an address.
 */
#ifndef VFIO_COMPAT_COMMON_H
#define VFIO_COMPAT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include "legacy.h"

#define PG 0x1000ULL
#define MIB (1024ULL * 1024ULL)

#if defined(__GNUC__)
#define PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#else
#define PRINTF_LIKE(a, b)
#endif

/* ---- setup / teardown ---- */

/* Line-buffers stdout; call first. */
void client_init(void);
/* Prints "END status=ok" and exits 0. */
__attribute__((noreturn)) void end_ok(void);
/* Precondition broke: message on stderr, "END status=fail", exit 1. */
__attribute__((noreturn)) void die(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Label builder: returns one of a small ring of static buffers. */
const char *L(const char *fmt, ...) PRINTF_LIKE(1, 2);
/* Symbolic errno name ("EINVAL"); "0" for 0; "E<n>" if unknown. */
const char *errname(int e);

/* ---- records (labels are checked for uniqueness per record kind) ---- */
void rec_call(const char *label, long ret, int err, int ret_is_fd);
void rec_out(const char *label, const char *fmt, ...) PRINTF_LIKE(2, 3);
void rec_state(const char *label, const char *fmt, ...) PRINTF_LIKE(2, 3);
void rec_info(const char *label, const void *buf, size_t len);
void rec_dma(const char *label, const char *result);

/* ---- recorded legacy calls (each prints one CALL record) ----
 * Return the call's return value; last_errno holds errno (0 on success). */
extern int last_errno;
int c_open(const char *label, const char *path, int flags);
int c_close(const char *label, int fd);
int c_ioctl(const char *label, int fd, unsigned long req, unsigned long arg);
int c_ioctl_ptr(const char *label, int fd, unsigned long req, void *arg);
/* like c_ioctl_ptr but a non-negative result is an fd: prints ret=FD */
int c_ioctl_fd(const char *label, int fd, unsigned long req, void *arg);

/* ---- devices and groups ---- */
/* PCI address from env var; dies when unset or empty. */
const char *env_bdf(const char *var);
/* Group number from readlink /sys/bus/pci/devices/<bdf>/iommu_group; dies on failure.
 * VFIO_TEST_SYSFS (default "/sys") is a test hook for running against a fake tree. */
int group_of(const char *bdf);
/* edu (VFIO_TEST_EDU) and ivshmem (VFIO_TEST_IVSHMEM), which must be in different groups. */
void edu_and_ivshmem(const char **edu, const char **ivs, int *ge, int *gi);
/* Opens /dev/vfio/<N> (recorded); dies on failure. */
int open_group(const char *label, int group);
/* Opens /dev/vfio/vfio (recorded); dies on failure. */
int open_container(const char *label);
/* GET_STATUS with a full argsz, prints CALL and OUT flags=0x.. */
int group_status(const char *label, int gfd);
/* SET_CONTAINER / UNSET_CONTAINER, recorded */
int set_container(const char *label, int gfd, int cfd);
int unset_container(const char *label, int gfd);
/* GET_DEVICE_FD for bdf (recorded, ret=FD); returns fd or -1 */
int get_device_fd(const char *label, int gfd, const char *bdf);
/* A device fd the client needs only to hold (not to drive): GET_DEVICE_FD, dying on
 * failure.  With VFIO_TEST_NO_DEVICE_FD=1 nothing is called or recorded and NO_DEVICE is
 * returned: a client without the preload on vfio-shim's CUSE node cannot get device fds
 * (docs/cuse.md), and that mode compares such clients with type1 without them. */
#define NO_DEVICE (-2)
int hold_device(const char *label, int gfd, const char *bdf);
/* Closes what hold_device returned (recorded), nothing for NO_DEVICE. */
void release_device(const char *label, int dev);

/* ---- memory ----
 * VFIO_TEST_MEMORY=shared makes both return MAP_SHARED memfd memory (hugetlb memfd for
 * map_huge), which a CUSE daemon can pin for a client without the preload; the default is
 * private anonymous memory.  Transcripts never depend on which. */
/* Anonymous private mapping, every page written; dies on failure. */
void *map_anon(size_t size);
/* Anonymous MAP_HUGETLB (2 MiB pages) mapping, written; dies on failure. */
void *map_huge(size_t size);
/* Fills buf with a deterministic pattern derived from seed. */
void fill_pattern(void *buf, size_t len, unsigned seed);

/* ---- type1 helpers ---- */
/* MAP_DMA, recorded. flags as given (use MAP_RW for read|write). */
#define MAP_RW (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)
int dma_map(const char *label, int cfd, uint64_t iova, uint64_t size,
	    const void *vaddr, uint32_t flags);
/* MAP_DMA with an explicit argsz, recorded. */
int dma_map_argsz(const char *label, int cfd, uint32_t argsz, uint64_t iova,
		  uint64_t size, uint64_t vaddr, uint32_t flags);
/* UNMAP_DMA, recorded: CALL then OUT size=<struct size after the call>. */
int dma_unmap(const char *label, int cfd, uint64_t iova, uint64_t size,
	      uint32_t flags, uint64_t *size_out);
/* UNMAP_DMA with an explicit argsz, recorded the same way. */
int dma_unmap_argsz(const char *label, int cfd, uint32_t argsz, uint64_t iova,
		    uint64_t size, uint32_t flags);
/* UNMAP_DMA flags=ALL, recorded (CALL + OUT size). */
int dma_unmap_all(const char *label, int cfd);
/* Unrecorded MAP/UNMAP (probes, bulk loops): return 0 or errno. */
int dma_map_quiet(int cfd, uint64_t iova, uint64_t size, const void *vaddr, uint32_t flags);
int dma_unmap_quiet(int cfd, uint64_t iova, uint64_t size, uint32_t flags, uint64_t *size_out);

/*
 * Probe whether a 4 KiB IOVA page is mapped: MAP 4 KiB there (unrecorded);
 * EEXIST -> '1' (mapped); success -> '0' (free; the probe is unmapped again,
 * 'U' if that unmap did not return 4 KiB); any other errno -> 'E'.
 */
char probe_page(int cfd, uint64_t iova);
/* Probe every page of [iova, iova+size) into out (NUL terminated). */
void probe_range(int cfd, uint64_t iova, uint64_t size, char *out, size_t outlen);

#define MAX_RANGES 16
struct iommu_caps {
	uint32_t argsz, flags, cap_offset;
	uint64_t pgsizes;
	int have_ranges;
	uint32_t nr_ranges;
	uint64_t range_start[MAX_RANGES], range_end[MAX_RANGES];
	int have_avail;
	uint32_t avail;
	int have_mig;
	uint32_t mig_flags;
	uint64_t mig_pgsizes, mig_max_bitmap;
	int unknown_caps;
};
/*
 * QEMU-style GET_INFO: first call with argsz = sizeof(struct
 * vfio_iommu_type1_info) (CALL <label>.first, OUT, INFO), then, if the kernel
 * asks for more, again with the needed argsz (CALL <label>.full, OUT, INFO,
 * and OUT <label>.caps / .range<i> with the parsed capabilities).
 * Returns 0 on success (caps filled), -1 otherwise.
 */
int get_iommu_info(const char *label, int cfd, struct iommu_caps *caps);
/* Same, unrecorded except for one OUT <label> avail=<n|none>. */
int get_dma_avail(const char *label, int cfd);
/* Prints OUT <label>.range<i> start= end= for every IOVA range */
void print_ranges(const char *label, const struct iommu_caps *caps);

/* capability helpers for the RLIMIT_MEMLOCK cases: drop/raise CAP_IPC_LOCK
 * in the effective set. Return 1 if the capability was effective before. */
int cap_ipc_lock_drop(void);
void cap_ipc_lock_restore(int was_effective);
/* The same for any capability (CAP_SYS_RAWIO for the no-IOMMU cases). */
int cap_effective_drop(int cap);
void cap_effective_restore(int cap, int was_effective);

/* ---- QEMU's edu device (BAR0: 0x00 ident 0x010000ed; 0x80/0x88/0x90/0x98 DMA source,
 * destination, count, command, 64-bit; a 4 KiB device buffer at 0x40000; DMA addresses
 * within 28 bits) ---- */
#define EDU_BUF 0x40000ULL
/* BAR0 and config region info (OUT region.bar0.<sfx>, region.config.<sfx>), memory and bus
 * mastering on, BAR0 mmapped and its ident recorded (OUT ident.<sfx>); dies on failure. */
volatile void *edu_bar(const char *sfx, int dev, size_t *size);
/* One edu DMA of cnt bytes (to_ram: device buffer -> RAM); 0 when done, -1 on timeout. */
int edu_dma(volatile void *bar, uint64_t src, uint64_t dst, uint64_t cnt, int to_ram);

#endif /* VFIO_COMPAT_COMMON_H */
