#!/usr/bin/env bash
# `make explore`: the sequence explorer alone, at any volume, judged against type1.
#
# Boots the test kernels the chosen columns need, runs the explorer (compat-tests/explorer) in
# each column with the given seed and budget (the regression files first), then compares every
# column with full/type1 through `vfio-shim-compat compare` and docs/differences.md. Prints the
# sequences and operations each column ran, the sequences that differ from type1, and the
# comparator's verdict; diverging sequences are then shrunk to reproducers
# (compat-tests/explorer/shrink.sh). Exit status: compare's (0: no unlisted divergence).
#
# Usage: explore.sh             (make explore SEQS=N SEED=S FIRST=I COLUMNS="...")
# Env:   SEQS (2000), SEED (1), FIRST (0: the first sequence's index, so a long run can be
#        split into ranges), COLUMNS (default: full/kernel-compat full/shim cdev-only/shim;
#        cdev-only/supervisor too on request; full/type1 always runs), EXPLORE_OUT (compat-tests/out/explore), vm.sh's VM_* variables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seqs=${SEQS:-2000} seed=${SEED:-1} first=${FIRST:-0}
columns=${COLUMNS-full/kernel-compat full/shim cdev-only/shim}
out=${EXPLORE_OUT:-$root/compat-tests/out/explore}
for c in $columns; do
  case $c in full/kernel-compat|full/shim|cdev-only/shim|cdev-only/supervisor) ;;
    *) echo "explore: no column $c (full/kernel-compat, full/shim, cdev-only/shim, cdev-only/supervisor)" >&2; exit 2 ;;
  esac
done

bash "$here/host-deps.sh" >&2
bash "$here/build-release.sh"
bin=$root/target/release
rm -rf "$out"
mkdir -p "$out/clients"
out=$(cd "$out" && pwd)
cp "$bin/explorer" "$out/clients/explorer"

# Budget: the slowest column (the shim) takes about 70 ms a sequence under TCG; allow 4x.
client_timeout=$(( 600 + seqs * 3 / 10 ))
for k in full cdev-only; do
  modes=""
  [ $k = full ] && modes="--mode type1"
  for c in $columns; do
    [ "${c%%/*}" = $k ] && modes="$modes --mode ${c#*/}"
  done
  [ -n "$modes" ] || continue
  n=$(wc -w <<<"$modes"); n=$(( n / 2 ))
  echo "explore: $k: seed $seed, $seqs sequences from s$first, modes:${modes//--mode/}" >&2
  set +e
  VM_TIMEOUT=$(( 300 + n * client_timeout )) bash "$here/vm.sh" "$k" "$out" -- \
    env VFIO_EXPLORE_SEQS="$seqs" VFIO_EXPLORE_SEED="$seed" VFIO_EXPLORE_FIRST="$first" \
      VFIO_EXPLORE_REGRESSIONS="$root/compat-tests/explorer/regressions" \
    bash "$here/guest-setup.sh" \
    "$bin/vfio-shim-compat" run --kernel "$k" --clients "$out/clients" --out "$out" $modes \
      --client explorer --preload "$bin/libvfio_shim_preload.so" --vfio-shim "$bin/vfio-shim" \
      --timeout "$client_timeout" \
    >"$out/vm-$k.log" 2>&1
  echo "explore: $k VM rc=$? ($(tail -n1 "$out/vm-times.txt" | cut -d' ' -f2) s; log $out/vm-$k.log)" >&2
  set -e
done

# Volume and divergent sequences per column (a sequence diverges if any of its records differs).
python3 "$here/explorer-summary.py" "$out" $columns
judge=()
for c in $columns; do judge+=(--column "$c"); done
set +e
"$bin/vfio-shim-compat" compare "$out" --differences "$root/docs/differences.md" "${judge[@]}" >"$out/compare.txt" 2>&1
rc=$?
set -e
head -n 4 "$out/compare.txt"
grep -m 20 -A2 ' (differs)\| (missing)\| (extra)' "$out/compare.txt" || true
tail -n 1 "$out/compare.txt"
echo "explore: compare rc=$rc (full report: $out/compare.txt)"
if [ $rc != 0 ]; then
  SEED=$seed bash "$root/compat-tests/explorer/shrink.sh" "$out" "$out/compare.txt" || true
fi
exit $rc
