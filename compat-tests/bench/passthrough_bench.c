/* The preload's cost on fds that are not its own: ioctl(FIONREAD) on a pipe,
 * close(dup(pipe)), and a sendmsg+recvmsg of one byte over a unix socketpair, without and
 * with one fd in SCM_RIGHTS (the receive path the preload watches for handoffs), timed; run
 * with and without LD_PRELOAD and compare.
 * Prints "BENCH <name> <ns> ns". Env: BENCH_ITERS (the message pairs run a tenth of it). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* One byte from s[0] to s[1], with fd as SCM_RIGHTS when fd >= 0 (the received copy is
 * closed). 0 on success. */
static int msg_pair(int s[2], int fd)
{
	char byte = 'x';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	int got;

	if (fd >= 0) {
		m.msg_control = u.buf;
		m.msg_controllen = sizeof(u.buf);
		CMSG_FIRSTHDR(&m)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&m)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&m)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&m)), &fd, sizeof(int));
	}
	if (sendmsg(s[0], &m, 0) != 1)
		return -1;
	m.msg_controllen = fd >= 0 ? sizeof(u.buf) : 0;
	if (recvmsg(s[1], &m, 0) != 1)
		return -1;
	if (fd >= 0) {
		if (m.msg_controllen < CMSG_LEN(sizeof(int)))
			return -1;
		memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
		return close(got);
	}
	return 0;
}

int main(void)
{
	long iters = getenv("BENCH_ITERS") ? atol(getenv("BENCH_ITERS")) : 2000000;
	int p[2], avail;
	if (pipe(p))
		return 1;
	double ioctl_r[7], close_r[7], msg_r[7], msg_fd_r[7];
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv))
		return 1;
	for (int r = 0; r < 7; r++) {
		double t = now();
		for (long i = 0; i < iters; i++)
			if (ioctl(p[0], FIONREAD, &avail))
				return 1;
		ioctl_r[r] = (now() - t) / iters;
		t = now();
		for (long i = 0; i < iters; i++)
			if (close(dup(p[0])))
				return 1;
		close_r[r] = (now() - t) / iters;
		t = now();
		for (long i = 0; i < iters / 10; i++)
			if (msg_pair(sv, -1))
				return 1;
		msg_r[r] = (now() - t) / (iters / 10);
		t = now();
		for (long i = 0; i < iters / 10; i++)
			if (msg_pair(sv, p[0]))
				return 1;
		msg_fd_r[r] = (now() - t) / (iters / 10);
	}
	qsort(ioctl_r, 7, sizeof(double), cmp_double);
	qsort(close_r, 7, sizeof(double), cmp_double);
	qsort(msg_r, 7, sizeof(double), cmp_double);
	qsort(msg_fd_r, 7, sizeof(double), cmp_double);
	printf("BENCH ioctl_pipe_ns %.1f ns\n", ioctl_r[3] * 1e9);
	printf("BENCH dup_close_pipe_ns %.1f ns\n", close_r[3] * 1e9);
	printf("BENCH msg_pair_ns %.1f ns\n", msg_r[3] * 1e9);
	printf("BENCH msg_fd_pair_ns %.1f ns\n", msg_fd_r[3] * 1e9);
	return 0;
}
