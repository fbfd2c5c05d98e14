#!/usr/bin/env bash
# Negative control for the explorer: a shim with one deliberately wrong errno must fail the
# comparison with type1 within the budget `make test` gives the explorer.
#
# The mutant: SET_IOMMU with a type no IOMMU driver takes answers EINVAL instead of type1's
# ENODEV (the one `_ => return Err(Errno::ENODEV)` of Shim::set_iommu). It is made in a
# throw-away git worktree of HEAD and built into its own target dir; nothing of the checkout
# changes. Then: the explorer on the full kernel against real type1, the explorer through the
# mutant preload on the cdev-only kernel, and `vfio-shim-compat compare`, which must fail with
# unlisted differences on `set_iommu` records; then shrink.sh cuts the first diverging
# sequence down, and the reproducer must keep its SET_IOMMU (exit 0: the control worked).
#
# Usage: negative-control.sh [results-dir]   (default compat-tests/out/negative-control)
# Env:   VFIO_EXPLORE_SEQS, VFIO_EXPLORE_SEED (the tier's defaults), vm.sh's VM_* variables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/compat-tests/out/negative-control}
seqs=${VFIO_EXPLORE_SEQS:-2000} seed=${VFIO_EXPLORE_SEED:-1}
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
wt=$out/worktree

git -C "$root" worktree prune
git -C "$root" worktree add -q --detach "$wt" HEAD
trap 'git -C "$root" worktree remove --force "$wt" 2>/dev/null || true' EXIT

python3 - "$wt/shim/src/translator/container.rs" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
fn = s.index("fn set_iommu(")
old = "            _ => return Err(Errno::ENODEV),\n"
at = s.index(old, fn)
s = s[:at] + "            _ => return Err(Errno::EINVAL), // negative control\n" + s[at + len(old):]
open(p, "w").write(s)
PY
echo "negative-control: mutant: $(git -C "$wt" diff --stat | tail -n1)" >&2
(cd "$wt" && CARGO_TARGET_DIR=$out/target cargo build --release -q \
  -p vfio-shim-preload -p vfio-shim-explorer -p vfio-shim-compat)
bin=$out/target/release
mkdir -p "$out/clients"
cp "$bin/explorer" "$out/clients/explorer"

for k in full cdev-only; do
  mode=type1; [ $k = cdev-only ] && mode=shim
  bash "$root/compat-tests/scripts/vm.sh" "$k" "$out" -- env VFIO_EXPLORE_SEQS="$seqs" VFIO_EXPLORE_SEED="$seed" \
    bash "$root/compat-tests/scripts/guest-setup.sh" \
    "$bin/vfio-shim-compat" run --kernel "$k" --clients "$out/clients" --out "$out" --mode $mode \
      --client explorer --preload "$bin/libvfio_shim_preload.so" --timeout 1200 >"$out/vm-$k.log" 2>&1
done

set +e
"$bin/vfio-shim-compat" compare "$out" --differences "$root/docs/differences.md" >"$out/compare.txt" 2>&1
rc=$?
set -e
caught=$(grep -c 'set_iommu' "$out/compare.txt" || true)
tail -n 1 "$out/compare.txt"
if [ $rc -ne 0 ] && [ "$caught" -gt 0 ]; then
  echo "negative-control: caught: compare failed with $caught set_iommu line(s) ($seqs sequences, seed $seed)"
  grep -m 3 'set_iommu' "$out/compare.txt" | sed 's/^/  /'
  # The first diverging sequence, shrunk automatically; the reproducer must still hold the op.
  BIN=$bin SEED=$seed bash "$here/shrink.sh" "$out" "$out/compare.txt" 1
  if ! grep -qs '^set_iommu' "$out"/shrink/*.min.seq; then
    echo "negative-control: caught, but the shrinker gave no reproducer with the wrong SET_IOMMU"
    exit 1
  fi
  exit 0
fi
echo "negative-control: NOT caught (compare rc=$rc, $caught set_iommu lines): the explorer missed a wrong errno"
exit 1
