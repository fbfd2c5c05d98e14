#!/usr/bin/env bash
# Installs vfio-shim from a release build into DESTDIR/PREFIX (`make install` and the Debian
# package both use it):
#   PREFIX/bin/vfio-shim                     the command (run, trace, status, doctor)
#   PREFIX/sbin/vfio-shim-cuse               the CUSE daemon
#   PREFIX/lib/<multiarch>/libvfio_shim_preload.so   where `vfio-shim run` looks beside bin/
#   PREFIX/lib/systemd/system/vfio-shim-cuse.service, PREFIX/lib/udev/rules.d/60-vfio-shim.rules,
#   PREFIX/lib/tmpfiles.d/vfio-shim.conf     (paths in the unit follow PREFIX)
#   PREFIX/share/man/man1/vfio-shim*.1, man8/vfio-shim-cuse.8, bash/zsh/fish completions,
#   PREFIX/share/doc/vfio-shim/              README and docs/
# Usage: install.sh [DESTDIR] [PREFIX]   (defaults: "" and /usr/local); BUILD=<cargo target
# dir with release binaries> (default <repo>/target/release, built if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
destdir=${1:-}
prefix=${2:-/usr/local}
build=${BUILD:-$root/target/release}
if [ ! -x "$build/vfio-shim" ] || [ ! -x "$build/vfio-shim-cuse" ] || [ ! -f "$build/libvfio_shim_preload.so" ]; then
  bash "$root/compat-tests/scripts/build-release.sh"
fi
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
d=$destdir$prefix
install -d "$d/bin" "$d/sbin" "$d/lib/$multiarch" "$d/lib/systemd/system" "$d/lib/udev/rules.d" \
  "$d/lib/tmpfiles.d" "$d/share/man/man1" "$d/share/man/man8" "$d/share/bash-completion/completions" \
  "$d/share/zsh/vendor-completions" "$d/share/fish/vendor_completions.d" "$d/share/doc/vfio-shim"
install -m 0755 "$build/vfio-shim" "$d/bin/vfio-shim"
install -m 0755 "$build/vfio-shim-cuse" "$d/sbin/vfio-shim-cuse"
install -m 0644 "$build/libvfio_shim_preload.so" "$d/lib/$multiarch/libvfio_shim_preload.so"
sed -e "s|/usr/sbin/vfio-shim-cuse|$prefix/sbin/vfio-shim-cuse|" \
    -e "s|file:/usr/share/doc/vfio-shim/|file:$prefix/share/doc/vfio-shim/|" \
  "$root/packaging/vfio-shim-cuse.service" >"$d/lib/systemd/system/vfio-shim-cuse.service"
chmod 0644 "$d/lib/systemd/system/vfio-shim-cuse.service"
install -m 0644 "$root/packaging/60-vfio-shim.rules" "$d/lib/udev/rules.d/60-vfio-shim.rules"
install -m 0644 "$root/packaging/vfio-shim.tmpfiles" "$d/lib/tmpfiles.d/vfio-shim.conf"
man=$(mktemp -d)
"$build/vfio-shim" generate man "$man"
"$build/vfio-shim-cuse" --print-man >"$man/vfio-shim-cuse.8"
for page in "$man"/*.1; do gzip -9n <"$page" >"$d/share/man/man1/$(basename "$page").gz"; done
gzip -9n <"$man/vfio-shim-cuse.8" >"$d/share/man/man8/vfio-shim-cuse.8.gz"
rm -rf "$man"
"$build/vfio-shim" generate bash >"$d/share/bash-completion/completions/vfio-shim"
"$build/vfio-shim" generate zsh >"$d/share/zsh/vendor-completions/_vfio-shim"
"$build/vfio-shim" generate fish >"$d/share/fish/vendor_completions.d/vfio-shim.fish"
install -m 0644 "$root/README.md" "$d/share/doc/vfio-shim/README.md"
install -m 0644 "$root"/docs/*.md "$d/share/doc/vfio-shim/"
echo "install: vfio-shim into $d (preload in lib/$multiarch)"
