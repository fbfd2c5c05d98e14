// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * fd_lifecycle: what programs do with VFIO fds besides ioctls.  dup/dup2/fcntl(F_DUPFD)
 * aliases keep a container and group alive after the original fd is closed; a closed container
 * lives on through its group; a forked child sees the inherited container; close_range() and a
 * daemon-style close loop over every fd release everything, after which the whole setup works
 * again from scratch; CLOEXEC as requested; a vfork child (CPython's subprocess) that closes
 * everything and execs leaves the parent's objects alone, and after the last close no VFIO or
 * iommufd file is left open.  Runs on edu (VFIO_TEST_EDU).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/close_range.h>
#include "common.h"

extern char **environ;

#define IOVA 0x100000ULL
#define SIZE 0x2000ULL

/* Group + container + TYPE1v2 + one mapping; returns the container fd. */
static int setup(const char *stage, int group, int *gfd, void *buf)
{
	int cfd;

	*gfd = open_group(L("%s.open.group", stage), group);
	cfd = open_container(L("%s.open.container", stage));
	if (*gfd < 0 || cfd < 0)
		die("%s: cannot open group/container", stage);
	if (set_container(L("%s.set_container", stage), *gfd, cfd) < 0)
		die("%s: SET_CONTAINER failed: %s", stage, errname(last_errno));
	if (c_ioctl(L("%s.set_iommu", stage), cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("%s: SET_IOMMU failed: %s", stage, errname(last_errno));
	dma_map(L("%s.map", stage), cfd, IOVA, SIZE, buf, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
	return cfd;
}

static void state(const char *label, int cfd)
{
	char p[8];

	probe_range(cfd, IOVA, SIZE, p, sizeof(p));
	rec_state(label, "mapped=%s", p);
}

/* This process's open files that are VFIO or iommufd ones, whoever opened them. */
static int vfio_files_open(void)
{
	char path[300], target[256];
	struct dirent *e;
	int n = 0;
	DIR *d = opendir("/proc/self/fd");

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (!strncmp(target, "/dev/vfio", 9) || !strncmp(target, "/dev/iommu", 10))
			n++;
	}
	closedir(d);
	return n;
}

static void cloexec(const char *label, int fd)
{
	int f = fcntl(fd, F_GETFD);

	rec_out(label, "cloexec=%d", f < 0 ? -1 : !!(f & FD_CLOEXEC));
}

int main(void)
{
	const char *edu;
	void *buf;
	int group, gfd, cfd, c2, c3, c4, dev, status;
	pid_t pid;

	client_init();
	edu = env_bdf("VFIO_TEST_EDU");
	group = group_of(edu);
	buf = map_anon(SIZE);

	/* dup, fcntl(F_DUPFD_CLOEXEC) and dup2 aliases of a container. */
	cfd = setup("alias", group, &gfd, buf);
	c2 = dup(cfd);
	rec_call("alias.dup", c2, c2 < 0 ? errno : 0, 1);
	c3 = fcntl(cfd, F_DUPFD_CLOEXEC, 100);
	rec_call("alias.fcntl_dupfd_cloexec", c3, c3 < 0 ? errno : 0, 1);
	cloexec("alias.fcntl_dupfd_cloexec", c3);
	c4 = dup2(cfd, 200);
	rec_out("alias.dup2", "ret_is_target=%d", c4 == 200);
	c_close("alias.close.original", cfd);
	/* Every alias still names the same container. */
	get_dma_avail("alias.avail.via_dup", c2);
	state("alias.via_fcntl_dup", c3);
	dma_unmap("alias.unmap.via_dup2", c4, IOVA, SIZE, 0, NULL);
	state("alias.after_unmap", c2);
	c_close("alias.close.dup", c2);
	c_close("alias.close.fcntl_dup", c3);
	c_close("alias.close.dup2", c4);
	/* The container is gone once its last fd closed, and the group is free to join another. */
	c_ioctl("alias.unset_container", gfd, VFIO_GROUP_UNSET_CONTAINER, 0);
	group_status("alias.status.after_close", gfd);
	c_close("alias.close.group", gfd);

	/* A closed container lives on through its group: the mapping stays. */
	cfd = setup("orphan", group, &gfd, buf);
	dev = get_device_fd("orphan.get_device_fd", gfd, edu);
	c_close("orphan.close.container", cfd);
	group_status("orphan.status.container_closed", gfd);
	c_close("orphan.close.device", dev);
	c_close("orphan.close.group", gfd);

	/* CLOEXEC as asked: open(2) without O_CLOEXEC, device fds always with it. */
	cfd = setup("cloexec", group, &gfd, buf);
	cloexec("cloexec.container", cfd);
	cloexec("cloexec.group", gfd);
	dev = get_device_fd("cloexec.get_device_fd", gfd, edu);
	cloexec("cloexec.device", dev);
	c_close("cloexec.close.device", dev);

	/* A forked child sees the inherited container and its mapping. */
	pid = fork();
	if (pid == 0) {
		char p[8];

		/* The child prints nothing (its stdout is the parent's); it reports by exit code. */
		probe_range(cfd, IOVA, SIZE, p, sizeof(p));
		_exit(strcmp(p, "11") == 0 ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	rec_out("fork.child", "saw_mapping=%d", WIFEXITED(status) && WEXITSTATUS(status) == 0);
	state("fork.parent.after", cfd);
	/* A child that closes everything it inherited (as helpers do before exec) only drops its
	 * own references: the parent's container, IOMMU and mapping are untouched. */
	pid = fork();
	if (pid == 0)
		_exit(close_range(3, ~0U, 0) == 0 ? 0 : 1);
	waitpid(pid, &status, 0);
	rec_out("fork.child_closed_all", "ok=%d", WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* vfork, as CPython's subprocess does: the child runs in our memory but with its own fds,
	 * closes everything from 3 up and execs.  The parent's container and group are untouched. */
	pid = vfork();
	if (pid == 0) {
		char *argv[] = { "true", NULL };

		close_range(3, ~0U, 0);
		execve("/bin/true", argv, environ);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	rec_out("vfork.child", "exit=%d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	group_status("vfork.parent.status", gfd);
	state("vfork.parent.state", cfd);
	group_status("fork.parent.status", gfd);
	dma_unmap("fork.parent.unmap", cfd, IOVA, SIZE, 0, NULL);
	dma_map(L("fork.parent.map_again"), cfd, IOVA, SIZE, buf, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);

	/* close_range() over everything from 3 up releases every VFIO object... */
	status = close_range(3, ~0U, 0);
	rec_call("close_range.all", status, status < 0 ? errno : 0, 0);
	/* ...and the full setup works again from scratch (the group is free). */
	cfd = setup("after_close_range", group, &gfd, buf);
	state("after_close_range.state", cfd);

	/* A daemon-style loop closing every possible fd one by one does the same. */
	{
		struct rlimit rl;
		int closed_ok = 1;

		getrlimit(RLIMIT_NOFILE, &rl);
		for (int fd = 3; fd < (int)rl.rlim_cur && fd < 4096; fd++)
			if (close(fd) < 0 && errno != EBADF)
				closed_ok = 0;
		rec_out("close_loop", "only_ebadf_errors=%d", closed_ok);
	}
	cfd = setup("after_close_loop", group, &gfd, buf);
	state("after_close_loop.state", cfd);
	dma_unmap_all("after_close_loop.unmap_all", cfd);
	c_close("final.close.container", cfd);
	c_close("final.close.group", gfd);
	rec_out("final.vfio_files_open", "n=%d", vfio_files_open());

	printf("END status=ok\n");
	return 0;
}
