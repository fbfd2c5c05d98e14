#!/usr/bin/env bash
# `make vm-test`: every VM tier, in two lanes side by side. A TCG guest has one vCPU and keeps
# one host core busy; run one after another, most tiers leave the machine's second core idle
# (one VM at a time, or one of two boots still running). vm.sh hands out one slot per core
# (VFIO_SHIM_VM_SLOTS), so the lanes share the cores without ever running more vCPUs than
# there are cores, and every timeout keeps its meaning.
#   first, alone: what both lanes use or what takes the dpkg lock: host packages, both
#     kernels, the release build (build-release.sh), DPDK's binaries, the VFIO selftests;
#   lane A (the long one, in front): vm-tier.sh, lock-isolation.sh (two vCPUs: it waits for
#     both slots, and lane B yields to it), programs-tier.sh;
#   lane B (VM_SLOT_YIELD=1: it takes a free slot only when no lane A VM waits for one, and
#     starts once vm-tier's two boots hold theirs): the daemon's three VM tests, the package,
#     the no-IOMMU tier. Its output is kept and printed after lane A's.
# Every tier runs even when an earlier one failed; the exit status is 0 only if all passed.
# The last lines are one line per tier: name, exit status, seconds.
# Env: VFIO_SHIM_SERIAL_TIERS=1 runs lane B after lane A instead of beside it.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
start=$(date +%s)
lanes=$root/compat-tests/out/vm-test
rm -rf "$lanes"
mkdir -p "$lanes"
step() { echo "=== vm-test: $* ($(( $(date +%s) - start )) s)" >&2; }

# tier <name> <command...>: runs one tier, records "<rc> <seconds>" in $lanes/<name>.rc.
tier() {
  local name=$1 t rc
  shift
  t=$(date +%s)
  step "$name"
  "$@"
  rc=$?
  echo "$rc $(( $(date +%s) - t ))" >"$lanes/$name.rc"
  step "$name ended: exit $rc in $(( $(date +%s) - t )) s"
}

step "shared preparation"
prep() {
  bash "$here/host-deps.sh" &&
    bash "$here/build-kernel.sh" full >/dev/null &&
    bash "$here/build-kernel.sh" cdev-only >/dev/null &&
    bash "$here/build-release.sh" &&
    bash "$root/compat-tests/programs/dpdk.sh" fetch "$lanes/prep/dpdk" &&
    bash "$root/compat-tests/programs/selftests.sh" build "$lanes/prep/selftests"
}
tier prep prep

lane_b() {
  # Behind vm-tier's boots (its cdev-only guest is the longest run of lane A): vm.sh creates
  # vm-<kernel>.stdout once the VM holds its slot and boots.
  local results=$root/compat-tests/out/results
  if [ "${VFIO_SHIM_SERIAL_TIERS:-0}" != 1 ]; then
    while [ ! -e "$lanes/vm-tier.rc" ] &&
      ! { [ -e "$results/vm-full.stdout" ] && [ -e "$results/vm-cdev-only.stdout" ]; }; do
      sleep 2
    done
  fi
  export VM_SLOT_YIELD=1
  tier cuse-vm bash cuse/tests/vm/run.sh
  tier cuse-node bash cuse/tests/vm/without-preload.sh
  tier cuse-preload bash cuse/tests/vm/with-preload.sh
  tier package bash packaging/test-package.sh
  tier noiommu bash compat-tests/scripts/noiommu-tier.sh
}

if [ "$(cut -d' ' -f1 "$lanes/prep.rc")" = 0 ]; then
  rm -rf "$root/compat-tests/out/results"   # vm-tier.sh's, wiped before lane B looks at it
  if [ "${VFIO_SHIM_SERIAL_TIERS:-0}" = 1 ]; then
    : >"$lanes/lane-b.log"
  else
    lane_b >"$lanes/lane-b.log" 2>&1 &
    lane_b_pid=$!
  fi
  tier vm-tier bash compat-tests/scripts/vm-tier.sh
  tier lock-isolation bash compat-tests/scripts/lock-isolation.sh
  tier programs bash compat-tests/scripts/programs-tier.sh
  if [ "${VFIO_SHIM_SERIAL_TIERS:-0}" = 1 ]; then
    lane_b 2>&1 | tee "$lanes/lane-b.log"
  else
    wait "$lane_b_pid"
    step "lane B's output (the daemon, the package, no-IOMMU), as it ran beside lane A"
    cat "$lanes/lane-b.log"
  fi
fi

failed=0
echo "vm-test: tiers (exit status, seconds):"
for name in prep vm-tier lock-isolation programs cuse-vm cuse-node cuse-preload package noiommu; do
  if [ -f "$lanes/$name.rc" ]; then
    read -r rc secs <"$lanes/$name.rc"
  else
    rc=missing secs=-
  fi
  echo "  $name: $rc ($secs s)"
  [ "$rc" = 0 ] || failed=1
done
echo "vm-test: total $(( $(date +%s) - start )) s"
[ $failed = 0 ]
