#!/usr/bin/env python3
"""Drive an L2 QEMU with an assigned edu device over the qtest protocol (stdlib only).

Runs inside the L1 test guest (see qemu.sh l2-dma). QEMU is started with
    -M q35 -accel tcg -S -qtest unix:<sock> -device vfio-pci,host=<bdf> -m 64M ...
so no L2 CPU ever runs: this script is the L2 "driver". Through qtest it
  1. finds the assigned edu (1234:11e8) on L2's bus 0 via the config ports 0xcf8/0xcfc,
  2. programs BAR0, enables memory decoding and bus mastering,
  3. writes a pattern into L2 RAM, drives edu's DMA engine RAM -> device buffer -> RAM
     (edu registers at BAR0+0x80 src, 0x88 dst, 0x90 count, 0x98 cmd; buffer at 0x40000),
  4. checks the bytes landed in L2 RAM at the destination (so the L1 type1 container really
     mapped L2 RAM at IOVA = L2 physical address, and the vIOMMU translated edu's DMA),
  5. quits QEMU over QMP and checks its exit status,
  6. checks the device is free again, i.e. QEMU's exit released its container and mappings:
     with a legacy group node, VFIO_GROUP_GET_STATUS says viable and no container; without one
     (cdev-only kernel), the device's cdev binds to a fresh iommufd,
  7. checks QEMU reported no failed DMA map: once BAR0 is enabled, QEMU's memory listener also
     maps the BAR's mmap into the container (for peer-to-peer); type1 accepts that, and QEMU
     only warns when it fails ("VFIO_MAP_DMA failed" / "vfio_container_dma_map(...) = -N").

Prints "L2-DMA: ok ..." or "L2-DMA: FAIL ...", "L2-BAR-MAP: ok|FAIL ..." (step 7) and one
"TIME ..." line; exit status 0 iff both are ok.

Usage: qemu_l2_dma.py [--wrap CMD] [--logdir DIR] [--tag NAME] <qemu-binary> <edu-bdf> [qemu args...]
Extra qemu args are appended (e.g. -device vfio-pci options are fixed; use them for -trace).
"""
import argparse
import fcntl
import json
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import time

EDU_VENDOR_DEVICE = 0x11E81234      # config dword 0: device << 16 | vendor
EDU_IDENT = 0x010000ED              # BAR0 + 0x00, edu version 1.0
BAR0_ADDR = 0xE0000000              # free in q35's PCI hole (no firmware runs: we assign it)
SRC_GPA = 0x01000000                # 16 MiB into L2 RAM (64 MiB), inside edu's 28-bit DMA mask
DST_GPA = 0x02000000                # 32 MiB
EDU_BUF = 0x40000                   # edu's internal buffer (device address)
LEN = 4096                          # edu buffer size
VFIO_GROUP_GET_STATUS = (ord(";") << 8) | (100 + 3)   # _IO(VFIO_TYPE, VFIO_BASE + 3)
VFIO_GROUP_FLAGS_VIABLE = 1
VFIO_GROUP_FLAGS_CONTAINER_SET = 2


class Fail(Exception):
    pass


class LineSock:
    def __init__(self, conn):
        self.conn = conn
        self.buf = b""

    def readline(self, timeout):
        self.conn.settimeout(timeout)
        while b"\n" not in self.buf:
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                raise Fail("timed out waiting for QEMU's answer")
            if not chunk:
                raise Fail("QEMU closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def send(self, text):
        self.conn.sendall(text.encode())


class QTest(LineSock):
    def cmd(self, line, timeout=60):
        self.send(line + "\n")
        while True:
            reply = self.readline(timeout)
            if reply.startswith("IRQ"):      # asynchronous, only with irq_intercept
                continue
            break
        if not reply.startswith("OK"):
            raise Fail(f"qtest '{line[:60]}' -> '{reply[:200]}'")
        return reply[3:].strip()

    def val(self, line):
        return int(self.cmd(line), 16)

    # PCI configuration mechanism #1 (q35 answers it on 0xcf8/0xcfc)
    def cfg_addr(self, dev, reg, bus=0, fn=0):
        self.cmd(f"outl 0xcf8 {0x80000000 | bus << 16 | dev << 11 | fn << 8 | (reg & 0xFC):#x}")

    def cfg_readl(self, dev, reg):
        self.cfg_addr(dev, reg)
        return self.val("inl 0xcfc")

    def cfg_writel(self, dev, reg, value):
        self.cfg_addr(dev, reg)
        self.cmd(f"outl 0xcfc {value:#x}")

    def mem_write(self, addr, data):
        self.cmd(f"write {addr:#x} {len(data):#x} 0x{data.hex()}")

    def mem_read(self, addr, size):
        out = self.cmd(f"read {addr:#x} {size:#x}")
        if not out.startswith("0x"):
            raise Fail(f"qtest read answered '{out[:40]}'")
        return bytes.fromhex(out[2:])


class QMP(LineSock):
    def command(self, name, timeout=60, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.send(json.dumps(msg) + "\n")
        while True:
            reply = json.loads(self.readline(timeout))
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise Fail(f"QMP {name}: {reply['error']}")
            # events (e.g. SHUTDOWN) are skipped


def stop_process(proc, timeout):
    """Ends `proc` if it still runs: SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def status_of(vfio_shim, pid):
    """`vfio-shim status --json`'s rows for process `pid`, that process's VmPin in bytes, and
    the command's output (for messages)."""
    out = subprocess.run([vfio_shim, "status", "--json"], capture_output=True, text=True, timeout=30)
    rows = [r for r in json.loads(out.stdout or "[]") if r["pid"] == pid]
    vm_pin = next(int(line.split()[1]) * 1024 for line in open(f"/proc/{pid}/status") if line.startswith("VmPin:"))
    return rows, vm_pin, out


def listen(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    return s


def accept(srv, proc, timeout, what):
    srv.settimeout(0.5)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            conn, _ = srv.accept()
            return conn
        except socket.timeout:
            if proc.poll() is not None:
                raise Fail(f"QEMU exited (status {proc.returncode}) before connecting {what}")
    raise Fail(f"QEMU did not connect {what} within {timeout} s")


def group_of(bdf):
    return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{bdf}/iommu_group"))


def group_status(group):
    """(flags, None) from VFIO_GROUP_GET_STATUS on /dev/vfio/<group>, or (None, reason)."""
    path = f"/dev/vfio/{group}"
    if not os.path.exists(path):
        return None, f"{path} absent (cdev-only kernel)"
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        return None, f"open {path}: {e.strerror}"
    try:
        buf = bytearray(struct.pack("II", 8, 0))
        fcntl.ioctl(fd, VFIO_GROUP_GET_STATUS, buf)
        return struct.unpack("II", buf)[1], None
    except OSError as e:
        return None, f"GET_STATUS: {e.strerror}"
    finally:
        os.close(fd)


VFIO_DEVICE_BIND_IOMMUFD = (ord(";") << 8) | (100 + 18)  # _IO(VFIO_TYPE, VFIO_BASE + 18)


def cdev_free(bdf):
    """On a kernel without group nodes: the device's cdev opens and binds to a fresh iommufd,
    so nothing (no leftover process, no leftover iommufd with mappings) still holds it.
    Returns (True, None) or (False, reason)."""
    d = f"/sys/bus/pci/devices/{bdf}/vfio-dev"
    try:
        cdev = "/dev/vfio/devices/" + os.listdir(d)[0]
    except OSError as e:
        return False, f"no VFIO cdev for {bdf}: {e.strerror}"
    dev = iommu = -1
    try:
        dev = os.open(cdev, os.O_RDWR)
        iommu = os.open("/dev/iommu", os.O_RDWR)
        # struct vfio_device_bind_iommufd { argsz, flags, iommufd, out_devid, token_uuid_ptr }
        buf = bytearray(struct.pack("IIiIQ", 24, 0, iommu, 0, 0))
        fcntl.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, buf)
        return True, None
    except OSError as e:
        return False, f"{cdev}: {e.strerror}"
    finally:
        for fd in (dev, iommu):
            if fd >= 0:
                os.close(fd)


def dma_map_warnings(path):
    """QEMU's complaints about failed container DMA maps (7.2: "VFIO_MAP_DMA failed: ..." then
    "vfio_dma_map(...) = -N (...)"; 10.0: "warning: vfio_container_dma_map(...) = -N (...)")."""
    try:
        with open(path, errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    pat = re.compile(r"VFIO_MAP_DMA failed|vfio_(container_)?dma_map\(.*\) = -\d+")
    return [ln.replace("qemu-system-x86_64: ", "") for ln in lines if pat.search(ln)]


def find_edu(qt):
    for dev in range(32):
        ids = qt.cfg_readl(dev, 0)
        if ids == EDU_VENDOR_DEVICE:
            return dev
    raise Fail("no edu (1234:11e8) on L2 bus 0")


def edu_dma(qt, bar, src, dst, count, to_ram, timeout=30.0):
    qt.cmd(f"writel {bar + 0x80:#x} {src:#x}")
    qt.cmd(f"writel {bar + 0x88:#x} {dst:#x}")
    qt.cmd(f"writel {bar + 0x90:#x} {count:#x}")
    qt.cmd(f"writel {bar + 0x98:#x} {0x1 | (0x2 if to_ram else 0):#x}")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not qt.val(f"readl {bar + 0x98:#x}") & 1:
            return
        time.sleep(0.02)
    raise Fail(f"edu DMA ({'device->RAM' if to_ram else 'RAM->device'}) still busy after {timeout} s")


def edu_l2_dma(qt):
    """Through qtest: finds edu on L2's bus 0, enables it, moves a pattern L2 RAM -> edu ->
    L2 RAM by edu's DMA engine and checks it landed. Returns what it did; raises Fail."""
    dev = find_edu(qt)
    qt.cfg_writel(dev, 0x10, BAR0_ADDR)                         # BAR0 (32-bit memory)
    bar = qt.cfg_readl(dev, 0x10) & ~0xF
    if bar != BAR0_ADDR:
        raise Fail(f"BAR0 reads back {bar:#x}, wrote {BAR0_ADDR:#x}")
    qt.cfg_writel(dev, 0x04, 0x0006)                            # memory + bus master
    if qt.cfg_readl(dev, 0x04) & 0x6 != 0x6:
        raise Fail("PCI_COMMAND did not take memory + bus master")
    ident = qt.val(f"readl {bar:#x}")
    if ident != EDU_IDENT:
        raise Fail(f"edu ident {ident:#x}, expected {EDU_IDENT:#x}")
    qt.cmd(f"writel {bar + 4:#x} 0x12345678")                   # liveness: reads back ~x
    if qt.val(f"readl {bar + 4:#x}") != (~0x12345678 & 0xFFFFFFFF):
        raise Fail("edu liveness register did not invert")

    pattern = bytes((i * 7 + 0x5A) & 0xFF for i in range(LEN))
    qt.mem_write(SRC_GPA, pattern)
    qt.mem_write(DST_GPA, bytes(LEN))
    if qt.mem_read(SRC_GPA, LEN) != pattern:
        raise Fail("pattern did not stick in L2 RAM")
    edu_dma(qt, bar, SRC_GPA, EDU_BUF, LEN, to_ram=False)
    edu_dma(qt, bar, EDU_BUF, DST_GPA, LEN, to_ram=True)
    got = qt.mem_read(DST_GPA, LEN)
    if got != pattern:
        first = next(i for i in range(LEN) if got[i] != pattern[i])
        raise Fail(f"mismatch at byte {first}: got {got[first]:#04x} want {pattern[first]:#04x}"
                   f" ({sum(a != b for a, b in zip(got, pattern))} bytes differ)")
    return (f"edu at L2 00:{dev:02x}.0 BAR0 {bar:#x},"
            f" {LEN} bytes L2 RAM {SRC_GPA:#x} -> edu {EDU_BUF:#x} -> L2 RAM {DST_GPA:#x}")


def device_free(bdf):
    """After QEMU is gone: the device is free for the next user (its group viable with no
    container, or, without group nodes, its cdev binds to a fresh iommufd). Raises Fail."""
    group = group_of(bdf)
    flags, why = group_status(group)
    if flags is None and not os.path.exists(f"/dev/vfio/{group}"):
        free, why = cdev_free(bdf)
        if not free:
            raise Fail(f"after exit the device is not free: {why}")
        return "device free after exit (its cdev binds to a fresh iommufd)"
    if flags is None:
        raise Fail(f"after exit the group cannot be checked: {why}")
    if flags & VFIO_GROUP_FLAGS_CONTAINER_SET or not flags & VFIO_GROUP_FLAGS_VIABLE:
        raise Fail(f"after exit the group is not free (GET_STATUS flags {flags:#x})")
    return "group free after exit (viable, no container)"


def run(args):
    t0 = time.monotonic()
    times = {}
    tmp = tempfile.mkdtemp(prefix="l2dma-")
    qtest_path, qmp_path = os.path.join(tmp, "qtest.sock"), os.path.join(tmp, "qmp.sock")
    logdir = args.logdir or tmp
    os.makedirs(logdir, exist_ok=True)
    tag = args.tag or "l2dma"
    qtest_log = os.path.join(logdir, f"{tag}.qtest.log")
    qemu_err = os.path.join(logdir, f"{tag}.qemu.stderr")
    qtest_srv, qmp_srv = listen(qtest_path), listen(qmp_path)
    cmd = shlex.split(args.wrap or "") + [
        args.qemu, "-M", "q35", "-accel", "tcg", "-S",
        "-qtest", f"unix:{qtest_path}", "-qtest-log", qtest_log,
        "-chardev", f"socket,path={qmp_path},id=qmp0", "-mon", "chardev=qmp0,mode=control",
        "-device", f"vfio-pci,host={args.bdf},id=edu0",
        "-m", "64M", "-nographic", "-nodefaults", "-display", "none",
    ] + args.extra
    print("L2-DMA: starting " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    with open(qemu_err, "w") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    result = "FAIL"
    detail = ""
    try:
        qt = QTest(accept(qtest_srv, proc, args.timeout, "the qtest socket"))
        qmp = QMP(accept(qmp_srv, proc, args.timeout, "the QMP socket"))
        greeting = json.loads(qmp.readline(args.timeout))
        qmp.command("qmp_capabilities")
        times["start"] = time.monotonic() - t0
        ver = greeting.get("QMP", {}).get("version", {}).get("qemu", {})
        qemu_version = f"{ver.get('major')}.{ver.get('minor')}.{ver.get('micro')}"

        t1 = time.monotonic()
        detail = f"QEMU {qemu_version}, " + edu_l2_dma(qt)
        times["dma"] = time.monotonic() - t1

        t2 = time.monotonic()
        qmp.command("quit")
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            raise Fail("QEMU did not exit after QMP quit")
        times["quit"] = time.monotonic() - t2
        if rc != 0:
            raise Fail(f"QEMU exit status {rc} after quit")
        detail += "; " + device_free(args.bdf)
        result = "ok"
    except Fail as e:
        detail = str(e)
    finally:
        stop_process(proc, 10)
        for p in (qtest_path, qmp_path):
            try:
                os.unlink(p)
            except OSError:
                pass
        map_warnings = dma_map_warnings(qemu_err)
        if not args.logdir:
            for p in (qtest_log, qemu_err):
                if result != "ok" and os.path.exists(p):
                    print(f"----- {p} (tail) -----", file=sys.stderr)
                    with open(p, errors="replace") as fh:
                        sys.stderr.write("".join(fh.readlines()[-20:]))
            for p in (qtest_log, qemu_err):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            try:
                os.rmdir(tmp)
            except OSError:
                pass
    times["total"] = time.monotonic() - t0
    print(f"L2-DMA: {result} ({detail})" if result == "ok" else f"L2-DMA: FAIL: {detail}")
    if map_warnings is None:
        bar_map = "FAIL: QEMU's stderr unreadable"
    elif map_warnings:
        bar_map = "FAIL: " + " | ".join(map_warnings[:3])
    else:
        bar_map = "ok (QEMU reported no failed DMA map)"
    print(f"L2-BAR-MAP: {bar_map}")
    print("TIME " + " ".join(f"{k}={v:.2f}s" for k, v in times.items()))
    if result != "ok" and args.logdir:
        print(f"L2-DMA: logs: {qemu_err} {qtest_log}", file=sys.stderr)
    return 0 if result == "ok" and bar_map.startswith("ok") else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wrap", help="command prefix for QEMU (e.g. 'env LD_PRELOAD=...')")
    ap.add_argument("--logdir", help="keep the qtest log and QEMU's stderr here")
    ap.add_argument("--tag", help="file name prefix for the logs")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per QEMU step")
    ap.add_argument("qemu")
    ap.add_argument("bdf")
    ap.add_argument("extra", nargs=argparse.REMAINDER)
    return run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
