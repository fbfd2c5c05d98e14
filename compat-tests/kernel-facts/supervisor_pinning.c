// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// The kernel facts the seccomp supervisor's pinning design rests on (issue "Static binaries"),
// asked of the kernel rather than read from its source. Run as root in the cdev-only guest:
//   supervisor_pinning
// Prints one "FACT <name>: <what the kernel answered>" line per question; exit status 0 when
// every call answered (the answers themselves are what docs/supervisor.md quotes).
//
//  1. compat: does /dev/iommu answer the legacy container ioctls on a kernel without groups
//     (VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION(TYPE1v2))? That is what a supervisor would
//     rely on to let the kernel continue a target's own VFIO_IOMMU_MAP_DMA.
//  2. ids: the IOAS ids a fresh iommufd gives its first two IOAS (a staging IOAS allocated
//     first has the same id in every container's iommufd).
//  3. copy: IOMMU_IOAS_COPY from a staging IOAS into another: the exact range, a sub-range, a
//     range past the mapping, a range over two adjacent mappings; whether the copy outlives
//     the staging mapping; what VmPin counts.
//  4. rewrite: a target stopped at a seccomp RET_TRACE stop on its VFIO_IOMMU_MAP_DMA; the
//     tracer rewrites the call into IOMMU_IOAS_MAP on the target's own iommufd into the
//     staging IOAS (the struct on the target's stack below its red zone), reads the result at
//     the syscall-exit stop, restores the argument registers and sets the legacy result; then
//     copies staging -> real IOAS on the iommufd it took with pidfd_getfd. The target checks
//     its registers survived and that the real IOAS holds its memory.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/iommufd.h>
#include <linux/seccomp.h>
#include <linux/vfio.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define KIB 1024ULL

static int failures;

static const char *res(long rc, int err)
{
	static char buf[4][96];
	static int n;
	char *b = buf[n++ % 4];
	if (rc < 0)
		snprintf(b, 96, "-1 %s", strerrorname_np(err) ? strerrorname_np(err) : "?");
	else
		snprintf(b, 96, "%ld", rc);
	return b;
}

static int ioas_alloc(int fd, uint32_t *id)
{
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	int rc = ioctl(fd, IOMMU_IOAS_ALLOC, &a);
	*id = a.out_ioas_id;
	return rc;
}

static int ioas_map(int fd, uint32_t ioas, void *va, uint64_t len, uint64_t iova)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas, .user_va = (uintptr_t)va, .length = len, .iova = iova,
	};
	return ioctl(fd, IOMMU_IOAS_MAP, &m);
}

static long ioas_unmap(int fd, uint32_t ioas, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = len };
	long rc = ioctl(fd, IOMMU_IOAS_UNMAP, &u);
	*unmapped = u.length;
	return rc;
}

static int ioas_copy(int fd, uint32_t dst, uint32_t src, uint64_t len, uint64_t dst_iova, uint64_t src_iova)
{
	struct iommu_ioas_copy c = {
		.size = sizeof(c),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.dst_ioas_id = dst, .src_ioas_id = src, .length = len, .dst_iova = dst_iova, .src_iova = src_iova,
	};
	return ioctl(fd, IOMMU_IOAS_COPY, &c);
}

static long vm_pin_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPin: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void fact_compat(void)
{
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0) {
		printf("FACT compat: open /dev/iommu: %s\n", strerrorname_np(errno));
		failures++;
		return;
	}
	long v = ioctl(fd, VFIO_GET_API_VERSION);
	int e = errno;
	long x = ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU);
	printf("FACT compat: /dev/iommu VFIO_GET_API_VERSION = %s, CHECK_EXTENSION(TYPE1v2) = %s\n",
	       res(v, e), res(x, errno));
	close(fd);
}

static void fact_ids_and_copy(void)
{
	int fd = open("/dev/iommu", O_RDWR);
	uint32_t staging = 0, real = 0;
	int a = ioas_alloc(fd, &staging), b = ioas_alloc(fd, &real);
	printf("FACT ids: first IOAS_ALLOC = %d id %u, second = %d id %u\n", a, staging, b, real);
	if (a || b) {
		failures++;
		return;
	}
	char *buf = mmap(NULL, 256 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(buf, 0x5a, 256 * KIB);
	long pin0 = vm_pin_kib(getpid());
	int m = ioas_map(fd, staging, buf, 64 * KIB, 0x100000);
	long pin1 = vm_pin_kib(getpid());
	int c_exact = ioas_copy(fd, real, staging, 64 * KIB, 0x100000, 0x100000);
	int e_exact = errno;
	long pin2 = vm_pin_kib(getpid());
	int c_sub = ioas_copy(fd, real, staging, 16 * KIB, 0x300000, 0x104000);
	int e_sub = errno;
	int c_past = ioas_copy(fd, real, staging, 128 * KIB, 0x400000, 0x100000);
	int e_past = errno;
	int c_before = ioas_copy(fd, real, staging, 8 * KIB, 0x480000, 0x0ff000);
	int e_before = errno;
	// two adjacent staging mappings, copied as one range
	int m2 = ioas_map(fd, staging, buf + 64 * KIB, 32 * KIB, 0x500000);
	int m3 = ioas_map(fd, staging, buf + 96 * KIB, 32 * KIB, 0x508000);
	int c_two = ioas_copy(fd, real, staging, 64 * KIB, 0x600000, 0x500000);
	int e_two = errno;
	// onto an IOVA the real IOAS already maps
	int c_busy = ioas_copy(fd, real, staging, 64 * KIB, 0x100000, 0x100000);
	int e_busy = errno;
	uint64_t gone = 0, kept = 0;
	long u_all = ioas_unmap(fd, staging, 0, UINT64_MAX, &gone);
	int e_all = errno;
	long pin3 = vm_pin_kib(getpid());
	long u_real = ioas_unmap(fd, real, 0x100000, 64 * KIB, &kept);
	int e_real = errno;
	printf("FACT copy: staging map 64 KiB = %d (VmPin %ld -> %ld kB)\n", m, pin0, pin1);
	printf("FACT copy: exact range = %s (VmPin %ld kB); sub-range = %s; past the mapping = %s; "
	       "starting before it = %s\n",
	       res(c_exact, e_exact), pin2, res(c_sub, e_sub), res(c_past, e_past), res(c_before, e_before));
	printf("FACT copy: over two adjacent mappings (%d, %d) = %s; onto a mapped IOVA = %s\n", m2, m3,
	       res(c_two, e_two), res(c_busy, e_busy));
	printf("FACT copy: unmap all of staging = %s (%llu bytes; VmPin %ld kB); real still maps the "
	       "copy: unmap = %s (%llu bytes)\n",
	       res(u_all, e_all), (unsigned long long)gone, pin3, res(u_real, e_real), (unsigned long long)kept);
	close(fd);
}

// The tracee: opens /dev/iommu, allocates staging then real, installs the filter (its
// VFIO_IOMMU_MAP_DMA goes to the tracer), maps 64 KiB by the legacy call, reports.
static int target(int report, const char *cdev)
{
	int fd = open("/dev/iommu", O_RDWR);
	uint32_t staging, real;
	if (fd < 0 || ioas_alloc(fd, &staging) || ioas_alloc(fd, &real))
		return 10;
	if (cdev) {
		int dev = open(cdev, O_RDWR);
		struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = fd };
		struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at), .pt_id = real };
		if (dev < 0 || ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind) || ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at))
			return 12;
	}
	dprintf(report, "%d %u %u\n", fd, staging, real);
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, VFIO_IOMMU_MAP_DMA, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		return 11;
	raise(SIGSTOP);   // the tracer seizes us here
	char *buf = mmap(NULL, 64 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(buf, 0xa5, 64 * KIB);
	struct vfio_iommu_type1_dma_map dm = {
		.argsz = sizeof(dm), .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)buf, .iova = 0x100000, .size = 64 * KIB,
	};
	// The raw syscall, so the registers it is made with are known: rdi, rsi, rdx must come
	// back as they went in (the C library's inline syscall assumes they do).
	long rc;
	unsigned long rdi = fd, rsi = VFIO_IOMMU_MAP_DMA, rdx = (uintptr_t)&dm;
	unsigned long rdi_out, rsi_out, rdx_out;
	__asm__ volatile("syscall"
			 : "=a"(rc), "=D"(rdi_out), "=S"(rsi_out), "=d"(rdx_out)
			 : "a"(SYS_ioctl), "D"(rdi), "S"(rsi), "d"(rdx)
			 : "rcx", "r11", "memory");
	int kept = rdi_out == rdi && rsi_out == rsi && rdx_out == rdx;
	uint64_t unmapped = 0;
	long u = ioas_unmap(fd, real, 0x100000, 64 * KIB, &unmapped);
	dprintf(report, "%ld %d %ld %llu %ld\n", rc, kept, u, (unsigned long long)unmapped, vm_pin_kib(getpid()));
	return 0;
}

static void fact_rewrite(const char *cdev)
{
	int p[2];
	if (pipe(p))
		return;
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		_exit(target(p[1], cdev));
	}
	close(p[1]);
	FILE *rep = fdopen(p[0], "r");
	int tfd;
	uint32_t staging, real;
	int status;
	if (fscanf(rep, "%d %u %u", &tfd, &staging, &real) != 3) {
		waitpid(pid, &status, 0);
		printf("FACT rewrite: target did not start (exit status %d)\n", WEXITSTATUS(status));
		failures++;
		return;
	}
	waitpid(pid, &status, WUNTRACED);   // its SIGSTOP
	if (ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL)) {
		printf("FACT rewrite: PTRACE_SEIZE: %s\n", strerrorname_np(errno));
		failures++;
		return;
	}
	kill(pid, SIGCONT);
	// Until the seccomp stop (the SIGCONT's signal-delivery stop comes first).
	for (;;) {
		if (waitpid(pid, &status, 0) < 0 || !WIFSTOPPED(status)) {
			printf("FACT rewrite: target ended before its MAP_DMA (status %#x)\n", status);
			failures++;
			return;
		}
		if (status >> 8 == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8)))
			break;
		ptrace(PTRACE_CONT, pid, 0, WSTOPSIG(status) == SIGCONT ? 0 : WSTOPSIG(status));
	}
	struct user_regs_struct r, saved;
	ptrace(PTRACE_GETREGS, pid, 0, &r);
	saved = r;
	struct vfio_iommu_type1_dma_map dm;
	struct iovec local = { &dm, sizeof(dm) }, remote = { (void *)r.rdx, sizeof(dm) };
	long got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
	// The native call, on the target's stack below its red zone.
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = staging, .user_va = dm.vaddr, .length = dm.size, .iova = dm.iova,
	};
	unsigned long scratch = (r.rsp - 128 - sizeof(m)) & ~15UL;
	struct iovec l2 = { &m, sizeof(m) }, r2 = { (void *)scratch, sizeof(m) };
	long put = process_vm_writev(pid, &l2, 1, &r2, 1, 0);
	r.rsi = IOMMU_IOAS_MAP;
	r.rdx = scratch;
	ptrace(PTRACE_SETREGS, pid, 0, &r);
	ptrace(PTRACE_SYSCALL, pid, 0, 0);
	waitpid(pid, &status, 0);   // syscall-exit stop
	ptrace(PTRACE_GETREGS, pid, 0, &r);
	long native = (long)r.rax;
	int pidfd = syscall(SYS_pidfd_open, pid, 0);
	int ours = syscall(SYS_pidfd_getfd, pidfd, tfd, 0);
	int e_getfd = errno;
	int copy = ours >= 0 ? ioas_copy(ours, real, staging, dm.size, dm.iova, dm.iova) : -1;
	int e_copy = errno;
	uint64_t gone = 0;
	long u = ours >= 0 ? ioas_unmap(ours, staging, 0, UINT64_MAX, &gone) : -1;
	long tracee_pin = vm_pin_kib(pid);
	saved.rax = native == 0 && copy == 0 ? 0 : (unsigned long)-EFAULT;
	ptrace(PTRACE_SETREGS, pid, 0, &saved);
	ptrace(PTRACE_CONT, pid, 0, 0);
	long trc, tu, tpin;
	int kept;
	unsigned long long tunmapped;
	int n = fscanf(rep, "%ld %d %ld %llu %ld", &trc, &kept, &tu, &tunmapped, &tpin);
	waitpid(pid, &status, 0);
	printf("FACT rewrite: %s\n", cdev ? cdev : "no device attached");
	printf("FACT rewrite: seccomp stop on VFIO_IOMMU_MAP_DMA, struct read %ld bytes, native struct "
	       "written %ld bytes below the red zone\n", got, put);
	printf("FACT rewrite: rewritten to IOMMU_IOAS_MAP(staging %u) = %s; pidfd_getfd = %s; copy to "
	       "real %u = %s (target's VmPin then %ld kB); unmap staging = %ld (%llu bytes)\n",
	       staging, res(native, native < 0 ? (int)-native : 0), res(ours, e_getfd), real, res(copy, e_copy), tracee_pin, u,
	       (unsigned long long)gone);
	if (n == 5)
		printf("FACT rewrite: target saw MAP_DMA = %ld, rdi/rsi/rdx preserved = %s; real IOAS unmap "
		       "= %ld (%llu bytes); target VmPin %ld kB; exit status %d\n",
		       trc, kept ? "yes" : "no", tu, tunmapped, tpin, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	else {
		printf("FACT rewrite: target did not report (status %#x)\n", status);
		failures++;
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	fact_compat();
	fact_ids_and_copy();
	fact_rewrite(NULL);
	if (argc > 1)
		fact_rewrite(argv[1]);
	return failures ? 1 : 0;
}
