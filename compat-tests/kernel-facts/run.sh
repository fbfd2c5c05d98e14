#!/usr/bin/env bash
# The kernel facts docs/supervisor.md's design rests on, asked of the cdev-only kernel
# (supervisor_pinning.c, supervisor_lifetime.c; built against the test kernel's own uAPI
# headers). vm-tier.sh runs them in its cdev-only boot; alone:
#   run.sh [results-dir]        builds, boots cdev-only once, judges
# and the pieces vm-tier.sh uses:
#   run.sh build <dir>          (host) the two probes into <dir>
#   run.sh guest <dir>          (guest, root, after guest-setup.sh) <dir>/facts.txt
#   run.sh judge <dir>          (host) each fact against what the design needs; the last line
#                               is "kernel-facts: N held, M did not"; exit 1 if any did not
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

build() {
  local out=$1 src p
  mkdir -p "$out/inc/linux"
  read -r _ src < <(bash "$root/compat-tests/scripts/kernel-source.sh")
  # The 7.3 uAPI headers of iommufd and VFIO (the host's are older); the kernel-internal
  # annotations they carry mean nothing to user space.
  ln -sf "$src/include/uapi/linux/iommufd.h" "$src/include/uapi/linux/vfio.h" "$out/inc/linux/"
  for p in supervisor_pinning supervisor_lifetime; do
    gcc -O2 -Wall -Wextra -Werror -std=gnu11 '-D__counted_by(x)=' -D__user= -I"$out/inc" \
      -o "$out/$p" "$root/compat-tests/kernel-facts/$p.c"
  done
}

guest() {
  local out=$1 rc=0 cdev
  cdev=/dev/vfio/devices/$(ls "/sys/bus/pci/devices/$VFIO_TEST_EDU/vfio-dev")
  { "$out/supervisor_pinning" "$cdev" || rc=1; "$out/supervisor_lifetime" "$cdev" || rc=1; } >"$out/facts.txt" 2>&1
  echo "$rc" >"$out/facts.rc"
}

judge() {
  local out=$1 held=0 not=0 c step
  need() {   # <pattern> <what the design needs>
    if grep -qF -- "$1" "$out/facts.txt" 2>/dev/null; then held=$((held + 1))
    else not=$((not + 1)); echo "kernel-facts: DID NOT HOLD: $2 ($1)"; fi
  }
  need "VFIO_GET_API_VERSION = 0, CHECK_EXTENSION(TYPE1v2) = 1" "iommufd's compat ioctls exist without VFIO groups"
  need "first IOAS_ALLOC = 0 id 1, second = 0 id 2" "a fresh iommufd's first IOAS is id 1"
  need "exact range = 0 (VmPin 0 kB); sub-range = 0; past the mapping = -1 ENOENT; starting before it = -1 ENOENT" \
    "IOAS_COPY copies only what the source maps"
  need "over two adjacent mappings (0, 0) = 0; onto a mapped IOVA = -1 EEXIST" "IOAS_COPY spans adjacent areas, never overwrites"
  need "real still maps the copy: unmap = 0 (65536 bytes)" "the copy outlives the staging mapping"
  need "rdi/rsi/rdx preserved = yes; real IOAS unmap = 0 (65536 bytes)" "a rewritten MAP_DMA lands in the real IOAS, registers restored"
  need "copy to real 2 = 0 (target's VmPin then 64 kB)" "the supervisor's copy pins the target's pages, charged to the target"
  for c in pipe inotify; do
    for step in "keeper closed its copy, holder has fd + dup" "holder closed the fd, its dup remains" \
      "dup sent over SCM_RIGHTS and closed (in flight only)" "received again"; do
      need "FACT $c: $step: not signalled" "$c: no release while a reference is held or in flight"
    done
    need "FACT $c: last fd closed: signalled" "$c: the release of the last reference is signalled"
  done
  need "FACT inotify: the stand-in is a character device 1:3" "the private node is a character device"
  need "FACT iommufd: through a private node: IOAS_ALLOC = 0, device bound = 0" "an iommufd opened through a private node works"
  need "FACT iommufd: its last fd closed, the device still bound: not signalled" "a bound device keeps the iommufd's file alive"
  need "FACT iommufd: the device attaches to its IOAS after that = 0" "and usable"
  need "FACT iommufd: the device closed: signalled" "the iommufd's release is signalled when its last device goes"
  [ "$(cat "$out/facts.rc" 2>/dev/null)" = 0 ] || { not=$((not + 1)); echo "kernel-facts: DID NOT HOLD: the probes ran"; }
  echo "kernel-facts: $held held, $not did not"
  [ "$not" = 0 ]
}

case ${1:-} in
  build|guest|judge) [ $# = 2 ] || { echo "usage: run.sh build|guest|judge <dir>" >&2; exit 2; }; "$1" "$2" ;;
  *)
    out=${1:-$root/compat-tests/out/kernel-facts}
    rm -rf "$out"; mkdir -p "$out"; out=$(cd "$out" && pwd)
    bash "$root/compat-tests/scripts/build-kernel.sh" cdev-only >/dev/null
    build "$out"
    cat >"$out/guest.sh" <<GUEST
#!/usr/bin/env bash
. "$root/compat-tests/scripts/guest-setup.sh" 2>"$out/guest-setup.log" || exit 1
bash "$root/compat-tests/kernel-facts/run.sh" guest "$out"
GUEST
    bash "$root/compat-tests/scripts/vm.sh" cdev-only "$out" -- bash "$out/guest.sh" </dev/null 2>"$out/vm.stderr" || true
    cat "$out/facts.txt" 2>/dev/null || true
    judge "$out"
    ;;
esac
