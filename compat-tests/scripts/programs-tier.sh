#!/usr/bin/env bash
# Real programs through the shim, compared with real type1 (part of `make test`):
#   1. the kernel's VFIO selftests (type1 and type1v2 variants) and QEMU 7.2 / 10.0 assigning
#      edu to an L2, on the full kernel against the real type1 driver: the oracle;
#   2. the same on the cdev-only kernel (no legacy container, no groups), every program run
#      by `vfio-shim run --` (LD_PRELOAD);
#   3. every selftest case must have the same result in both, and both QEMU versions must move
#      the L2 DMA through the assigned device, map its BAR for P2P and quit cleanly;
#   4. QEMU's VFIO lifecycle (qemu_scenarios.py) in both versions: 20 hotplug cycles, two devices
#      in one container with one unplugged, system_reset, hotplug under -accel kvm; and QEMU
#      11.1's cpr-transfer to a new process; each must pass on both sides with the same
#      observations (docs/differences.md lists the exceptions); cpr on the kernel compat must
#      be refused as recorded (no VFIO_UPDATE_VADDR);
#   5. a DPDK secondary (dpdk-proc-info) must open the primary's (testpmd) igb through the
#      container and group fds it receives over SCM_RIGHTS, on type1 and through the shim;
#   6. a rust-vmm client (vfio-ioctls + kvm-ioctls, compat-tests/programs/vfio-ioctls-edu)
#      must move edu's DMA on type1 built both ways, and through `vfio-shim run` built both
#      ways (the static build under the seccomp supervisor); its static build fails alone;
#   7. the seccomp supervisor (`vfio-shim run --supervise`), in the shim boot: every selftest
#      case as on type1, and QEMU 10.0's L2 DMA and BAR map.
# Usage: programs-tier.sh [results-dir]   (default compat-tests/out/programs-tier; wiped)
# The last line is "programs: N passed, M failed, K skipped".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/compat-tests/out/programs-tier}
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

bash "$root/compat-tests/scripts/build-release.sh"
# One L2 DMA run per QEMU version: the hotplug scenario takes the device 20 times in one QEMU
# process and checks it is free after each, which is what a second run would show.
export L2_DMA_RUNS=${L2_DMA_RUNS:-1}
run=$root/target/release/vfio-shim

# The host side first, for both (shared caches: one writer at a time); then the two boots side
# by side, one TCG vCPU each (vm.sh's VFIO_SHIM_VM_SLOTS=1: one after the other).
echo "=== programs-tier: host side (builds, downloads)" >&2
RUN_VM_PREPARE_ONLY=1 bash "$root/compat-tests/programs/run-vm.sh" full "$out/type1" >"$out/prepare.log" 2>&1 \
  && RUN_VM_PREPARE_ONLY=1 bash "$root/compat-tests/programs/run-vm.sh" cdev-only "$out/shim" >>"$out/prepare.log" 2>&1 \
  || { tail -n 40 "$out/prepare.log" >&2; echo "programs: 0 passed, 1 failed, 0 skipped"; exit 1; }
echo "=== programs-tier: type1 baseline on the full kernel; through the shim on the cdev-only kernel (vfio-shim run)" >&2
set +e
QEMU_COMPAT_CPR=1 RUN_VM_PREPARED=1 bash "$root/compat-tests/programs/run-vm.sh" full "$out/type1" >"$out/type1.log" 2>&1 &
type1_pid=$!
SELFTESTS_WRAP="$run run --" QEMU_WRAP="$run run --" DPDK_WRAP="$run run --" RUSTVMM_WRAP="$run run --" \
  SUPERVISOR_WRAP="$run run --supervise --" RUN_VM_PREPARED=1 \
  bash "$root/compat-tests/programs/run-vm.sh" cdev-only "$out/shim" >"$out/shim.log" 2>&1
shim_rc=$?
wait $type1_pid
type1_rc=$?
set -e
echo "programs-tier: run-vm.sh exit status: type1 $type1_rc, shim $shim_rc" >&2
[ "$type1_rc" = 0 ] || tail -n 40 "$out/type1.log" >&2
[ "$shim_rc" = 0 ] || tail -n 40 "$out/shim.log" >&2

python3 - "$out" "$root" <<'PY'
import csv, pathlib, sys
out = pathlib.Path(sys.argv[1])
root = pathlib.Path(sys.argv[2])
passed = failed = skipped = 0

def cases(side, run="selftests"):
    p = out / side / run / "summary.tsv"
    if not p.exists():
        return None
    rows = {}
    with p.open() as f:
        for r in csv.reader(f, delimiter="\t"):
            if len(r) >= 5 and r[0] != "test":
                rows[tuple(r[:4])] = r[4]
    return rows

t1, sh = cases("type1"), cases("shim")
print(f"{'selftest case (test / device / mode / case)':96} {'type1':>6} {'shim':>6}")
if t1 is None or sh is None or not t1:
    print("selftests: no summary from " + ("type1" if not t1 else "shim"))
    failed += 1
else:
    for key in sorted(set(t1) | set(sh)):
        a, b = t1.get(key, "-"), sh.get(key, "-")
        # A case type1 skips too (no 1 GiB hugepages, no reset on edu) is skipped, not passed.
        if a == b == "skip":
            skipped += 1
            mark = "   (skipped in both)"
        elif a == b == "pass":
            passed += 1
            mark = ""
        else:
            failed += 1
            mark = "   <-- differs" if a != b else "   <-- fails in both"
        print(f"{' / '.join(key):96} {a:>6} {b:>6}{mark}")

print()
# The supervisor's pass: each case as on type1.
sv = cases("shim", "selftests-supervisor")
if t1 is None or sv is None or not t1:
    print("selftests under the supervisor: no summary")
    failed += 1
else:
    same = [k for k in t1 if t1[k] == sv.get(k)]
    diff = sorted(k for k in set(t1) | set(sv) if t1.get(k, "-") != sv.get(k, "-"))
    ok = not diff
    passed += ok
    failed += not ok
    print(f"selftests under the supervisor: {'pass' if ok else 'FAIL'} ({len(same)} cases as on type1"
          f"{', ' + str(len(diff)) + ' differ' if diff else ''})")
    for k in diff:
        print(f"   {' / '.join(k)}: type1 {t1.get(k, '-')}, supervisor {sv.get(k, '-')}")
print()
for version in ("7.2", "10.0"):
    p = out / "shim" / "qemu" / f"l2-dma-{version}.txt"
    text = p.read_text() if p.exists() else ""
    dma = [l for l in text.splitlines()
           if l.strip().startswith("L2-DMA:") and not l.strip().startswith("L2-DMA: starting")]
    bar = [l for l in text.splitlines() if l.strip().startswith("L2-BAR-MAP:")]
    ok = bool(dma) and all(": ok" in l for l in dma) and bool(bar) and all(": ok" in l for l in bar)
    passed += ok
    failed += not ok
    print(f"QEMU {version} through the shim: {'pass' if ok else 'FAIL'} "
          f"({len(dma)} L2 DMA runs, {len(bar)} BAR maps)")
    for l in dma[:1] + bar[:1]:
        print("   " + l.strip())
p = out / "shim" / "qemu-supervisor" / "l2-dma-10.0.txt"
text = p.read_text() if p.exists() else ""
dma = [l for l in text.splitlines() if l.strip().startswith("L2-DMA:") and not l.strip().startswith("L2-DMA: starting")]
bar = [l for l in text.splitlines() if l.strip().startswith("L2-BAR-MAP:")]
ok = bool(dma) and all(": ok" in l for l in dma) and bool(bar) and all(": ok" in l for l in bar)
passed += ok
failed += not ok
print(f"QEMU 10.0 under the supervisor: {'pass' if ok else 'FAIL'} ({len(dma)} L2 DMA runs, {len(bar)} BAR maps)")
for l in (dma[:1] + bar[:1]) or text.splitlines()[-5:]:
    print("   " + l.strip())
print()
# QEMU's VFIO lifecycle scenarios (qemu_scenarios.py): each must pass in both, and every
# observation through the shim must equal type1's unless docs/differences.md lists it (client
# qemu_scenarios, label <scenario>.<key>, mode shim or shim@cdev-only).
listed = []
for line in (root / "docs" / "differences.md").read_text().splitlines():
    cells = [c.strip().strip("`") for c in line.split(" | ")]
    if line.startswith("| qemu_scenarios ") and len(cells) >= 4 and cells[2] in ("shim", "shim@cdev-only"):
        listed.append(cells[1])
def is_listed(label):
    return any(label == l or (l.endswith("*") and label.startswith(l[:-1])) for l in listed)
def scenario_results(side, version):
    p = out / side / "qemu" / f"scenarios-{version}.txt"
    verdicts, observed = {}, {}
    for l in (p.read_text().splitlines() if p.exists() else []):
        if l.startswith("SCENARIO ") and ":" in l:
            name, rest = l[len("SCENARIO "):].split(":", 1)
            verdicts[name] = rest.strip()
        elif l.startswith("OBSERVE "):
            _, name, key, *value = l.split(" ", 3)
            observed[f"{name}.{key}"] = value[0] if value else ""
    return verdicts, observed
for version, names in (("7.2", ("hotplug", "two", "reset", "kvm")), ("10.0", ("hotplug", "two", "reset", "kvm")),
                       ("11.1", ("cpr",))):
    (tv, to), (sv, so) = scenario_results("type1", version), scenario_results("shim", version)
    for name in names:
        t, sh = tv.get(name, "missing"), sv.get(name, "missing")
        keys = sorted(k for k in set(to) | set(so) if k.startswith(name + "."))
        diffs = [k for k in keys if to.get(k) != so.get(k)]
        unlisted = [k for k in diffs if not is_listed(k)]
        ok = t.startswith("ok") and sh.startswith("ok") and bool(keys) and not unlisted
        passed += ok
        failed += not ok
        print(f"QEMU {version} {name}: {'pass' if ok else 'FAIL'} (type1 {t.split(' ')[0]}, shim "
              f"{sh.split(' ')[0]}; {len(keys)} observations, {len(diffs) - len(unlisted)} listed differences"
              f"{', ' + str(len(unlisted)) + ' UNLISTED' if unlisted else ''})")
        for side, v in (("type1", t), ("shim", sh)):
            if not v.startswith("ok") or side == "shim":
                print(f"   {side}: {v}")
        for k in diffs:
            print(f"   {'listed  ' if k not in unlisted else 'UNLISTED'} {k}: type1 {to.get(k, '(none)')!r}, shim {so.get(k, '(none)')!r}")
# cpr-transfer needs VFIO_UPDATE_VADDR, which the kernel's compat layer refuses
# (CHECK_EXTENSION 0): QEMU blocks the migration. Recorded each run; anything else is news.
p = out / "type1" / "qemu" / "scenarios-11.1-compat.txt"
compat = next((l for l in (p.read_text().splitlines() if p.exists() else []) if l.startswith("SCENARIO cpr:")), "")
ok = "FAIL" in compat and "VFIO_UPDATE_VADDR" in compat
passed += ok
failed += not ok
print(f"QEMU 11.1 cpr on the kernel compat (full kernel, /dev/iommu as the container): "
      f"{'refused as recorded' if ok else 'FAIL: not as recorded'}")
print("   " + (compat or "no result"))
print()
def dpdk(side):
    p = out / side / "dpdk" / "summary.txt"
    return p.read_text().splitlines() if p.exists() else []
t1d, shd = dpdk("type1"), dpdk("shim")
ok = any(l.startswith("DPDK-SECONDARY: ok") for l in t1d) and any(l.startswith("DPDK-SECONDARY: ok") for l in shd)
passed += ok
failed += not ok
print(f"DPDK primary + secondary (SCM_RIGHTS), type1 then shim: {'pass' if ok else 'FAIL'}")
for l in (t1d[:1] or ["   type1: no summary"]) + (shd or ["   shim: no summary"]):
    print("   " + l.strip())
print()
def rustvmm(side):
    p = out / side / "vfio-ioctls-edu.txt"
    return {l.split(":", 1)[0][4:]: l for l in (p.read_text().splitlines() if p.exists() else []) if l.startswith("RUN ")}
t1r, shr = rustvmm("type1"), rustvmm("shim")
checks = (
    ("rust-vmm client (vfio-ioctls + kvm-ioctls) on type1, dynamic and static",
     [t1r.get(k, "") for k in ("dynamic", "static")], lambda l: ": exit 0: VFIO-IOCTLS-EDU: ok" in l),
    ("rust-vmm client through vfio-shim run (dynamic)", [shr.get("dynamic, wrapped", "")],
     lambda l: ": exit 0: VFIO-IOCTLS-EDU: ok" in l),
    ("rust-vmm client static through vfio-shim run (the supervisor)", [shr.get("static, wrapped", "")],
     lambda l: ": exit 0: VFIO-IOCTLS-EDU: ok" in l),
    ("rust-vmm client static, alone: fails (no legacy container)", [shr.get("static", "")],
     lambda l: ": exit 1: VFIO-IOCTLS-EDU: FAIL" in l),
)
for what, lines, good in checks:
    ok = all(lines) and all(good(l) for l in lines)
    passed += ok
    failed += not ok
    print(f"{what}: {'pass' if ok else 'FAIL'}")
    for l in lines:
        print("   " + (l or "no result"))
print(f"programs: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
PY
