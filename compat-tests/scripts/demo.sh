#!/usr/bin/env bash
# The main job, on a fresh machine: boot the cdev-only test kernel (no legacy container, no
# VFIO groups) and run unmodified QEMU 7.2 and 10.0 with `-device vfio-pci,host=<edu>` through
# `vfio-shim run`, driving a DMA through the assigned device into L2 memory and verifying it.
# Usage: demo.sh [results-dir]   (default compat-tests/out/demo)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/compat-tests/out/demo}
mkdir -p "$out"
out=$(cd "$out" && pwd)

bash "$here/host-deps.sh"
bash "$here/build-kernel.sh" cdev-only >/dev/null
bash "$here/build-release.sh"
bash "$root/compat-tests/programs/qemu.sh" fetch >/dev/null
bash "$root/compat-tests/programs/qemu.sh" stage "$out/qemu-trees" >/dev/null

cat >"$out/guest.sh" <<GUEST
#!/usr/bin/env bash
set -u
. $(printf %q "$here/guest-setup.sh") 2>$(printf %q "$out/guest-setup.log") || exit 1
echo "guest: \$(uname -r); /dev/vfio: \$(ls /dev/vfio | tr '\n' ' ')(no container, no group nodes)"
export QEMU_WRAP=$(printf %q "$root/target/release/vfio-shim run --") L2_DMA_RUNS=1
bash $(printf %q "$root/compat-tests/programs/qemu.sh") l2-dma-all $(printf %q "$out/qemu") $(printf %q "$out/qemu-trees")
GUEST
set +e
bash "$here/vm.sh" cdev-only "$out" -- bash "$out/guest.sh" </dev/null 2>"$out/demo.stderr" | tee "$out/demo.log" \
  | grep -E "^(guest:|== QEMU|L2-DMA: ok|L2-DMA: FAIL|L2-BAR-MAP|TIME)"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || { echo "demo: failed (rc=$rc); logs in $out" >&2; tail -n 30 "$out/demo.stderr" >&2; }
exit "$rc"
