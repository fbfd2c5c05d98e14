#!/usr/bin/env python3
"""The libvirt recipe of docs/operators.md, done as an operator would, in the L1 test guest.

libvirt (Debian's libvirtd and virsh) starts QEMU for a domain with a <hostdev> (the edu),
its <emulator> being the recipe's wrapper, which runs QEMU through `vfio-shim run`. The steps
of the recipe, each checked:
  1. the wrapper at /usr/local/libexec/qemu-vfio-shim; the daemon already serves
     /dev/vfio/vfio and the group node (libvirt requires both before it starts QEMU);
  2. a udev rule gives /dev/iommu and the VFIO cdevs to libvirt's QEMU group (QEMU runs as
     libvirt-qemu; libvirt relabels the group node, not the nodes the shim opens);
  3. libvirtd without /dev/iommu and the cdev in cgroup_device_acl: the domain must fail to
     start (libvirt's private /dev for QEMU lacks the node), the preload's line in the domain's
     log naming /dev/iommu and the fix, so the step is needed and an operator is told;
  4. with them: `virsh domxml-to-native` shows the wrapper as the emulator and the vfio-pci
     device; `virsh create --paused` starts the domain; through the qtest socket the L2's edu
     moves a pattern L2 RAM -> edu -> L2 RAM (qemu_l2_dma.edu_l2_dma); `vfio-shim status`
     lists QEMU's container with the kernel's VmPin; `virsh destroy`; the device is free and
     QEMU's log (libvirt's domain log) reports no failed DMA map.

Prints one "ok   ..." or "FAIL ..." line per check (the package test counts them).
Usage: libvirt_l2_dma.py <vfio-shim-binary> <edu-bdf> <workdir>
"""
import os
import pwd
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qemu_l2_dma import (  # noqa: E402
    QTest, Fail, device_free, dma_map_warnings, edu_l2_dma, group_of, status_of, stop_process,
)

WRAPPER = "/usr/local/libexec/qemu-vfio-shim"
UDEV_RULE = "/etc/udev/rules.d/70-vfio-shim-libvirt.rules"
QEMU_CONF = "/etc/libvirt/qemu.conf"
DOMAIN = "vfio-shim-l2"
DOMAIN_LOG = f"/var/log/libvirt/qemu/{DOMAIN}.log"
# libvirt 9.0's default cgroup_device_acl (qemu.conf)
DEFAULT_ACL = ["/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom",
               "/dev/ptmx", "/dev/kvm", "/dev/userfaultfd"]
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]

results = []


def check(ok, what):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} libvirt: {what}", flush=True)
    return ok


def sh(cmd, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cdev_of(bdf):
    return "/dev/vfio/devices/" + os.listdir(f"/sys/bus/pci/devices/{bdf}/vfio-dev")[0]


def domain_xml(bdf, qtest_sock):
    dom, bus, slot, fn = int(bdf[0:4], 16), int(bdf[5:7], 16), int(bdf[8:10], 16), int(bdf[11], 16)
    # <acpi/>: without it libvirt 9.0 passes -no-acpi, which QEMU 10.0 no longer has.
    # edu at L2 00:05.0 (pcie.0), where qemu_l2_dma's config cycles look for it.
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>{WRAPPER}</emulator>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <driver name='vfio'/>
      <source><address domain='{dom:#06x}' bus='{bus:#04x}' slot='{slot:#04x}' function='{fn:#x}'/></source>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </hostdev>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-qtest'/>
    <qemu:arg value='unix:{qtest_sock}'/>
  </qemu:commandline>
</domain>
"""


def write_qemu_conf(extra_acl):
    acl = ", ".join(f'"{p}"' for p in DEFAULT_ACL + extra_acl)
    with open(QEMU_CONF, "w") as f:
        f.write(f"cgroup_device_acl = [ {acl} ]\n")


def daemon(work, name, tag, ready):
    """Starts a libvirt daemon in the foreground of its own session, as its unit would, with
    errors to its log; waits until ready() holds."""
    log = open(os.path.join(work, f"{name}.{tag}.log"), "w")
    proc = subprocess.Popen([name], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            env=dict(os.environ, LIBVIRT_LOG_OUTPUTS=os.environ.get("LV_LOG", "3:stderr")))
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        if ready():
            return proc
        time.sleep(0.5)
    return None


def start_libvirt(work, tag):
    """virtlogd (QEMU's stdio goes through it) and libvirtd."""
    virtlogd = daemon(work, "virtlogd", tag, lambda: sh(["virt-admin", "-c", "virtlogd:///system", "version"]).returncode == 0)
    libvirtd = daemon(work, "libvirtd", tag, lambda: sh(VIRSH + ["version"], timeout=30).returncode == 0)
    return virtlogd, libvirtd


def log_tail(since):
    try:
        with open(DOMAIN_LOG, errors="replace") as f:
            f.seek(since)
            return f.read()
    except OSError:
        return ""


def log_size():
    try:
        return os.path.getsize(DOMAIN_LOG)
    except OSError:
        return 0


def status_row(vfio_shim, pid, bdf):
    rows, vm_pin, out = status_of(vfio_shim, pid)
    if len(rows) != 1:
        raise Fail(f"vfio-shim status lists {len(rows)} containers of QEMU (pid {pid}): {out.stdout} {out.stderr}")
    r = rows[0]
    want = {"groups": [int(group_of(bdf))], "devices": [bdf], "iommu": "TYPE1v2", "served_by": "preload"}
    got = {k: r[k] for k in want}
    if got != want or r["mappings"] < 1 or r["pinned_bytes"] != vm_pin or vm_pin == 0:
        raise Fail(f"vfio-shim status shows {r}; want {want}, pinned = VmPin {vm_pin}")
    return f"{r['mappings']} mappings, {r['pinned_bytes']} bytes pinned = QEMU's VmPin"


def main():
    vfio_shim, bdf, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    cdev = cdev_of(bdf)

    # 1. the wrapper, as docs/operators.md writes it
    os.makedirs(os.path.dirname(WRAPPER), exist_ok=True)
    with open(WRAPPER, "w") as f:
        f.write(f'#!/bin/sh\nexec {vfio_shim} run -- /usr/bin/qemu-system-x86_64 "$@"\n')
    os.chmod(WRAPPER, 0o755)
    nodes = [p for p in ("/dev/vfio/vfio", f"/dev/vfio/{group_of(bdf)}") if os.path.exists(p)]
    if not check(len(nodes) == 2, f"the daemon serves the nodes libvirt requires ({', '.join(nodes)})"):
        return 1
    # libvirt-daemon-system's postinst makes this user and group and puts the user in kvm;
    # the test installs only the daemon and the QEMU driver, so it does the same. (Without
    # kvm, libvirt finds /dev/kvm gone for QEMU's user and probes QEMU again on every call.)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        with open("/etc/group") as f:
            groups = [ln.rstrip("\n") for ln in f]
        groups = [g + ("," if not g.endswith(":") else "") + "libvirt-qemu" if g.startswith("kvm:") else g
                  for g in groups] + ["libvirt-qemu:x:64055:"]
        with open("/etc/group", "w") as f:
            f.write("\n".join(groups) + "\n")
        with open("/etc/passwd", "a") as f:
            f.write("libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n")
    qemu_gid = pwd.getpwnam("libvirt-qemu").pw_gid

    # 2. the udev rule
    with open(UDEV_RULE, "w") as f:
        f.write('SUBSYSTEM=="misc", KERNEL=="iommu", GROUP="libvirt-qemu", MODE="0660"\n'
                'SUBSYSTEM=="vfio-dev", GROUP="libvirt-qemu", MODE="0660"\n')
    sh(["udevadm", "control", "--reload"])
    sh(["udevadm", "trigger", "--action=add", "--subsystem-match=misc", "--sysname-match=iommu"])
    sh(["udevadm", "trigger", "--action=add", "--subsystem-match=vfio-dev"])
    sh(["udevadm", "settle"])
    modes = {p: (os.stat(p).st_gid, os.stat(p).st_mode & 0o777) for p in ("/dev/iommu", cdev)}
    check(all(v == (qemu_gid, 0o660) for v in modes.values()),
          f"the udev rule gives /dev/iommu and {cdev} to libvirt-qemu, 0660 "
          f"({', '.join(f'{p} gid {g} {m:o}' for p, (g, m) in modes.items())})")

    qtest_dir = os.path.join(work, "qtest")
    os.makedirs(qtest_dir, exist_ok=True)
    os.chown(qtest_dir, 0, qemu_gid)
    os.chmod(qtest_dir, 0o770)
    qtest_sock = os.path.join(qtest_dir, "qtest.sock")

    def qtest_listener():
        """A fresh socket for the domain's QEMU to connect its qtest chardev to."""
        if os.path.exists(qtest_sock):
            os.unlink(qtest_sock)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(qtest_sock)
        os.chown(qtest_sock, 0, qemu_gid)
        os.chmod(qtest_sock, 0o660)
        srv.listen(1)
        return srv
    xml = os.path.join(work, "domain.xml")
    with open(xml, "w") as f:
        f.write(domain_xml(bdf, qtest_sock))

    # 3. without the cgroup_device_acl entries the domain cannot start
    write_qemu_conf([])
    daemons = start_libvirt(work, "default-acl")
    if not check(None not in daemons, "virtlogd and libvirtd run (default cgroup_device_acl)"):
        return 1
    srv = qtest_listener()
    since = log_size()
    r = sh(VIRSH + ["create", "--paused", xml], timeout=300)
    srv.close()
    told = log_tail(since)
    said = next((ln for ln in told.splitlines() if ln.startswith("vfio-shim: ")), None)
    if r.returncode == 0:
        sh(VIRSH + ["destroy", DOMAIN])
    check(r.returncode != 0 and said is not None and "/dev/iommu" in said,
          "without /dev/iommu and the cdev in cgroup_device_acl the domain fails, QEMU's log says: "
          + (said or (r.stderr or told).strip()[-300:]))

    # 4. the recipe's qemu.conf
    for d in reversed(daemons):
        stop_process(d, 30)
    write_qemu_conf(["/dev/iommu", cdev])
    daemons = start_libvirt(work, "recipe")
    if not check(None not in daemons, f"virtlogd and libvirtd run (cgroup_device_acl + /dev/iommu, {cdev})"):
        return 1
    argv = sh(VIRSH + ["domxml-to-native", "qemu-argv", xml], timeout=300)
    with open(os.path.join(work, "qemu-argv.txt"), "w") as f:
        f.write(argv.stdout + argv.stderr)
    check(argv.returncode == 0 and f" {WRAPPER} " in argv.stdout and f'"host":"{bdf}"' in argv.stdout,
          f"virsh domxml-to-native: {WRAPPER} ... -device {{\"driver\":\"vfio-pci\",\"host\":\"{bdf}\",...}}")

    srv = qtest_listener()
    since = log_size()
    t0 = time.monotonic()
    r = sh(VIRSH + ["create", "--paused", xml], timeout=300)
    if not check(r.returncode == 0, f"virsh create --paused ({time.monotonic() - t0:.1f} s)"
                 f"{': ' + (r.stderr.strip() or log_tail(since)[-400:]) if r.returncode else ''}"):
        return 1
    try:
        pid = int(open(f"/run/libvirt/qemu/{DOMAIN}.pid").read())
        user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
        srv.settimeout(60)
        qt = QTest(srv.accept()[0])
        detail = edu_l2_dma(qt)
        check(True, f"L2 DMA through the domain's QEMU (pid {pid}, user {user}): {detail}")
    except (Fail, OSError, socket.timeout) as e:
        check(False, f"L2 DMA through the domain's QEMU: {e}")
        pid = None
    if pid:
        try:
            check(True, f"vfio-shim status: QEMU's container: {status_row(vfio_shim, pid, bdf)}")
        except (Fail, OSError, ValueError) as e:
            check(False, f"vfio-shim status: {e}")
    r = sh(VIRSH + ["destroy", DOMAIN], timeout=120)
    check(r.returncode == 0, "virsh destroy" + (f": {r.stderr.strip()}" if r.returncode else ""))
    try:
        check(True, device_free(bdf))
    except Fail as e:
        check(False, str(e))
    run_log = os.path.join(work, "domain.log")
    with open(run_log, "w") as f:
        f.write(log_tail(since))
    warnings = dma_map_warnings(run_log)
    check(warnings == [], f"{DOMAIN_LOG}: QEMU reported no failed DMA map"
          + (f": {' | '.join(warnings[:3])}" if warnings else ""))
    for d in reversed(daemons):
        stop_process(d, 30)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
