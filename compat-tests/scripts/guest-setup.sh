#!/usr/bin/env bash
# Runs first inside the test guest (see vm.sh): mounts what the clients need, binds the test
# devices to vfio-pci and names them in the environment.
#
# Usage:  guest-setup.sh [command...]   set up, then exec the command with the environment below
#         . guest-setup.sh              set up and export into the calling shell
#
# Exports VFIO_TEST_EDU, VFIO_TEST_IGB, VFIO_TEST_IVSHMEM (PCI addresses, e.g. 0000:00:03.0),
# VFIO_TEST_PAIR_EDU and VFIO_TEST_PAIR_RNG (the two devices of one group behind vm.sh's
# PCIe-to-PCI bridge: an edu on vfio-pci, a virtio-rng left on virtio-pci),
# VFIO_TEST_NVME (QEMU's nvme controller, when the VM has one: vm.sh's VM_NVME_IMAGE) and
# VFIO_TEST_KERNEL (full|cdev-only, from whether /dev/vfio/vfio exists) and VFIO_TEST_NOIOMMU
# (1 on vm.sh's machine without an IOMMU, booted in vfio's unsafe no-IOMMU mode: no pair there,
# and the cdevs are noiommu-vfioN) and VFIO_TEST_NOIOMMU_EDU (vm.sh's mixed machine: the edu
# that bypasses the IOMMU, bound to vfio-pci in a no-IOMMU group; empty elsewhere). If $VFIO_TEST_ENV_FILE
# is set, the same assignments are also written there (sourceable). Prints an inventory on stderr.
# Fails (non-zero) if a device is absent or cannot be bound, or /dev/iommu or a cdev is missing.

_gs_main() {
  # No set -e here: this may run in the caller's shell; every failure is checked explicitly.
  local fail=0
  _gs_err() { echo "guest-setup: $*" >&2; fail=1; }

  mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug \
    || _gs_err "cannot mount debugfs"
  mkdir -p /dev/hugepages
  mountpoint -q /dev/hugepages || mount -t hugetlbfs -o pagesize=2M hugetlbfs /dev/hugepages \
    || _gs_err "cannot mount hugetlbfs"

  # bind <vendor:device> [skip-bdf] -> prints the BDF of the first such device (not skip-bdf),
  # bound to vfio-pci.
  _gs_bind() {
    local want=$1 skip=${2:-} d bdf ven dev
    for d in /sys/bus/pci/devices/*; do
      ven=$(<"$d/vendor"); dev=$(<"$d/device")
      [ "${ven#0x}:${dev#0x}" = "$want" ] || continue
      bdf=$(basename "$d")
      [ "$bdf" != "$skip" ] || continue
      if [ "$(basename "$(readlink -f "$d/driver" 2>/dev/null || echo none)")" != vfio-pci ]; then
        [ -e "$d/driver" ] && echo "$bdf" >"$d/driver/unbind"
        echo vfio-pci >"$d/driver_override"
        echo "$bdf" >/sys/bus/pci/drivers_probe
      fi
      if [ "$(basename "$(readlink -f "$d/driver" 2>/dev/null || echo none)")" != vfio-pci ]; then
        echo "guest-setup: $bdf ($want) did not bind to vfio-pci" >&2
        return 1
      fi
      echo "$bdf"
      return 0
    done
    echo "guest-setup: no PCI device $want" >&2
    return 1
  }

  local noiommu=0 mixed=0 cdev_re='^vfio[0-9]'
  if [ "$(cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode 2>/dev/null)" = Y ]; then
    # (iommufd_selftest_iommu.0 is IOMMUFD_TEST's mock, no hardware.) With an IOMMU, this is
    # vm.sh's mixed machine: the IOMMU inventory plus one edu that bypasses the IOMMU.
    if [ -z "$(ls /sys/class/iommu 2>/dev/null | grep -v "^iommufd_selftest")" ]; then
      noiommu=1 cdev_re='^noiommu-vfio[0-9]'
    else
      mixed=1
    fi
  fi
  local edu igb ivshmem nvme=
  edu=$(_gs_bind 1234:11e8) || fail=1
  igb=$(_gs_bind 8086:10c9) || fail=1
  ivshmem=$(_gs_bind 1af4:1110) || fail=1
  # The pair behind the PCIe-to-PCI bridge (vm.sh): the second edu on vfio-pci, and the
  # virtio-rng of its group left on its kernel driver (virtio-pci), as the explorer expects.
  local pair_edu= pair_rng= pair_group
  if [ $noiommu = 0 ]; then
    pair_edu=$(_gs_bind 1234:11e8 "$edu") || fail=1
    pair_group=$(basename "$(readlink "/sys/bus/pci/devices/$pair_edu/iommu_group")")
    for d in /sys/kernel/iommu_groups/"$pair_group"/devices/*; do
      [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1af4:0x1005 ] && pair_rng=$(basename "$d")
    done
    [ -n "$pair_rng" ] || _gs_err "no virtio-rng in the pair's group $pair_group"
    [ "$(basename "$(readlink -f "/sys/bus/pci/devices/$pair_rng/driver" 2>/dev/null || echo none)")" = virtio-pci ] \
      || _gs_err "$pair_rng (the pair's virtio-rng) is not on virtio-pci"
  fi
  # Optional: only VMs booted with an nvme image have one.
  if cat /sys/bus/pci/devices/*/uevent 2>/dev/null | grep -qx 'PCI_ID=1B36:0010'; then
    nvme=$(_gs_bind 1b36:0010) || fail=1
  fi

  # The mixed machine's edu without an IOMMU (no iommu link), in a no-IOMMU group.
  local noiommu_edu=
  if [ $mixed = 1 ]; then
    for d in /sys/bus/pci/devices/*; do
      [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1234:0x11e8 ] && [ ! -e "$d/iommu" ] && noiommu_edu=$(basename "$d")
    done
    if [ -z "$noiommu_edu" ]; then
      _gs_err "mixed machine: no edu without an IOMMU"
    elif [ "$(basename "$(readlink -f "/sys/bus/pci/devices/$noiommu_edu/driver" 2>/dev/null || echo none)")" != vfio-pci ]; then
      [ -e "/sys/bus/pci/devices/$noiommu_edu/driver" ] && echo "$noiommu_edu" >"/sys/bus/pci/devices/$noiommu_edu/driver/unbind"
      echo vfio-pci >"/sys/bus/pci/devices/$noiommu_edu/driver_override"
      echo "$noiommu_edu" >/sys/bus/pci/drivers_probe
      ls "/sys/bus/pci/devices/$noiommu_edu/vfio-dev/" 2>/dev/null | grep -q '^noiommu-vfio' \
        || _gs_err "$noiommu_edu did not bind to vfio-pci as a no-IOMMU device"
    fi
  fi

  [ -c /dev/iommu ] || _gs_err "/dev/iommu missing (CONFIG_IOMMUFD?)"
  local kernel=cdev-only
  [ -c /dev/vfio/vfio ] && kernel=full
  local b
  for b in $edu $igb $ivshmem $pair_edu $nvme; do
    ls "/sys/bus/pci/devices/$b/vfio-dev/" 2>/dev/null | grep -q "$cdev_re" \
      || _gs_err "$b has no VFIO cdev matching $cdev_re (CONFIG_VFIO_DEVICE_CDEV? CONFIG_VFIO_NOIOMMU?)"
  done
  ls /dev/vfio/devices/ 2>/dev/null | grep -q "$cdev_re" || _gs_err "no /dev/vfio/devices/ cdev matching $cdev_re"

  {
    echo "guest-setup: kernel $(uname -r), $kernel ($( [ $kernel = full ] && echo "legacy container + groups" || echo "cdevs only"))$( [ $noiommu = 1 ] && echo ", UNSAFE no-IOMMU mode, tainted $(cat /proc/sys/kernel/tainted)")"
    for b in $edu $igb $ivshmem $pair_edu $pair_rng $nvme $noiommu_edu; do
      local g cdev name
      g=$(basename "$(readlink "/sys/bus/pci/devices/$b/iommu_group")")
      cdev=$(ls "/sys/bus/pci/devices/$b/vfio-dev/" 2>/dev/null | head -n1)
      name=$(cat "/sys/bus/pci/devices/$b/vendor" "/sys/bus/pci/devices/$b/device" | sed 's/0x//' | paste -sd:)
      printf 'guest-setup:   %s %s driver=%s group=%s group-node=%s cdev=/dev/vfio/devices/%s\n' \
        "$b" "$name" "$(basename "$(readlink -f "/sys/bus/pci/devices/$b/driver")")" "$g" \
        "$( [ -c "/dev/vfio/$g" ] && echo "/dev/vfio/$g" || { [ -c "/dev/vfio/noiommu-$g" ] && echo "/dev/vfio/noiommu-$g"; } || echo none)" "${cdev:-none}"
    done
    echo "guest-setup:   /dev/vfio: $(ls /dev/vfio | tr '\n' ' ')"
    echo "guest-setup:   /dev/vfio/devices: $(ls /dev/vfio/devices 2>/dev/null | tr '\n' ' ')"
    echo "guest-setup:   /dev/iommu: $( [ -c /dev/iommu ] && echo present || echo MISSING)"
    echo "guest-setup:   hugepages: $(cat /proc/sys/vm/nr_hugepages) x 2 MiB, hugetlbfs on /dev/hugepages"
    echo "guest-setup:   iommu: $(ls /sys/class/iommu 2>/dev/null | tr '\n' ' ')"
  } >&2

  export VFIO_TEST_EDU=$edu VFIO_TEST_IGB=$igb VFIO_TEST_IVSHMEM=$ivshmem VFIO_TEST_NVME=$nvme
  export VFIO_TEST_PAIR_EDU=$pair_edu VFIO_TEST_PAIR_RNG=$pair_rng
  export VFIO_TEST_KERNEL=$kernel VFIO_TEST_NOIOMMU=$noiommu VFIO_TEST_NOIOMMU_EDU=$noiommu_edu
  if [ -n "${VFIO_TEST_ENV_FILE:-}" ]; then
    printf 'export VFIO_TEST_EDU=%s VFIO_TEST_IGB=%s VFIO_TEST_IVSHMEM=%s VFIO_TEST_NVME=%s VFIO_TEST_KERNEL=%s VFIO_TEST_NOIOMMU=%s\n' \
      "$edu" "$igb" "$ivshmem" "$nvme" "$kernel" "$noiommu" >"$VFIO_TEST_ENV_FILE"
    printf 'export VFIO_TEST_NOIOMMU_EDU=%s\n' "$noiommu_edu" >>"$VFIO_TEST_ENV_FILE"
    printf 'export VFIO_TEST_PAIR_EDU=%s VFIO_TEST_PAIR_RNG=%s\n' "$pair_edu" "$pair_rng" >>"$VFIO_TEST_ENV_FILE"
  fi
  [ $fail = 0 ] || { echo "guest-setup: FAILED" >&2; return 1; }
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced: keep the caller's shell options.
  _gs_saved=$(set +o); _gs_main; _gs_rc=$?; eval "$_gs_saved"; unset _gs_saved
  return $_gs_rc
fi
_gs_main || exit 1
[ $# -eq 0 ] || exec "$@"
