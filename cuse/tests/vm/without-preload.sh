#!/usr/bin/env bash
# vfio-shim-cuse's nodes WITHOUT the preload (docs/cuse.md), on the cdev-only kernel, where the
# daemon serves /dev/vfio/vfio and a /dev/vfio/<N> node per VFIO group. Checks:
#  1. node_groups.py: what the nodes serve, and the documented errno for anonymous memory and
#     GET_DEVICE_FD; `vfio-shim status` lists the client's container as the daemon's;
#  2. every differential client that runs on shared memory (VFIO_TEST_MEMORY=shared) and needs
#     no device fd (VFIO_TEST_NO_DEVICE_FD=1) gives exactly the transcript real type1 gives in
#     the same mode (first boot, full kernel), fork_stress (8 processes x 1000 pairs on one
#     container) and threads_stress (8 threads x 1000 pairs) included; one of them again as an
#     unprivileged user;
#  3. the daemon runs with four capabilities and no-new-privs, as root (uid 0) still;
#  4. kill -9 of the daemon in the middle of fork_stress: every process ends with an error, no
#     hang; a restarted daemon serves the next client; SIGTERM then stops it cleanly;
#  5. the sequence explorer's device-free scope on shared memory (the regressions without device
#     ops, then CUSE_EXPLORE_SEQS sequences of seed 1, default 500) gives type1's transcript.
# Usage: without-preload.sh [results-dir]        (host, as root; boots two VMs)
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:-$root/compat-tests/out/cuse-node}
rm -rf "$out"; mkdir -p "$out/type1" "$out/node"; out=$(cd "$out" && pwd)
bash "$root/compat-tests/scripts/build-release.sh"
explorer=$root/target/release/explorer
explore_env="VFIO_EXPLORE_DEVICES=0 VFIO_EXPLORE_MEMORY=shared VFIO_EXPLORE_SEQS=${CUSE_EXPLORE_SEQS:-500}"
explore_env+=" VFIO_EXPLORE_SEED=1 VFIO_EXPLORE_REGRESSIONS=$root/compat-tests/explorer/regressions"
sh "$root/compat-tests/clients/build.sh" "$out/clients" >/dev/null
daemon=$root/target/release/vfio-shim-cuse
clients="container_errors unmap_semantics two_containers fork_stress threads_stress"
mode_env="VFIO_TEST_MEMORY=shared VFIO_TEST_NO_DEVICE_FD=1"

cat >"$out/guest-type1.sh" <<GUEST
#!/usr/bin/env bash
set -u
. "$root/compat-tests/scripts/guest-setup.sh" 2>"$out/type1/guest-setup.log" || exit 1
for c in $clients; do
  env $mode_env timeout 600 "$out/clients/\$c" >"$out/type1/\$c.out" 2>"$out/type1/\$c.err"
  echo "type1 \$c rc=\$?"
done
env $explore_env timeout 900 "$explorer" >"$out/type1/explorer.out" 2>"$out/type1/explorer.err"
echo "type1 explorer rc=\$?"
GUEST

cat >"$out/guest-node.sh" <<GUEST
#!/usr/bin/env bash
set -u
. "$root/compat-tests/scripts/guest-setup.sh" 2>"$out/node/guest-setup.log" || exit 1
res() { if [ "\$1" = 0 ]; then echo "ok   \$2"; else echo "FAIL \$2"; fi; }
same() { diff -q "$out/type1/\$1.out" "\$2" >/dev/null; res \$? "\$3"; }
edu_group=\$(basename "\$(readlink /sys/bus/pci/devices/\$VFIO_TEST_EDU/iommu_group)")
RUST_LOG=info "$daemon" 2>"$out/node/daemon-1.log"; res \$? "daemon-start"
[ -c /dev/vfio/vfio ] && [ -c /dev/vfio/\$edu_group ]; res \$? "nodes /dev/vfio/vfio and /dev/vfio/\$edu_group"
ls -l /dev/vfio >"$out/node/nodes.txt"
caps=\$(grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/\$(pgrep -x vfio-shim-cuse)/status | tr -s '\t\n' '  ')
# CAP_DAC_READ_SEARCH, CAP_IPC_LOCK, CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE only, no-new-privs
[ "\$caps" = "CapEff: 0000010000084004 CapBnd: 0000010000084004 NoNewPrivs: 1 " ]; res \$? "daemon dropped privileges (\$caps)"

mkdir -p /run/vfio-shim-ramfs && mount -t ramfs none /run/vfio-shim-ramfs
timeout 120 python3 "$root/cuse/tests/vm/node_groups.py" "\$VFIO_TEST_EDU" "\$edu_group" /run/vfio-shim-ramfs \
  "$root/target/release/vfio-shim"
grep -q "needs the preload" "$out/node/daemon-1.log"; res \$? "daemon logged the load-the-preload line"

for c in $clients; do
  s=\$(date +%s%N)
  env $mode_env timeout 600 "$out/clients/\$c" >"$out/node/\$c.out" 2>"$out/node/\$c.err"
  rc=\$?
  same \$c "$out/node/\$c.out" "client \$c through the node = type1 (rc=\$rc, \$(( (\$(date +%s%N) - s) / 1000000 )) ms)"
done

env $explore_env timeout 900 "$explorer" >"$out/node/explorer.out" 2>"$out/node/explorer.err"
rc=\$?
same explorer "$out/node/explorer.out" "explorer through the node = type1 (rc=\$rc, \$(tail -n1 "$out/node/explorer.err"))"

chmod 0666 /dev/vfio/vfio /dev/vfio/\$edu_group
env $mode_env timeout 600 setpriv --reuid 65534 --regid 65534 --clear-groups \
  "$out/clients/unmap_semantics" >"$out/node/unmap_semantics.nobody.out" 2>"$out/node/unmap_semantics.nobody.err"
same unmap_semantics "$out/node/unmap_semantics.nobody.out" "client unmap_semantics as nobody = type1"

# kill -9 in the middle of 8 processes mapping and unmapping
env $mode_env VFIO_STRESS_PAIRS=100000000 timeout 120 "$out/clients/fork_stress" \
  >"$out/node/kill9.out" 2>"$out/node/kill9.err" &
stress=\$!
sleep 3
pkill -KILL -x vfio-shim-cuse
wait \$stress; rc=\$?
[ \$rc != 124 ] && [ \$rc != 137 ]; res \$? "kill -9: the client ended by itself (rc=\$rc)"
n=\$(grep -cE "child\.[0-9]+ pairs=[0-9]+ of 100000000 first_errno=(ECONNABORTED|ENOTCONN)" "$out/node/kill9.out")
[ "\$n" = 8 ]; res \$? "kill -9: all 8 processes got ECONNABORTED/ENOTCONN (\$n)"
sleep 1
[ ! -e /dev/vfio/vfio ]; res \$? "kill -9: nodes removed"

RUST_LOG=info "$daemon" 2>"$out/node/daemon-2.log"; res \$? "daemon restarts"
env $mode_env timeout 600 "$out/clients/unmap_semantics" >"$out/node/unmap_semantics.restart.out" 2>&1
same unmap_semantics "$out/node/unmap_semantics.restart.out" "restarted daemon serves a new client = type1"
pid=\$(pgrep -x vfio-shim-cuse)
kill -TERM \$pid
for i in \$(seq 50); do kill -0 \$pid 2>/dev/null || break; sleep 0.1; done
! kill -0 \$pid 2>/dev/null && [ ! -e /dev/vfio/vfio ]; res \$? "SIGTERM: daemon gone, node removed"
GUEST

bash "$root/compat-tests/scripts/vm.sh" full "$out/type1" -- bash "$out/guest-type1.sh" </dev/null \
  >"$out/type1/summary.txt" 2>"$out/type1/vm.stderr" || true
bash "$root/compat-tests/scripts/vm.sh" cdev-only "$out/node" -- bash "$out/guest-node.sh" </dev/null \
  2>"$out/node/vm.stderr" | tee "$out/summary.txt" || true
ok=$(grep -c '^ok ' "$out/summary.txt" || true)
bad=$(grep -c '^FAIL' "$out/summary.txt" || true)
# 22 node_groups checks, 4 setup lines, 5 clients, the explorer, nobody, 3 kill -9 and 3
# restart/stop lines.
want=39
[ $(( ok + bad )) -ge "$want" ] || { bad=$(( bad + want - ok - bad )); tail -n 20 "$out/node/vm.stderr" >&2; }
echo "cuse-node: $ok passed, $bad failed"
[ "$bad" = 0 ]
