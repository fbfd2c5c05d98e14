#!/usr/bin/env bash
# Shrinks the explorer sequences that diverge from type1 in a results directory to minimal
# reproducers, in one boot of the full kernel (`vfio-shim-compat shrink`: type1 against the
# shim with the legacy nodes hidden). A divergence that shows only on the cdev-only kernel
# does not reproduce there and is reported as such.
#
# Usage: shrink.sh <results-dir> <compare-output> [max]   (max: sequences to shrink, default 3)
# Env:   SEED (the seed the results ran with, default 1), BIN (the build: target/release),
#        vm.sh's VM_* variables.
# Writes <results-dir>/shrink/<seq>.seq (as run) and <seq>.min.seq (the reproducer: copy it to
# compat-tests/explorer/regressions/ once the divergence is fixed or listed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
results=$(cd "$1" && pwd) compare=$2 max=${3:-3} seed=${SEED:-1}
bin=${BIN:-$root/target/release}
dir=$results/shrink
rm -rf "$dir"
mkdir -p "$dir"
names=$(grep -oE '^explorer [a-z/-]+ [A-Z]+ (s[0-9]+|r\.[A-Za-z0-9_-]+)\.' "$compare" | awk '{print $4}' \
  | sed 's/\.$//' | awk '!seen[$0]++' | head -n "$max" || true)
[ -n "$names" ] || { echo "shrink: no diverging explorer sequence in $compare"; exit 0; }
for n in $names; do
  case $n in
    s*) VFIO_EXPLORE_SEED=$seed "$bin/explorer" --print "${n#s}" >"$dir/$n.seq" ;;
    r.*) cp "$here/regressions/${n#r.}.seq" "$dir/$n.seq" ;;
  esac
done
guest=$dir/guest.sh
{
  echo "set -u"
  for n in $names; do
    printf '%q shrink --explorer %q --preload %q --work %q %q %q || true\n' "$bin/vfio-shim-compat" \
      "$bin/explorer" "$bin/libvfio_shim_preload.so" "/tmp/shrink-$n" "$dir/$n.seq" "$dir/$n.min.seq"
  done
} >"$guest"
bash "$root/compat-tests/scripts/vm.sh" full "$dir" -- bash "$root/compat-tests/scripts/guest-setup.sh" bash "$guest" \
  2>"$dir/vm.log" | grep '^shrink:' || true
for n in $names; do
  if [ -f "$dir/$n.min.seq" ]; then
    echo "shrink: $n, reproducer $dir/$n.min.seq:"
    sed 's/^/    /' "$dir/$n.min.seq"
  else
    echo "shrink: $n did not shrink (see $dir/vm.log): $(grep "shrink: .*$n" "$dir/vm.log" | tail -n1)"
  fi
done
