// SPDX-License-Identifier: Apache-2.0 OR MIT
/* Shared helpers of the compat-test clients; see common.h. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/pci_regs.h>
#include <linux/capability.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif

int last_errno;

/* ------------------------------------------------------------------ */
/* errno names                                                          */

static const struct {
	int e;
	const char *name;
} errnames[] = {
#define E(x) { x, #x }
	E(EPERM), E(ENOENT), E(ESRCH), E(EINTR), E(EIO), E(ENXIO), E(E2BIG),
	E(ENOEXEC), E(EBADF), E(ECHILD), E(EAGAIN), E(ENOMEM), E(EACCES),
	E(EFAULT), E(ENOTBLK), E(EBUSY), E(EEXIST), E(EXDEV), E(ENODEV),
	E(ENOTDIR), E(EISDIR), E(EINVAL), E(ENFILE), E(EMFILE), E(ENOTTY),
	E(ETXTBSY), E(EFBIG), E(ENOSPC), E(ESPIPE), E(EROFS), E(EMLINK),
	E(EPIPE), E(EDOM), E(ERANGE), E(EDEADLK), E(ENAMETOOLONG), E(ENOLCK),
	E(ENOSYS), E(ENOTEMPTY), E(ELOOP), E(ENOMSG), E(EIDRM), E(ENODATA),
	E(ETIME), E(ENOLINK), E(EPROTO), E(EBADMSG), E(EOVERFLOW), E(ENOTUNIQ),
	E(EBADFD), E(EREMCHG), E(EILSEQ), E(EUSERS), E(ENOTSOCK),
	E(EDESTADDRREQ), E(EMSGSIZE), E(EPROTOTYPE), E(ENOPROTOOPT),
	E(EPROTONOSUPPORT), E(EOPNOTSUPP), E(EAFNOSUPPORT), E(EADDRINUSE),
	E(EADDRNOTAVAIL), E(ENETDOWN), E(ENETUNREACH), E(ECONNABORTED),
	E(ECONNRESET), E(ENOBUFS), E(EISCONN), E(ENOTCONN), E(ETIMEDOUT),
	E(ECONNREFUSED), E(EHOSTUNREACH), E(EALREADY), E(EINPROGRESS),
	E(ESTALE), E(EDQUOT), E(ENOMEDIUM), E(EMEDIUMTYPE), E(ECANCELED),
	E(ENOKEY), E(EKEYEXPIRED), E(EKEYREVOKED), E(EKEYREJECTED),
	E(EOWNERDEAD), E(ENOTRECOVERABLE), E(ERFKILL), E(EHWPOISON),
	E(EREMOTEIO),
#undef E
};

const char *errname(int e)
{
	static char buf[4][16];
	static unsigned n;
	size_t i;

	if (e == 0)
		return "0";
	for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].e == e)
			return errnames[i].name;
	n = (n + 1) % 4;
	snprintf(buf[n], sizeof(buf[n]), "E%d", e);
	return buf[n];
}

/* ------------------------------------------------------------------ */
/* labels                                                               */

const char *L(const char *fmt, ...)
{
	static char ring[16][160];
	static unsigned n;
	va_list ap;

	n = (n + 1) % 16;
	va_start(ap, fmt);
	vsnprintf(ring[n], sizeof(ring[n]), fmt, ap);
	va_end(ap);
	return ring[n];
}

enum { K_CALL, K_OUT, K_INFO, K_STATE, K_DMA, K_NR };
static const char *const kind_names[K_NR] = { "CALL", "OUT", "INFO", "STATE", "DMA" };

#define SEEN_SLOTS 8192
static char *seen[K_NR][SEEN_SLOTS];

static unsigned long hash_str(const char *s)
{
	unsigned long h = 5381;

	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h;
}

/* Labels are comparison keys: refuse duplicates and whitespace. */
static void check_label(int kind, const char *label)
{
	unsigned long h = hash_str(label) % SEEN_SLOTS;
	unsigned long probes;
	const char *p;

	if (!*label)
		die("empty label");
	for (p = label; *p; p++)
		if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '=')
			die("bad character in label '%s'", label);
	for (probes = 0; probes < SEEN_SLOTS; probes++) {
		char **slot = &seen[kind][(h + probes) % SEEN_SLOTS];

		if (!*slot) {
			*slot = strdup(label);
			if (!*slot)
				die("out of memory");
			return;
		}
		if (!strcmp(*slot, label))
			die("duplicate %s label '%s' (client bug)", kind_names[kind], label);
	}
	die("too many labels");
}

/* ------------------------------------------------------------------ */
/* records                                                              */

void client_init(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
}

void end_ok(void)
{
	printf("END status=ok\n");
	fflush(stdout);
	exit(0);
}

void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "FATAL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	printf("END status=fail\n");
	fflush(stdout);
	exit(1);
}

void rec_call(const char *label, long ret, int err, int ret_is_fd)
{
	check_label(K_CALL, label);
	if (ret_is_fd && ret >= 0)
		printf("CALL %s ret=FD errno=0\n", label);
	else
		printf("CALL %s ret=%ld errno=%s\n", label, ret, ret < 0 ? errname(err) : "0");
}

static void rec_kv(int kind, const char *label, const char *fmt, va_list ap)
{
	check_label(kind, label);
	printf("%s %s ", kind_names[kind], label);
	vprintf(fmt, ap);
	printf("\n");
}

void rec_out(const char *label, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rec_kv(K_OUT, label, fmt, ap);
	va_end(ap);
}

void rec_state(const char *label, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rec_kv(K_STATE, label, fmt, ap);
	va_end(ap);
}

void rec_info(const char *label, const void *buf, size_t len)
{
	const unsigned char *b = buf;
	size_t i;

	check_label(K_INFO, label);
	printf("INFO %s hex=", label);
	for (i = 0; i < len; i++)
		printf("%02x", b[i]);
	printf("\n");
}

void rec_dma(const char *label, const char *result)
{
	check_label(K_DMA, label);
	printf("DMA %s result=%s\n", label, result);
}

/* ------------------------------------------------------------------ */
/* recorded legacy calls                                                */

int c_open(const char *label, const char *path, int flags)
{
	int ret = lg_open(path, flags);

	last_errno = ret < 0 ? errno : 0;
	rec_call(label, ret, last_errno, 1);
	errno = last_errno;
	return ret;
}

int c_close(const char *label, int fd)
{
	int ret = lg_close(fd);

	last_errno = ret < 0 ? errno : 0;
	rec_call(label, ret, last_errno, 0);
	errno = last_errno;
	return ret;
}

int c_ioctl(const char *label, int fd, unsigned long req, unsigned long arg)
{
	int ret = lg_ioctl(fd, req, arg);

	last_errno = ret < 0 ? errno : 0;
	rec_call(label, ret, last_errno, 0);
	errno = last_errno;
	return ret;
}

int c_ioctl_ptr(const char *label, int fd, unsigned long req, void *arg)
{
	return c_ioctl(label, fd, req, (unsigned long)arg);
}

int c_ioctl_fd(const char *label, int fd, unsigned long req, void *arg)
{
	int ret = lg_ioctl(fd, req, (unsigned long)arg);

	last_errno = ret < 0 ? errno : 0;
	rec_call(label, ret, last_errno, 1);
	errno = last_errno;
	return ret;
}

/* ------------------------------------------------------------------ */
/* devices and groups                                                   */

const char *env_bdf(const char *var)
{
	const char *v = getenv(var);

	if (!v || !*v)
		die("environment variable %s (PCI address of the test device) is not set", var);
	return v;
}

int group_of(const char *bdf)
{
	const char *sysfs = getenv("VFIO_TEST_SYSFS");
	char path[PATH_MAX], link[PATH_MAX];
	const char *base;
	char *end;
	ssize_t n;
	long g;

	if (!sysfs || !*sysfs)
		sysfs = "/sys";
	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/iommu_group", sysfs, bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		die("readlink %s: %s", path, strerror(errno));
	link[n] = 0;
	base = strrchr(link, '/');
	base = base ? base + 1 : link;
	errno = 0;
	g = strtol(base, &end, 10);
	if (errno || *end || end == base || g < 0 || g > INT_MAX)
		die("cannot parse group number from %s -> %s", path, link);
	return (int)g;
}

int open_group(const char *label, int group)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	fd = c_open(label, path, O_RDWR);
	if (fd < 0)
		die("open %s: %s", path, strerror(last_errno));
	return fd;
}

int open_container(const char *label)
{
	int fd = c_open(label, "/dev/vfio/vfio", O_RDWR);

	if (fd < 0)
		die("open /dev/vfio/vfio: %s", strerror(last_errno));
	return fd;
}

int group_status(const char *label, int gfd)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };
	int ret = c_ioctl_ptr(label, gfd, VFIO_GROUP_GET_STATUS, &st);

	if (ret == 0)
		rec_out(label, "flags=0x%x", st.flags);
	return ret;
}

int set_container(const char *label, int gfd, int cfd)
{
	int fd = cfd;

	return c_ioctl_ptr(label, gfd, VFIO_GROUP_SET_CONTAINER, &fd);
}

int unset_container(const char *label, int gfd)
{
	return c_ioctl(label, gfd, VFIO_GROUP_UNSET_CONTAINER, 0);
}

int get_device_fd(const char *label, int gfd, const char *bdf)
{
	char name[128];

	snprintf(name, sizeof(name), "%s", bdf);
	return c_ioctl_fd(label, gfd, VFIO_GROUP_GET_DEVICE_FD, name);
}

int hold_device(const char *label, int gfd, const char *bdf)
{
	const char *no = getenv("VFIO_TEST_NO_DEVICE_FD");
	int dev;

	if (no && strcmp(no, "1") == 0)
		return NO_DEVICE;
	dev = get_device_fd(label, gfd, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD(%s) failed: %s", bdf, errname(last_errno));
	return dev;
}

void release_device(const char *label, int dev)
{
	if (dev != NO_DEVICE)
		c_close(label, dev);
}

/* ------------------------------------------------------------------ */
/* memory                                                               */

static int shared_memory(void)
{
	const char *m = getenv("VFIO_TEST_MEMORY");

	if (!m || !*m || strcmp(m, "private") == 0)
		return 0;
	if (strcmp(m, "shared") == 0)
		return 1;
	die("VFIO_TEST_MEMORY=%s: expected private or shared", m);
}

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26) /* MFD_HUGE_SHIFT 26, include/uapi/linux/memfd.h */
#endif

/* MAP_SHARED memory of a fresh memfd (hugetlb-backed when huge). */
static void *map_memfd(size_t size, int huge)
{
	unsigned flags = MFD_CLOEXEC | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
	int fd = memfd_create(huge ? "vfio-test-huge" : "vfio-test", flags);
	void *p;

	if (fd < 0)
		die("memfd_create: %s", strerror(errno));
	if (ftruncate(fd, (off_t)size) < 0)
		die("ftruncate memfd %zu bytes: %s", size, strerror(errno));
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap memfd %zu bytes: %s", size, strerror(errno));
	close(fd);
	return p;
}

void fill_pattern(void *buf, size_t len, unsigned seed)
{
	unsigned char *b = buf;
	uint32_t x = 0x9e3779b9u ^ (seed * 0x85ebca6bu);
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		b[i] = (unsigned char)x;
	}
}

void *map_anon(size_t size)
{
	void *p;

	if (shared_memory()) {
		p = map_memfd(size, 0);
		memset(p, 0x5a, size);
		return p;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap anonymous %zu bytes: %s", size, strerror(errno));
	memset(p, 0x5a, size);
	return p;
}

void *map_huge(size_t size)
{
	void *p;

	if (shared_memory()) {
		p = map_memfd(size, 1);
		memset(p, 0xa5, size);
		return p;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);

	if (p == MAP_FAILED)
		die("mmap MAP_HUGETLB %zu bytes: %s (reserve 2 MiB hugepages: "
		    "echo N > /proc/sys/vm/nr_hugepages)", size, strerror(errno));
	memset(p, 0xa5, size);
	return p;
}

/* ------------------------------------------------------------------ */
/* type1                                                                */

int dma_map_argsz(const char *label, int cfd, uint32_t argsz, uint64_t iova,
		  uint64_t size, uint64_t vaddr, uint32_t flags)
{
	struct vfio_iommu_type1_dma_map m;

	memset(&m, 0, sizeof(m));
	m.argsz = argsz;
	m.flags = flags;
	m.vaddr = vaddr;
	m.iova = iova;
	m.size = size;
	return c_ioctl_ptr(label, cfd, VFIO_IOMMU_MAP_DMA, &m);
}

int dma_map(const char *label, int cfd, uint64_t iova, uint64_t size,
	    const void *vaddr, uint32_t flags)
{
	return dma_map_argsz(label, cfd, sizeof(struct vfio_iommu_type1_dma_map), iova, size,
			     (uint64_t)(uintptr_t)vaddr, flags);
}

int dma_unmap_argsz(const char *label, int cfd, uint32_t argsz, uint64_t iova,
		    uint64_t size, uint32_t flags)
{
	struct vfio_iommu_type1_dma_unmap u;
	int ret;

	memset(&u, 0, sizeof(u));
	u.argsz = argsz;
	u.flags = flags;
	u.iova = iova;
	u.size = size;
	ret = c_ioctl_ptr(label, cfd, VFIO_IOMMU_UNMAP_DMA, &u);
	rec_out(label, "size=0x%llx", (unsigned long long)u.size);
	return ret;
}

int dma_unmap(const char *label, int cfd, uint64_t iova, uint64_t size,
	      uint32_t flags, uint64_t *size_out)
{
	struct vfio_iommu_type1_dma_unmap u;
	int ret;

	memset(&u, 0, sizeof(u));
	u.argsz = sizeof(u);
	u.flags = flags;
	u.iova = iova;
	u.size = size;
	ret = c_ioctl_ptr(label, cfd, VFIO_IOMMU_UNMAP_DMA, &u);
	rec_out(label, "size=0x%llx", (unsigned long long)u.size);
	if (size_out)
		*size_out = u.size;
	return ret;
}

int dma_unmap_all(const char *label, int cfd)
{
	return dma_unmap(label, cfd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL, NULL);
}

int dma_map_quiet(int cfd, uint64_t iova, uint64_t size, const void *vaddr, uint32_t flags)
{
	struct vfio_iommu_type1_dma_map m;

	memset(&m, 0, sizeof(m));
	m.argsz = sizeof(m);
	m.flags = flags;
	m.vaddr = (uint64_t)(uintptr_t)vaddr;
	m.iova = iova;
	m.size = size;
	return lg_ioctl(cfd, VFIO_IOMMU_MAP_DMA, (unsigned long)&m) < 0 ? errno : 0;
}

int dma_unmap_quiet(int cfd, uint64_t iova, uint64_t size, uint32_t flags, uint64_t *size_out)
{
	struct vfio_iommu_type1_dma_unmap u;
	int ret;

	memset(&u, 0, sizeof(u));
	u.argsz = sizeof(u);
	u.flags = flags;
	u.iova = iova;
	u.size = size;
	ret = lg_ioctl(cfd, VFIO_IOMMU_UNMAP_DMA, (unsigned long)&u) < 0 ? errno : 0;
	if (size_out)
		*size_out = u.size;
	return ret;
}

char probe_page(int cfd, uint64_t iova)
{
	static void *probe_buf;
	uint64_t sz = 0;
	int e;

	if (!probe_buf)
		probe_buf = map_anon(PG);
	e = dma_map_quiet(cfd, iova, PG, probe_buf, MAP_RW);
	if (e == EEXIST)
		return '1';
	if (e)
		return 'E';
	if (dma_unmap_quiet(cfd, iova, PG, 0, &sz) || sz != PG)
		return 'U';
	return '0';
}

void probe_range(int cfd, uint64_t iova, uint64_t size, char *out, size_t outlen)
{
	size_t i, n = size / PG;

	if (n + 1 > outlen)
		n = outlen - 1;
	for (i = 0; i < n; i++)
		out[i] = probe_page(cfd, iova + i * PG);
	out[n] = 0;
}

static void parse_caps(const unsigned char *buf, uint32_t len, uint32_t off,
		       struct iommu_caps *c)
{
	int hops = 0;

	while (off && hops++ < 32) {
		struct vfio_info_cap_header h;

		if ((uint64_t)off + sizeof(h) > len) {
			c->unknown_caps++;
			return;
		}
		memcpy(&h, buf + off, sizeof(h));
		switch (h.id) {
		case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: {
			struct vfio_iommu_type1_info_cap_iova_range r;
			uint32_t i;

			if ((uint64_t)off + sizeof(r) > len)
				break;
			memcpy(&r, buf + off, sizeof(r));
			c->have_ranges = 1;
			c->nr_ranges = r.nr_iovas;
			for (i = 0; i < r.nr_iovas && i < MAX_RANGES; i++) {
				struct vfio_iova_range ir;
				uint64_t at = (uint64_t)off + sizeof(r) + i * sizeof(ir);

				if (at + sizeof(ir) > len)
					break;
				memcpy(&ir, buf + at, sizeof(ir));
				c->range_start[i] = ir.start;
				c->range_end[i] = ir.end;
			}
			break;
		}
		case VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: {
			struct vfio_iommu_type1_info_cap_migration m;

			if ((uint64_t)off + sizeof(m) > len)
				break;
			memcpy(&m, buf + off, sizeof(m));
			c->have_mig = 1;
			c->mig_flags = m.flags;
			c->mig_pgsizes = m.pgsize_bitmap;
			c->mig_max_bitmap = m.max_dirty_bitmap_size;
			break;
		}
		case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: {
			struct vfio_iommu_type1_info_dma_avail a;

			if ((uint64_t)off + sizeof(a) > len)
				break;
			memcpy(&a, buf + off, sizeof(a));
			c->have_avail = 1;
			c->avail = a.avail;
			break;
		}
		default:
			c->unknown_caps++;
		}
		if (h.next && h.next <= off) {
			c->unknown_caps++; /* loop or backwards link */
			return;
		}
		off = h.next;
	}
}

static void out_info(const char *label, const struct vfio_iommu_type1_info *info)
{
	rec_out(label, "argsz=%u flags=0x%x pgsizes=0x%llx cap_offset=%u", info->argsz,
		info->flags, (unsigned long long)info->iova_pgsizes, info->cap_offset);
}

void print_ranges(const char *label, const struct iommu_caps *c)
{
	uint32_t i;

	for (i = 0; i < c->nr_ranges && i < MAX_RANGES; i++)
		rec_out(L("%s.range%u", label, i), "start=0x%llx end=0x%llx",
			(unsigned long long)c->range_start[i],
			(unsigned long long)c->range_end[i]);
}

static void out_caps(const char *label, const struct iommu_caps *c)
{
	char avail[24], mig[96], nr[16];

	if (c->have_avail)
		snprintf(avail, sizeof(avail), "%u", c->avail);
	else
		snprintf(avail, sizeof(avail), "none");
	if (c->have_mig)
		snprintf(mig, sizeof(mig), "mig_flags=0x%x mig_pgsizes=0x%llx mig_max_bitmap=0x%llx",
			 c->mig_flags, (unsigned long long)c->mig_pgsizes,
			 (unsigned long long)c->mig_max_bitmap);
	else
		snprintf(mig, sizeof(mig), "mig=none");
	if (c->have_ranges)
		snprintf(nr, sizeof(nr), "%u", c->nr_ranges);
	else
		snprintf(nr, sizeof(nr), "none");
	rec_out(L("%s.caps", label), "dma_avail=%s %s nr_ranges=%s unknown_caps=%d", avail, mig,
		nr, c->unknown_caps);
	print_ranges(label, c);
}

int get_iommu_info(const char *label, int cfd, struct iommu_caps *caps)
{
	struct vfio_iommu_type1_info first;
	unsigned char *buf;
	uint32_t need;
	int ret;

	memset(caps, 0, sizeof(*caps));
	memset(&first, 0, sizeof(first));
	first.argsz = sizeof(first);
	ret = c_ioctl_ptr(L("%s.first", label), cfd, VFIO_IOMMU_GET_INFO, &first);
	if (ret < 0)
		return -1;
	out_info(L("%s.first", label), &first);
	rec_info(L("%s.first", label), &first, sizeof(first));
	caps->argsz = first.argsz;
	caps->flags = first.flags;
	caps->pgsizes = first.iova_pgsizes;
	caps->cap_offset = first.cap_offset;
	if (first.argsz <= sizeof(first)) {
		if ((first.flags & VFIO_IOMMU_INFO_CAPS) && first.cap_offset)
			parse_caps((unsigned char *)&first, sizeof(first), first.cap_offset, caps);
		out_caps(label, caps);
		return 0;
	}

	need = first.argsz;
	if (need > (1u << 20))
		die("GET_INFO asks for argsz %u", need);
	buf = calloc(1, need);
	if (!buf)
		die("out of memory");
	((struct vfio_iommu_type1_info *)buf)->argsz = need;
	ret = c_ioctl_ptr(L("%s.full", label), cfd, VFIO_IOMMU_GET_INFO, buf);
	if (ret < 0) {
		free(buf);
		return -1;
	}
	{
		struct vfio_iommu_type1_info full;

		memcpy(&full, buf, sizeof(full));
		out_info(L("%s.full", label), &full);
		rec_info(L("%s.full", label), buf, need);
		caps->argsz = full.argsz;
		caps->flags = full.flags;
		caps->pgsizes = full.iova_pgsizes;
		caps->cap_offset = full.cap_offset;
		if ((full.flags & VFIO_IOMMU_INFO_CAPS) && full.cap_offset)
			parse_caps(buf, need, full.cap_offset, caps);
	}
	out_caps(label, caps);
	free(buf);
	return 0;
}

int get_dma_avail(const char *label, int cfd)
{
	static unsigned char buf[4096];
	struct vfio_iommu_type1_info info;
	struct iommu_caps c;
	int ret;

	memset(buf, 0, sizeof(buf));
	memset(&c, 0, sizeof(c));
	((struct vfio_iommu_type1_info *)buf)->argsz = sizeof(buf);
	ret = c_ioctl_ptr(label, cfd, VFIO_IOMMU_GET_INFO, buf);
	if (ret < 0)
		return -1;
	memcpy(&info, buf, sizeof(info));
	if ((info.flags & VFIO_IOMMU_INFO_CAPS) && info.cap_offset)
		parse_caps(buf, sizeof(buf), info.cap_offset, &c);
	if (c.have_avail)
		rec_out(label, "dma_avail=%u", c.avail);
	else
		rec_out(label, "dma_avail=none");
	return c.have_avail ? (int)c.avail : -1;
}

/* ------------------------------------------------------------------ */
/* CAP_IPC_LOCK                                                         */

static int capget_v3(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };

	return (int)syscall(SYS_capget, &h, d);
}

static int capset_v3(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };

	return (int)syscall(SYS_capset, &h, d);
}

int cap_effective_drop(int cap)
{
	struct __user_cap_data_struct d[2];
	uint32_t bit = 1u << (cap % 32);
	int idx = cap / 32;

	memset(d, 0, sizeof(d));
	if (capget_v3(d) < 0) {
		fprintf(stderr, "capget: %s\n", strerror(errno));
		return 0;
	}
	if (!(d[idx].effective & bit))
		return 0;
	d[idx].effective &= ~bit;
	if (capset_v3(d) < 0)
		die("capset (drop capability %d): %s", cap, strerror(errno));
	fprintf(stderr, "note: capability %d dropped from the effective set\n", cap);
	return 1;
}

void cap_effective_restore(int cap, int was_effective)
{
	struct __user_cap_data_struct d[2];
	uint32_t bit = 1u << (cap % 32);
	int idx = cap / 32;

	if (!was_effective)
		return;
	memset(d, 0, sizeof(d));
	if (capget_v3(d) < 0)
		die("capget: %s", strerror(errno));
	d[idx].effective |= bit;
	if (capset_v3(d) < 0)
		die("capset (restore capability %d): %s", cap, strerror(errno));
}

int cap_ipc_lock_drop(void)
{
	return cap_effective_drop(CAP_IPC_LOCK);
}

void cap_ipc_lock_restore(int was_effective)
{
	cap_effective_restore(CAP_IPC_LOCK, was_effective);
}

void edu_and_ivshmem(const char **edu, const char **ivs, int *ge, int *gi)
{
	*edu = env_bdf("VFIO_TEST_EDU");
	*ivs = env_bdf("VFIO_TEST_IVSHMEM");
	*ge = group_of(*edu);
	*gi = group_of(*ivs);
	if (*ge == *gi)
		die("edu (%s) and ivshmem (%s) share iommu group %d; two groups are needed", *edu,
		    *ivs, *ge);
}

/* ---- edu ---- */

#define EDU_IDENT_VALUE 0x010000edu
#define DMA_TIMEOUT_MS 10000

static volatile uint64_t *reg64(volatile void *bar, unsigned off)
{
	return (volatile uint64_t *)((volatile char *)bar + off);
}

int edu_dma(volatile void *bar, uint64_t src, uint64_t dst, uint64_t cnt, int to_ram)
{
	struct timespec t0, t;
	long ms;

	*reg64(bar, 0x80) = src;
	*reg64(bar, 0x88) = dst;
	*reg64(bar, 0x90) = cnt;
	*reg64(bar, 0x98) = 0x1 | (to_ram ? 0x2 : 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (!(*reg64(bar, 0x98) & 0x1))
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &t);
		ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
		if (ms > DMA_TIMEOUT_MS) {
			fprintf(stderr, "edu DMA did not complete within %d ms\n", DMA_TIMEOUT_MS);
			return -1;
		}
		usleep(1000);
	}
}

static int region_info(const char *label, int dev, unsigned index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	if (c_ioctl_ptr(label, dev, VFIO_DEVICE_GET_REGION_INFO, ri) < 0)
		return -1;
	rec_out(label, "flags=0x%x size=0x%llx", ri->flags, (unsigned long long)ri->size);
	return 0;
}

volatile void *edu_bar(const char *sfx, int dev, size_t *size)
{
	struct vfio_region_info bar0, cfg;
	volatile void *bar;
	uint16_t cmd;
	uint32_t ident;

	if (region_info(L("region.bar0.%s", sfx), dev, VFIO_PCI_BAR0_REGION_INDEX, &bar0) < 0)
		die("BAR0 region info failed: %s", errname(last_errno));
	if (region_info(L("region.config.%s", sfx), dev, VFIO_PCI_CONFIG_REGION_INDEX, &cfg) < 0)
		die("config region info failed: %s", errname(last_errno));
	if (!(bar0.flags & VFIO_REGION_INFO_FLAG_MMAP) || bar0.size < 0x100)
		die("edu BAR0 cannot be mmapped (flags 0x%x size 0x%llx)", bar0.flags,
		    (unsigned long long)bar0.size);
	if (pread(dev, &cmd, sizeof(cmd), (off_t)(cfg.offset + PCI_COMMAND)) != sizeof(cmd))
		die("pread PCI_COMMAND: %s", strerror(errno));
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (pwrite(dev, &cmd, sizeof(cmd), (off_t)(cfg.offset + PCI_COMMAND)) != sizeof(cmd))
		die("pwrite PCI_COMMAND: %s", strerror(errno));
	bar = mmap(NULL, bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, (off_t)bar0.offset);
	if (bar == MAP_FAILED)
		die("mmap BAR0: %s", strerror(errno));
	ident = *(volatile uint32_t *)bar;
	rec_out(L("ident.%s", sfx), "ident=0x%08x", ident);
	if (ident != EDU_IDENT_VALUE)
		die("edu ident 0x%08x, expected 0x%08x: is the device an edu?", ident, EDU_IDENT_VALUE);
	*size = bar0.size;
	return bar;
}
