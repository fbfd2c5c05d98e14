#!/usr/bin/env python3
"""`vfio-shim status` against the kernel, for a program served by the preload and by the
seccomp supervisor (run in the cdev-only guest by vm-tier.sh).

hold.c, under `vfio-shim run --` (the preload) or `vfio-shim run --supervise --`, sets the
group of <bdf> on a TYPE1v2 container, maps <pages> 4 KiB pages of its own memory and gets the
device's fd, then waits. While it waits, `vfio-shim status --json` must list exactly one
container for its pid: the group sysfs names for the device, the device, TYPE1v2, <pages>
mappings of 4 KiB, served by the preload or by the supervisor (its pid: hold's parent), and
as pinned the VmPin the kernel counts for hold, which must be what it mapped. After hold exits,
no row may be left for it.

Usage: check.py <vfio-shim> <hold> <bdf> preload|supervisor
Prints one line "status (<mode>): pass (...)" or "status (<mode>): FAIL (...)"; exit 0 on pass.
"""
import json
import os
import subprocess
import sys

PAGES = 3


def rows_of(vfio_shim, pid):
    out = subprocess.run([vfio_shim, "status", "--json"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"vfio-shim status --json: exit {out.returncode}: {out.stderr.strip()}")
    return [r for r in json.loads(out.stdout or "[]") if r["pid"] == pid]


def vm_pin(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmPin:"))


def check(vfio_shim, hold, bdf, mode):
    wrap = [vfio_shim, "run", "--"] if mode == "preload" else [vfio_shim, "run", "--supervise", "--"]
    group = int(os.path.basename(os.readlink(f"/sys/bus/pci/devices/{bdf}/iommu_group")))
    p = subprocess.Popen(wrap + [hold, bdf, str(PAGES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            p.stdin.close()
            raise RuntimeError(f"hold did not get ready: {line} {p.stderr.read().strip()}")
        pid = int(line[1])
        rows = rows_of(vfio_shim, pid)
        pinned = vm_pin(pid)
        want = {"groups": [group], "devices": [bdf], "iommu": "TYPE1v2", "mappings": PAGES,
                "mapped_bytes": PAGES * 4096, "pinned_bytes": pinned,
                "served_by": "preload" if mode == "preload" else f"supervisor {p.pid}"}
        if len(rows) != 1:
            raise RuntimeError(f"{len(rows)} containers listed for hold (pid {pid})")
        got = {k: rows[0][k] for k in want}
        if got != want or pinned != PAGES * 4096:
            raise RuntimeError(f"listed {got}; the kernel: {want}, VmPin {pinned}")
    finally:
        if not p.stdin.closed:
            p.stdin.close()
        rc = p.wait(timeout=120)
    if rc != 0:
        raise RuntimeError(f"hold exited {rc}: {p.stderr.read().strip()}")
    left = rows_of(vfio_shim, pid)
    if left:
        raise RuntimeError(f"after hold exited, still listed: {left}")
    return f"group {group}, {bdf}, {PAGES} mappings, VmPin {pinned}, served by {got['served_by']}; gone after exit"


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("preload", "supervisor"):
        sys.exit(__doc__)
    vfio_shim, hold, bdf, mode = sys.argv[1:]
    try:
        print(f"status ({mode}): pass ({check(vfio_shim, hold, bdf, mode)})")
    except Exception as e:  # noqa: BLE001: any failure is the verdict
        print(f"status ({mode}): FAIL ({e})")
        sys.exit(1)


if __name__ == "__main__":
    main()
