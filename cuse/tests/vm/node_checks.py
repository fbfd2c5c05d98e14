"""Checks of /dev/vfio/vfio served by vfio-shim-cuse, run in the guest.
   plain:   no preload: the daemon's container answers as type1 without a group.
   preload: under LD_PRELOAD: the node is really opened and the container works in-process."""
import errno, fcntl, os, struct, sys

VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU = 0x3B64, 0x3B65, 0x3B66
VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA = 0x3B70, 0x3B71


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}".rstrip())


def ioctl_errno(fd, req, arg):
    try:
        return fcntl.ioctl(fd, req, arg), 0
    except OSError as e:
        return -1, e.errno


mode = sys.argv[1]
fd = os.open("/dev/vfio/vfio", os.O_RDWR)
link = os.readlink(f"/proc/self/fd/{fd}")
check(f"{mode}: /proc/self/fd names the node", link == "/dev/vfio/vfio", link)
check(f"{mode}: GET_API_VERSION is 0", ioctl_errno(fd, VFIO_GET_API_VERSION, 0) == (0, 0))
check(f"{mode}: CHECK_EXTENSION(TYPE1v2) is 1", ioctl_errno(fd, VFIO_CHECK_EXTENSION, 3) == (1, 0))
check(f"{mode}: CHECK_EXTENSION(UPDATE_VADDR) is 0 before SET_IOMMU", ioctl_errno(fd, VFIO_CHECK_EXTENSION, 10) == (0, 0))
r = ioctl_errno(fd, VFIO_SET_IOMMU, 3)
check(f"{mode}: SET_IOMMU without a group is EINVAL", r == (-1, errno.EINVAL), str(r))
buf = bytearray(struct.pack("IIQII", 24, 0, 0, 0, 0))
r = ioctl_errno(fd, VFIO_IOMMU_GET_INFO, buf)
check(f"{mode}: GET_INFO before SET_IOMMU is EINVAL", r[1] == errno.EINVAL, str(r))
r = ioctl_errno(fd, 0x3B99, 0)
check(f"{mode}: unknown ioctl before SET_IOMMU is EINVAL", r[1] == errno.EINVAL, str(r))
os.close(fd)
if mode == "plain":
    # The node's permissions: an unprivileged user cannot open a 0600 node.
    st = os.stat("/dev/vfio/vfio")
    check("plain: node mode", True, oct(st.st_mode & 0o777))
