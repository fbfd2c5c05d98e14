#!/usr/bin/env bash
# DPDK 22.11 (Debian bookworm) primary and secondary processes sharing QEMU's igb through VFIO:
# `dpdk-testpmd` as the primary, `dpdk-proc-info --stats` as the secondary. The secondary gets
# the primary's container and group fds over its rte_mp socket (SCM_RIGHTS) and opens the
# device with VFIO_GROUP_GET_DEVICE_FD on the received group, then reads the port's statistics
# from the NIC's registers (BAR mmap). On the cdev-only kernel there is no legacy VFIO at all,
# so it can only work through the preload's handoff (docs/limitations.md).
#
# Usage:
#   dpdk.sh fetch BINDIR    on the host: installs the DPDK runtime libraries (apt), unpacks
#                           dpdk-testpmd and dpdk-proc-info from dpdk-dev and dpdk-devbind.py
#                           from dpdk into the cache (the dpdk-dev package itself would pull
#                           ~200 packages) and copies them to BINDIR (the guest does not see
#                           the cache)
#   dpdk.sh run BINDIR OUTDIR  in the guest (after guest-setup.sh): first the operator's bind
#                           (dpdk-devbind.py -u, -b vfio-pci, --status-dev net: "DPDK-DEVBIND:
#                           ok|FAIL"), then both processes, wrapped in $DPDK_WRAP (e.g.
#                           "vfio-shim run --"); writes OUTDIR/summary.txt with those lines and
#                           one "DPDK-SECONDARY: ok|FAIL ..." line, ok only if the bind was;
#                           exit 0 iff ok.
#                           On vm.sh's machine without an IOMMU (VFIO_TEST_NOIOMMU=1) both run
#                           with --iova-mode=pa: DPDK's no-IOMMU mode, physical addresses from
#                           /proc/self/pagemap, a VFIO_NOIOMMU_IOMMU container.
set -euo pipefail
cache=${VFIO_SHIM_CACHE:-/var/cache/vfio-shim}/dpdk

# The two programs' libraries (objdump NEEDED, mapped to their packages) and the PMD plugins
# the igb needs (net_e1000, the ring mempool).
packages="libbsd0 libelf1 libfdt1 libibverbs1 libjansson4 ibverbs-providers libnuma1 libpcap0.8
  librte-bitratestats23 librte-bpf23 librte-bus-auxiliary23 librte-bus-dpaa23 librte-bus-pci23
  librte-bus-vdev23 librte-cmdline23 librte-common-dpaax23 librte-common-iavf23
  librte-common-mlx5-23 librte-crypto-scheduler23 librte-cryptodev23 librte-eal23 librte-ethdev23
  librte-eventdev23 librte-gro23 librte-gso23 librte-hash23 librte-ip-frag23 librte-kvargs23
  librte-latencystats23 librte-mbuf23 librte-mempool23 librte-mempool-dpaa23 librte-meter23
  librte-metrics23 librte-net23 librte-net-bnxt23 librte-net-bond23 librte-net-dpaa23
  librte-net-i40e23 librte-net-ice23 librte-net-ixgbe23 librte-net-mlx5-23 librte-pcapng23
  librte-pci23 librte-pdump23 librte-rcu23 librte-reorder23 librte-ring23 librte-sched23
  librte-security23 librte-telemetry23 librte-timer23 librte-net-e1000-23 librte-mempool-ring23"

cmd_fetch() {
  local bin=$cache/bin
  if ! { [ -x "$bin/dpdk-testpmd" ] && [ -x "$bin/dpdk-proc-info" ] && ! missing_libs "$bin"; }; then
    fetch_into "$bin"
  fi
  # dpdk-devbind.py, the operator's tool for the bind (docs/operators.md's recipe), from the
  # dpdk package of the same release; a python3 script, nothing to install.
  if [ ! -f "$bin/dpdk-devbind.py" ]; then
    rm -rf "$cache/unpack-devbind"
    mkdir -p "$cache/unpack-devbind"
    (cd "$cache/unpack-devbind" && apt-get download -q dpdk >/dev/null 2>&1 && dpkg -x dpdk_*.deb root)
    cp "$cache/unpack-devbind/root/usr/bin/dpdk-devbind.py" "$bin/"
    rm -rf "$cache/unpack-devbind"
  fi
  mkdir -p "$1"
  cp "$bin/dpdk-testpmd" "$bin/dpdk-proc-info" "$bin/dpdk-devbind.py" "$1/"
}

fetch_into() {
  local bin=$1
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages >/dev/null
  rm -rf "$cache/unpack"
  mkdir -p "$cache/unpack" "$bin"
  (cd "$cache/unpack" && apt-get download -q dpdk-dev >/dev/null 2>&1 && dpkg -x dpdk-dev_*.deb root)
  cp "$cache/unpack/root/usr/bin/dpdk-testpmd" "$cache/unpack/root/usr/bin/dpdk-proc-info" "$bin/"
  rm -rf "$cache/unpack"
  if missing_libs "$bin"; then
    echo "dpdk.sh: libraries still missing after install:" >&2
    ldd "$bin/dpdk-testpmd" "$bin/dpdk-proc-info" | grep 'not found' >&2
    exit 1
  fi
}

missing_libs() {
  ldd "$1/dpdk-testpmd" "$1/dpdk-proc-info" 2>/dev/null | grep -q 'not found'
}

cmd_run() {
  local bin=$1 out=$2 wrap=() eal ppid ready=0 src=1 prc t
  mkdir -p "$out"
  [ -n "${DPDK_WRAP:-}" ] && read -r -a wrap <<<"$DPDK_WRAP"
  eal=(--file-prefix=vfioshim -a "$VFIO_TEST_IGB" --no-telemetry)
  [ "${VFIO_TEST_NOIOMMU:-0}" = 1 ] && eal+=(--iova-mode=pa)
  # The recipe's bind: dpdk-devbind.py takes the igb off vfio-pci and binds it again, and
  # lists it under the DPDK-compatible drivers.
  local devbind=FAIL igb_driver=/sys/bus/pci/devices/$VFIO_TEST_IGB/driver
  if python3 "$bin/dpdk-devbind.py" -u "$VFIO_TEST_IGB" >"$out/devbind.log" 2>&1 && [ ! -e "$igb_driver" ] &&
     python3 "$bin/dpdk-devbind.py" -b vfio-pci "$VFIO_TEST_IGB" >>"$out/devbind.log" 2>&1 &&
     [ "$(basename "$(readlink -f "$igb_driver")")" = vfio-pci ] &&
     python3 "$bin/dpdk-devbind.py" --status-dev net >>"$out/devbind.log" 2>&1 &&
     grep -q "^$VFIO_TEST_IGB .*drv=vfio-pci" "$out/devbind.log"; then
    devbind=ok
  fi
  # testpmd waits for commands on a fifo we hold open: interactive, nothing started, so its
  # lcores do not spin the guest's one vCPU away from the secondary.
  rm -f /dev/shm/vfio-shim-testpmd.fifo
  mkfifo /dev/shm/vfio-shim-testpmd.fifo
  exec 3<>/dev/shm/vfio-shim-testpmd.fifo
  VFIO_SHIM_LOG=${VFIO_SHIM_LOG:-debug} "${wrap[@]}" "$bin/dpdk-testpmd" "${eal[@]}" --lcores 0@0,1@0 \
    -- -i --total-num-mbufs=2048 --no-mlockall <&3 >"$out/primary.log" 2>&1 &
  ppid=$!
  for _ in $(seq 1 300); do
    if grep -q 'testpmd>' "$out/primary.log" 2>/dev/null; then ready=1; break; fi
    kill -0 "$ppid" 2>/dev/null || break
    sleep 1
  done
  # the idle worker lcore polls: keep it out of the secondary's way
  for t in /proc/$ppid/task/*; do
    case $(cat "$t/comm" 2>/dev/null) in *worker*|lcore-*) renice -n 19 -p "${t##*/}" >/dev/null || true ;; esac
  done
  if [ $ready = 1 ]; then
    set +e
    VFIO_SHIM_LOG=${VFIO_SHIM_LOG:-debug} timeout 600 "${wrap[@]}" "$bin/dpdk-proc-info" "${eal[@]}" -- --stats \
      >"$out/secondary.log" 2>&1
    src=$?
    set -e
  fi
  echo quit >&3
  for _ in $(seq 1 120); do kill -0 "$ppid" 2>/dev/null || break; sleep 1; done
  kill -0 "$ppid" 2>/dev/null && kill -9 "$ppid"
  set +e
  wait "$ppid"
  prc=$?
  set -e
  exec 3>&-
  rm -f /dev/shm/vfio-shim-testpmd.fifo
  local stats ok=FAIL
  stats=$(grep -A2 'NIC statistics for port 0' "$out/secondary.log" 2>/dev/null | grep -m1 'RX-packets' | tr -s ' ' || true)
  # In no-IOMMU mode the container must really be one (DPDK says which type it set).
  local mode_ok=1
  if [ "${VFIO_TEST_NOIOMMU:-0}" = 1 ]; then
    grep -q 'No-IOMMU' "$out/primary.log" || mode_ok=0
  fi
  if [ $ready = 1 ] && [ $src = 0 ] && [ $prc = 0 ] && [ -n "$stats" ] && [ $mode_ok = 1 ] && [ $devbind = ok ]; then
    ok=ok
  fi
  {
    echo "DPDK-DEVBIND: $devbind (dpdk-devbind.py -u, -b vfio-pci, --status-dev net; $out/devbind.log)"
    echo "DPDK-SECONDARY: $ok (primary ready=$ready rc=$prc, secondary rc=$src) ${stats:-no port 0 statistics}"
    grep -h -m1 'IOMMU type\|No-IOMMU\|IOVA mode\|IOVA as' "$out/primary.log" 2>/dev/null | sed 's/^/  primary: /' || true
    grep -h 'vfio_shim_preload.*\(handed off\|adopted\)' "$out/primary.log" "$out/secondary.log" 2>/dev/null |
      sed 's/^/  /' || true
  } >"$out/summary.txt"
  cat "$out/summary.txt"
  [ $ok = ok ]
}

usage() { sed -n '9,23p' "$0" >&2; exit 2; }
case ${1:-} in
  fetch) [ $# = 2 ] || usage; cmd_fetch "$2" ;;
  run) [ $# = 3 ] || usage; cmd_run "$2" "$3" ;;
  *) usage ;;
esac
