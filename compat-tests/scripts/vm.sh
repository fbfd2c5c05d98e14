#!/usr/bin/env bash
# Boots a test kernel with virtme-ng (QEMU TCG, q35 + intel-iommu, edu/igb/ivshmem) and runs one
# command inside it, as root, in the caller's working directory. The host's root filesystem is
# the guest's (read-only, over 9p; /tmp, /etc, /var... get throw-away overlays), so host-built
# binaries run unchanged; <results-dir> is the only writable host directory in the guest, at the
# same path.
#
# Usage: vm.sh <full|cdev-only> <results-dir> -- <command...>
#
# The command's stdout and stderr come out on vm.sh's stdout and stderr (and are kept in
# <results-dir>/vm-<variant>.stdout / .stderr; the .stderr file also holds QEMU's and vng's own
# messages). The guest kernel console goes to <results-dir>/console-<variant>.log (from virtio's
# probe on; VM_VERBOSE=1 also streams the whole boot log to stderr), never to the terminal, and
# the whole kernel log is saved as <results-dir>/dmesg-<variant>.log after the command.
# Exit status: the command's, or 125 if the VM did not produce one (boot failure, timeout,
# panic); on any failure the tails of the console log and stderr are printed.
#
# Environment: VM_TIMEOUT (seconds, default 900; counted from the boot, not the wait for a
# slot), VFIO_SHIM_VM_SLOTS (vCPUs of all VMs at once, default nproc), VM_CPUS (1), VM_MEMORY (4G), VM_RETRIES (1),
# VM_HUGEPAGES (2 MiB pages reserved at boot, default 64), VM_HUGEPAGES_1G (1 GiB pages, 1), VM_IVSHMEM_SIZE (256M),
# VM_NVME_IMAGE (a raw image file: adds QEMU's nvme controller backed by it, serial vfioshim0),
# VM_APPEND (more kernel parameters, space-separated), VM_NOIOMMU=1 (a machine without an IOMMU,
# booted with vfio.enable_unsafe_noiommu_mode=1: edu, igb and ivshmem only, edu's DMA mask 64 bits
# so it reaches any physical address), VM_NOIOMMU=mixed (the IOMMU machine in that mode, plus a
# third edu behind a PCIe expander bus that bypasses the IOMMU: a no-IOMMU group beside IOMMU
# groups),
# VFIO_SHIM_CACHE (/var/cache/vfio-shim), VM_KERNEL (a bzImage to use instead of building),
# VM_VERBOSE=1. Works as root with no TTY and stdin from /dev/null.
#
# Needs the host's udev (host-deps.sh installs it): virtme-ng-init starts the host's
# systemd-udevd in the guest to get /dev/virtio-ports/*, the channels that carry the command's
# stdin/stdout/stderr and exit status; without them the output and status are lost.
# "warning: nic igb.0 has no peer" from QEMU is expected: the igb has no network backend.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VFIO_SHIM_CACHE:-/var/cache/vfio-shim}

usage() { echo "usage: vm.sh <full|cdev-only> <results-dir> -- <command...>" >&2; exit 2; }
[ $# -ge 4 ] || usage
variant=$1; results=$2; shift 2
[ "$1" = -- ] || usage
shift
case "$variant" in full|cdev-only) ;; *) usage ;; esac

mkdir -p "$results"
results=$(cd "$results" && pwd)
console=$results/console-$variant.log
vstdout=$results/vm-$variant.stdout
vstderr=$results/vm-$variant.stderr

# --- virtme-ng in a private venv (idempotent) --------------------------------------------------
venv=$cache/venv
vng_version=1.42
# Under a lock: boots may start side by side (vm-tier.sh), and only one may install.
mkdir -p "$cache"
exec 9>"$cache/venv.lock"
flock 9
if [ ! -x "$venv/bin/vng" ] || [ ! -f "$venv/.virtme-ng-$vng_version" ]; then
  echo "vm.sh: installing virtme-ng $vng_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "virtme-ng==$vng_version" >&2
  touch "$venv/.virtme-ng-$vng_version"
fi
flock -u 9
exec 9>&-
export PATH=$venv/bin:$PATH   # vng runs virtme-run from PATH

# --- kernel ---------------------------------------------------------------------------------------
if [ -n "${VM_KERNEL:-}" ]; then
  kernel=$VM_KERNEL
else
  kernel=$(bash "$here/build-kernel.sh" "$variant" | tail -n1)
fi
[ -f "$kernel" ] || { echo "vm.sh: no kernel image ($kernel)" >&2; exit 125; }

# --- one slot per vCPU -------------------------------------------------------------------------------
# Tiers may run side by side (vm-test.sh): at most VFIO_SHIM_VM_SLOTS (default: the host's
# cores) TCG vCPUs run at once, so a guest's vCPU never waits for another guest's, and every
# tier's timeouts keep their meaning. A VM takes one slot per vCPU (a lock on
# $cache/vm-slot.<n>) before it boots, holds none while it waits (no deadlock between VMs that
# want two), and its slots free themselves when it exits.
slots=${VFIO_SHIM_VM_SLOTS:-$(nproc)}
want=${VM_CPUS:-1}
[ "$want" -le "$slots" ] || want=$slots
# VM_SLOT_YIELD=1 (vm-test.sh's second lane): take no slot while another VM waits for one.
held=() waited=0 want_file=$cache/vm-slot-want.$$
yielding() {
  [ "${VM_SLOT_YIELD:-0}" = 1 ] || return 1
  local f
  for f in "$cache"/vm-slot-want.*; do
    [ -e "$f" ] && kill -0 "${f##*.}" 2>/dev/null && return 0
  done
  return 1
}
while :; do
  if ! yielding; then
    for ((i = 0; i < slots && ${#held[@]} < want; i++)); do
      exec {fd}>"$cache/vm-slot.$i"
      if flock -n "$fd"; then held+=("$fd"); else exec {fd}>&-; fi
    done
    [ "${#held[@]}" -ge "$want" ] && break
    for fd in "${held[@]}"; do exec {fd}>&-; done
    held=()
  fi
  if [ $waited = 0 ]; then
    echo "vm.sh: $variant waits for $want of $slots VM slots" >&2
    [ "${VM_SLOT_YIELD:-0}" = 1 ] || { : >"$want_file"; trap 'rm -f "$want_file"' EXIT; }
    waited=1
  fi
  sleep 2
done
rm -f "$want_file"

# --- QEMU machine ----------------------------------------------------------------------------------
# q35 with a split irqchip is what intel-iommu's interrupt remapping needs. caching-mode is NOT
# needed: the guest drives emulated devices through its own IOMMU driver; caching-mode only
# matters when QEMU itself runs vfio-pci against this vIOMMU (nested device assignment).
# aw-bits=48 gives the guest a 4-level (48-bit) IOVA space, like real hardware.
ivsize=${VM_IVSHMEM_SIZE:-256M}
if [ "${VM_NOIOMMU:-0}" = 1 ]; then
  # No IOMMU at all, as on a cloud instance without a virtual one: every device is DMA-capable
  # without translation, and vfio-pci offers it only in the unsafe no-IOMMU mode. edu must reach
  # any physical address.
  machine=(-M q35)
  edu=(-device edu,dma_mask=0xffffffffffffffff)
else
  machine=(-M q35,kernel-irqchip=split -device intel-iommu,intremap=on,aw-bits=48)
  edu=(-device edu)
fi
qemu_opts=(
  "${machine[@]}"
  "${edu[@]}"
  -device igb
  -object "memory-backend-memfd,id=ivshmem0,size=$ivsize,share=on"
  -device ivshmem-plain,memdev=ivshmem0
  # The guest console into a file, on a virtio console (hvc0): vng's own console is ttyS0 (into
  # /dev/null unless VM_VERBOSE=1), and one kernel cannot have two ttyS consoles at once.
  -device virtio-serial-pci,id=vfsser
  -chardev "file,id=vfsconsole,path=$console"
  -device virtconsole,chardev=vfsconsole,bus=vfsser.0
)
if [ "${VM_NOIOMMU:-0}" != 1 ]; then
  # Two devices in one IOMMU group: conventional PCI behind a PCIe-to-PCI bridge shares the
  # bridge's requester ID. A second edu (bound to vfio-pci) and a virtio-rng left on virtio-pci,
  # a kernel driver that claims DMA, so the group is not viable until it is unbound. (Without
  # an IOMMU there are no such groups.)
  qemu_opts+=(
    -device pcie-root-port,id=vfsrp,bus=pcie.0,addr=0x10,chassis=16
    -device pcie-pci-bridge,id=vfsbr,bus=vfsrp
    -device edu,bus=vfsbr,addr=0x1
    -device virtio-rng-pci,bus=vfsbr,addr=0x2
    # An edu alone behind a root port, left unbound by guest-setup.sh: the kernel can reset it
    # (secondary bus reset), so QEMU needs no bus reset of its own at machine reset, which QEMU
    # 11.1 would otherwise run on a device handed over by cpr-transfer (qemu_scenarios.py cpr).
    -device pcie-root-port,id=vfsrrp,bus=pcie.0,addr=0x11,chassis=17
    -device edu,bus=vfsrrp
  )
fi
if [ "${VM_NOIOMMU:-0}" = mixed ]; then
  # pxb-pcie's bypass_iommu: the vIOMMU leaves its bus out (the DMAR table lists the other
  # buses only), so the guest sees this edu without an IOMMU.
  qemu_opts+=(
    -device pxb-pcie,id=vfsbypass,bus_nr=0x40,bus=pcie.0,bypass_iommu=on
    -device pcie-root-port,id=vfsbprp,bus=vfsbypass,chassis=40
    -device edu,bus=vfsbprp,dma_mask=0xffffffffffffffff
  )
fi
# Last, so the other devices keep their slots. The host reads the file after the VM; QEMU
# flushes it when it exits.
if [ -n "${VM_NVME_IMAGE:-}" ]; then
  qemu_opts+=(-drive "file=$VM_NVME_IMAGE,if=none,id=nv0,format=raw"
    -device nvme,drive=nv0,serial=vfioshim0)
fi
append=(
  # 1 GiB pages must be reserved at boot; both sizes so every hugetlb variant runs.
  "hugepagesz=1G" "hugepages=${VM_HUGEPAGES_1G:-1}"
  "hugepagesz=2M" "hugepages=${VM_HUGEPAGES:-64}" "default_hugepagesz=2M"
  console=hvc0 loglevel=7   # after vng's "quiet loglevel=0": the last one wins
)
case ${VM_NOIOMMU:-0} in
  1) append+=(vfio.enable_unsafe_noiommu_mode=1) ;;
  mixed) append+=(intel_iommu=on vfio.enable_unsafe_noiommu_mode=1) ;;
  *) append+=(intel_iommu=on) ;;
esac
# shellcheck disable=SC2206
[ -n "${VM_APPEND:-}" ] && append+=($VM_APPEND)

vng_args=(
  --run "$kernel"
  --disable-kvm
  --cpus "${VM_CPUS:-1}"
  --memory "${VM_MEMORY:-4G}"
  --rwdir "$results"
  --name "vfio-shim-$variant"
)
for a in "${append[@]}"; do vng_args+=(--append "$a"); done
[ "${VM_VERBOSE:-0}" = 1 ] && vng_args+=(--verbose)   # whole boot log on stderr too
vng_args+=(--qemu-opts "${qemu_opts[*]}")

# The command, quoted so the guest shell sees the same words. hvc0 only gets the kernel log from
# virtio's probe on; the whole log (early boot, DMAR setup) is saved by dmesg after the command.
dmesg_file=$results/dmesg-$variant.log
cmd="$(printf '%q ' "$@"); rc=\$?; dmesg >$(printf '%q' "$dmesg_file") 2>&1; exit \$rc"

: >"$console"
echo "vm.sh: booting $variant ($kernel), running: $cmd" >&2
# A guest that never answers (timeout, 124/137) or gives no exit status (255: boot failure,
# panic) is an infrastructure failure of TCG, seen as a lost timer interrupt stalling a vCPU
# with 2 vCPUs: run it again, VM_RETRIES times, keeping the failed attempt's logs. A command
# that ran and failed is never retried.
attempt=0
while :; do
  start=$(date +%s.%N)
  set +e
  # stdout/stderr must be pipes, not files: QEMU reopens /proc/self/fd/{1,2} once per virtio
  # port, and on a regular file each reopen would get its own offset and overwrite the others.
  timeout --kill-after=30 "${VM_TIMEOUT:-900}" vng "${vng_args[@]}" --exec "$cmd" \
    </dev/null > >(tee "$vstdout") 2> >(tee "$vstderr" >&2)
  rc=$?
  set -e
  wait  # for the tee process substitutions
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  printf 'vm.sh: %s VM finished in %.1f s, rc=%d\n' "$variant" "$secs" "$rc" >&2
  printf '%s %.1f %d\n' "$variant" "$secs" "$rc" >>"$results/vm-times.txt"
  case $rc in 124|137|255) ;; *) break ;; esac
  [ "$attempt" -lt "${VM_RETRIES:-1}" ] || break
  attempt=$((attempt + 1))
  for f in "$console" "$vstdout" "$vstderr"; do cp "$f" "$f.failed-attempt-$attempt" 2>/dev/null || true; done
  echo "vm.sh: $variant VM gave no result (rc=$rc): console tail below, retrying ($attempt of ${VM_RETRIES:-1})" >&2
  tail -n 30 "$console" >&2 || true
  : >"$console"
done

# vng exits with the command's status; 255 means the guest produced none (boot failure, panic,
# init trouble); 124/137 mean our timeout fired. Those become 125. Tails on any failure.
case $rc in
  0) ;;
  124|137) echo "vm.sh: $variant VM timed out after ${VM_TIMEOUT:-900} s" >&2; rc=125 ;;
  255) echo "vm.sh: $variant VM gave no exit status (boot failure or panic?)" >&2; rc=125 ;;
  *) echo "vm.sh: command failed in the $variant VM (rc=$rc)" >&2 ;;
esac
if [ $rc -ne 0 ]; then
  echo "----- $console (last 60 lines) -----" >&2
  tail -n 60 "$console" >&2 || true
  echo "----- $vstderr (last 30 lines) -----" >&2
  tail -n 30 "$vstderr" >&2 || true
  echo "-----" >&2
fi
exit $rc
