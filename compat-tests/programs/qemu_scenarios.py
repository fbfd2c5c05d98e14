#!/usr/bin/env python3
"""QEMU's VFIO lifecycle beyond one device at start: hotplug, two devices, reset, KVM, CPR.

Runs inside the L1 test guest (see qemu.sh scenarios), with the helpers of qemu_l2_dma.py:
QEMU starts paused (-S) with a qtest socket, and this script plays the L2 guest's part (config
cycles on 0xcf8/0xcfc, the PCIe slot's power control as Linux's pciehp would write it, edu's DMA
engine), so every step is deterministic and no L2 CPU runs.

Scenarios (one QEMU process each):
  hotplug   QMP device_add vfio-pci into a PCIe root port, power the slot on, edu DMA into L2
            RAM, device_del, power the slot off (QEMU unplugs), DEVICE_DELETED, the device is
            free; N cycles (default 20). At the end QEMU holds the same files as before the
            first add and its VmLck/VmPin are back where they were (nothing pinned).
  two       edu and igb (separate IOMMU groups) in two root ports: both work (edu DMA; an igb
            register written and read back through the BAR), one container (one container fd;
            through the shim one iommufd with one IOAS), then igb is unplugged, is free, and
            edu's DMA still lands.
  reset     two edus assigned (00:0a.0, which the kernel cannot reset, and the one behind its
            own root port, which it can), DMA, QMP system_reset (RESET event): QEMU resets
            them through VFIO (its vfio_pci_reset* / vfio_pci_hot_reset* trace events are
            recorded; the second must get VFIO_DEVICE_RESET), L2 config space is reset, and
            after reprogramming a DMA lands again through each.
  kvm       hotplug under -accel kvm, QEMU run under strace: edu DMA, and the kernel answers 0
            to each KVM_DEV_VFIO_FILE_ADD on QEMU's KVM-VFIO device at device_add and to as many
            KVM_DEV_VFIO_FILE_DEL at device_del (a DEL of a file the device does not hold is
            ENOENT: so the kernel held what was added). QEMU must report no KVM-VFIO error.
            (KVM device ioctls answer EIO from any other process, so the test cannot ask the
            device itself.)
  cpr       QEMU 10.1+ (11.1 here) under -accel kvm, a running guest (SeaBIOS), RAM in a shared
            memfd: cpr-transfer to a new QEMU process, which gets the VFIO fds over the cpr
            channel and sets the vaddrs the old one invalidated; an edu DMA lands in the new
            process's memory before and after the old one quits. Uses the edu the kernel can
            reset (vm.sh puts it behind its own root port; bound to vfio-pci here).

Output: per scenario "SCENARIO <name>: ok (...)" or "SCENARIO <name>: FAIL: ...", and
"OBSERVE <name> <key> <value>" lines: what the kernel and QEMU showed, for the comparison with
type1 (qemu.sh scenarios-all, programs-tier.sh). Exit status 0 iff every scenario run is ok.

Usage: qemu_scenarios.py [--wrap CMD] [--logdir DIR] [--tag NAME] [--cycles N]
                         <qemu-binary> <edu-bdf> <igb-bdf> <scenario>...
(the tag names the log files: <logdir>/<tag>.<scenario>.qemu.stderr)
"""
import argparse
import ctypes
import fcntl
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qemu_l2_dma import (  # noqa: E402
    EDU_BUF, EDU_IDENT, EDU_VENDOR_DEVICE, LEN, QMP, QTest, Fail, accept, cdev_free, edu_dma,
    group_of, group_status, listen, status_of, stop_process, VFIO_GROUP_FLAGS_CONTAINER_SET,
    VFIO_GROUP_FLAGS_VIABLE)

IGB_VENDOR_DEVICE = 0x10C98086
IGB_RDBAL0 = 0xC000             # receive descriptor base low, queue 0: a plain RW register
SRC_GPA, DST_GPA = 0x01000000, 0x02000000
PCI_CAP_ID_EXP = 0x10
SLTCTL_PCC = 1 << 10            # power controller control: 1 = off
SLTCTL_PIC = 3 << 8             # power indicator: 01 on, 11 off
PIC_ON, PIC_OFF = 1 << 8, 3 << 8
IOMMU_IOAS_IOVA_RANGES = (ord(";") << 8) | 0x84
SYS_PIDFD_GETFD = 438

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


class AnyBusQTest(QTest):
    """Config cycles on any bus (qemu_l2_dma's QTest speaks to bus 0 only)."""

    def cfg_read(self, bus, dev, reg):
        self.cmd(f"outl 0xcf8 {0x80000000 | bus << 16 | dev << 11 | (reg & 0xFC):#x}")
        return self.val("inl 0xcfc")

    def cfg_write(self, bus, dev, reg, value):
        self.cmd(f"outl 0xcf8 {0x80000000 | bus << 16 | dev << 11 | (reg & 0xFC):#x}")
        self.cmd(f"outl 0xcfc {value:#x}")


class EventQMP(QMP):
    """QMP that keeps the events it reads past, so a scenario can wait for one."""

    def __init__(self, conn):
        super().__init__(conn)
        self.events = []

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
                raise Fail(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
            if "event" in reply:
                self.events.append(reply)

    def wait_event(self, name, timeout=60, match=None):
        end = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and (match is None or match(ev.get("data", {}))):
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                raise Fail(f"no QMP event {name} within {timeout} s")
            reply = json.loads(self.readline(left))
            if "event" in reply:
                self.events.append(reply)


class Qemu:
    """One QEMU process, paused, with qtest and QMP connected."""

    def __init__(self, args, tag, extra, strace=None, before_connect=None):
        self.tmp = tempfile.mkdtemp(prefix="qscen-")
        self.logdir = args.logdir or self.tmp
        os.makedirs(self.logdir, exist_ok=True)
        qtest_path = os.path.join(self.tmp, "qtest.sock")
        qmp_path = os.path.join(self.tmp, "qmp.sock")
        self.stderr_path = os.path.join(self.logdir, f"{tag}.qemu.stderr")
        qtest_srv, qmp_srv = listen(qtest_path), listen(qmp_path)
        tracer = ["strace", "-f", "-qq", "-y", "-e", "trace=ioctl", "-e", "signal=none",
                  "--seccomp-bpf", "-o", strace] if strace else []
        cmd = tracer + shlex.split(args.wrap or "") + [
            args.qemu, "-M", "q35", "-S",
            "-qtest", f"unix:{qtest_path}",
            "-chardev", f"socket,path={qmp_path},id=qmp0", "-mon", "chardev=qmp0,mode=control",
            "-m", "64M", "-nographic", "-nodefaults", "-display", "none",
        ] + extra
        print(f"SCENARIO: starting {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr)
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if before_connect:
            before_connect(self)
        self.qt = AnyBusQTest(accept(qtest_srv, self.proc, args.timeout, "the qtest socket"))
        self.qmp = EventQMP(accept(qmp_srv, self.proc, args.timeout, "the QMP socket"))
        qtest_srv.close()
        qmp_srv.close()
        greeting = json.loads(self.qmp.readline(args.timeout))
        ver = greeting.get("QMP", {}).get("version", {}).get("qemu", {})
        self.version = f"{ver.get('major')}.{ver.get('minor')}.{ver.get('micro')}"
        self.qmp.command("qmp_capabilities")
        self.timeout = args.timeout
        self.scenario = tag.rsplit(".", 1)[-1]

    def quit(self):
        self.qmp.command("quit")
        try:
            rc = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise Fail("QEMU did not exit after QMP quit")
        if rc != 0:
            raise Fail(f"QEMU exit status {rc} after quit")

    def close(self):
        stop_process(self.proc, 10)
        for name in ("qtest.sock", "qmp.sock"):
            try:
                os.unlink(os.path.join(self.tmp, name))
            except OSError:
                pass

    def messages(self):
        """QEMU's own messages (warnings, errors), without trace lines and without qtest's log."""
        return [ln.split(": ", 1)[1] for ln in self.stderr_lines() if ln.startswith("qemu-system-x86_64: ")]

    def stderr_lines(self):
        with open(self.stderr_path, errors="replace") as fh:
            return fh.read().splitlines()

    def files(self):
        """QEMU's open files as link targets, sorted (anon inodes and sockets by kind only)."""
        out = []
        d = f"/proc/{self.proc.pid}/fd"
        for fd in os.listdir(d):
            try:
                t = os.readlink(f"{d}/{fd}")
            except OSError:
                continue
            out.append(re.sub(r"^(socket|pipe|anon_inode:\[?[a-z_-]+\]?).*", r"\1", t))
        return sorted(out)

    def fds_to(self, target):
        d = f"/proc/{self.proc.pid}/fd"
        out = []
        for fd in os.listdir(d):
            try:
                if os.readlink(f"{d}/{fd}") == target or re.fullmatch(target, os.readlink(f"{d}/{fd}")):
                    out.append(int(fd))
            except OSError:
                pass
        return sorted(out)

    def distinct_files(self, fds):
        """fds minus dups of an earlier one. Two fds are one open file when a status flag set
        through one shows through the other (the test kernel has no kcmp): O_NONBLOCK, which
        neither an iommufd nor a container reads, is set on a copy and cleared again."""
        pidfd = os.pidfd_open(self.proc.pid)
        mine = {fd: pidfd_getfd(pidfd, fd) for fd in fds}
        os.close(pidfd)
        out = []
        try:
            for fd in fds:
                same = False
                for o in out:
                    flags = fcntl.fcntl(mine[o], fcntl.F_GETFL)
                    fcntl.fcntl(mine[o], fcntl.F_SETFL, flags ^ os.O_NONBLOCK)
                    same = (fcntl.fcntl(mine[fd], fcntl.F_GETFL) ^ flags) & os.O_NONBLOCK != 0
                    fcntl.fcntl(mine[o], fcntl.F_SETFL, flags)
                    if same:
                        break
                if not same:
                    out.append(fd)
        finally:
            for m in mine.values():
                os.close(m)
        return out

    def status_kb(self, field):
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0


# --- what Linux would do as the L2 guest -------------------------------------------------------

def find_cap(qt, bus, dev, cap_id):
    ptr = (qt.cfg_read(bus, dev, 0x34) & 0xFF) & ~3
    while ptr:
        hdr = qt.cfg_read(bus, dev, ptr)
        if hdr & 0xFF == cap_id:
            return ptr
        ptr = (hdr >> 8) & 0xFC
    raise Fail(f"no capability {cap_id:#x} at {bus:02x}:{dev:02x}.0")


def root_port_setup(qt, dev, secbus, window):
    """Bus numbers, a 1 MiB memory window at `window`, memory + bus master: what firmware or
    Linux programs into a root port before a device behind it can be reached."""
    qt.cfg_write(0, dev, 0x18, secbus << 8 | secbus << 16)
    base = (window >> 16) & 0xFFF0
    qt.cfg_write(0, dev, 0x20, base | base << 16)
    qt.cfg_write(0, dev, 0x04, 0x0006)


def slot_power(qt, dev, on):
    """Slot control as pciehp writes it: power on (PCC 0, indicator on) or off (PCC 1,
    indicator off). QEMU unplugs a device whose removal was requested when its slot goes off."""
    sltctl = find_cap(qt, 0, dev, PCI_CAP_ID_EXP) + 0x18
    cur = qt.cfg_read(0, dev, sltctl) & 0xFFFF
    val = cur & ~(SLTCTL_PCC | SLTCTL_PIC)
    val |= PIC_ON if on else (SLTCTL_PCC | PIC_OFF)
    qt.cfg_write(0, dev, sltctl, val)         # status half written as 0: RW1C bits stay


def edu_enable(qt, bus, dev, bar_addr):
    ids = qt.cfg_read(bus, dev, 0)
    if ids != EDU_VENDOR_DEVICE:
        raise Fail(f"{bus:02x}:{dev:02x}.0 reads {ids:#010x}, not edu")
    qt.cfg_write(bus, dev, 0x10, bar_addr)
    if qt.cfg_read(bus, dev, 0x10) & ~0xF != bar_addr:
        raise Fail("edu BAR0 did not take its address")
    qt.cfg_write(bus, dev, 0x04, 0x0006)
    ident = qt.val(f"readl {bar_addr:#x}")
    if ident != EDU_IDENT:
        raise Fail(f"edu ident {ident:#x} at {bar_addr:#x}")


def edu_roundtrip(qt, bar, seed):
    pattern = bytes((i * 7 + seed * 13 + 0x5A) & 0xFF for i in range(LEN))
    qt.mem_write(SRC_GPA, pattern)
    qt.mem_write(DST_GPA, bytes(LEN))
    edu_dma(qt, bar, SRC_GPA, EDU_BUF, LEN, to_ram=False)
    edu_dma(qt, bar, EDU_BUF, DST_GPA, LEN, to_ram=True)
    got = qt.mem_read(DST_GPA, LEN)
    if got != pattern:
        raise Fail(f"DMA {seed}: {sum(a != b for a, b in zip(got, pattern))} bytes differ")


def device_free(bdf):
    """Free = no process holds it: the group says viable and no container, or (no group node)
    its cdev binds to a fresh iommufd."""
    group = group_of(bdf)
    if not os.path.exists(f"/dev/vfio/{group}"):
        free, why = cdev_free(bdf)
        return "free (cdev binds)" if free else f"held ({why})"
    flags, why = group_status(group)
    if flags is None:
        return f"held ({why})"
    if flags & VFIO_GROUP_FLAGS_CONTAINER_SET or not flags & VFIO_GROUP_FLAGS_VIABLE:
        return f"held (GET_STATUS flags {flags:#x})"
    return "free (viable, no container)"


def kvm_vfio_error_lines(lines):
    return [ln for ln in lines if re.search(r"KVM.?VFIO|kvm-vfio|KVM_DEV_VFIO", ln, re.I)]


# --- the scenarios -------------------------------------------------------------------------------

HOTPLUG_ARGS = ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
                "-device", "pcie-root-port,id=rp0,bus=pcie.0,addr=0x10,chassis=1,slot=1",
                "-device", "pcie-root-port,id=rp1,bus=pcie.0,addr=0x11,chassis=2,slot=2"]
RP0, RP1 = 0x10, 0x11
EDU_BAR, IGB_BAR = 0xE0000000, 0xE1000000


def unplug(q, dev_id, port):
    q.qmp.command("device_del", id=dev_id)
    slot_power(q.qt, port, on=False)
    q.qmp.wait_event("DEVICE_DELETED", q.timeout, lambda d: d.get("device") == dev_id)


def scenario_hotplug(args, obs):
    q = Qemu(args, f"{args.tag}.hotplug", HOTPLUG_ARGS)
    try:
        files0, lck0, pin0 = q.files(), q.status_kb("VmLck"), q.status_kb("VmPin")
        root_port_setup(q.qt, RP0, 1, EDU_BAR)
        not_free = []
        t0 = time.monotonic()
        for cycle in range(1, args.cycles + 1):
            q.qmp.command("device_add", driver="vfio-pci", host=args.edu, id="hp", bus="rp0")
            slot_power(q.qt, RP0, on=True)
            edu_enable(q.qt, 1, 0, EDU_BAR)
            edu_roundtrip(q.qt, EDU_BAR, cycle)
            if cycle == 1:
                obs("hotplug", "plugged.VmLck_kB", q.status_kb("VmLck") - lck0)
                obs("hotplug", "plugged.VmPin_kB", q.status_kb("VmPin") - pin0)
            unplug(q, "hp", RP0)
            state = device_free(args.edu)
            if not state.startswith("free"):
                not_free.append(f"cycle {cycle}: {state}")
        per_cycle = (time.monotonic() - t0) / args.cycles
        files1, lck1, pin1 = q.files(), q.status_kb("VmLck"), q.status_kb("VmPin")
        obs("hotplug", "cycles", args.cycles)
        obs("hotplug", "device_after_each_del", "free" if not not_free else "; ".join(not_free[:3]))
        obs("hotplug", "files_after_vs_before", "same" if files1 == files0 else
            f"before {len(files0)} after {len(files1)}: +{sorted(set(files1) - set(files0))}")
        obs("hotplug", "VmLck_kB_after_vs_before", lck1 - lck0)
        obs("hotplug", "VmPin_kB_after_vs_before", pin1 - pin0)
        q.quit()
        if not_free:
            raise Fail("device not free after device_del: " + "; ".join(not_free[:3]))
        if files1 != files0:
            raise Fail(f"QEMU holds other files after {args.cycles} cycles than before")
        if lck1 != lck0 or pin1 != pin0:
            raise Fail(f"pinned memory left: VmLck {lck0}->{lck1} kB, VmPin {pin0}->{pin1} kB")
        return (f"QEMU {q.version}, {args.cycles} device_add/DMA/device_del cycles,"
                f" {per_cycle:.2f} s each; device free after each; no file or pin left")
    finally:
        q.close()
        obs(q.scenario, "qemu_messages", " | ".join(q.messages()) or "none")


def scenario_two(args, obs, iommufd_probe):
    extra = HOTPLUG_ARGS + ["-device", f"vfio-pci,host={args.edu},id=edu0,bus=rp0",
                            "-device", f"vfio-pci,host={args.igb},id=igb0,bus=rp1"]
    q = Qemu(args, f"{args.tag}.two", extra)
    try:
        root_port_setup(q.qt, RP0, 1, EDU_BAR)
        root_port_setup(q.qt, RP1, 2, IGB_BAR)
        edu_enable(q.qt, 1, 0, EDU_BAR)
        edu_roundtrip(q.qt, EDU_BAR, 1)
        ids = q.qt.cfg_read(2, 0, 0)
        if ids != IGB_VENDOR_DEVICE:
            raise Fail(f"02:00.0 reads {ids:#010x}, not igb")
        q.qt.cfg_write(2, 0, 0x10, IGB_BAR)
        q.qt.cfg_write(2, 0, 0x04, 0x0006)
        q.qt.cmd(f"writel {IGB_BAR + IGB_RDBAL0:#x} 0x5a5a5a00")
        rd = q.qt.val(f"readl {IGB_BAR + IGB_RDBAL0:#x}")
        if rd != 0x5A5A5A00:
            raise Fail(f"igb RDBAL0 reads {rd:#x} after writing 0x5a5a5a00")
        containers = q.distinct_files(q.fds_to("/dev/vfio/vfio"))
        iommufds = q.distinct_files(q.fds_to("/dev/iommu"))
        obs("two", "edu_dma", "ok")
        obs("two", "igb_register", "ok")
        if containers:            # type1: one container fd holds both groups
            kind = f"{len(containers)} container file(s) /dev/vfio/vfio"
            one = len(containers) == 1
        else:                     # through the shim: one iommufd, one IOAS in it
            ioas = iommufd_probe(q.proc.pid, iommufds)
            kind = f"{len(iommufds)} iommufd file(s), IOAS per iommufd {[len(i) for i in ioas]}"
            one = len(iommufds) == 1 and len(ioas[0]) == 1
            if one:
                kind += "; " + status_agrees(args, q.proc.pid, [args.edu, args.igb], ioas[0][0])
        obs("two", "one_container", "yes" if one else "no")
        if not one:
            print(f"SCENARIO: QEMU's files: {q.files()}; /dev/iommu fds {q.fds_to('/dev/iommu')}",
                  file=sys.stderr)
            raise Fail(f"not one container: {kind}")
        unplug(q, "igb0", RP1)
        if not containers:
            status_agrees(args, q.proc.pid, [args.edu], ioas[0][0])
        igb_state = device_free(args.igb)
        obs("two", "igb_after_del", igb_state.split(" ")[0])
        if not igb_state.startswith("free"):
            raise Fail(f"igb after device_del: {igb_state}")
        edu_roundtrip(q.qt, EDU_BAR, 2)
        obs("two", "edu_dma_after_igb_del", "ok")
        q.quit()
        return f"QEMU {q.version}, edu DMA and igb MMIO in one container ({kind}); igb unplugged and free; edu DMA after"
    finally:
        q.close()
        obs(q.scenario, "qemu_messages", " | ".join(q.messages()) or "none")


def status_agrees(args, pid, devices, ioas):
    """`vfio-shim status` (the binary of --wrap) must list QEMU's one container as the kernel
    and sysfs show it: the IOAS id the probe found in QEMU's iommufd, the groups and devices
    assigned, TYPE1v2, mappings, and at least the pinned memory the kernel counts (VmPin; a
    BAR mapped for P2P is mapped but not pinned)."""
    rows, vm_pin, out = status_of(shlex.split(args.wrap)[0], pid)
    groups = sorted(int(os.path.basename(os.readlink(f"/sys/bus/pci/devices/{d}/iommu_group"))) for d in devices)
    if len(rows) != 1:
        raise Fail(f"vfio-shim status lists {len(rows)} containers of QEMU (pid {pid}): {out.stdout} {out.stderr}")
    r = rows[0]
    want = {"ioas": ioas, "groups": groups, "devices": sorted(devices), "iommu": "TYPE1v2", "served_by": "preload"}
    got = {"ioas": r["ioas"], "groups": sorted(r["groups"]), "devices": sorted(r["devices"]), "iommu": r["iommu"],
           "served_by": r["served_by"]}
    if got != want or r["mappings"] < 1 or not r["mapped_bytes"] >= vm_pin > 0 or r["pinned_bytes"] != vm_pin:
        raise Fail(f"vfio-shim status shows {r}; the kernel and sysfs: {want}, VmPin {vm_pin}")
    return f"status: {r['mappings']} mappings, {r['mapped_bytes']} bytes, VmPin {vm_pin}"


def scenario_reset(args, obs):
    """system_reset with two edus assigned: the one at 00:0a.0, which the kernel cannot reset
    (QEMU tries a bus reset and gives up), and the one behind its own root port, which it can
    (QEMU's VFIO_DEVICE_RESET, a secondary bus reset in the kernel)."""
    second = resettable_edu([args.edu, os.environ.get("VFIO_TEST_PAIR_EDU", "")])
    devs = ((args.edu, 3, EDU_BAR), (second, 4, EDU_BAR + 0x100000))
    extra = ["-trace", "vfio_pci_reset*", "-trace", "vfio_pci_hot_reset*"]
    for bdf, slot, _ in devs:
        extra += ["-device", f"vfio-pci,host={bdf},id=edu{slot},addr={slot:#x}"]
    q = Qemu(args, f"{args.tag}.reset", extra)
    try:
        for seed, (_, slot, bar) in enumerate(devs, 1):
            edu_enable(q.qt, 0, slot, bar)
            edu_roundtrip(q.qt, bar, seed)
        n0 = len(q.stderr_lines())
        q.qmp.command("system_reset")
        q.qmp.wait_event("RESET", q.timeout)
        time.sleep(0.2)     # trace lines are written by the main loop before RESET; let them land
        configs = []
        for _, slot, _ in devs:
            cmd = q.qt.cfg_read(0, slot, 0x04) & 0xFFFF
            bar = q.qt.cfg_read(0, slot, 0x10) & ~0xF
            configs.append(f"command={cmd:#x} bar0={bar:#x}")
            if cmd & 0x6 or bar:
                raise Fail(f"L2 config of 00:{slot:02x}.0 not reset: command {cmd:#x}, BAR0 {bar:#x}")
        obs("reset", "l2_config_after_reset", " ".join(configs))
        trace = [re.sub(r"^\d+@[\d.]+:|^[\d.: -]*", "", ln).strip()
                 for ln in q.stderr_lines()[n0:] if "vfio_pci_" in ln]
        obs("reset", "vfio_trace", " | ".join(trace) or "none")
        for bdf, _, _ in devs:
            if not any(t.startswith("vfio_pci_reset ") and bdf in t for t in trace):
                raise Fail(f"QEMU traced no vfio_pci_reset of {bdf} at system_reset")
        if not any("FLR/VFIO_DEVICE_RESET" in t and second in t for t in trace):
            raise Fail(f"QEMU did not reset {second} with VFIO_DEVICE_RESET")
        for seed, (_, slot, bar) in enumerate(devs, 3):
            edu_enable(q.qt, 0, slot, bar)
            edu_roundtrip(q.qt, bar, seed)
        obs("reset", "edu_dma_after_reset", "ok ok")
        q.quit()
        return (f"QEMU {q.version}, {args.edu} and {second}: DMA, system_reset ({'; '.join(trace)}),"
                f" DMA again")
    finally:
        q.close()
        obs(q.scenario, "qemu_messages", " | ".join(q.messages()) or "none")


def scenario_kvm(args, obs):
    """Hotplug under KVM, QEMU's ioctls traced by strace: the kernel's own answers to QEMU's (or
    the shim's) KVM_SET_DEVICE_ATTR on the KVM-VFIO device show what it holds. A DEL answers 0
    only for a file the device holds (kvm_vfio_file_del: ENOENT otherwise)."""
    trace = os.path.join(args.logdir or tempfile.gettempdir(), f"{args.tag}.kvm.strace")
    extra = HOTPLUG_ARGS + ["-accel", "kvm"]
    q = Qemu(args, f"{args.tag}.kvm", extra, strace=trace)
    try:
        kvm = q.qmp.command("query-kvm")
        obs("kvm", "query_kvm", f"enabled={kvm.get('enabled')}")
        if not kvm.get("enabled"):
            raise Fail("QEMU says KVM is not enabled")
        root_port_setup(q.qt, RP0, 1, EDU_BAR)
        q.qmp.command("device_add", driver="vfio-pci", host=args.edu, id="hp", bus="rp0")
        slot_power(q.qt, RP0, on=True)
        edu_enable(q.qt, 1, 0, EDU_BAR)
        edu_roundtrip(q.qt, EDU_BAR, 1)
        obs("kvm", "edu_dma", "ok")
        added = kvm_vfio_calls(trace)
        unplug(q, "hp", RP0)
        state = device_free(args.edu)
        obs("kvm", "device_after_del", state.split(" ")[0])
        q.quit()
        calls = kvm_vfio_calls(trace)
        removed = calls[len(added):]
        obs("kvm", "kvm_vfio_at_add", " ".join(r for _, r in added) or "none")
        obs("kvm", "kvm_vfio_at_del", " ".join(r for _, r in removed) or "none")
        errors = kvm_vfio_error_lines(q.stderr_lines())
        obs("kvm", "qemu_kvm_vfio_errors", len(errors))
        if not added or any(r != "0" for _, r in added):
            raise Fail(f"KVM-VFIO file add at device_add: {added or 'no call'}")
        if len(removed) != len(added) or any(r != "0" for _, r in removed):
            raise Fail(f"KVM-VFIO file del at device_del: {removed or 'no call'}")
        if errors:
            raise Fail("QEMU reported: " + " | ".join(errors[:2]))
        if not state.startswith("free"):
            raise Fail(f"device after device_del: {state}")
        return (f"QEMU {q.version} -accel kvm, hotplugged edu DMA; the kernel's KVM-VFIO device "
                f"answered {len(added)} file add(s) and as many del(s) with 0; device free after")
    finally:
        q.close()
        obs(q.scenario, "qemu_messages", " | ".join(q.messages()) or "none")


def kvm_vfio_calls(path):
    """(fd, result) of each KVM_SET_DEVICE_ATTR on a KVM-VFIO device fd in strace -y output."""
    out = []
    pat = re.compile(r"ioctl\((\d+)<anon_inode:kvm-vfio>, KVM_SET_DEVICE_ATTR, .*\) = (-?\d+)")
    try:
        with open(path, errors="replace") as fh:
            for line in fh:
                m = pat.search(line)
                if m:
                    out.append((int(m.group(1)), m.group(2)))
    except OSError:
        pass
    return out


def resettable_edu(exclude):
    """The edu the kernel can reset (alone behind a root port: `reset_method` offers `bus`),
    bound to vfio-pci here if it is not yet (guest-setup.sh leaves it unbound)."""
    for bdf in sorted(os.listdir("/sys/bus/pci/devices")):
        d = f"/sys/bus/pci/devices/{bdf}"
        try:
            ids = open(f"{d}/vendor").read().strip(), open(f"{d}/device").read().strip()
            methods = open(f"{d}/reset_method").read().split()
        except OSError:
            continue
        if ids != ("0x1234", "0x11e8") or bdf in exclude or "bus" not in methods:
            continue
        if os.path.basename(os.path.realpath(f"{d}/driver")) != "vfio-pci":
            with open(f"{d}/driver_override", "w") as fh:
                fh.write("vfio-pci")
            if os.path.exists(f"{d}/driver"):
                with open(f"{d}/driver/unbind", "w") as fh:
                    fh.write(bdf)
            with open("/sys/bus/pci/drivers_probe", "w") as fh:
                fh.write(bdf)
        return bdf
    raise Fail("no resettable edu (vm.sh puts one behind its own root port)")


def phys_command(bdf):
    """PCI_COMMAND as the device has it (sysfs config space), not as QEMU emulates it."""
    with open(f"/sys/bus/pci/devices/{bdf}/config", "rb") as fh:
        return int.from_bytes(fh.read(6)[4:6], "little")


def scenario_cpr(args, obs):
    """cpr-transfer (QEMU 10.1 and later): a running guest's QEMU hands its VFIO container,
    group and device fds to a new QEMU process over the cpr channel; the new process maps guest
    memory again with VFIO_DMA_MAP_FLAG_VADDR. An edu DMA must land in the memory the new
    process maps, before and after the old process is gone."""
    edu = resettable_edu([args.edu, os.environ.get("VFIO_TEST_PAIR_EDU", "")])
    mem = ["-accel", "kvm", "-machine", "memory-backend=ram0,aux-ram-share=on",
           "-object", "memory-backend-memfd,id=ram0,size=64M,share=on"]
    dev = ["-device", f"vfio-pci,host={edu},id=edu0,addr=0x3",
           "-trace", "vfio_pci_reset*", "-trace", "vfio_pci_hot_reset*"]
    biosdir = tempfile.mkdtemp(prefix="qscen-bios-")   # local: the 9p results dir gave ENODATA

    def bios_log(side):
        # SeaBIOS's own log (port 0x402): it says when it is done with the PCI setup
        path = os.path.join(biosdir, f"{side}.log")
        return path, ["-chardev", f"file,id=bios,path={path}", "-device", "isa-debugcon,iobase=0x402,chardev=bios"]

    old_bios, old_con = bios_log("old")
    old = Qemu(args, f"{args.tag}.cpr-old", mem + dev + old_con)
    new = None
    try:
        old.qmp.command("cont")          # a running guest: SeaBIOS assigns edu's BAR0
        # Touch the device only once the firmware is past its PCI setup (it is looking for
        # something to boot): before that, its own PCI_COMMAND writes can race ours.
        end = time.monotonic() + args.timeout
        while time.monotonic() < end:
            with open(old_bios, errors="replace") as fh:
                if re.search(r"Booting from|No bootable device", fh.read()):
                    break
            time.sleep(0.2)
        else:
            raise Fail("SeaBIOS never got to booting")
        bar = old.qt.cfg_read(0, 3, 0x10) & ~0xF
        if not bar:
            raise Fail("the firmware assigned edu no BAR0")
        old.qt.cfg_write(0, 3, 0x04, old.qt.cfg_read(0, 3, 0x04) | 0x6)
        edu_roundtrip(old.qt, bar, 1)
        before = phys_command(edu)
        old.qmp.command("migrate-set-parameters", mode="cpr-transfer")
        socks = {c: os.path.join(old.tmp, f"{c}.sock") for c in ("main", "cpr")}
        chans = [{"channel-type": c, "addr": {"transport": "socket", "type": "unix", "path": p}}
                 for c, p in socks.items()]

        def migrate(q):
            # The new process listens on its cpr channel first and reads the fds from it
            # before it creates any device; only then does it connect its qtest and QMP.
            end = time.monotonic() + args.timeout
            while not os.path.exists(socks["cpr"]):
                if q.proc.poll() is not None or time.monotonic() > end:
                    raise Fail("the new QEMU never listened on its cpr channel")
                time.sleep(0.05)
            old.qmp.command("migrate", channels=chans)

        incoming = [a for c in chans for a in ("-incoming", json.dumps(c))]
        try:
            new = Qemu(args, f"{args.tag}.cpr-new", mem + dev + bios_log("new")[1] + incoming,
                       before_connect=migrate)
        except Fail as e:
            info = old.qmp.command("query-migrate")
            if info.get("status"):
                raise Fail(f"{e} (migration {info['status']}: {info.get('error-desc', '')})")
            raise
        end = time.monotonic() + args.timeout
        while (info := old.qmp.command("query-migrate")).get("status") not in ("completed", "failed", "cancelled"):
            if time.monotonic() > end:
                break
            time.sleep(0.1)
        obs("cpr", "migration", info.get("status"))
        if info.get("status") != "completed":
            raise Fail(f"cpr-transfer {info.get('status')}: {info.get('error-desc', '')}")
        if new.qmp.command("query-status").get("status") != "running":
            new.qmp.command("cont")
        after = phys_command(edu)
        obs("cpr", "device_command_before_after", f"{before:#x} {after:#x}")
        edu_roundtrip(new.qt, bar, 2)
        obs("cpr", "edu_dma_in_new_process", "ok")
        old.quit()
        edu_roundtrip(new.qt, bar, 3)
        obs("cpr", "edu_dma_in_new_process_after_old_quit", "ok")
        new.quit()
        state = device_free(edu)
        obs("cpr", "device_after_quit", state.split(" ")[0])
        if not state.startswith("free"):
            raise Fail(f"device after the new QEMU quit: {state}")
        return (f"QEMU {old.version} -accel kvm, edu {edu}: cpr-transfer to a new process, DMA lands"
                f" in its memory before and after the old one quit; device free after")
    finally:
        for name, q in (("old", old), ("new", new)):
            if q is None:
                continue
            rc = q.proc.poll()
            q.close()
            obs("cpr", f"qemu_messages_{name}", " | ".join(q.messages()) or "none")
            trace = [re.sub(r"^\d+@[\d.]+:", "", ln).strip() for ln in q.stderr_lines() if "vfio_pci_" in ln]
            obs("cpr", f"vfio_trace_{name}", " | ".join(trace) or "none")
            if rc not in (None, 0):
                obs("cpr", f"exit_status_{name}", rc)


def pidfd_getfd(pidfd, fd):
    r = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if r < 0:
        raise Fail(f"pidfd_getfd({fd}): {os.strerror(ctypes.get_errno())}")
    return r


def iommufd_probe(pid, iommufds):
    """For each of the process's iommufds: which object ids 1..64 are IOASes
    (IOMMU_IOAS_IOVA_RANGES answers anything but ENOENT)."""
    out = []
    pidfd = os.pidfd_open(pid)
    try:
        for fd in iommufds:
            mine = pidfd_getfd(pidfd, fd)
            try:
                ids = []
                for obj in range(1, 65):
                    buf = ctypes.create_string_buffer(struct.pack("IIIIQQ", 32, obj, 0, 0, 0, 0), 32)
                    if libc.ioctl(mine, IOMMU_IOAS_IOVA_RANGES, buf) == 0 or ctypes.get_errno() != 2:
                        ids.append(obj)
                out.append(ids)
            finally:
                os.close(mine)
    finally:
        os.close(pidfd)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wrap", help="command prefix for QEMU (e.g. 'vfio-shim run --')")
    ap.add_argument("--logdir")
    ap.add_argument("--tag", default="qemu")
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("qemu")
    ap.add_argument("edu")
    ap.add_argument("igb")
    ap.add_argument("scenarios", nargs="+", choices=["hotplug", "two", "reset", "kvm", "cpr"])
    args = ap.parse_args()

    def obs(scenario, key, value):
        print(f"OBSERVE {scenario} {key} {value}", flush=True)

    rc = 0
    for name in args.scenarios:
        t0 = time.monotonic()
        try:
            if name == "hotplug":
                detail = scenario_hotplug(args, obs)
            elif name == "two":
                detail = scenario_two(args, obs, iommufd_probe)
            elif name == "reset":
                detail = scenario_reset(args, obs)
            elif name == "cpr":
                detail = scenario_cpr(args, obs)
            else:
                detail = scenario_kvm(args, obs)
            print(f"SCENARIO {name}: ok ({detail})")
        except (Fail, OSError) as e:
            rc = 1
            print(f"SCENARIO {name}: FAIL: {e}")
        print(f"TIME {name} {time.monotonic() - t0:.1f}s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
