#!/usr/bin/env bash
# Real programs in the test VM, in one command: the kernel's VFIO selftests (selftests.sh),
# QEMU 7.2 / 10.0 driving an assigned edu's DMA from an L2 and QEMU's VFIO lifecycle
# scenarios: hotplug, two devices, reset, KVM (qemu.sh), a DPDK primary and secondary
# sharing the igb (dpdk.sh), and a rust-vmm client (vfio-ioctls + kvm-ioctls) driving edu's
# DMA, built dynamically and statically linked (vfio-ioctls-edu/).
#
# Usage: run-vm.sh <full|cdev-only> <results-dir> [<selftest-modes>]
#   On the host. Builds the selftests into <results-dir>/selftests-bins, fetches QEMU and stages
#   both trees into <results-dir>/qemu-trees (hard links), boots the kernel with vm.sh and runs,
#   in the guest, `selftests.sh run ... <selftest-modes>` (default: type1) into
#   <results-dir>/selftests, `qemu.sh l2-dma-all` and `qemu.sh scenarios-all` into
#   <results-dir>/qemu, `dpdk.sh run` into <results-dir>/dpdk, vfio-ioctls-edu (both builds)
#   into <results-dir>/vfio-ioctls-edu.txt.
#   Exit status: 0 iff all passed (selftest skips are not failures).
#
# Environment passed into the guest (for the preload later; unset for the type1 baseline):
#   SELFTESTS_WRAP, QEMU_WRAP, DPDK_WRAP, RUSTVMM_WRAP
#                                          command prefixes, e.g. "env LD_PRELOAD=/path/libvfio_shim_preload.so"
#   SUPERVISOR_WRAP                        a second pass in the same boot: the selftests into
#                                          <results-dir>/selftests-supervisor and QEMU 10.0's L2
#                                          DMA into <results-dir>/qemu-supervisor under it
#   SELFTESTS_ONLY, SELFTESTS_EXTRA, L2_DMA_RUNS, HOTPLUG_CYCLES, QEMU_SCENARIOS, QEMU_COMPAT_CPR
#                                          see selftests.sh / qemu.sh
#   RUN_VM_PREPARE_ONLY=1, RUN_VM_PREPARED=1
#                                          only the host side (builds, downloads, staging into
#                                          <results-dir>), or all but it
# and everything vm.sh reads (VM_TIMEOUT, VM_KERNEL, ...).
# `run-vm.sh --guest <results-dir> <modes>` is the part that runs inside the guest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "${1:-}" = --guest ]; then
  results=$2 modes=$3 rc=0
  # shellcheck source=../scripts/guest-setup.sh
  . "$repo/compat-tests/scripts/guest-setup.sh" || exit 1
  bash "$here/selftests.sh" run "$results/selftests-bins" "$modes" "$results/selftests" || rc=1
  bash "$here/qemu.sh" l2-dma-all "$results/qemu" "$results/qemu-trees" || rc=1
  bash "$here/qemu.sh" scenarios-all "$results/qemu" "$results/qemu-trees" || rc=1
  bash "$here/dpdk.sh" run "$results/dpdk-bin" "$results/dpdk" || rc=1
  # The seccomp supervisor, in the same boot: the selftests again and QEMU 10.0's L2 DMA, each
  # program under $SUPERVISOR_WRAP (vfio-shim run --supervise --).
  if [ -n "${SUPERVISOR_WRAP:-}" ]; then
    SELFTESTS_WRAP=$SUPERVISOR_WRAP bash "$here/selftests.sh" run "$results/selftests-bins" "$modes" \
      "$results/selftests-supervisor" || rc=1
    mkdir -p "$results/qemu-supervisor"
    QEMU_TREES=$results/qemu-trees QEMU_WRAP=$SUPERVISOR_WRAP bash "$here/qemu.sh" l2-dma 10.0 "$VFIO_TEST_EDU" \
      "$results/qemu-supervisor" >"$results/qemu-supervisor/l2-dma-10.0.txt" 2>&1 || rc=1
  fi
  # The rust-vmm client, each build: "RUN <how>: exit <status>: <its last line>". Without a
  # wrapper (type1) both builds; with one, the dynamic build through it, and the static build
  # through it (vfio-shim run serves a static program with the supervisor) and alone (failing
  # without the shim).
  b=$results/vfio-ioctls-edu-bin
  rustvmm() {   # <label> <command...>: runs it on the edu, one line
    local label=$1 out=$results/vfio-ioctls-edu.last st
    shift
    timeout 120 "$@" "$VFIO_TEST_EDU" >"$out" 2>&1; st=$?
    echo "RUN $label: exit $st: $(tail -n1 "$out")"
  }
  {
    if [ -z "${RUSTVMM_WRAP:-}" ]; then
      rustvmm dynamic "$b/vfio-ioctls-edu"
      rustvmm static "$b/vfio-ioctls-edu-static"
    else
      # shellcheck disable=SC2086  # the wrapper is a command prefix
      rustvmm "dynamic, wrapped" $RUSTVMM_WRAP "$b/vfio-ioctls-edu"
      # shellcheck disable=SC2086
      rustvmm "static, wrapped" $RUSTVMM_WRAP "$b/vfio-ioctls-edu-static"
      rustvmm static "$b/vfio-ioctls-edu-static"
    fi
  } >"$results/vfio-ioctls-edu.txt" 2>&1
  exit $rc
fi

[ $# -ge 2 ] && [ $# -le 3 ] || { sed -n '7,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
variant=$1 results=$2 modes=${3:-type1}
mkdir -p "$results"; results=$(cd "$results" && pwd)

# The host side (builds and downloads into shared caches): RUN_VM_PREPARED=1 skips it when a
# RUN_VM_PREPARE_ONLY=1 call made it already, so two boots can then run side by side.
if [ "${RUN_VM_PREPARED:-0}" != 1 ]; then
  bash "$here/selftests.sh" build "$results/selftests-bins"
  bash "$here/qemu.sh" fetch >/dev/null
  bash "$here/qemu.sh" stage "$results/qemu-trees" >/dev/null
  bash "$here/dpdk.sh" fetch "$results/dpdk-bin"
  bash "$here/vfio-ioctls-edu/build.sh" "$results/vfio-ioctls-edu-bin"
fi
[ "${RUN_VM_PREPARE_ONLY:-0}" = 1 ] && exit 0

envs=()
for v in SELFTESTS_WRAP QEMU_WRAP DPDK_WRAP RUSTVMM_WRAP SUPERVISOR_WRAP SELFTESTS_ONLY SELFTESTS_EXTRA L2_DMA_RUNS HOTPLUG_CYCLES QEMU_SCENARIOS QEMU_COMPAT_CPR; do
  [ -n "${!v:-}" ] && envs+=("$v=${!v}")
done
set +e
(cd "$repo" && bash compat-tests/scripts/vm.sh "$variant" "$results" -- \
  env "${envs[@]}" bash compat-tests/programs/run-vm.sh --guest "$results" "$modes")
rc=$?
set -e
echo "===== $results/selftests/summary.txt"; cat "$results/selftests/summary.txt" 2>/dev/null || true
echo "===== $results/qemu/summary.txt"; cat "$results/qemu/summary.txt" 2>/dev/null || true
echo "===== $results/qemu/scenarios-*.txt"; grep -h '^SCENARIO [a-z]*:' "$results"/qemu/scenarios-*.txt 2>/dev/null || true
echo "===== $results/dpdk/summary.txt"; cat "$results/dpdk/summary.txt" 2>/dev/null || true
echo "===== $results/vfio-ioctls-edu.txt"; cat "$results/vfio-ioctls-edu.txt" 2>/dev/null || true
exit $rc
