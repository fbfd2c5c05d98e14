// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * scm_rights: a container and a group shared with other processes, as DPDK's primary
 * and secondaries share them (VFIO_TEST_EDU).
 *
 * Part 1, SCM_RIGHTS: the parent sets up a TYPE1v2 container with the edu group, maps a
 * patterned source buffer, and sends the container fd and then the group fd, one per
 * message, over a unix socket to a new program image (fork + exec of this binary, which
 * starts with nothing of the parent's: a DPDK secondary). The receiver's control buffer
 * has room for exactly one fd. The receiver checks the container (API version, extension,
 * GET_INFO byte for byte, the parent's mapping seen as EEXIST), the group (status),
 * GET_DEVICE_FD, then maps a buffer of its own and has the edu device copy the parent's
 * source into it: both processes' mappings live in one address space. It unmaps, closes
 * everything and exits; the parent then sees the receiver's range free and its own intact.
 *
 * Part 2, fork: a child closes every inherited fd and stays alive; the parent's mapping is
 * untouched, and once the parent closes its fds too the group is free: reopened, set on a
 * new container, its device handed out again (a child that kept hidden references to the
 * device would make this fail).
 *
 * Part 3, exec: container and group opened without O_CLOEXEC; a fork child execs this
 * binary (execv), and the new image does what the receiver of part 1 does with the fds it
 * inherited.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

#define IOVA_SRC 0x100000ULL
#define IOVA_DST 0x200000ULL
#define SEED_SRC 41

/* One byte with room for exactly one SCM_RIGHTS fd: what both ends use. */
struct one_fd_msg {
	char byte;
	struct iovec iov;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg;
};

static void one_fd_msg_init(struct one_fd_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->byte = 'f';
	m->iov = (struct iovec){ .iov_base = &m->byte, .iov_len = 1 };
	m->msg = (struct msghdr){ .msg_iov = &m->iov, .msg_iovlen = 1, .msg_control = m->u.buf,
				  .msg_controllen = sizeof(m->u.buf) };
}

static void send_fd(int sock, int fd)
{
	struct one_fd_msg m;
	struct cmsghdr *c;

	one_fd_msg_init(&m);
	c = CMSG_FIRSTHDR(&m.msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &m.msg, 0) != 1)
		die("sendmsg: %s", strerror(errno));
}

/* Receives one message with room for one fd; records what arrived. */
static int recv_fd(const char *label, int sock)
{
	struct one_fd_msg m;
	struct cmsghdr *c;
	int fd = -1, n = 0;
	ssize_t r;

	one_fd_msg_init(&m);
	r = recvmsg(sock, &m.msg, 0);
	if (r != 1)
		die("recvmsg: %s", r < 0 ? strerror(errno) : "short");
	for (c = CMSG_FIRSTHDR(&m.msg); c; c = CMSG_NXTHDR(&m.msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			n += (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
		}
	}
	rec_out(label, "fds=%d controllen=%zu ctrunc=%d", n, (size_t)m.msg.msg_controllen,
		!!(m.msg.msg_flags & MSG_CTRUNC));
	if (n != 1)
		die("expected one fd, got %d", n);
	return fd;
}

/*
 * What a process that got the container and group from another one checks and does: the
 * container and group as type1 shows them, the other process's mapping, a device fd, and a
 * DMA by the device from the other process's page into a page of its own.
 */
static void use_shared(const char *p, int cfd, int gfd, const char *bdf)
{
	struct iommu_caps caps;
	volatile void *bar;
	size_t bar_size;
	unsigned char *dst, *expect;
	int dev, ok;

	c_ioctl(L("%s.api_version", p), cfd, VFIO_GET_API_VERSION, 0);
	c_ioctl(L("%s.ext.type1v2", p), cfd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU);
	group_status(L("%s.status", p), gfd);
	get_iommu_info(L("%s.info", p), cfd, &caps);
	rec_state(L("%s.src_page", p), "%c", probe_page(cfd, IOVA_SRC));
	dev = get_device_fd(L("%s.get_device_fd", p), gfd, bdf);
	if (dev < 0)
		die("GET_DEVICE_FD on the group from another process: %s", errname(last_errno));
	bar = edu_bar(p, dev, &bar_size);

	dst = map_anon(PG);
	expect = malloc(PG);
	if (!expect)
		die("out of memory");
	fill_pattern(expect, PG, SEED_SRC);
	ok = dma_map(L("%s.map.dst", p), cfd, IOVA_DST, PG, dst, MAP_RW) == 0;
	if (!ok || edu_dma(bar, IOVA_SRC, EDU_BUF, PG, 0) < 0 ||
	    edu_dma(bar, EDU_BUF, IOVA_DST, PG, 1) < 0)
		rec_dma(L("%s.edu.other_to_own", p), "error");
	else
		rec_dma(L("%s.edu.other_to_own", p), memcmp(expect, dst, PG) ? "mismatch" : "ok");
	dma_unmap(L("%s.unmap.dst", p), cfd, IOVA_DST, PG, 0, NULL);
	munmap((void *)bar, bar_size);
	c_close(L("%s.close.device", p), dev);
	c_close(L("%s.close.group", p), gfd);
	c_close(L("%s.close.container", p), cfd);
}

/* The secondary: a fresh program image holding only what it receives. */
static int receiver(int sock, const char *bdf)
{
	int cfd = recv_fd("rx.recv.container", sock);
	int gfd = recv_fd("rx.recv.group", sock);

	use_shared("rx", cfd, gfd, bdf);
	return 0;
}

static void wait_child(const char *label, pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		die("waitpid: %s", strerror(errno));
	rec_out(label, "exited=%d status=%d", WIFEXITED(status), WEXITSTATUS(status));
}

/* container + group + TYPE1v2 (+ device and a mapped source page when src is given) */
static void setup(const char *p, const char *bdf, int cloexec, int *cfd, int *gfd, int *dev,
		  void *src)
{
	char path[64];
	int flags = O_RDWR | (cloexec ? O_CLOEXEC : 0);

	snprintf(path, sizeof(path), "/dev/vfio/%d", group_of(bdf));
	*gfd = c_open(L("%s.open.group", p), path, flags);
	*cfd = c_open(L("%s.open.container", p), "/dev/vfio/vfio", flags);
	if (*gfd < 0 || *cfd < 0)
		die("open: %s", errname(last_errno));
	if (set_container(L("%s.set_container", p), *gfd, *cfd) < 0 ||
	    c_ioctl(L("%s.set_iommu", p), *cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("container setup: %s", errname(last_errno));
	*dev = get_device_fd(L("%s.get_device_fd", p), *gfd, bdf);
	if (*dev < 0)
		die("GET_DEVICE_FD: %s", errname(last_errno));
	if (src && dma_map(L("%s.map.src", p), *cfd, IOVA_SRC, PG, src, MAP_RW) < 0)
		die("MAP_DMA: %s", errname(last_errno));
}

static void teardown(const char *p, int cfd, int gfd, int dev, int mapped)
{
	if (mapped)
		dma_unmap(L("%s.unmap.src", p), cfd, IOVA_SRC, PG, 0, NULL);
	c_close(L("%s.close.device", p), dev);
	unset_container(L("%s.unset_container", p), gfd);
	c_close(L("%s.close.group", p), gfd);
	c_close(L("%s.close.container", p), cfd);
}

static void part_scm_rights(const char *self, const char *bdf)
{
	struct iommu_caps caps;
	char sockarg[16];
	int cfd, gfd, dev, sv[2];
	void *src = map_anon(PG);
	pid_t pid;

	fill_pattern(src, PG, SEED_SRC);
	setup("scm", bdf, 1, &cfd, &gfd, &dev, src);
	get_iommu_info("scm.info", cfd, &caps);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		int s = dup(sv[1]); /* without CLOEXEC: the receiver's end crosses exec */

		snprintf(sockarg, sizeof(sockarg), "%d", s);
		execl(self, self, "receiver", sockarg, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	send_fd(sv[0], cfd);
	send_fd(sv[0], gfd);
	wait_child("scm.receiver", pid);
	close(sv[0]);
	/* the receiver's own mapping is gone, the parent's is still there and still counted */
	rec_state("scm.after.dst_page", "%c", probe_page(cfd, IOVA_DST));
	rec_state("scm.after.src_page", "%c", probe_page(cfd, IOVA_SRC));
	get_dma_avail("scm.after.avail", cfd);
	teardown("scm", cfd, gfd, dev, 1);
	munmap(src, PG);
}

static void part_fork(const char *bdf)
{
	int cfd, gfd, dev, go[2], done[2];
	void *src = map_anon(PG);
	char byte;
	pid_t pid;

	setup("fork", bdf, 0, &cfd, &gfd, &dev, src);
	if (pipe(go) < 0 || pipe(done) < 0)
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		/* close everything inherited, then stay alive until the parent is done (or dies:
		 * only the parent holds the pipe's write end) */
		int bad = (close(dev) | close(gfd) | close(cfd)) != 0;

		close(go[0]);
		close(done[1]);

		if (write(go[1], &bad, 1) != 1 || read(done[0], &byte, 1) < 0)
			_exit(2);
		_exit(bad);
	}
	close(go[1]);
	close(done[0]);
	if (read(go[0], &byte, 1) != 1)
		die("child did not report");
	rec_out("fork.child_closed", "errors=%d", byte);
	rec_state("fork.src_page", "%c", probe_page(cfd, IOVA_SRC));
	teardown("fork", cfd, gfd, dev, 1);
	/* the child is still alive: the group must be free all the same */
	setup("fork.again", bdf, 0, &cfd, &gfd, &dev, NULL);
	teardown("fork.again", cfd, gfd, dev, 0);
	if (write(done[1], "x", 1) != 1)
		die("write: %s", strerror(errno));
	wait_child("fork.child", pid);
	munmap(src, PG);
}

/* Part 3: fds kept across exec (no O_CLOEXEC), used by the new image of a fork child. */
static void part_exec(const char *self, const char *bdf)
{
	char cfd_arg[16], gfd_arg[16];
	int cfd, gfd, dev;
	void *src = map_anon(PG);
	pid_t pid;

	fill_pattern(src, PG, SEED_SRC);
	setup("exec", bdf, 0, &cfd, &gfd, &dev, src);
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		char *args[] = { (char *)self, "exec-child", cfd_arg, gfd_arg, NULL };

		snprintf(cfd_arg, sizeof(cfd_arg), "%d", cfd);
		snprintf(gfd_arg, sizeof(gfd_arg), "%d", gfd);
		execv(self, args);
		_exit(127);
	}
	wait_child("exec.child", pid);
	rec_state("exec.after.dst_page", "%c", probe_page(cfd, IOVA_DST));
	rec_state("exec.after.src_page", "%c", probe_page(cfd, IOVA_SRC));
	get_dma_avail("exec.after.avail", cfd);
	teardown("exec", cfd, gfd, dev, 1);
	munmap(src, PG);
}

int main(int argc, char **argv)
{
	const char *bdf;

	client_init();
	bdf = env_bdf("VFIO_TEST_EDU");
	if (argc == 3 && strcmp(argv[1], "receiver") == 0)
		return receiver(atoi(argv[2]), bdf);
	if (argc == 4 && strcmp(argv[1], "exec-child") == 0) {
		use_shared("ex", atoi(argv[2]), atoi(argv[3]), bdf);
		return 0;
	}
	part_scm_rights("/proc/self/exe", bdf);
	part_fork(bdf);
	part_exec("/proc/self/exe", bdf);
	end_ok();
}
