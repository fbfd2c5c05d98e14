#!/usr/bin/env python3
"""`vfio-shim trace` checked line by line against what the program and the shim did, by strace.

Three steps (vm-tier.sh runs the first two in its guests, the third on the host):
  record-type1 CLIENT OUT            full kernel: strace of CLIENT on the real type1, the
                                     legacy calls as the kernel saw them (OUT/type1.strace)
  record-shim VFIO_SHIM CLIENT OUT   cdev-only kernel: strace of `vfio-shim trace --json -o
                                     OUT/trace.jsonl -- CLIENT` (OUT/shim.strace): the native
                                     calls the shim made, as the kernel saw them
  compare TYPE1_DIR SHIM_DIR         the trace must hold
    1. the legacy calls of the type1 run, in order: each open of /dev/vfio/vfio or a group
       node, each ioctl on a container, group or (hot reset) device fd, each close of one, with
       the same request, the same integer argument where it is one, the same result and errno
       (fds as FD): type1 is the judge of which calls the program made and what they returned;
    2. the native calls of the shim run, in order: every open of /dev/iommu or a VFIO cdev and
       every iommufd, cdev-bind/attach and PROCMAP_QUERY ioctl strace saw, each listed under
       a legacy call, with the same result. Closes are left out: the file closes when its last
       reference goes, which is not always the call that dropped the shim's.
Prints "trace (qemu_like): pass (N legacy calls, M native calls as strace saw them)" or
"trace (qemu_like): FAIL: ...", exit status 1 on FAIL.
"""
import json
import os
import re
import subprocess
import sys

VFIO = 0x3B00
CONTAINER_REQ = {VFIO | 100: "VFIO_GET_API_VERSION", VFIO | 101: "VFIO_CHECK_EXTENSION",
                 VFIO | 102: "VFIO_SET_IOMMU", VFIO | 112: "VFIO_IOMMU_GET_INFO",
                 VFIO | 113: "VFIO_IOMMU_MAP_DMA", VFIO | 114: "VFIO_IOMMU_UNMAP_DMA",
                 VFIO | 115: "VFIO_IOMMU_ENABLE", VFIO | 116: "VFIO_IOMMU_DISABLE",
                 VFIO | 117: "VFIO_IOMMU_DIRTY_PAGES"}
GROUP_REQ = {VFIO | 100: "VFIO_GET_API_VERSION", VFIO | 101: "VFIO_CHECK_EXTENSION",
             VFIO | 103: "VFIO_GROUP_GET_STATUS", VFIO | 104: "VFIO_GROUP_SET_CONTAINER",
             VFIO | 105: "VFIO_GROUP_UNSET_CONTAINER", VFIO | 106: "VFIO_GROUP_GET_DEVICE_FD"}
DEVICE_REQ = {VFIO | 112: "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", VFIO | 113: "VFIO_DEVICE_PCI_HOT_RESET"}
# What the shim issues (shim/sys; numbers pinned by its tests/golden.rs against the 7.3 uAPI).
NATIVE_REQ = {VFIO | 0x80: "IOMMU_DESTROY", VFIO | 0x81: "IOMMU_IOAS_ALLOC", VFIO | 0x82: "IOMMU_IOAS_ALLOW_IOVAS",
              VFIO | 0x83: "IOMMU_IOAS_COPY", VFIO | 0x84: "IOMMU_IOAS_IOVA_RANGES", VFIO | 0x85: "IOMMU_IOAS_MAP",
              VFIO | 0x86: "IOMMU_IOAS_UNMAP", VFIO | 0x87: "IOMMU_OPTION", VFIO | 0x88: "IOMMU_VFIO_IOAS",
              VFIO | 0x89: "IOMMU_HWPT_ALLOC", VFIO | 0x8A: "IOMMU_GET_HW_INFO",
              VFIO | 0x8B: "IOMMU_HWPT_SET_DIRTY_TRACKING", VFIO | 0x8C: "IOMMU_HWPT_GET_DIRTY_BITMAP",
              VFIO | 0x8F: "IOMMU_IOAS_MAP_FILE", VFIO | 117: "VFIO_DEVICE_FEATURE",
              VFIO | 118: "VFIO_DEVICE_BIND_IOMMUFD", VFIO | 119: "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
              VFIO | 120: "VFIO_DEVICE_DETACH_IOMMUFD_PT", 0xC0686611: "PROCMAP_QUERY"}
EXTENSIONS = {"VFIO_TYPE1_IOMMU": 1, "VFIO_SPAPR_TCE_IOMMU": 2, "VFIO_TYPE1v2_IOMMU": 3, "VFIO_DMA_CC_IOMMU": 4,
              "VFIO_EEH": 5, "VFIO_TYPE1_NESTING_IOMMU": 6, "VFIO_SPAPR_TCE_v2_IOMMU": 7, "VFIO_NOIOMMU_IOMMU": 8,
              "VFIO_UNMAP_ALL": 9, "VFIO_UPDATE_VADDR": 10}
FD_RESULT = {"open", "VFIO_GROUP_GET_DEVICE_FD"}
STRACE = ["strace", "-qq", "-e", "trace=openat,ioctl,close", "-e", "raw=ioctl"]
# strace -e raw=ioctl prints an ioctl's result in hex too.
LINE = re.compile(r'^(openat|ioctl|close)\((.*)\) += (-?(?:0x[0-9a-f]+|\d+)|\?)(?: (E[A-Z0-9]+))?')


def strace_calls(path):
    """[(syscall, args, result, errno)] in order."""
    out = []
    for line in open(path):
        m = LINE.match(line)
        if m:
            out.append((m[1], m[2], int(m[3], 0) if m[3] != "?" else None, m[4]))
    return out


def result_key(name, result, errno):
    if result is not None and result >= 0 and name in FD_RESULT:
        return "FD"
    return f"-1 {errno}" if result is not None and result < 0 else str(result)


def legacy_from_type1(path):
    """The legacy calls as type1 saw them: [(name, int arg or None, result)]."""
    kinds, calls = {}, []
    for sc, args, res, err in strace_calls(path):
        if sc == "openat":
            p = re.search(r'"([^"]*)"', args)[1]
            if p == "/dev/vfio/vfio" or re.fullmatch(r"/dev/vfio/\d+", p):
                calls.append((f"open {p}", None, result_key("open", res, err)))
                if res is not None and res >= 0:
                    kinds[res] = "container" if p.endswith("/vfio") else "group"
            continue
        fd = int(args.split(",")[0], 0)
        if sc == "close":
            if fd in kinds:
                calls.append(("close", None, result_key("close", res, err)))
                del kinds[fd]
            continue
        if fd not in kinds:
            continue
        req = int(args.split(",")[1], 16)
        table = {"container": CONTAINER_REQ, "group": GROUP_REQ, "device": DEVICE_REQ}[kinds[fd]]
        if kinds[fd] == "device" and req not in table:
            continue  # served by the kernel on the cdev unchanged, not a legacy call of the shim's
        name = table.get(req, "ioctl")
        arg = int(args.split(",")[2], 0) if name in ("VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU") else None
        calls.append((name, arg, result_key(name, res, err)))
        if name == "VFIO_GROUP_GET_DEVICE_FD" and res is not None and res >= 0:
            kinds[res] = "device"
    return calls


def trace_lines(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def legacy_from_trace(lines):
    calls = []
    for l in lines:
        call = l["call"]
        m = re.match(r'open\("([^"]*)"', call)
        if m:
            name = f"open {m[1]}"
        else:
            name = call.split("(")[0]
        arg = None
        if name in ("VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU"):
            a = re.search(r"fd=-?\d+, (\w+)\)", call)[1]
            arg = EXTENSIONS[a] if a in EXTENSIONS else int(a)
        calls.append((name, arg, result_key("open" if name.startswith("open ") else name, l["result"], l["errno"])))
    return calls


def natives_from_strace(path):
    out, opened = [], {}
    for sc, args, res, err in strace_calls(path):
        if sc == "openat":
            p = re.search(r'"([^"]*)"', args)[1]
            if p == "/dev/iommu" or p.startswith("/dev/vfio/devices/"):
                out.append((f"open({p})", result_key("open", res, err)))
        elif sc == "ioctl":
            req = int(args.split(",")[1], 16)
            if req in NATIVE_REQ:
                out.append((NATIVE_REQ[req], result_key(NATIVE_REQ[req], res, err)))
    return out


def natives_from_trace(lines):
    out = []
    for l in lines:
        for n in l["native"]:
            if n["call"].startswith("close("):
                continue
            name = n["call"] if n["call"].startswith("open(") else n["call"].split("(")[0]
            out.append((name, result_key("open" if name.startswith("open(") else name, n["result"], n["errno"])))
    return out


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"#{i}: expected {x}, trace has {y}"
    return f"lengths {len(a)} and {len(b)}: {'trace lacks' if len(a) > len(b) else 'trace adds'} " \
           f"{(a if len(a) > len(b) else b)[min(len(a), len(b))]}"


def main():
    cmd = sys.argv[1]
    if cmd == "record-type1":
        client, out = sys.argv[2:4]
        os.makedirs(out, exist_ok=True)
        rc = subprocess.run(STRACE + ["-o", f"{out}/type1.strace", client], stdout=open(f"{out}/type1.transcript", "w")).returncode
        return rc
    if cmd == "record-shim":
        vfio_shim, client, out = sys.argv[2:5]
        os.makedirs(out, exist_ok=True)
        trace = f"{out}/trace.jsonl"
        if os.path.exists(trace):
            os.unlink(trace)
        rc = subprocess.run(STRACE + ["-o", f"{out}/shim.strace", vfio_shim, "trace", "--json", "-o", trace, "--", client],
                            stdout=open(f"{out}/shim.transcript", "w")).returncode
        # The same run in text form, for the eye (docs/operators.md shows one).
        subprocess.run([vfio_shim, "trace", "-o", f"{out}/trace.txt", "--", client], stdout=subprocess.DEVNULL)
        return rc
    if cmd == "compare":
        t1, sh = sys.argv[2:4]
        label = "trace (qemu_like)"
        for f in (f"{t1}/type1.strace", f"{sh}/shim.strace", f"{sh}/trace.jsonl"):
            if not os.path.exists(f):
                print(f"{label}: FAIL: {f} missing")
                return 1
        lines = trace_lines(f"{sh}/trace.jsonl")
        problems = []
        expected, got = legacy_from_type1(f"{t1}/type1.strace"), legacy_from_trace(lines)
        if expected != got:
            problems.append("legacy calls differ from type1's: " + first_difference(expected, got))
        nexp, ngot = natives_from_strace(f"{sh}/shim.strace"), natives_from_trace(lines)
        if nexp != ngot:
            problems.append("native calls differ from strace's: " + first_difference(nexp, ngot))
        if any(l["us"] < 0 or l["pid"] <= 0 for l in lines):
            problems.append("a line without a pid or a duration")
        if not expected or not nexp:
            problems.append("nothing recorded")
        if problems:
            print(f"{label}: FAIL: " + "; ".join(problems))
            return 1
        print(f"{label}: pass ({len(got)} legacy calls as type1 saw them, {len(ngot)} native calls as strace saw them)")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
