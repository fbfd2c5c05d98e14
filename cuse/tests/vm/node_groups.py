"""Checks of vfio-shim-cuse's container and group nodes WITHOUT the preload, in the cdev-only
guest (no kernel VFIO groups): what the daemon serves for a client and the documented errno for
what only the preload can do (docs/cuse.md). Prints one ok/FAIL line per check.
With a vfio-shim binary as a 4th argument, `vfio-shim status` must list this client's container
as served by the daemon, with exactly the mappings made.
Usage: node_groups.py <edu-bdf> <edu-group> <dir on a file system other than tmpfs/hugetlbfs> [vfio-shim]"""
import ctypes, errno, fcntl, json, mmap, os, struct, subprocess, sys, time

VFIO_SET_IOMMU, VFIO_TYPE1v2 = 0x3B66, 3
VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER = 0x3B67, 0x3B68
VFIO_GROUP_UNSET_CONTAINER, VFIO_GROUP_GET_DEVICE_FD = 0x3B69, 0x3B6A
VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_UNMAP_DMA = 0x3B70, 0x3B71, 0x3B72
NOT_WITHOUT_PRELOAD = errno.EOPNOTSUPP  # cuse/src/container.rs NOT_WITHOUT_PRELOAD
RW = 3
fails = 0


def check(name, ok, detail=""):
    global fails
    fails += 0 if ok else 1
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)


def call(fd, req, arg):
    """(result, errno); the result of a call with an immutable buffer is 0 (not the buffer)."""
    try:
        r = fcntl.ioctl(fd, req, arg)
        return (0 if isinstance(r, bytes) else r), 0
    except OSError as e:
        return -1, e.errno


def status_rows():
    """`vfio-shim status` rows of this process (None without the binary)."""
    if len(sys.argv) < 5:
        return None
    out = subprocess.run([sys.argv[4], "status", "--json"], capture_output=True, text=True, timeout=30)
    return [r for r in json.loads(out.stdout or "[]") if r["pid"] == os.getpid()]


def addr(m):
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


def dma_map(cfd, iova, m, size=4096):
    return call(cfd, VFIO_IOMMU_MAP_DMA, struct.pack("IIQQQ", 32, RW, addr(m), iova, size))


def dma_unmap(cfd, iova, size=4096):
    buf = bytearray(struct.pack("IIQQ", 24, 0, iova, size))
    r = call(cfd, VFIO_IOMMU_UNMAP_DMA, buf)
    return r, struct.unpack_from("Q", buf, 16)[0]


edu, group = sys.argv[1], int(sys.argv[2])
gpath = f"/dev/vfio/{group}"
gfd = os.open(gpath, os.O_RDWR)
check("group node opens", True, gpath)
try:
    os.open(gpath, os.O_RDWR)
    check("second open of the group is EBUSY", False, "opened")
except OSError as e:
    check("second open of the group is EBUSY", e.errno == errno.EBUSY, errno.errorcode.get(e.errno, ""))

st = bytearray(struct.pack("II", 8, 0))
r = call(gfd, VFIO_GROUP_GET_STATUS, st)
check("GET_STATUS: viable, no container", r[1] == 0 and struct.unpack("II", st)[1] == 1, str(struct.unpack("II", st)))
r = call(gfd, VFIO_GROUP_GET_DEVICE_FD, edu.encode() + b"\0")
check("GET_DEVICE_FD before SET_CONTAINER is EINVAL (type1's order)", r[1] == errno.EINVAL, str(r))
r = call(gfd, VFIO_GROUP_SET_CONTAINER, struct.pack("i", 999))
check("SET_CONTAINER with a closed fd is EBADF", r[1] == errno.EBADF, str(r))
rp, wp = os.pipe()
r = call(gfd, VFIO_GROUP_SET_CONTAINER, struct.pack("i", rp))
check("SET_CONTAINER with a pipe is EBADFD", r[1] == errno.EBADFD, str(r))

cfd = os.open("/dev/vfio/vfio", os.O_RDWR)
r = call(gfd, VFIO_GROUP_SET_CONTAINER, struct.pack("i", cfd))
check("SET_CONTAINER with the node's container fd", r == (0, 0), str(r))
r = call(gfd, VFIO_GROUP_GET_STATUS, st)
check("GET_STATUS: viable, container set", struct.unpack("II", st)[1] == 3, str(struct.unpack("II", st)))
r = call(cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2)
check("SET_IOMMU(TYPE1v2)", r == (0, 0), str(r))
info = bytearray(struct.pack("IIQII", 24, 0, 0, 0, 0))
r = call(cfd, VFIO_IOMMU_GET_INFO, info)
check("GET_INFO", r[1] == 0 and struct.unpack_from("I", info, 4)[0] & 1 == 1, str(struct.unpack("IIQII", info)))

shared = mmap.mmap(-1, 4096)  # MAP_SHARED | MAP_ANONYMOUS: shmem, the daemon can pin it
shared[0:4] = b"abcd"
r = dma_map(cfd, 0x100000, shared)
check("MAP_DMA of shared anonymous memory", r == (0, 0), str(r))
r = dma_map(cfd, 0x100000, shared)
check("MAP_DMA again is EEXIST", r[1] == errno.EEXIST, str(r))
memfd = os.memfd_create("node-check")
os.ftruncate(memfd, 8192)
mf = mmap.mmap(memfd, 8192, flags=mmap.MAP_SHARED)
r = dma_map(cfd, 0x200000, mf, 8192)
check("MAP_DMA of memfd memory", r == (0, 0), str(r))
private = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
private[0:1] = b"x"
r = dma_map(cfd, 0x300000, private)
check("MAP_DMA of private anonymous memory is the documented errno", r[1] == NOT_WITHOUT_PRELOAD,
      errno.errorcode.get(r[1], str(r)))
# A shared mapping of a file that is neither shmem nor hugetlbfs (argv[3]: a ramfs directory,
# standing in for a disk file system): IOMMU_IOAS_MAP_FILE pins only those two, and the daemon
# refuses before opening the file for real.
other_path = os.path.join(sys.argv[3], "not-shmem")
with open(other_path, "wb") as f:
    f.truncate(4096)
dfd = os.open(other_path, os.O_RDWR)
try:
    dm = mmap.mmap(dfd, 4096, flags=mmap.MAP_SHARED)
    r = dma_map(cfd, 0x400000, dm)
except OSError as e:
    r = ("mmap failed", e.errno)
check("MAP_DMA of a shared non-shmem file mapping is the documented errno", r[1] == NOT_WITHOUT_PRELOAD,
      errno.errorcode.get(r[1], str(r)))
os.close(dfd)
rows = status_rows()
if rows is not None:
    want = {"groups": [group], "devices": [edu], "iommu": "TYPE1v2", "mappings": 2, "mapped_bytes": 4096 + 8192}
    got = [{k: r[k] for k in want} for r in rows]
    check("vfio-shim status lists the container as the daemon's, with the 2 mappings made",
          got == [want] and rows[0]["served_by"].startswith("daemon "), str(rows))
r, size = dma_unmap(cfd, 0x100000)
check("UNMAP_DMA of the shared page", r == (0, 0) and size == 4096, f"{r} size={size}")
r, size = dma_unmap(cfd, 0x200000, 8192)
check("UNMAP_DMA of the memfd range", r == (0, 0) and size == 8192, f"{r} size={size}")

r = call(gfd, VFIO_GROUP_GET_DEVICE_FD, b"0000:ff:1f.7\0")
check("GET_DEVICE_FD of an unknown device is ENODEV", r[1] == errno.ENODEV, str(r))
r = call(gfd, VFIO_GROUP_GET_DEVICE_FD, edu.encode() + b"\0")
check("GET_DEVICE_FD of the device is the documented errno", r[1] == NOT_WITHOUT_PRELOAD,
      errno.errorcode.get(r[1], str(r)))
r = call(gfd, VFIO_GROUP_UNSET_CONTAINER, 0)
check("UNSET_CONTAINER", r == (0, 0), str(r))
r = call(cfd, VFIO_IOMMU_MAP_DMA, struct.pack("IIQQQ", 32, RW, addr(shared), 0x100000, 4096))
check("MAP_DMA after the last group left is EINVAL", r[1] == errno.EINVAL, str(r))
rows = status_rows()
if rows is not None:
    check("vfio-shim status: no mapping left after the unmaps", [r["mappings"] for r in rows] == [0], str(rows))
for fd in (cfd, gfd, rp, wp, memfd):
    os.close(fd)
rows = status_rows()
# The kernel sends the node's RELEASE after close(2) returns: give the daemon a moment.
for _ in range(50):
    if not rows:
        break
    time.sleep(0.1)
    rows = status_rows()
if rows is not None:
    check("vfio-shim status: the container is gone with its last fd", rows == [], str(rows))
# The group is free again: a new open works.
os.close(os.open(gpath, os.O_RDWR))
check("group reopens after close", True)
sys.exit(1 if fails else 0)
