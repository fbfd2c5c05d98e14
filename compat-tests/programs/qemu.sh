#!/usr/bin/env bash
# QEMU 7.2 (bookworm) and 10.0 (bookworm-backports) as real legacy-container VFIO users, and
# QEMU 11.1 (trixie-backports) for its cpr-transfer live update.
#
# Usage:
#   qemu.sh fetch
#       On the host. Downloads the Debian packages of 7.2 and 10.0 (apt-get download, never
#       installed) and unpacks each into its own tree $VFIO_SHIM_CACHE/qemu/<7.2|10.0>/:
#       root/ (the packages), version, packages, libdirs. Libraries: every Depends of
#       qemu-system-x86 that is not installed on the host is unpacked into root/ too and its
#       directories listed in libdirs (LD_LIBRARY_PATH); ldd must then resolve everything.
#       11.1 needs trixie's glibc: its whole dependency closure, C library and loader included,
#       is downloaded by a private apt (its own state under $VFIO_SHIM_CACHE/qemu/11.1/apt, the
#       host's untouched) and unpacked into 11.1/root/; 11.1/qemu-system-x86_64 is a wrapper
#       that runs the binary with that tree's loader and libraries.
#       Idempotent (a tree is kept while its package versions are unchanged).
#   qemu.sh stage <dir>
#       On the host. Makes the trees visible to the guest: the guest sees the host's root
#       filesystem, but virtme-ng mounts a tmpfs over /var/cache (and /var/tmp), so the trees are
#       hard-linked (cp -al; copied across filesystems) to <dir>/7.2 and <dir>/10.0. <dir>
#       must be inside vm.sh's <results-dir> (the one host directory the guest sees there).
#   qemu.sh path <7.2|10.0|11.1>
#       Prints that tree's qemu-system-x86_64 (in $QEMU_TREES if set, else the cache).
#   qemu.sh l2-dma <qemu-binary|7.2|10.0> [<edu-bdf>] [<logdir>]
#       In the L1 guest (as root). Starts that QEMU with the edu assigned (vfio-pci, legacy
#       container), drives edu's DMA from the qtest socket and checks the bytes landed in L2
#       RAM (qemu_l2_dma.py), quits QEMU over QMP, checks the group is free and that QEMU
#       reported no failed DMA map (L2-BAR-MAP: its P2P map of the BAR); repeats it
#       ($L2_DMA_RUNS, default 2, so the second run proves nothing was left behind).
#       <edu-bdf> defaults to $VFIO_TEST_EDU (guest-setup.sh is sourced if it is unset).
#       A binary inside one of our trees gets the tree's QEMU_MODULE_DIR and LD_LIBRARY_PATH.
#   qemu.sh l2-dma-all <results-dir> <trees-dir>
#       In the guest: l2-dma for <trees-dir>/7.2 and /10.0; logs, summary.txt in <results-dir>.
#   qemu.sh scenarios <qemu-binary|7.2|10.0> [<logdir>]
#       In the guest: qemu_scenarios.py with edu and igb ($VFIO_TEST_EDU, $VFIO_TEST_IGB):
#       hotplug ($HOTPLUG_CYCLES device_add/del cycles), two devices in one container with igb
#       unplugged, system_reset, hotplug under -accel kvm, and (QEMU_SCENARIOS=cpr, 11.1)
#       cpr-transfer to a new process (see qemu_scenarios.py).
#   qemu.sh scenarios-all <results-dir> <trees-dir>
#       In the guest: scenarios for <trees-dir>/7.2 and /10.0, and the cpr scenario for 11.1,
#       into <results-dir>/scenarios-<v>.txt; with QEMU_COMPAT_CPR=1 on a kernel with the legacy
#       container, cpr once more with /dev/iommu as the container (scenarios-11.1-compat.txt).
#
# Environment: VFIO_SHIM_CACHE (/var/cache/vfio-shim), QEMU_TREES (where 7.2/ and 10.0/ are),
# L2_DMA_RUNS (2), HOTPLUG_CYCLES (20), QEMU_SCENARIOS ("hotplug two reset kvm"), QEMU_TAG (log
# name prefix, the version), QEMU_COMPAT_CPR (0), QEMU_WRAP (a
# command prefix for QEMU, e.g. "env LD_PRELOAD=/path/libvfio_shim_preload.so").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VFIO_SHIM_CACHE:-/var/cache/vfio-shim}
qroot=$cache/qemu

usage() {
  sed -n '3,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# suite (as apt-cache madison names it) for each tree
declare -A suite_of=([7.2]="bookworm/main" [10.0]="bookworm-backports/main")
pkgs=(qemu-system-x86 qemu-system-common qemu-system-data)

# version <package> <suite> -> the version madison lists for that suite (first = highest)
pkg_version() {
  apt-cache madison "$1" | awk -F'|' -v s="$2" '
    { gsub(/^ +| +$/, "", $2); if (index($3, " " s " ")) { print $2; exit } }'
}

fetch_one() {
  local v=$1 suite=${suite_of[$1]} dir=$qroot/$1 p ver want=() sig
  for p in "${pkgs[@]}"; do
    ver=$(pkg_version "$p" "$suite")
    [ -n "$ver" ] || { echo "qemu.sh: no $p in $suite (apt-get update? host-deps.sh?)" >&2; exit 1; }
    want+=("$p=$ver")
  done
  sig="${want[*]}"
  if [ -f "$dir/.done" ] && [ -f "$dir/libdirs" ] && [ "$(cat "$dir/packages")" = "$sig" ]; then
    echo "qemu.sh: $v: $(cat "$dir/version") (cached in $dir)" >&2
    return 0
  fi
  echo "qemu.sh: $v: fetching ${want[*]}" >&2
  rm -rf "$dir"; mkdir -p "$dir/dl" "$dir/root"
  chmod 0777 "$dir/dl"   # apt-get download drops to user _apt when it can write there
  (cd "$dir/dl" && apt-get download -q "${want[@]}" >/dev/null)
  local deb
  for deb in "$dir"/dl/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done

  # Libraries the binary needs that the host does not have: unpack those packages too.
  local deps dep missing=()
  deps=$(apt-cache show "qemu-system-x86=${want[0]#*=}" | sed -n 's/^Depends: //p' | head -n1 \
    | tr ',' '\n' | sed -e 's/([^)]*)//g' -e 's/|.*//' -e 's/ //g' | grep -v '^qemu-system-' || true)
  for dep in $deps; do
    dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$dep")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "qemu.sh: $v: unpacking missing dependencies: ${missing[*]}" >&2
    (cd "$dir/dl" && apt-get download -q "${missing[@]}" >/dev/null)
    for dep in "${missing[@]}"; do dpkg-deb -x "$dir"/dl/"${dep}"_*.deb "$dir/root"; done
  fi

  # QEMU finds firmware and modules relative to its binary (../share/qemu, ../share/seabios,
  # ../lib/ipxe/qemu, ../lib/x86_64-linux-gnu/qemu): point the firmware at the host's packages
  # (seabios, ipxe-qemu are dependencies of both versions).
  [ -e "$dir/root/usr/share/seabios" ] || ln -s /usr/share/seabios "$dir/root/usr/share/seabios"
  mkdir -p "$dir/root/usr/lib"
  [ -e "$dir/root/usr/lib/ipxe" ] || ln -s /usr/lib/ipxe "$dir/root/usr/lib/ipxe"

  : >"$dir/libdirs"
  if [ ${#missing[@]} -gt 0 ]; then
    for p in usr/lib/x86_64-linux-gnu lib/x86_64-linux-gnu; do
      [ -d "$dir/root/$p" ] && echo "root/$p" >>"$dir/libdirs"
    done
  fi
  local bin=$dir/root/usr/bin/qemu-system-x86_64 notfound
  notfound=$( (tree_env "$bin"; ldd "$bin"; for m in "$dir"/root/usr/lib/x86_64-linux-gnu/qemu/accel-*.so; do
      [ -e "$m" ] && ldd "$m"; done) | grep 'not found' || true)
  [ -z "$notfound" ] || { echo "qemu.sh: $v: unresolved libraries:" >&2; echo "$notfound" >&2; exit 1; }
  (tree_env "$bin"; "$bin" --version | head -n1) >"$dir/version"
  echo "$sig" >"$dir/packages"
  rm -rf "$dir/dl"
  touch "$dir/.done"
  echo "qemu.sh: $v: $(cat "$dir/version") in $dir/root" >&2
}

# QEMU 11.1 from trixie-backports with trixie's libraries and loader, by a private apt whose
# state lives in the tree (the host's apt state and packages are never touched).
fetch_trixie() {
  local dir=$qroot/11.1 apt_dir sig
  apt_dir=$dir/apt
  mkdir -p "$apt_dir"/etc/apt/{apt.conf.d,preferences.d,sources.list.d} \
    "$apt_dir"/var/lib/apt/lists/partial "$apt_dir"/var/cache/apt/archives/partial "$apt_dir"/var/lib/dpkg
  : >"$apt_dir/var/lib/dpkg/status"
  cat >"$apt_dir/etc/apt/sources.list" <<'SRC'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
SRC
  local apt=(apt-get -q -o "Dir=$apt_dir" -o "Dir::State::status=$apt_dir/var/lib/dpkg/status"
    -o Dir::Etc::trusted=/etc/apt/trusted.gpg -o Dir::Etc::trustedparts=/etc/apt/trusted.gpg.d
    -o APT::Architecture=amd64 -o Debug::NoLocking=1)
  "${apt[@]}" update >/dev/null
  sig=$("${apt[@]}" install --download-only -s -y --no-install-recommends -t trixie-backports \
    qemu-system-x86 | sed -n 's/^Inst //p' | sort)
  if [ -f "$dir/.done" ] && [ "$(cat "$dir/packages")" = "$sig" ]; then
    echo "qemu.sh: 11.1: $(cat "$dir/version") (cached in $dir)" >&2
    return 0
  fi
  echo "qemu.sh: 11.1: fetching qemu-system-x86 and $(echo "$sig" | wc -l) packages from trixie" >&2
  rm -rf "$dir/root" "$dir/.done"
  "${apt[@]}" install --download-only -y --no-install-recommends -t trixie-backports \
    qemu-system-x86 >/dev/null
  mkdir -p "$dir/root"
  local deb
  for deb in "$apt_dir"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
  rm -f "$apt_dir"/var/cache/apt/archives/*.deb
  cat >"$dir/qemu-system-x86_64" <<'WRAP'
#!/bin/sh
# QEMU 11.1 from trixie-backports with trixie's own loader and libraries (the host's glibc is
# older than it needs). Paths are relative to this script, so staged copies work.
t=$(cd "$(dirname "$0")" && pwd)/root
l=$t/usr/lib/x86_64-linux-gnu
export QEMU_MODULE_DIR=$l/qemu
exec "$l/ld-linux-x86-64.so.2" --library-path "$l" "$t/usr/bin/qemu-system-x86_64" \
  -L "$t/usr/share/qemu" -L "$t/usr/share/seabios" "$@"
WRAP
  chmod +x "$dir/qemu-system-x86_64"
  "$dir/qemu-system-x86_64" --version | head -n1 >"$dir/version"
  echo "$sig" >"$dir/packages"
  touch "$dir/.done"
  echo "qemu.sh: 11.1: $(cat "$dir/version") in $dir/root" >&2
}

cmd_fetch() {
  bash "$here/../scripts/host-deps.sh"   # the backports source (10.0) and the 10.0 runtime deps
  fetch_one 7.2
  fetch_one 10.0
  fetch_trixie
  local v
  for v in 7.2 10.0; do echo "$v $qroot/$v/root/usr/bin/qemu-system-x86_64"; done
  echo "11.1 $qroot/11.1/qemu-system-x86_64"
}

cmd_stage() {
  [ $# = 1 ] || usage
  local dest=$1 v
  mkdir -p "$dest"
  for v in 7.2 10.0 11.1; do
    if [ ! -f "$qroot/$v/.done" ]; then
      if [ "$v" = 11.1 ]; then fetch_trixie; else fetch_one "$v"; fi
    fi
    rm -rf "${dest:?}/$v"
    # the 11.1 tree's private apt state stays in the cache
    cp -al "$qroot/$v" "$dest/$v" 2>/dev/null || { rm -rf "${dest:?}/$v"; cp -a "$qroot/$v" "$dest/$v"; }
    rm -rf "${dest:?}/$v/apt"
    resolve_qemu_in "$dest" "$v"
  done
}

# <trees-dir> <7.2|10.0|11.1> -> "<v> <that tree's QEMU>"
resolve_qemu_in() {
  if [ "$2" = 11.1 ]; then echo "$2 $(cd "$1/$2" && pwd)/qemu-system-x86_64"
  else echo "$2 $(cd "$1/$2" && pwd)/root/usr/bin/qemu-system-x86_64"; fi
}

resolve_qemu() {
  local trees=${QEMU_TREES:-$qroot}
  case $1 in
    7.2|10.0|11.1)
      [ -f "$trees/$1/.done" ] || {
        echo "qemu.sh: no $1 tree in $trees ('qemu.sh fetch' and 'qemu.sh stage' on the host)" >&2
        exit 1; }
      resolve_qemu_in "$trees" "$1" | cut -d' ' -f2- ;;
    *) echo "$1" ;;
  esac
}

# For a binary in one of our trees (<tree>/root/usr/bin/qemu-system-x86_64, <tree>/version
# present): export its module directory and library path. Paths are computed from where the
# tree is now, so staged copies work.
tree_env() {
  local tree d
  tree=$(cd "$(dirname "$1")/../../.." 2>/dev/null && pwd) || return 0
  [ -f "$tree/libdirs" ] && [ -d "$tree/root" ] || return 0
  export QEMU_MODULE_DIR=$tree/root/usr/lib/x86_64-linux-gnu/qemu
  while read -r d; do
    [ -n "$d" ] && export LD_LIBRARY_PATH=$tree/$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done <"$tree/libdirs"
  return 0
}

ensure_guest_env() {
  if [ -z "${VFIO_TEST_EDU:-}" ]; then
    # shellcheck source=../scripts/guest-setup.sh
    . "$here/../scripts/guest-setup.sh" || { echo "qemu.sh: guest setup failed" >&2; exit 1; }
  fi
}

cmd_l2_dma() {
  [ $# -ge 1 ] && [ $# -le 3 ] || usage
  local bin bdf=${2:-} logdir=${3:-} runs=${L2_DMA_RUNS:-2} i rc=0 name
  bin=$(resolve_qemu "$1")
  [ -x "$bin" ] || { echo "qemu.sh: $bin is not executable" >&2; exit 1; }
  [ -n "$bdf" ] || { ensure_guest_env; bdf=$VFIO_TEST_EDU; }
  name=$(basename "$(dirname "$(dirname "$(dirname "$(dirname "$bin")")")")")  # 7.2/10.0 trees
  [ "$name" = 7.2 ] || [ "$name" = 10.0 ] || name=qemu
  tree_env "$bin"
  local opts=()
  [ -n "$logdir" ] && { mkdir -p "$logdir"; opts+=(--logdir "$logdir"); }
  [ -n "${QEMU_WRAP:-}" ] && opts+=(--wrap "$QEMU_WRAP")
  for ((i = 1; i <= runs; i++)); do
    echo "== QEMU $name ($bin), edu $bdf, run $i/$runs"
    python3 "$here/qemu_l2_dma.py" "${opts[@]}" --tag "$name.run$i" "$bin" "$bdf" || rc=1
  done
  return $rc
}

cmd_l2_dma_all() {
  [ $# = 2 ] || usage
  local results=$1 v rc=0
  mkdir -p "$results"; results=$(cd "$results" && pwd)
  export QEMU_TREES=$2
  ensure_guest_env
  for v in 7.2 10.0; do
    cmd_l2_dma "$v" "$VFIO_TEST_EDU" "$results" 2>&1 | tee "$results/l2-dma-$v.txt" || rc=1
  done
  {
    echo "L2 DMA on $(uname -r), edu $VFIO_TEST_EDU${QEMU_WRAP:+, QEMU wrapped by: $QEMU_WRAP}"
    for v in 7.2 10.0; do
      echo "$v: $(cat "$QEMU_TREES/$v/version" 2>/dev/null || echo 'no tree')"
      grep -E '^(== |L2-DMA: (ok|FAIL)|L2-BAR-MAP: |TIME )' "$results/l2-dma-$v.txt" | sed 's/^/  /'
    done
  } | tee "$results/summary.txt"
  grep -qE '^L2-(DMA|BAR-MAP): FAIL' "$results"/l2-dma-*.txt && rc=1
  return $rc
}

cmd_scenarios() {
  [ $# -ge 1 ] && [ $# -le 2 ] || usage
  local bin logdir=${2:-} opts=()
  bin=$(resolve_qemu "$1")
  [ -x "$bin" ] || { echo "qemu.sh: $bin is not executable" >&2; exit 1; }
  ensure_guest_env
  tree_env "$bin"
  [ -n "$logdir" ] && { mkdir -p "$logdir"; opts+=(--logdir "$logdir"); }
  [ -n "${QEMU_WRAP:-}" ] && opts+=(--wrap "$QEMU_WRAP")
  # shellcheck disable=SC2086 # the scenario list is words
  python3 "$here/qemu_scenarios.py" "${opts[@]}" --tag "${QEMU_TAG:-$1}" --cycles "${HOTPLUG_CYCLES:-20}" \
    "$bin" "$VFIO_TEST_EDU" "$VFIO_TEST_IGB" ${QEMU_SCENARIOS:-hotplug two reset kvm}
}

cmd_scenarios_all() {
  [ $# = 2 ] || usage
  local results=$1 v rc=0
  mkdir -p "$results"; results=$(cd "$results" && pwd)
  export QEMU_TREES=$2
  for v in 7.2 10.0 11.1; do
    # 11.1 is here for cpr-transfer (10.1 and later); the others have no cpr-transfer
    if [ "$v" = 11.1 ]; then QEMU_SCENARIOS=cpr cmd_scenarios "$v" "$results"
    else cmd_scenarios "$v" "$results"; fi >"$results/scenarios-$v.txt" 2>"$results/scenarios-$v.log" || rc=1
    grep -E '^(SCENARIO [a-z]+:|TIME )' "$results/scenarios-$v.txt" | sed "s/^/$v: /"
  done
  if [ "${QEMU_COMPAT_CPR:-0}" = 1 ] && [ -e /dev/vfio/vfio ]; then
    # The kernel's own compat layer as the container (in a private mount namespace), for the
    # record: it refuses VFIO_UPDATE_VADDR, so QEMU refuses cpr-transfer. Judged by
    # programs-tier.sh, not here.
    QEMU_SCENARIOS=cpr QEMU_TAG=11.1-compat unshare -m bash -c \
      'mount --bind /dev/iommu /dev/vfio/vfio && exec bash "$0" scenarios 11.1 "$1"' "$0" "$results" \
      >"$results/scenarios-11.1-compat.txt" 2>"$results/scenarios-11.1-compat.log" || true
    grep -E '^SCENARIO [a-z]+:' "$results/scenarios-11.1-compat.txt" | sed "s/^/11.1 kernel compat: /"
  fi
  return $rc
}

case "${1:-}" in
  fetch) shift; cmd_fetch "$@" ;;
  stage) shift; cmd_stage "$@" ;;
  path) [ $# = 2 ] || usage; resolve_qemu "$2" ;;
  l2-dma) shift; cmd_l2_dma "$@" ;;
  l2-dma-all) shift; cmd_l2_dma_all "$@" ;;
  scenarios) shift; cmd_scenarios "$@" ;;
  scenarios-all) shift; cmd_scenarios_all "$@" ;;
  *) usage ;;
esac
