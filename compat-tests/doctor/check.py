#!/usr/bin/env python3
"""`vfio-shim doctor` judged against the kernel, inside a test guest (vm-tier.sh runs it).

Each case runs doctor (--json, and as text) and derives the verdict each check must have from
the kernel itself, by the operation the check stands for: opening /dev/iommu and the cdevs,
VFIO_GET_API_VERSION and VFIO_CHECK_EXTENSION(TYPE1v2) on /dev/vfio/vfio, VFIO_GROUP_GET_STATUS
on a group node (type1's viability), VFIO_DEVICE_BIND_IOMMUFD on a cdev (iommufd's: EBUSY when
a device of the group is on a kernel driver), VFIO_DEVICE_FEATURE probing DMA_BUF (P2P), and
opening as an unprivileged user for the access checks. Doctor's verdict for every check it
prints must equal that expectation, every expected check must be printed, WARN and FAIL lines
must carry a fix, and the exit status must be 1 exactly when a check fails.

Usage: check.py <vfio-shim> <out-dir>      (as root, after guest-setup.sh; VFIO_TEST_* set)
       check.py --probe-open PATH...       (internal: which paths this user can open read-write)
Prints one line per case, "doctor (KERNEL, CASE): pass (...)" or "...: FAIL: ...", and
exits 1 if any case failed.
"""
import errno
import fcntl
import json
import os
import re
import struct
import subprocess
import sys

VFIO = ord(";") << 8
VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION = VFIO | 100, VFIO | 101
VFIO_GROUP_GET_STATUS = VFIO | 103
VFIO_DEVICE_FEATURE, VFIO_DEVICE_BIND_IOMMUFD = VFIO | 117, VFIO | 118
VFIO_TYPE1v2_IOMMU = 3
VFIO_GROUP_FLAGS_VIABLE = 1
VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE = 1 << 16, 1 << 18
VFIO_DEVICE_FEATURE_DMA_BUF = 11
NOBODY = 65534


def sysdev(bdf, attr=""):
    return f"/sys/bus/pci/devices/{bdf}" + (f"/{attr}" if attr else "")


def link_name(path):
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def cdev_of(bdf):
    try:
        names = sorted(n for n in os.listdir(sysdev(bdf, "vfio-dev")) if n.startswith("vfio"))
    except OSError:
        return None
    return f"/dev/vfio/devices/{names[0]}" if names else None


def group_of(bdf):
    g = link_name(sysdev(bdf, "iommu_group"))
    return int(g) if g else None


def members(group):
    return sorted(os.listdir(f"/sys/kernel/iommu_groups/{group}/devices"))


def opens_rw(path):
    try:
        os.close(os.open(path, os.O_RDWR))
        return True
    except OSError:
        return False


def bind_errno(cdev):
    """0 when the cdev binds to a fresh iommufd, else the errno (EBUSY: group not viable)."""
    dfd = os.open(cdev, os.O_RDWR)
    ifd = os.open("/dev/iommu", os.O_RDWR)
    try:
        fcntl.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, bytearray(struct.pack("IIiI", 16, 0, ifd, 0)))
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(dfd)
        os.close(ifd)


def dma_buf_supported(cdev):
    dfd = os.open(cdev, os.O_RDWR)
    ifd = os.open("/dev/iommu", os.O_RDWR)
    try:
        fcntl.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, bytearray(struct.pack("IIiI", 16, 0, ifd, 0)))
        flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF
        try:
            fcntl.ioctl(dfd, VFIO_DEVICE_FEATURE, bytearray(struct.pack("II", 8, flags)))
            return True
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                return False
            raise
    finally:
        os.close(dfd)
        os.close(ifd)


def group_viable_type1(group):
    """VFIO_GROUP_GET_STATUS on /dev/vfio/<group>: None when the node does not exist."""
    try:
        fd = os.open(f"/dev/vfio/{group}", os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        buf = bytearray(struct.pack("II", 8, 0))
        fcntl.ioctl(fd, VFIO_GROUP_GET_STATUS, buf)
        return bool(struct.unpack("II", buf)[1] & VFIO_GROUP_FLAGS_VIABLE)
    finally:
        os.close(fd)


def type1_container():
    """The kernel's own /dev/vfio/vfio answers as type1 (API version 0, TYPE1v2 offered)."""
    try:
        fd = os.open("/dev/vfio/vfio", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        return fcntl.ioctl(fd, VFIO_GET_API_VERSION) == 0 and fcntl.ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1
    finally:
        os.close(fd)


def opens_as_nobody(paths):
    out = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                          "--inh-caps=-all", "--bounding-set=-all", sys.executable, __file__, "--probe-open", *paths],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def daemon_running():
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "vfio-shim-cuse":
                return True
        except OSError:
            pass
    return False


def expectations(devices, as_nobody):
    """{check id: verdict} from the kernel's own answers."""
    exp = {}
    full = type1_container()
    groups_in_kernel = os.path.isdir("/sys/class/vfio")
    needed = not (full and groups_in_kernel)
    can_open = (lambda paths: opens_as_nobody(paths)) if as_nobody else (lambda paths: {p: opens_rw(p) for p in paths})
    exp["kernel.iommufd"] = "PASS" if os.path.exists("/dev/iommu") else "FAIL"
    exp["kernel.vfio-cdev"] = "PASS" if any(opens_rw(f"/dev/vfio/devices/{n}") for n in os.listdir("/dev/vfio/devices")) else "FAIL"
    exp["kernel.vfio-groups"] = "PASS" if groups_in_kernel else "WARN"
    exp["kernel.legacy-container"] = "PASS" if full else "WARN"
    exp["kernel.cuse"] = "PASS" if os.path.exists("/dev/cuse") else "WARN"
    edu_cdev = cdev_of(os.environ["VFIO_TEST_EDU"])
    exp["kernel.p2p-dma-buf"] = "PASS" if dma_buf_supported(edu_cdev) else "WARN"
    noiommu = open("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode").read().strip()
    exp["kernel.noiommu"] = "WARN" if noiommu == "Y" else "PASS"
    exp["iommu.hardware"] = "PASS" if any(n.startswith("dmar") for n in os.listdir("/sys/class/iommu")) else "FAIL"
    exp["iommu.groups"] = "PASS"
    if devices:
        exp["iommu.reserved"] = "PASS"
    access = can_open(["/dev/iommu"] + [c for c in map(cdev_of, devices) if c])
    exp["caller.iommufd-access"] = "PASS" if access["/dev/iommu"] else ("FAIL" if needed else "WARN")
    exp["caller.memlock"] = "PASS"
    exp["daemon"] = "PASS" if daemon_running() or not needed else "WARN"
    exp["preload"] = "PASS"
    for bdf in devices:
        driver = link_name(sysdev(bdf, "driver"))
        exp[f"device.{bdf}.driver"] = "PASS" if driver and "vfio" in driver else "FAIL"
        cdev = cdev_of(bdf)
        if cdev:
            exp[f"device.{bdf}.cdev"] = "PASS" if access[cdev] else ("FAIL" if needed else "WARN")
        group = group_of(bdf)
        exp[f"device.{bdf}.group"] = "PASS" if group is not None else "FAIL"
        if group is None:
            continue
        # Viability as the kernel reports it: type1's GET_STATUS where the group node exists,
        # iommufd's bind of a member's cdev where it does not; no node and no cdev at all: no
        # device of the group is on a VFIO driver, so there is nothing to open.
        viable = group_viable_type1(group) if groups_in_kernel else None
        if viable is None:
            cdevs = [c for c in map(cdev_of, members(group)) if c]
            viable = bool(cdevs) and bind_errno(cdevs[0]) == 0
        exp[f"device.{bdf}.group-node"] = "PASS" if viable else "FAIL"
    return exp


def run_case(kernel, name, vfio_shim, out_dir, devices, as_nobody=False):
    label = f"doctor ({kernel}, {name})"
    env = dict(os.environ, VFIO_SHIM_PRELOAD=os.path.join(os.path.dirname(vfio_shim), "libvfio_shim_preload.so"))
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
              "--bounding-set=-all"] if as_nobody else []
    js = subprocess.run(prefix + [vfio_shim, "doctor", "--json", *devices], capture_output=True, text=True, env=env)
    text = subprocess.run(prefix + [vfio_shim, "doctor", *devices], capture_output=True, text=True, env=env)
    with open(os.path.join(out_dir, f"doctor-{name}.txt"), "w") as f:
        f.write(f"$ vfio-shim doctor {' '.join(devices)}{' (as nobody)' if as_nobody else ''}\n")
        f.write(text.stdout + text.stderr + f"exit status {text.returncode}\n")
    problems = []
    try:
        report = json.loads(js.stdout)
    except ValueError:
        return f"{label}: FAIL: --json printed no JSON: {js.stdout[:200]!r} {js.stderr[:200]!r}"
    got = {c["id"]: c["verdict"] for c in report["checks"]}
    listed = devices or sorted(b for b in os.listdir("/sys/bus/pci/devices")
                               if "vfio" in (link_name(sysdev(b, "driver")) or ""))
    exp = expectations(listed, as_nobody)
    for cid in sorted(set(got) | set(exp)):
        if got.get(cid) != exp.get(cid):
            problems.append(f"{cid}: doctor {got.get(cid, 'absent')}, kernel says {exp.get(cid, 'no such check')}")
    for c in report["checks"]:
        if c["verdict"] != "PASS" and not c.get("fix"):
            problems.append(f"{c['id']}: {c['verdict']} without a fix")
    lines = [l for l in text.stdout.splitlines() if re.match(r"(PASS|WARN|FAIL)  ", l)]
    if len(lines) != len(report["checks"]):
        problems.append(f"text has {len(lines)} check lines, JSON {len(report['checks'])}")
    failed = any(v == "FAIL" for v in exp.values())
    for what, rc in (("--json", js.returncode), ("text", text.returncode)):
        if rc != (1 if failed else 0):
            problems.append(f"{what} exit status {rc}, expected {1 if failed else 0}")
    counts = {v: list(exp.values()).count(v) for v in ("PASS", "WARN", "FAIL")}
    if problems:
        return f"{label}: FAIL: " + "; ".join(problems)
    return (f"{label}: pass ({len(got)} checks as the kernel answers: "
            f"{counts['PASS']} PASS, {counts['WARN']} WARN, {counts['FAIL']} FAIL)")


def main():
    if sys.argv[1] == "--probe-open":
        print(json.dumps({p: opens_rw(p) for p in sys.argv[2:]}))
        return 0
    vfio_shim, out_dir = sys.argv[1], sys.argv[2]
    kernel = os.environ["VFIO_TEST_KERNEL"]
    # The devices left on a kernel driver: the pair's virtio-rng (virtio-pci) and vm.sh's
    # resettable edu behind its root port, left unbound; and the pair's edu, whose group the
    # virtio-rng spoils.
    unbound = [b for b in sorted(os.listdir("/sys/bus/pci/devices"))
               if open(sysdev(b, "vendor")).read().strip() == "0x1234" and link_name(sysdev(b, "driver")) is None]
    on_kernel_driver = [os.environ["VFIO_TEST_PAIR_RNG"], os.environ["VFIO_TEST_PAIR_EDU"]] + unbound[:1]
    results = [
        run_case(kernel, "vfio-devices", vfio_shim, out_dir, []),
        run_case(kernel, "kernel-drivers", vfio_shim, out_dir, on_kernel_driver),
        run_case(kernel, "nobody", vfio_shim, out_dir, [os.environ["VFIO_TEST_EDU"]], as_nobody=True),
    ]
    for r in results:
        print(r)
    return 1 if any(": FAIL" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
