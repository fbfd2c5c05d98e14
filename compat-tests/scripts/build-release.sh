#!/usr/bin/env bash
# The release build every tier, benchmark and the Debian package run: the shipped binaries
# (vfio-shim, vfio-shim-cuse, libvfio_shim_preload.so) and the test tools (vfio-shim-compat,
# explorer), in one cargo invocation. One selection of packages means one feature resolution:
# `cargo build -p A` and `cargo build -p B` resolve shared dependencies differently (nix's,
# libc's, zerocopy's features) and each relinks the binaries the other uplifted, so the tiers
# would test different builds, and a tier running beside another (vm-test.sh) would see its
# binaries replaced under it. After the first call, a call relinks nothing.
# Usage: build-release.sh   (quiet; cargo's errors on stderr)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CARGO_TERM_PROGRESS_WHEN=never cargo build --release -q \
  -p vfio-shim-cli -p vfio-shim-cuse -p vfio-shim-preload -p vfio-shim-compat -p vfio-shim-explorer
