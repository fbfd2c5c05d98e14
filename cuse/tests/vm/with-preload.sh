#!/usr/bin/env bash
# The CUSE node together with the preload, in the cdev-only test VM (run by hand; see
# docs/cuse.md). Checks:
#  1. without the preload, the node answers as a type1 container without a group;
#  2. with the preload, opening /dev/vfio/vfio opens the node for real (/proc/self/fd names
#     it, its permissions apply) and the daemon hands the open over (adopted);
#  3. every differential client passes through the preload with the node in place, compared
#     with the type1 transcripts of the last VM tier run;
#  4. the daemon frees each adopted open on RELEASE.
# Usage: with-preload.sh [results-dir]     (host; needs a VM tier run's type1 transcripts)
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:-$root/compat-tests/out/cuse-preload}
mkdir -p "$out"; out=$(cd "$out" && pwd)
type1=$root/compat-tests/out/results/full/type1
[ -d "$type1" ] || { echo "run compat-tests/scripts/vm-tier.sh first (type1 transcripts)" >&2; exit 2; }
bash "$root/compat-tests/scripts/build-release.sh"
sh "$root/compat-tests/clients/build.sh" "$out/clients" >/dev/null

cat >"$out/guest.sh" <<GUEST
#!/usr/bin/env bash
set -u
. "$root/compat-tests/scripts/guest-setup.sh" 2>"$out/guest-setup.log" || exit 1
export VFIO_SHIM_LOG=info
"$root/target/release/vfio-shim-cuse" 2>"$out/daemon.log" || { echo "FAIL daemon did not start"; exit 1; }
ls -l /dev/vfio/vfio
python3 "$root/cuse/tests/vm/node_checks.py" plain
LD_PRELOAD="$root/target/release/libvfio_shim_preload.so" python3 "$root/cuse/tests/vm/node_checks.py" preload
for c in "$out"/clients/*; do
  [ -f "\$c" ] || continue   # noiommu/ and mixed/: their machines only
  n=\$(basename "\$c")
  LD_PRELOAD="$root/target/release/libvfio_shim_preload.so" timeout 300 "\$c" >"$out/\$n.out" 2>"$out/\$n.err"
  if diff -q "$type1/\$n.out" "$out/\$n.out" >/dev/null; then echo "ok   client \$n"; else echo "FAIL client \$n"; fi
done
pkill -TERM -x vfio-shim-cuse; sleep 1
grep -c "adopted by the preload" "$out/daemon.log" | sed 's/^/adopted opens logged: /'
GUEST
bash "$root/compat-tests/scripts/vm.sh" cdev-only "$out" -- bash "$out/guest.sh" </dev/null 2>"$out/vm.stderr" | tee "$out/summary.txt"
ok=$(grep -c '^ok ' "$out/summary.txt" || true)
bad=$(grep -c '^FAIL' "$out/summary.txt" || true)
# 15 node checks and one line per client are expected: fewer means the guest died early.
want=$(( 15 + $(find "$out/clients" -maxdepth 1 -type f | wc -l) ))
[ $(( ok + bad )) -ge "$want" ] || { bad=$(( bad + want - ok - bad )); tail -n 20 "$out/vm.stderr" >&2; }
echo "cuse-preload: $ok passed, $bad failed"
[ "$bad" = 0 ]
