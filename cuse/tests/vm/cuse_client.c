/* Test client for vfio-shim-cuse --test-device (see cuse/src/test_device.rs).
 *
 *   cuse_client basic <dev>            every test ioctl; one "ok"/"FAIL" line each; exit 0 if all ok
 *   cuse_client loop <dev> <seconds>   ioctls in a loop until one fails (exit 0, prints the errno)
 *                                      or time runs out (exit 2)
 *   cuse_client hold <dev> <flagfile>  open, check, print "ready", wait for <flagfile>, then expect
 *                                      an ioctl to fail (exit 0) rather than succeed (exit 1)
 *   cuse_client gone <dev>             expect open to fail (exit 0)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TEST_TYPE ';'
#define TEST_INCREMENT _IO(TEST_TYPE, 200)
#define TEST_PID _IO(TEST_TYPE, 201)
#define TEST_SLEEP _IO(TEST_TYPE, 202)
#define TEST_OPEN_FILES _IO(TEST_TYPE, 203)

struct inc {
	uint32_t argsz;
	uint32_t flags;
	uint64_t value;
};

static int failures;

static void check(int cond, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void check(int cond, const char *name, const char *fmt, ...)
{
	va_list ap;
	printf("%s %s", cond ? "ok  " : "FAIL", name);
	if (fmt && *fmt) {
		printf(": ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	printf("\n");
	fflush(stdout);
	if (!cond)
		failures++;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ioctl returning -errno on failure. */
static long xioctl(int fd, unsigned long cmd, unsigned long arg)
{
	long r = ioctl(fd, cmd, arg);
	return r < 0 ? -errno : r;
}

static void on_alarm(int sig) { (void)sig; }

static int basic(const char *dev)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	check(fd >= 0, "open", "%s", fd >= 0 ? "" : strerror(errno));
	if (fd < 0)
		return 1;

	long r = xioctl(fd, TEST_PID, 0);
	check(r == getpid(), "pid", "ioctl %ld, getpid %d", r, getpid());

	struct inc s = { .argsz = sizeof(s), .flags = 0x5a, .value = 41 };
	r = xioctl(fd, TEST_INCREMENT, (unsigned long)&s);
	check(r == 0 && s.value == 42 && s.flags == 0x5a && s.argsz == sizeof(s), "increment",
	      "r %ld argsz %u flags %#x value %llu", r, s.argsz, s.flags, (unsigned long long)s.value);

	/* argsz larger than the struct: the struct is updated, the rest left alone. */
	unsigned char big[64];
	memset(big, 0xaa, sizeof(big));
	struct inc *b = (struct inc *)big;
	b->argsz = sizeof(big);
	b->flags = 7;
	b->value = 1000;
	r = xioctl(fd, TEST_INCREMENT, (unsigned long)big);
	int tail_ok = 1;
	for (size_t i = sizeof(struct inc); i < sizeof(big); i++)
		tail_ok &= big[i] == 0xaa;
	check(r == 0 && b->value == 1001 && b->argsz == 64 && b->flags == 7 && tail_ok, "argsz-larger",
	      "r %ld value %llu tail %s", r, (unsigned long long)b->value, tail_ok ? "untouched" : "CHANGED");

	uint32_t small_sizes[] = { 0, 3, 4, 15 };
	for (size_t i = 0; i < sizeof(small_sizes) / sizeof(small_sizes[0]); i++) {
		struct inc t = { .argsz = small_sizes[i], .value = 5 };
		r = xioctl(fd, TEST_INCREMENT, (unsigned long)&t);
		char name[32];
		snprintf(name, sizeof(name), "argsz-%u-einval", small_sizes[i]);
		check(r == -EINVAL && t.value == 5, name, "r %ld (%s)", r, strerror((int)-r));
	}

	r = xioctl(fd, TEST_INCREMENT, 0);
	check(r == -EFAULT, "null-efault", "r %ld (%s)", r, strerror((int)-r));
	r = xioctl(fd, TEST_INCREMENT, 8);
	check(r == -EFAULT, "badptr-efault", "r %ld (%s)", r, strerror((int)-r));

	/* A struct running into an unmapped page: EFAULT. One that ends right before it, with an
	 * argsz reaching past it, works: only the struct is read, only 16 bytes written (as VFIO). */
	long pg = sysconf(_SC_PAGESIZE);
	unsigned char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED && mprotect(m + pg, pg, PROT_NONE) == 0) {
		struct inc *edge = (struct inc *)(m + pg - 8);
		edge->argsz = 16; /* only 8 bytes of it are mapped */
		r = xioctl(fd, TEST_INCREMENT, (unsigned long)edge);
		check(r == -EFAULT, "guard-page-efault", "r %ld (%s)", r, strerror((int)-r));
		struct inc *fit = (struct inc *)(m + pg - 16);
		fit->argsz = 64;
		fit->flags = 1;
		fit->value = 9;
		r = xioctl(fd, TEST_INCREMENT, (unsigned long)fit);
		check(r == 0 && fit->value == 10, "argsz-past-mapping", "r %ld (%s) value %llu", r,
		      strerror((int)-r), (unsigned long long)fit->value);
		munmap(m, 2 * pg);
	} else {
		check(0, "guard-page-setup", "%s", strerror(errno));
	}

	r = xioctl(fd, _IO(TEST_TYPE, 100), 0);
	check(r == -ENOTTY, "unknown-enotty", "r %ld (%s)", r, strerror((int)-r));

	/* OPEN and RELEASE reach the device: the release of a closed fd is done when close returns. */
	long before = xioctl(fd, TEST_OPEN_FILES, 0);
	int fd2 = open(dev, O_RDWR | O_CLOEXEC);
	long during = xioctl(fd, TEST_OPEN_FILES, 0);
	if (fd2 >= 0)
		close(fd2);
	long after = xioctl(fd, TEST_OPEN_FILES, 0);
	check(fd2 >= 0 && during == before + 1 && after == before, "open-release",
	      "open files %ld -> %ld -> %ld", before, during, after);

	/* A signal during a long ioctl: FUSE_INTERRUPT reaches the device, which gives up (EINTR). */
	struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
	sigaction(SIGALRM, &sa, NULL);
	double t0 = now();
	alarm(1);
	r = xioctl(fd, TEST_SLEEP, 10000);
	double dt = now() - t0;
	alarm(0);
	check(r == -EINTR && dt < 5, "interrupt", "r %ld (%s) after %.2f s", r, strerror((int)-r), dt);

	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
	int pr = poll(&p, 1, 1000);
	check(pr == 1 && (p.revents & (POLLIN | POLLOUT)) == (POLLIN | POLLOUT), "poll-default",
	      "poll %d revents %#x", pr, p.revents);

	char c;
	ssize_t n = read(fd, &c, 1);
	check(n < 0 && errno == ENOSYS, "read-enosys", "%zd (%s)", n, n < 0 ? strerror(errno) : "");

	check(close(fd) == 0, "close", "%s", "");
	printf("client uid %d: %d failure(s)\n", getuid(), failures);
	return failures ? 1 : 0;
}

static int loop(const char *dev, int seconds)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("loop: open: %s\n", strerror(errno));
		return 1;
	}
	double end = now() + seconds;
	unsigned long calls = 0;
	while (now() < end) {
		struct inc s = { .argsz = sizeof(s), .value = calls };
		long r = xioctl(fd, TEST_INCREMENT, (unsigned long)&s);
		if (r == 0)
			r = xioctl(fd, TEST_SLEEP, 100); /* often in flight when the daemon dies */
		if (r < 0) {
			printf("loop uid %d: error %s (%ld) after %lu calls\n", getuid(), strerror((int)-r), -r, calls);
			/* Every later call fails too, at once. */
			double t = now();
			long r2 = xioctl(fd, TEST_PID, 0);
			printf("loop uid %d: next call: %s in %.3f s\n", getuid(), r2 < 0 ? strerror((int)-r2) : "success",
			       now() - t);
			close(fd);
			return r2 < 0 ? 0 : 1;
		}
		calls++;
	}
	printf("loop uid %d: no error in %d s (%lu calls)\n", getuid(), seconds, calls);
	return 2;
}

static int hold(const char *dev, const char *flag)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0 || xioctl(fd, TEST_PID, 0) != getpid()) {
		printf("hold: setup failed: %s\n", strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	struct stat st;
	while (stat(flag, &st) != 0)
		usleep(20000);
	double t = now();
	long r = xioctl(fd, TEST_PID, 0);
	printf("hold: ioctl after the daemon stopped: %s in %.3f s\n", r < 0 ? strerror((int)-r) : "success", now() - t);
	int cr = close(fd);
	printf("hold: close: %s\n", cr == 0 ? "ok" : strerror(errno));
	return r < 0 ? 0 : 1;
}

static int gone(const char *dev)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	printf("gone: open: %s\n", fd < 0 ? strerror(errno) : "success");
	return fd < 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "basic"))
		return basic(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "loop"))
		return loop(argv[2], atoi(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "hold"))
		return hold(argv[2], argv[3]);
	if (argc >= 3 && !strcmp(argv[1], "gone"))
		return gone(argv[2]);
	fprintf(stderr, "usage: %s basic|loop|hold|gone <dev> [seconds|flagfile]\n", argv[0]);
	return 2;
}
