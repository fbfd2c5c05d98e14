#!/usr/bin/env bash
# Builds the Debian package vfio-shim_<version>_<arch>.deb from a release build, with the
# field's own tools: packaging/install.sh into a staging tree (PREFIX=/usr), dpkg-shlibdeps
# for the library dependencies, dpkg-deb to build. The maintainer scripts make the status
# registry (systemd-tmpfiles), reload udev's rules and systemd's units; the daemon is
# enabled but not started (it needs a kernel without the legacy container: its unit checks).
# Usage: build-deb.sh [OUTDIR]   (default <repo>/target/debian); prints the .deb's path last.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/debian}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/cli/Cargo.toml" | head -n1)
arch=$(dpkg --print-architecture)
# The same build the tiers test (one feature resolution for every binary).
bash "$root/compat-tests/scripts/build-release.sh"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/pkg
bash "$root/packaging/install.sh" "$pkg" /usr >/dev/null
# As dh_strip does: the symbols stay in the build tree.
strip --strip-unneeded "$pkg/usr/bin/vfio-shim" "$pkg/usr/sbin/vfio-shim-cuse" \
  "$pkg/usr/lib/$(gcc -print-multiarch)/libvfio_shim_preload.so"
# dpkg-shlibdeps reads debian/control of a source package: a minimal one, in the stage only.
mkdir -p "$stage/debian" "$pkg/DEBIAN"
printf 'Source: vfio-shim\n\nPackage: vfio-shim\nArchitecture: any\n' >"$stage/debian/control"
depends=$(cd "$stage" && dpkg-shlibdeps -O -e"pkg/usr/bin/vfio-shim" -e"pkg/usr/sbin/vfio-shim-cuse" \
  -e"pkg/usr/lib/$(gcc -print-multiarch)/libvfio_shim_preload.so" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
size=$(du -sk "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: vfio-shim
Version: $version-1
Architecture: $arch
Maintainer: vfio-shim developers <vfio-shim@invalid>
Installed-Size: $size
Depends: $depends
Recommends: systemd, udev
Section: admin
Priority: optional
Homepage: https://invalid/vfio-shim
Description: legacy VFIO container and groups over iommufd
 Keeps programs that speak VFIO's legacy container API (/dev/vfio/vfio,
 /dev/vfio/<N>, VFIO_SET_IOMMU type1: QEMU before 8.2, DPDK, SPDK, VPP,
 crosvm) working on kernels that offer only iommufd, with type1's behaviour.
 .
 vfio-shim run -- CMD serves a dynamically linked program in-process
 (LD_PRELOAD); vfio-shim-cuse serves /dev/vfio/vfio as a device node;
 vfio-shim doctor checks a host; trace and status show what it does.
CONTROL
cat >"$pkg/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  command -v systemd-tmpfiles >/dev/null && systemd-tmpfiles --create vfio-shim.conf || true
  command -v udevadm >/dev/null && udevadm control --reload 2>/dev/null || true
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    systemctl enable vfio-shim-cuse.service >/dev/null 2>&1 || true
  fi
fi
SCRIPT
cat >"$pkg/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now vfio-shim-cuse.service >/dev/null 2>&1 || true
fi
SCRIPT
cat >"$pkg/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
  command -v udevadm >/dev/null && udevadm control --reload 2>/dev/null || true
  [ -d /run/systemd/system ] && systemctl daemon-reload || true
fi
SCRIPT
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"
mkdir -p "$out"
deb=$out/vfio-shim_${version}-1_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
