// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * hot_reset: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO and VFIO_DEVICE_PCI_HOT_RESET as a legacy
 * (group) program sees them, on two devices in one TYPE1v2 container:
 * - edu on the root bus (VFIO_TEST_EDU), which no slot or bus reset reaches;
 * - the pair's edu behind the PCIe-to-PCI bridge (VFIO_TEST_PAIR_EDU), whose bus reset also
 *   reaches the pair's virtio-rng (VFIO_TEST_PAIR_RNG), in the same group.  The rng is moved
 *   to vfio-pci for the run (a group with a device on a kernel driver is not viable) and
 *   back to its kernel driver at the end.
 * The cases: argsz zero, short, header only (ENOSPC and the count written back), exact and
 * large (the entries, and the caller's bytes past them left alone), input flags; a reset with
 * no fds, flags, a bad fd, a pipe, the container, another group, the group twice, more fds
 * than affected devices, a huge count, argsz short of the fds, its own group.  Group numbers
 * print as names (pair, edu), so the transcript does not depend on the numbering.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

#define MAX_DEVS 8
#define HUGE_COUNT 5000

static int pair_group, edu_group;

static const char *group_name(uint32_t g)
{
	static char buf[16];

	if ((int)g == pair_group)
		return "pair";
	if ((int)g == edu_group)
		return "edu";
	snprintf(buf, sizeof(buf), "%u", g);
	return buf;
}

static void sysfs_write(const char *path, const char *value)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(value, f) < 0 || fclose(f) != 0)
		die("write %s to %s: %s", value, path, strerror(errno));
}

/* Binds the PCI device at bdf to `driver` ("" for the kernel's choice), through
 * driver_override and drivers_probe; unbinds it from its driver first. */
static void rebind(const char *bdf, const char *driver)
{
	char path[256];

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver_override", bdf);
	sysfs_write(path, *driver ? driver : "\n");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver/unbind", bdf);
	if (access(path, F_OK) == 0)
		sysfs_write(path, bdf);
	sysfs_write("/sys/bus/pci/drivers_probe", bdf);
}

/* GET_PCI_HOT_RESET_INFO with the given argsz and input flags; the buffer past the header
 * is pre-filled with 0xa5 and its entries, count and untouched tail are recorded. */
static void info(const char *label, int dev, uint32_t argsz, uint32_t flags)
{
	union {
		struct vfio_pci_hot_reset_info h;
		unsigned char bytes[sizeof(struct vfio_pci_hot_reset_info) +
				    MAX_DEVS * sizeof(struct vfio_pci_dependent_device)];
	} u;
	struct vfio_pci_dependent_device *d = u.h.devices;
	uint32_t i, n;
	size_t end;
	int untouched = 1;

	memset(&u, 0xa5, sizeof(u));
	u.h.argsz = argsz;
	u.h.flags = flags;
	u.h.count = 0x5a5a;
	c_ioctl_ptr(label, dev, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, &u);
	rec_out(label, "argsz=%u flags=0x%x count=0x%x", u.h.argsz, u.h.flags, u.h.count);
	if (last_errno != 0)
		return;
	n = u.h.count < MAX_DEVS ? u.h.count : MAX_DEVS;
	for (i = 0; i < n; i++)
		rec_out(L("%s.dev%u", label, i), "group=%s addr=%04x:%02x:%02x.%x", group_name(d[i].group_id),
			d[i].segment, d[i].bus, d[i].devfn >> 3, d[i].devfn & 7);
	end = sizeof(u.h) + n * sizeof(*d);
	for (i = end; i < sizeof(u); i++)
		untouched &= u.bytes[i] == 0xa5;
	rec_out(L("%s.tail", label), "untouched=%d", untouched);
}

/* PCI_HOT_RESET with `count` fds (the first `nfds` from fds[], the rest copies of fds[0]) and
 * the given argsz (0: the exact size for count) and flags. */
static void reset(const char *label, int dev, uint32_t count, const int *fds, uint32_t nfds, uint32_t argsz,
		  uint32_t flags)
{
	size_t size = sizeof(struct vfio_pci_hot_reset) + (size_t)(count ? count : 1) * sizeof(int32_t);
	struct vfio_pci_hot_reset *r = calloc(1, size);
	uint32_t i;

	if (!r)
		die("%s: out of memory", label);
	r->argsz = argsz ? argsz : (uint32_t)(sizeof(*r) + count * sizeof(int32_t));
	r->flags = flags;
	r->count = count;
	for (i = 0; i < count; i++)
		r->group_fds[i] = i < nfds ? fds[i] : fds[0];
	c_ioctl_ptr(label, dev, VFIO_DEVICE_PCI_HOT_RESET, r);
	free(r);
}

int main(void)
{
	const char *edu = env_bdf("VFIO_TEST_EDU");
	const char *pair = env_bdf("VFIO_TEST_PAIR_EDU");
	const char *rng = env_bdf("VFIO_TEST_PAIR_RNG");
	int cfd, egfd, pgfd, edev, pdev, pfd[2], fds[2];
	uint32_t h = sizeof(struct vfio_pci_hot_reset_info);
	uint32_t one = sizeof(struct vfio_pci_dependent_device);

	client_init();
	edu_group = group_of(edu);
	pair_group = group_of(pair);
	if (pipe(pfd) < 0)
		die("pipe: %s", strerror(errno));
	rebind(rng, "vfio-pci");
	egfd = open_group("open.group.edu", edu_group);
	pgfd = open_group("open.group.pair", pair_group);
	cfd = open_container("open.container");
	if (set_container("set_container.edu", egfd, cfd) < 0 || set_container("set_container.pair", pgfd, cfd) < 0)
		die("SET_CONTAINER failed: %s", errname(last_errno));
	if (c_ioctl("set_iommu", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("SET_IOMMU failed: %s", errname(last_errno));
	edev = get_device_fd("device.edu", egfd, edu);
	pdev = get_device_fd("device.pair", pgfd, pair);
	if (edev < 0 || pdev < 0)
		die("GET_DEVICE_FD failed: %s", errname(last_errno));

	/* edu on the root bus: no slot or bus reset reaches it */
	info("info.edu.argsz0", edev, 0, 0);
	info("info.edu.short", edev, h - 1, 0);
	info("info.edu.header", edev, h, 0);
	info("info.edu.room", edev, h + 4 * one, 0);
	reset("reset.edu.count0", edev, 0, &egfd, 1, 0, 0);
	reset("reset.edu.flags", edev, 1, &egfd, 1, 0, 1);
	reset("reset.edu.badfd", edev, 1, (int[]){ -1 }, 1, 0, 0);
	reset("reset.edu.huge", edev, HUGE_COUNT, &egfd, 1, 0, 0);
	reset("reset.edu.own", edev, 1, &egfd, 1, 0, 0);

	/* the pair's edu: a bus reset, which reaches the rng too */
	info("info.pair.argsz0", pdev, 0, 0);
	info("info.pair.header", pdev, h, 0);
	info("info.pair.one", pdev, h + one, 0);
	info("info.pair.exact", pdev, h + 2 * one, 0);
	info("info.pair.large", pdev, h + MAX_DEVS * one, 0);
	info("info.pair.flags_in", pdev, h + MAX_DEVS * one, 0xffffffff);
	reset("reset.pair.count0", pdev, 0, &pgfd, 1, 0, 0);
	reset("reset.pair.flags", pdev, 1, &pgfd, 1, 0, 2);
	reset("reset.pair.argsz_short", pdev, 1, &pgfd, 1, h - 1, 0);
	reset("reset.pair.argsz_header", pdev, 1, &pgfd, 1, h, 0);
	reset("reset.pair.badfd", pdev, 1, (int[]){ -1 }, 1, 0, 0);
	reset("reset.pair.pipe", pdev, 1, &pfd[0], 1, 0, 0);
	reset("reset.pair.container", pdev, 1, &cfd, 1, 0, 0);
	reset("reset.pair.device_fd", pdev, 1, &pdev, 1, 0, 0);
	reset("reset.pair.other_group", pdev, 1, &egfd, 1, 0, 0);
	fds[0] = pgfd;
	fds[1] = -1;
	reset("reset.pair.then_badfd", pdev, 2, fds, 2, 0, 0);
	reset("reset.pair.twice", pdev, 2, &pgfd, 1, 0, 0);
	reset("reset.pair.three", pdev, 3, &pgfd, 1, 0, 0);
	reset("reset.pair.huge", pdev, HUGE_COUNT, &pgfd, 1, 0, 0);
	fds[1] = egfd;
	reset("reset.pair.with_edu", pdev, 2, fds, 2, 0, 0);
	reset("reset.pair.own", pdev, 1, &pgfd, 1, 0, 0);

	c_close("close.device.pair", pdev);
	c_close("close.device.edu", edev);
	c_close("close.group.pair", pgfd);
	c_close("close.group.edu", egfd);
	c_close("close.container", cfd);
	rebind(rng, "");
	end_ok();
}
