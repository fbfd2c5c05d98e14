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

bash "$here/host-deps.sh"

mkdir -p "$cache/dl" "$cache/src" "$cache/kernels" "$cache/ccache"
deb=$(ls "$cache"/dl/linux-source-7.3_*.deb 2>/dev/null | tail -n1 || true)
if [ -z "$deb" ]; then
  (cd "$cache/dl" && apt-get download linux-source-7.3 >/dev/null 2>&1)
  deb=$(ls "$cache"/dl/linux-source-7.3_*.deb | tail -n1)
fi
srcver=$(basename "$deb" | sed -e 's/^linux-source-7.3_//' -e 's/_all.deb$//')
src=$cache/src/linux-$srcver
if [ ! -f "$src/.extracted" ]; then
  echo "build-kernel: extracting linux-source $srcver" >&2
  rm -rf "$src" "$cache/src/tmp"; mkdir -p "$cache/src/tmp"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/src/tmp" ./usr/src/linux-source-7.3.tar.xz
  mkdir -p "$src"
  tar -xJf "$cache/src/tmp/usr/src/linux-source-7.3.tar.xz" -C "$src" --strip-components=1
  rm -rf "$cache/src/tmp"
  touch "$src/.extracted"
fi

export CCACHE_DIR=$cache/ccache CCACHE_MAXSIZE=5G CCACHE_COMPILERCHECK=content
export KBUILD_BUILD_TIMESTAMP="vfio-shim" KBUILD_BUILD_USER=vfio-shim KBUILD_BUILD_HOST=vfio-shim
for v in "${variants[@]}"; do
  frag=$kconfig/$v.config
  [ -f "$frag" ] || { echo "build-kernel: no fragment $frag" >&2; exit 2; }
  key=$(cat "$kconfig/base.config" "$frag" "$0" | sha256sum | cut -c1-16)
  out=$cache/kernels/$srcver-$v-$key
  if [ -f "$out/bzImage" ]; then
    echo "$out/bzImage"; continue
  fi
  obj=$cache/build/$v
  mkdir -p "$obj"
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
  echo "$out/bzImage"
done
