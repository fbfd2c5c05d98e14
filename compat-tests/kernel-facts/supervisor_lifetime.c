// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Kernel facts for the supervisor's fd lifetimes: how a process that gave a file to another
// (SECCOMP_IOCTL_NOTIF_ADDFD's effect is the same as this test's fork + close) learns that the
// last reference to that open file description is gone, without trapping close(). Type1
// releases a group or container exactly then (the file's release), and a supervisor holds
// device claims for groups, so it must know. Run as root:
//   supervisor_lifetime [/dev/vfio/devices/vfioN]
// Candidates, each a stand-in file handed over and released in steps (fork: parent and child
// hold it; dup in the child; SCM_RIGHTS in flight; closes):
//   pipe:   the stand-in is a pipe's write end; the keeper polls the read end (POLLHUP);
//   inotify: the stand-in is a private character node (mknod c 1 3, /dev/null's numbers, in a
//           private tmpfs); the keeper watches it for IN_CLOSE_WRITE | IN_CLOSE_NOWRITE;
// and whether kcmp(KCMP_FILE) exists here to tell descriptions apart. With a device cdev
// argument (supervisor_lifetime /dev/vfio/devices/vfioN), the same for an iommufd opened
// through a private node of /dev/iommu with the device bound to it: does the bound device keep
// the iommufd's file alive after its last fd closes, and is its release signalled when the
// device goes?
// Prints "FACT <candidate>: <after step>: <signalled or not>" lines.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define KCMP_FILE 0

// 1 if the keeper's fd shows the release now (within 100 ms), 0 if not.
static int released(int kind, int keeper)
{
	struct pollfd p = { .fd = keeper, .events = POLLIN };
	if (poll(&p, 1, 100) <= 0)
		return 0;
	if (kind == 0)
		return !!(p.revents & POLLHUP);
	char buf[4096];
	ssize_t n = read(keeper, buf, sizeof(buf));
	for (char *q = buf; n > 0 && q < buf + n;) {
		struct inotify_event *ev = (struct inotify_event *)q;
		if (ev->mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE))
			return 1;
		q += sizeof(*ev) + ev->len;
	}
	return 0;
}

static void send_fd(int sock, int fd)
{
	char c = 0;
	struct iovec iov = { &c, 1 };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c0 = CMSG_FIRSTHDR(&m);
	c0->cmsg_level = SOL_SOCKET;
	c0->cmsg_type = SCM_RIGHTS;
	c0->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c0), &fd, sizeof(int));
	sendmsg(sock, &m, 0);
}

static int recv_fd(int sock)
{
	char c;
	struct iovec iov = { &c, 1 };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	if (recvmsg(sock, &m, 0) <= 0)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	return fd;
}

// The holder: gets the stand-in by fork, dups it, sends it over SCM_RIGHTS to itself (in
// flight), closes in steps; the keeper reports after each.
static void run(int kind, const char *name, int standin, int keeper)
{
	int ctl[2], sv[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, ctl);
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	pid_t pid = fork();
	if (pid == 0) {
		close(ctl[0]);
		char go;
		int d = dup(standin);
		read(ctl[1], &go, 1);          // step 1 done by the keeper: it closed its own copy
		close(standin);
		write(ctl[1], "a", 1);
		read(ctl[1], &go, 1);
		send_fd(sv[0], d);             // in flight in sv
		close(d);
		write(ctl[1], "b", 1);
		read(ctl[1], &go, 1);
		int back = recv_fd(sv[1]);     // received again
		write(ctl[1], "c", 1);
		read(ctl[1], &go, 1);
		close(back);
		write(ctl[1], "d", 1);
		read(ctl[1], &go, 1);
		_exit(0);
	}
	close(ctl[1]);
	char ack;
	close(standin);   // the keeper's copy (as after NOTIF_ADDFD): the holder's fd and its dup remain
	printf("FACT %s: keeper closed its copy, holder has fd + dup: %s\n", name, released(kind, keeper) ? "signalled" : "not signalled");
	write(ctl[0], "1", 1); read(ctl[0], &ack, 1);
	printf("FACT %s: holder closed the fd, its dup remains: %s\n", name, released(kind, keeper) ? "signalled" : "not signalled");
	write(ctl[0], "2", 1); read(ctl[0], &ack, 1);
	printf("FACT %s: dup sent over SCM_RIGHTS and closed (in flight only): %s\n", name, released(kind, keeper) ? "signalled" : "not signalled");
	write(ctl[0], "3", 1); read(ctl[0], &ack, 1);
	printf("FACT %s: received again: %s\n", name, released(kind, keeper) ? "signalled" : "not signalled");
	write(ctl[0], "4", 1); read(ctl[0], &ack, 1);
	printf("FACT %s: last fd closed: %s\n", name, released(kind, keeper) ? "signalled" : "not signalled");
	write(ctl[0], "5", 1);
	waitpid(pid, NULL, 0);
	close(ctl[0]);
	close(sv[0]);
	close(sv[1]);
}

// An iommufd through a private node, a device bound to it; the iommufd's fd closed first.
static void iommufd_held_by_device(int in, const char *cdev)
{
	struct stat st;
	if (stat("/dev/iommu", &st) || mknod("/run/vfio-shim-facts/iommu", S_IFCHR | 0600, st.st_rdev)) {
		printf("FACT iommufd: private node: %s\n", strerrorname_np(errno));
		return;
	}
	inotify_add_watch(in, "/run/vfio-shim-facts/iommu", IN_CLOSE_WRITE | IN_CLOSE_NOWRITE);
	int ctx = open("/run/vfio-shim-facts/iommu", O_RDWR | O_CLOEXEC);
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	int alloc = ioctl(ctx, IOMMU_IOAS_ALLOC, &a);
	int dev = open(cdev, O_RDWR | O_CLOEXEC);
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = ctx };
	int bound = ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind);
	printf("FACT iommufd: through a private node: IOAS_ALLOC = %d, device bound = %d\n", alloc, bound);
	close(ctx);
	printf("FACT iommufd: its last fd closed, the device still bound: %s\n", released(1, in) ? "signalled" : "not signalled");
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at), .pt_id = a.out_ioas_id };
	int attach = ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at);
	printf("FACT iommufd: the device attaches to its IOAS after that = %s\n", attach ? strerrorname_np(errno) : "0");
	close(dev);
	printf("FACT iommufd: the device closed: %s\n", released(1, in) ? "signalled" : "not signalled");
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) == 0)
		run(0, "pipe", fds[1], fds[0]);

	// A private tmpfs (own mount namespace) holding a node with /dev/null's numbers.
	int ok = unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
		 (mkdir("/run/vfio-shim-facts", 0700) == 0 || errno == EEXIST) &&
		 mount("tmpfs", "/run/vfio-shim-facts", "tmpfs", 0, "mode=0700") == 0;
	if (!ok || mknod("/run/vfio-shim-facts/group", S_IFCHR | 0600, makedev(1, 3))) {
		printf("FACT inotify: private node: %s\n", strerrorname_np(errno));
	} else {
		int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		inotify_add_watch(in, "/run/vfio-shim-facts/group", IN_CLOSE_WRITE | IN_CLOSE_NOWRITE);
		int standin = open("/run/vfio-shim-facts/group", O_RDWR | O_CLOEXEC);
		// an unrelated open and close of the same node by someone else: also an event
		int other = open("/run/vfio-shim-facts/group", O_RDONLY);
		close(other);
		printf("FACT inotify: another description of the node closed: %s\n", released(1, in) ? "signalled" : "not signalled");
		struct stat st;
		fstat(standin, &st);
		printf("FACT inotify: the stand-in is %s %u:%u\n", S_ISCHR(st.st_mode) ? "a character device" : "not a character device",
		       major(st.st_rdev), minor(st.st_rdev));
		run(1, "inotify", standin, in);
		if (argc > 1)
			iommufd_held_by_device(in, argv[1]);
	}
	int a = open("/dev/null", O_RDONLY), b = dup(a), c = open("/dev/null", O_RDONLY);
	long same = syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b);
	int e = errno;
	long diff = syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, c);
	if (same < 0)
		printf("FACT kcmp: KCMP_FILE = -1 %s\n", strerrorname_np(e));
	else
		printf("FACT kcmp: KCMP_FILE same description = %ld, other description = %ld\n", same, diff);
	return 0;
}
