#!/usr/bin/env bash
# Builds the test kernels from Debian's linux-source-7.3 and the fragments in ../kconfig.
# Usage: build-kernel.sh [full|cdev-only]...   (default: both)
# Prints nothing but progress on stderr; images land in $VFIO_SHIM_CACHE/kernels/<key>/bzImage,
# keyed by source version + fragment hash, so a cached run takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kconfig=$here/../kconfig
cache=${VFIO_SHIM_CACHE:-/var/cache/vfio-shim}
variants=("$@"); [ ${#variants[@]} -gt 0 ] || variants=(full cdev-only)

read -r srcver src < <(bash "$here/kernel-source.sh")
mkdir -p "$cache/kernels" "$cache/ccache"

export CCACHE_DIR=$cache/ccache CCACHE_MAXSIZE=5G CCACHE_COMPILERCHECK=content
export KBUILD_BUILD_TIMESTAMP="vfio-shim" KBUILD_BUILD_USER=vfio-shim KBUILD_BUILD_HOST=vfio-shim
for v in "${variants[@]}"; do
  frag=$kconfig/$v.config
  [ -f "$frag" ] || { echo "build-kernel: no fragment $frag" >&2; exit 2; }
  # The image depends on the config fragments only (this script's plumbing does not change it).
  key=$(cat "$kconfig/base.config" "$frag" | sha256sum | cut -c1-16)
  out=$cache/kernels/$srcver-$v-$key
  if [ -f "$out/bzImage" ]; then
    echo "$out/bzImage"; continue
  fi
  obj=$cache/build/$v
  mkdir -p "$obj"
  # One build per variant at a time: a second caller waits, then finds the image cached.
  exec 8>"$obj.lock"
  flock 8
  if [ -f "$out/bzImage" ]; then
    echo "$out/bzImage"; exec 8>&-; continue
  fi
  echo "build-kernel: building $v ($srcver, $key) in $obj" >&2
  start=$(date +%s)
  make -s -C "$src" O="$obj" allnoconfig >/dev/null
  "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" \
    "$kconfig/base.config" "$frag" >/dev/null
  make -s -C "$src" O="$obj" olddefconfig >/dev/null
  # Every requested option must have survived olddefconfig, or the image is not what we think.
  missing=0
  while IFS= read -r line; do
    case "$line" in CONFIG_*=*) ;; *) continue ;; esac
    sym=${line%%=*}; val=${line#*=}
    if [ "$val" = n ]; then
      grep -q "^$sym=" "$obj/.config" && { echo "build-kernel: $sym should be unset" >&2; missing=1; }
    else
      grep -qx "$line" "$obj/.config" || { echo "build-kernel: $line did not stick" >&2; missing=1; }
    fi
  done < <(cat "$kconfig/base.config" "$frag")
  [ $missing = 0 ] || exit 1
  make -s -C "$src" O="$obj" CC="ccache gcc" -j"$(nproc)" bzImage >"$obj/build.log" 2>&1 \
    || { tail -n 60 "$obj/build.log" >&2; exit 1; }
  mkdir -p "$out"
  cp "$obj/arch/x86/boot/bzImage" "$out/bzImage.tmp"
  cp "$obj/.config" "$out/config"
  mv "$out/bzImage.tmp" "$out/bzImage"
  echo "build-kernel: $v built in $(( $(date +%s) - start )) s" >&2
  # Older images of this variant are dead weight: drop them.
  for old in "$cache/kernels/"*"-$v-"*; do
    [ "$old" = "$out" ] || rm -rf "$old"
  done
  echo "$out/bzImage"
  exec 8>&-
done
