// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * kvm_vfio: KVM's VFIO pseudo-device as QEMU drives it, KVM_SET_DEVICE_ATTR with
 * KVM_DEV_VFIO_GROUP (= KVM_DEV_VFIO_FILE) ADD and DEL naming the legacy group fd, on a
 * KVM VM of the guest's /dev/kvm (AMD SVM, nested paging under TCG).  The shim cannot hand
 * KVM its group (no such file in the kernel): it names the group's device cdevs instead.
 * The cases: ADD and DEL before SET_CONTAINER and after, twice each (EEXIST, ENOENT),
 * HAS_DEVICE_ATTR, a closed fd, a pipe, the container fd, the device fd and then its group,
 * an unknown attribute, SET_SPAPR_TCE, an unreadable address; a device's last close while
 * KVM holds its group (KVM holds the group, not the device: type1 quiesces the device, so
 * bus mastering is off at its next open); and the group left registered when the VM goes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "common.h"

static int kvm_vfio;

/* The PCI command register of an open device, through its config region. */
static off_t command_at(int dev)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri), .index = VFIO_PCI_CONFIG_REGION_INDEX };

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &ri))
		die("GET_REGION_INFO(config): %s", strerror(errno));
	return (off_t)ri.offset + 4;
}

static uint16_t command(int dev)
{
	uint16_t v;

	if (pread(dev, &v, 2, command_at(dev)) != 2)
		die("read command: %s", strerror(errno));
	return v;
}

static void bus_master_on(int dev)
{
	uint16_t v = command(dev) | 0x4;

	if (pwrite(dev, &v, 2, command_at(dev)) != 2)
		die("write command: %s", strerror(errno));
}

/* KVM_SET_DEVICE_ATTR(group KVM_DEV_VFIO_GROUP, attr, addr = &fd), recorded. */
static int vfio_attr(const char *label, uint64_t attr, int fd)
{
	int32_t value = fd;
	struct kvm_device_attr a = {
		.group = KVM_DEV_VFIO_GROUP,
		.attr = attr,
		.addr = (uint64_t)(uintptr_t)&value,
	};

	return c_ioctl_ptr(label, kvm_vfio, KVM_SET_DEVICE_ATTR, &a);
}

static int add(const char *label, int fd)
{
	return vfio_attr(label, KVM_DEV_VFIO_GROUP_ADD, fd);
}

static int del(const char *label, int fd)
{
	return vfio_attr(label, KVM_DEV_VFIO_GROUP_DEL, fd);
}

int main(void)
{
	const char *edu = env_bdf("VFIO_TEST_EDU");
	int kvm, vm, cfd, gfd, dev, pipefd[2];
	struct kvm_create_device cd = { .type = KVM_DEV_TYPE_VFIO };
	struct kvm_device_attr has = { .group = KVM_DEV_VFIO_GROUP, .attr = KVM_DEV_VFIO_GROUP_ADD };

	client_init();
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("open /dev/kvm: %s", strerror(errno));
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	if (c_ioctl_ptr("kvm.create_device", vm, KVM_CREATE_DEVICE, &cd) < 0)
		die("KVM_CREATE_DEVICE(VFIO): %s", strerror(errno));
	kvm_vfio = cd.fd;

	cfd = open_container("open.container");
	gfd = open_group("open.group", group_of(edu));

	/* A group not set on a container yet: KVM takes any VFIO group file. */
	add("unset.add", gfd);
	add("unset.add.twice", gfd);
	del("unset.del", gfd);
	del("unset.del.twice", gfd);

	if (set_container("set_container", gfd, cfd) < 0)
		die("SET_CONTAINER failed");
	if (c_ioctl("set_iommu", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("SET_IOMMU failed");
	dev = get_device_fd("get_device_fd", gfd, edu);
	if (dev < 0)
		die("GET_DEVICE_FD failed");

	c_ioctl_ptr("has_attr.add", kvm_vfio, KVM_HAS_DEVICE_ATTR, &has);
	add("add", gfd);
	add("add.twice", gfd);
	del("del", gfd);
	del("del.twice", gfd);

	/* Files that are no VFIO group, and no file at all. */
	if (pipe(pipefd) != 0)
		die("pipe: %s", strerror(errno));
	add("add.closed_fd", 1000);
	add("add.pipe", pipefd[0]);
	add("add.container", cfd);
	del("del.pipe", pipefd[0]);

	/* The device fd is a VFIO file too, and not the group's file. */
	add("add.device", dev);
	add("add.group_after_device", gfd);
	del("del.device", dev);
	del("del.group_after_device", gfd);

	vfio_attr("attr.unknown", 99, gfd);
	vfio_attr("attr.spapr_tce", KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE, gfd);
	{
		struct kvm_device_attr a = {
			.group = KVM_DEV_VFIO_GROUP,
			.attr = KVM_DEV_VFIO_GROUP_ADD,
			.addr = 8,
		};
		c_ioctl_ptr("add.bad_address", kvm_vfio, KVM_SET_DEVICE_ATTR, &a);
	}

	/* A device's last close while KVM holds its group. */
	add("add.held", gfd);
	bus_master_on(dev);
	rec_out("held.before_close", "bus_master=%d", !!(command(dev) & 0x4));
	c_close("close.device", dev);
	dev = get_device_fd("get_device_fd.again", gfd, edu);
	if (dev < 0)
		die("GET_DEVICE_FD failed");
	rec_out("held.after_reopen", "bus_master=%d", !!(command(dev) & 0x4));
	del("del.held", gfd);
	add("add.at_exit", gfd);

	/* The VM goes first, KVM's references with it; then the VFIO files. */
	c_close("close.kvm_device", kvm_vfio);
	close(vm);
	close(kvm);
	c_close("close.device.last", dev);
	unset_container("unset_container", gfd);
	c_close("close.group", gfd);
	c_close("close.container", cfd);
	close(pipefd[0]);
	close(pipefd[1]);
	end_ok();
}
