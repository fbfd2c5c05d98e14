/* The preload's cost on fds that are not its own: ioctl(FIONREAD) on a pipe and
 * close(dup(pipe)), timed; run with and without LD_PRELOAD and compare.
 * Prints "BENCH <name> <ns> ns". Env: BENCH_ITERS. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
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

int main(void)
{
	long iters = getenv("BENCH_ITERS") ? atol(getenv("BENCH_ITERS")) : 2000000;
	int p[2], avail;
	if (pipe(p))
		return 1;
	double ioctl_r[7], close_r[7];
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
	}
	qsort(ioctl_r, 7, sizeof(double), cmp_double);
	qsort(close_r, 7, sizeof(double), cmp_double);
	printf("BENCH ioctl_pipe_ns %.1f ns\n", ioctl_r[3] * 1e9);
	printf("BENCH dup_close_pipe_ns %.1f ns\n", close_r[3] * 1e9);
	return 0;
}
