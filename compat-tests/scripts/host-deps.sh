#!/usr/bin/env bash
# Installs every host package the VM tier needs. Idempotent; cheap when already done.
set -euo pipefail

stamp=/var/cache/vfio-shim/host-deps.v6
[ -f "$stamp" ] && exit 0

export DEBIAN_FRONTEND=noninteractive
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# libvirt-daemon, its QEMU driver and virsh: the libvirt recipe's test (packaging/,
# compat-tests/programs/libvirt_l2_dma.py; the daemons run in the guest only, these packages
# start nothing on the host). dpkg-dev (dpkg-shlibdeps) and systemd (systemd-analyze,
# systemd-tmpfiles): the package
# test (packaging/). pciutils: lspci, which dpdk-devbind.py runs (programs/dpdk.sh). strace: qemu_scenarios.py reads the kernel's answers to QEMU's KVM-VFIO
# calls from it, compat-tests/trace what the program and the shim asked the kernel.
# udev: virtme-ng-init needs the host's systemd-udevd to create /dev/virtio-ports/* in the
# guest, or the command's stdout/stderr/exit status have nowhere to go.
# bookworm-backports: QEMU 10.0 for the L1 VM, and its qemu-utils (qemu-io, qemu-img,
# qemu-storage-daemon: nvme.sh runs them in the guest). trixie-backports: linux-source-7.3 only, pinned
# low so nothing else is ever pulled from it.
sudo_ tee /etc/apt/sources.list.d/vfio-shim-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
sudo_ tee /etc/apt/preferences.d/vfio-shim-pin >/dev/null <<'PIN'
Package: *
Pin: release n=trixie-backports
Pin-Priority: 1
PIN
sudo_ apt-get update -qq
sudo_ apt-get install -y -qq --no-install-recommends \
  -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
sudo_ apt-get install -y -qq --no-install-recommends \
  bc bison flex libelf-dev libssl-dev cpio xz-utils ccache kmod busybox-static \
  python3-venv gcc make libc6-dev udev strace dpkg-dev systemd pciutils \
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients >/dev/null
sudo_ mkdir -p /var/cache/vfio-shim
sudo_ touch "$stamp"
