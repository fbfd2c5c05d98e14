#!/usr/bin/env bash
# Downloads Debian's linux-source-7.3 (trixie-backports, added by host-deps.sh) and extracts it
# once into the cache; prints "<source-version> <tree>". Shared by build-kernel.sh and the
# selftests build. Serialised with flock so concurrent callers extract once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VFIO_SHIM_CACHE:-/var/cache/vfio-shim}

bash "$here/host-deps.sh"
mkdir -p "$cache/dl" "$cache/src"
exec 9>"$cache/src/.lock"
flock 9
deb=$(ls "$cache"/dl/linux-source-7.3_*.deb 2>/dev/null | tail -n1 || true)
if [ -z "$deb" ]; then
  (cd "$cache/dl" && apt-get download linux-source-7.3 >/dev/null 2>&1)
  deb=$(ls "$cache"/dl/linux-source-7.3_*.deb | tail -n1)
fi
srcver=$(basename "$deb" | sed -e 's/^linux-source-7.3_//' -e 's/_all.deb$//')
src=$cache/src/linux-$srcver
if [ ! -f "$src/.extracted" ]; then
  echo "kernel-source: extracting linux-source $srcver" >&2
  rm -rf "$src" "$cache/src/tmp"; mkdir -p "$cache/src/tmp"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/src/tmp" ./usr/src/linux-source-7.3.tar.xz
  mkdir -p "$src"
  tar -xJf "$cache/src/tmp/usr/src/linux-source-7.3.tar.xz" -C "$src" --strip-components=1
  rm -rf "$cache/src/tmp"
  touch "$src/.extracted"
fi
echo "$srcver $src"
