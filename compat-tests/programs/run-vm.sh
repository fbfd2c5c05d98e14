#!/usr/bin/env bash
# Real programs in the test VM, in one command: the kernel's VFIO selftests (selftests.sh),
# QEMU 7.2 / 10.0 driving an assigned edu's DMA from an L2 and QEMU's VFIO lifecycle
# scenarios: hotplug, two devices, reset, KVM (qemu.sh), and a DPDK primary and secondary
# sharing the igb (dpdk.sh).
#
# Usage: run-vm.sh <full|cdev-only> <results-dir> [<selftest-modes>]
#   On the host. Builds the selftests into <results-dir>/selftests-bins, fetches QEMU and stages
#   both trees into <results-dir>/qemu-trees (hard links), boots the kernel with vm.sh and runs,
#   in the guest, `selftests.sh run ... <selftest-modes>` (default: type1) into
#   <results-dir>/selftests, `qemu.sh l2-dma-all` and `qemu.sh scenarios-all` into
#   <results-dir>/qemu, `dpdk.sh run` into <results-dir>/dpdk.
#   Exit status: 0 iff all passed (selftest skips are not failures).
#
# Environment passed into the guest (for the preload later; unset for the type1 baseline):
#   SELFTESTS_WRAP, QEMU_WRAP, DPDK_WRAP   command prefixes, e.g. "env LD_PRELOAD=/path/libvfio_shim_preload.so"
#   SELFTESTS_ONLY, SELFTESTS_EXTRA, L2_DMA_RUNS, HOTPLUG_CYCLES, QEMU_SCENARIOS, QEMU_COMPAT_CPR
#                                          see selftests.sh / qemu.sh
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
  exit $rc
fi

[ $# -ge 2 ] && [ $# -le 3 ] || { sed -n '7,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
variant=$1 results=$2 modes=${3:-type1}
mkdir -p "$results"; results=$(cd "$results" && pwd)

bash "$here/selftests.sh" build "$results/selftests-bins"
bash "$here/qemu.sh" fetch >/dev/null
bash "$here/qemu.sh" stage "$results/qemu-trees" >/dev/null
bash "$here/dpdk.sh" fetch "$results/dpdk-bin"

envs=()
for v in SELFTESTS_WRAP QEMU_WRAP DPDK_WRAP SELFTESTS_ONLY SELFTESTS_EXTRA L2_DMA_RUNS HOTPLUG_CYCLES QEMU_SCENARIOS QEMU_COMPAT_CPR; do
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
exit $rc
