/* lock_isolation: does a long MAP_DMA in one container hold up another container's calls?
 * Two containers, one on edu's group and one on ivshmem's group. A mapper maps and unmaps
 * LI_BIG bytes (1 GiB) in a loop on the first while 4 KiB MAP+UNMAP pairs are timed on the
 * second: first with the mapper stopped (idle), then with it running (busy). type1 holds one
 * lock per container, so its pairs barely notice; a shim holding one lock for everything
 * makes each pair wait for the pin in flight.
 * Modes: "threads" (one process, the mapper a second thread: the preload's case),
 * "processes" (the mapper a forked child with its own container: two clients of one CUSE
 * daemon), and "fairness" (below). Plain libc calls: the shim is reached by LD_PRELOAD or the daemon's node.
 * Prints "LOCK <mode> idle_us=<mean> busy_us=<mean> ratio=<busy/idle> big_maps=<n>
 * long_call_us=<mean> max_us=<idle>/<busy> median_us=<idle>/<busy> p99_us=<idle>/<busy>":
 * big_maps is the mapper's map/unmap cycles completed while the busy pairs ran, long_call_us
 * the mean of the longer call of each cycle.
 * Env: VFIO_TEST_EDU, VFIO_TEST_IVSHMEM (BDFs), LI_PAIRS (300), LI_BIG (1 GiB), LI_CYCLES (8),
 * BENCH_MEMORY=shared (memfd memory, which the CUSE daemon can pin for a client). */
#include "bench_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#define BIG_IOVA 0x100000000ULL
#define PAIR_IOVA 0x10000ULL

/* Shared with the mapper (a thread, or a child through a shared mapping). */
struct control {
	atomic_int go, stop, failed;
	atomic_long maps;
	/* Nanoseconds in the longer of each cycle's MAP and UNMAP, summed over the cycles. */
	atomic_long call_ns;
};

static int container_for(const char *var)
{
	return container_with_group(var, NULL);
}

static size_t big_size(void)
{
	return getenv("LI_BIG") ? strtoull(getenv("LI_BIG"), NULL, 0) : 1ULL << 30;
}

/* Maps and unmaps the big buffer on `c` from `go` until `stop`, counting completed maps. */
static void mapper(struct control *ctl, int c, void *buf, size_t size)
{
	while (!atomic_load(&ctl->go))
		usleep(1000);
	while (!atomic_load(&ctl->stop)) {
		double t0 = now(), t1, t2;
		int r = map(c, buf, BIG_IOVA, size);

		t1 = now();
		r = r || unmap(c, BIG_IOVA, size);
		t2 = now();
		/* the longer of the two calls */
		atomic_fetch_add(&ctl->call_ns, (long)((t2 - t1 > t1 - t0 ? t2 - t1 : t1 - t0) * 1e9));
		if (r) {
			perror("lock_isolation: mapper");
			atomic_store(&ctl->failed, 1);
			return;
		}
		atomic_fetch_add(&ctl->maps, 1);
	}
}

struct mapper_args {
	struct control *ctl;
	int c;
	void *buf;
	size_t size;
};

static void *mapper_thread(void *p)
{
	struct mapper_args *a = p;

	mapper(a->ctl, a->c, a->buf, a->size);
	return NULL;
}

struct latency {
	double median, mean, p99, max;
};

/* 4 KiB MAP+UNMAP pairs on `c`, in microseconds: at least `pairs` of them, and with a mapper
 * (`ctl`) until it has also completed LI_CYCLES (8) whole map/unmap cycles, so the pairs
 * overlap every phase of the long calls (*cycles: how many it completed meanwhile). A pair
 * stuck behind a lock held across a long call waits up to the whole call, once per call: the
 * maximum shows it, a median does not. */
static struct latency pairs_latency(int c, void *page, int pairs, struct control *ctl, long *cycles)
{
	long want = getenv("LI_CYCLES") ? atol(getenv("LI_CYCLES")) : 8;
	long cap = 1 << 22, n = 0, i, first = ctl ? atomic_load(&ctl->maps) : 0;
	double *t = calloc(cap, sizeof(*t)), start = now(), sum = 0;
	struct latency l;

	if (!t)
		die("calloc");
	while (n < cap && (n < pairs || (ctl && atomic_load(&ctl->maps) - first < want))) {
		double t0 = now();
		if (map(c, page, PAIR_IOVA, 4096) || unmap(c, PAIR_IOVA, 4096))
			die("pair");
		t[n++] = (now() - t0) * 1e6;
		if (ctl && (atomic_load(&ctl->failed) || now() - start > 300))
			break;
	}
	if (cycles)
		*cycles = ctl ? atomic_load(&ctl->maps) - first : 0;
	for (i = 0; i < n; i++)
		sum += t[i];
	qsort(t, n, sizeof(*t), cmp_double);
	l.median = t[n / 2];
	l.mean = sum / n;
	l.p99 = t[n * 99 / 100];
	l.max = t[n - 1];
	free(t);
	return l;
}

/* "fairness": two mapper threads keep two containers busy with long calls, back to back,
 * while the main thread dups and closes a group fd 20 times: calls that are not container
 * ioctls wait until no long call is in flight, so new long calls must let them pass first, or
 * two busy containers hold them back for ever. Prints
 * "LOCK fairness ops=<n> max_us=<slowest op> total_ms=<all ops> long_call_us=<mean>". */
static int fairness(size_t size)
{
	static struct mapper_args a[2];
	struct control *ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	const char *vars[2] = { "VFIO_TEST_EDU", "VFIO_TEST_IVSHMEM" };
	double start, slowest = 0;
	pthread_t t[2];
	int i, g = -1, ops = 20;

	if (ctl == MAP_FAILED)
		die("mmap control");
	for (i = 0; i < 2; i++) {
		a[i].ctl = ctl;
		a[i].c = container_with_group(vars[i], i == 0 ? &g : NULL);
		a[i].buf = memory(size, 1);
		a[i].size = size;
		if (pthread_create(&t[i], NULL, mapper_thread, &a[i]))
			die("pthread_create");
	}
	atomic_store(&ctl->go, 1);
	while (atomic_load(&ctl->maps) < 2 && !atomic_load(&ctl->failed))
		usleep(1000);
	start = now();
	for (i = 0; i < ops && now() - start < 120; i++) {
		double t0 = now();
		int d = dup(g);

		if (d < 0 || close(d))
			die("dup/close");
		if (now() - t0 > slowest)
			slowest = now() - t0;
	}
	atomic_store(&ctl->stop, 1);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	if (atomic_load(&ctl->failed)) {
		fprintf(stderr, "lock_isolation: a mapper failed\n");
		return 1;
	}
	printf("LOCK fairness ops=%d max_us=%.1f total_ms=%.1f long_call_us=%.0f\n", i, slowest * 1e6,
	       (now() - start) * 1e3, atomic_load(&ctl->call_ns) / 1e3 / atomic_load(&ctl->maps));
	return i == ops ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "threads";
	int pairs = getenv("LI_PAIRS") ? atoi(getenv("LI_PAIRS")) : 300;
	size_t size = big_size();
	struct control *ctl;
	struct latency idle, busy;
	long during;
	pthread_t thread;
	pid_t child = -1;
	int status, c;
	void *page;

	ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED)
		die("mmap control");
	if (strcmp(mode, "fairness") == 0)
		return fairness(size / 2);
	if (strcmp(mode, "processes") == 0) {
		child = fork();
		if (child < 0)
			die("fork");
		if (child == 0) {
			int bc = container_for("VFIO_TEST_EDU");
			mapper(ctl, bc, memory(size, 1), size);
			_exit(atomic_load(&ctl->failed));
		}
	} else if (strcmp(mode, "threads") == 0) {
		static struct mapper_args a;
		a.ctl = ctl;
		a.c = container_for("VFIO_TEST_EDU");
		a.buf = memory(size, 1);
		a.size = size;
		if (pthread_create(&thread, NULL, mapper_thread, &a))
			die("pthread_create");
	} else {
		fprintf(stderr, "usage: lock_isolation threads|processes|fairness\n");
		return 2;
	}
	c = container_for("VFIO_TEST_IVSHMEM");
	page = memory(4096, 1);
	pairs_latency(c, page, pairs / 10 + 1, NULL, NULL); /* warm up */
	idle = pairs_latency(c, page, pairs, NULL, NULL);

	atomic_store(&ctl->go, 1);
	busy = pairs_latency(c, page, pairs, ctl, &during);
	atomic_store(&ctl->stop, 1);
	if (child > 0) {
		if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
			ctl->failed = 1;
	} else {
		pthread_join(thread, NULL);
	}
	if (atomic_load(&ctl->failed)) {
		fprintf(stderr, "lock_isolation: the mapper failed\n");
		return 1;
	}
	printf("LOCK %s idle_us=%.1f busy_us=%.1f ratio=%.2f big_maps=%ld long_call_us=%.0f max_us=%.1f/%.1f "
	       "median_us=%.1f/%.1f p99_us=%.1f/%.1f\n",
	       mode, idle.mean, busy.mean, busy.mean / idle.mean, during,
	       atomic_load(&ctl->call_ns) / 1e3 / atomic_load(&ctl->maps), idle.max, busy.max, idle.median,
	       busy.median, idle.p99, busy.p99);
	return 0;
}
