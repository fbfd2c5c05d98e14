#!/usr/bin/env bash
# The kernel's own VFIO selftests (tools/testing/selftests/vfio, linux-source-7.3) as real
# legacy-container programs: built on the host, run in the test guest.
#
# Usage:
#   selftests.sh build <outdir>
#       Builds the selftests (cached under $VFIO_SHIM_CACHE/selftests/<key>, keyed by source
#       version + build_rev + selftest_default_mode.c) and copies the binaries to <outdir>.
#       Installs its build dependencies (idempotent). Needs the linux-source-7.3 tree that
#       build-kernel.sh extracts; extracts it the same way if absent (never builds a kernel).
#   selftests.sh run <bins-dir> <mode-filter> [<results-dir>]
#       Inside the guest (as root). Runs each test against its device, restricted to the IOMMU
#       modes in <mode-filter>, and writes <results-dir>/<test>.<device>.<mode>.{tap,err,rc}
#       plus summary.tsv and summary.txt. <results-dir> defaults to $SELFTESTS_RESULTS or
#       ./selftests-results. If VFIO_TEST_EDU is unset, sources guest-setup.sh first.
#       Exit status 0 iff no test case failed (skips are not failures).
#
# <mode-filter>: comma-separated IOMMU modes of libvfio (vfio_type1_iommu, vfio_type1v2_iommu,
# iommufd_compat_type1, iommufd_compat_type1v2, iommufd) or the shorthands type1 (both
# vfio_type1*), compat (both iommufd_compat_*), all.
#
# How a mode is selected: tests with IOMMU-mode fixture variants (vfio_type1_iommu_anonymous,
# ...) run with the harness's -V excluding every variant of the other modes; tests without
# (vfio_pci_device_test, vfio_pci_driver_test's driver probe) use libvfio's default_iommu_mode,
# which selftest_default_mode.c sets from VFIO_SELFTESTS_DEFAULT_IOMMU_MODE (set to the mode
# under test). So one run per (test, device, mode) touches only that mode's container path.
#
# Environment: VFIO_SHIM_CACHE (/var/cache/vfio-shim), SELFTESTS_ONLY (space-separated test
# names to restrict `run`), SELFTESTS_EXTRA=1 (also run the optional tests below),
# SELFTESTS_WRAP (a command prefix for every test binary, e.g. a
# preload launcher: "env LD_PRELOAD=/path/libvfio_shim_preload.so").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VFIO_SHIM_CACHE:-/var/cache/vfio-shim}

usage() {
  echo "usage: selftests.sh build <outdir> | run <bins-dir> <mode-filter> [<results-dir>]" >&2
  exit 2
}

# Tests built and run. Device per test (see docs/programs.md for why):
#   vfio_dma_mapping_test      edu  (any device; the IOVA page-table check reads
#                                    /sys/kernel/debug/iommu/intel/<bdf>/domain_translation_struct)
#   vfio_dma_mapping_mmio_test edu  (maps its mmap-able 1 MiB BAR0 as DMA)
#   vfio_pci_device_test       igb  (MSI and MSI-X, FLR reset) and edu (MSI only)
#   vfio_pci_driver_test       igb  (the only device with a libvfio driver: drivers/igb)
#   optional (SELFTESTS_EXTRA=1):
#   vfio_pci_device_init_perf_test  edu+igb (one thread per device, concurrent init; not ivshmem:
#                                   libvfio's mmap_reserve() fails on its 256-byte mmap-able BAR0)
#   vfio_pci_sriov_uapi_test        igb (creates a VF; GET_DEVICE_FD with "<bdf> vf_token=<uuid>").
#                                   Skips on the test kernels: CONFIG_PCI_IOV is unset (and
#                                   vfio-pci would also need vfio_pci.enable_sriov=1)
bins=(vfio_dma_mapping_test vfio_dma_mapping_mmio_test vfio_pci_device_test vfio_pci_driver_test)
extra_bins=(vfio_pci_device_init_perf_test vfio_pci_sriov_uapi_test)
build_rev=1   # bump when the build recipe below changes (part of the cache key)
all_modes=(vfio_type1_iommu vfio_type1v2_iommu iommufd_compat_type1 iommufd_compat_type1v2 iommufd)

# --- build -----------------------------------------------------------------------------------
src_tree() {
  # The same download and extraction as build-kernel.sh, so the two share one tree.
  bash "$here/../scripts/kernel-source.sh"
}

build_deps() {
  local stamp=$cache/selftests-deps.v1
  [ -f "$stamp" ] && return 0
  # linux-source-7.3 comes from trixie-backports (host-deps.sh adds the source and pins it low).
  bash "$here/../scripts/host-deps.sh"
  local sudo_=(); [ "$(id -u)" = 0 ] || sudo_=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y -qq --no-install-recommends \
    gcc make libc6-dev uuid-dev >/dev/null
  mkdir -p "$cache"; touch "$stamp"
}

cmd_build() {
  [ $# = 1 ] || usage
  local outdir=$1 srcver src key dest work
  build_deps
  read -r srcver src < <(src_tree)
  key=$srcver-$( (echo "$build_rev"; cat "$here/selftest_default_mode.c") | sha256sum | cut -c1-16)
  dest=$cache/selftests/$key
  if [ ! -f "$dest/.built" ]; then
    work=$cache/selftests/build-$key
    rm -rf "$work"; mkdir -p "$work/hdr" "$work/out"
    echo "selftests: building VFIO selftests ($key)" >&2
    local start; start=$(date +%s)
    # UAPI headers into our own object dir: an in-tree `make headers` would dirty the source
    # tree that build-kernel.sh builds out of tree (O=) from.
    make -s -C "$src" O="$work/hdr" headers >"$work/headers.log" 2>&1 \
      || { tail -n 40 "$work/headers.log" >&2; exit 1; }
    gcc -O2 -Wall -Werror -c "$here/selftest_default_mode.c" -o "$work/out/selftest_default_mode.o"
    # Command-line LDLIBS replaces libvfio.mk's "LDLIBS += -luuid", so -luuid is repeated here.
    make -C "$src/tools/testing/selftests/vfio" OUTPUT="$work/out" \
      KHDR_INCLUDES="-isystem $work/hdr/usr/include" \
      LDLIBS="$work/out/selftest_default_mode.o -luuid" \
      -j"$(nproc)" >"$work/build.log" 2>&1 \
      || { tail -n 60 "$work/build.log" >&2; exit 1; }
    rm -rf "$dest"; mkdir -p "$dest"
    local b
    for b in "${bins[@]}"; do
      [ -x "$work/out/$b" ] || { echo "selftests: $b was not built" >&2; exit 1; }
    done
    # Every binary the Makefile produced (the four above plus iommufd-only ones), for later use.
    find "$work/out" -maxdepth 1 -type f -executable -name 'vfio_*' -exec cp {} "$dest/" \;
    cp "$work/build.log" "$dest/build.log"
    echo "$srcver" >"$dest/source-version"
    touch "$dest/.built"
    rm -rf "$work"
    echo "selftests: built in $(( $(date +%s) - start )) s" >&2
  fi
  mkdir -p "$outdir"
  cp -p "$dest"/vfio_* "$dest/source-version" "$outdir/"
  echo "selftests: binaries in $outdir (cache $dest)" >&2
}

# --- run -------------------------------------------------------------------------------------
expand_modes() {
  local m out=()
  for m in ${1//,/ }; do
    case $m in
      type1) out+=(vfio_type1_iommu vfio_type1v2_iommu) ;;
      compat) out+=(iommufd_compat_type1 iommufd_compat_type1v2) ;;
      all) out+=("${all_modes[@]}") ;;
      vfio_type1_iommu|vfio_type1v2_iommu|iommufd_compat_type1|iommufd_compat_type1v2|iommufd)
        out+=("$m") ;;
      *) echo "selftests: unknown mode '$m'" >&2; exit 2 ;;
    esac
  done
  echo "${out[@]}"
}

list_mode_variants() { python3 "$here/selftests_util.py" variants; }
summarize_tap() { python3 "$here/selftests_util.py" summarize "$@"; }

cmd_run() {
  [ $# -ge 2 ] && [ $# -le 3 ] || usage
  local bindir results modes
  bindir=$(cd "$1" && pwd)
  modes=$(expand_modes "$2")
  results=${3:-${SELFTESTS_RESULTS:-./selftests-results}}
  mkdir -p "$results"; results=$(cd "$results" && pwd)
  if [ -z "${VFIO_TEST_EDU:-}" ]; then
    # shellcheck source=../scripts/guest-setup.sh
    . "$here/../scripts/guest-setup.sh" || { echo "selftests: guest setup failed" >&2; exit 1; }
  fi
  local -A dev=([edu]=$VFIO_TEST_EDU [igb]=$VFIO_TEST_IGB [ivshmem]=$VFIO_TEST_IVSHMEM)
  # One run per entry; "a+b" passes several devices to one run.
  local -A devices_of=(
    [vfio_dma_mapping_test]="edu"
    [vfio_dma_mapping_mmio_test]="edu"
    [vfio_pci_device_test]="igb edu"
    [vfio_pci_driver_test]="igb"
    [vfio_pci_device_init_perf_test]="edu+igb"
    [vfio_pci_sriov_uapi_test]="igb"
  )
  local run_bins=("${bins[@]}")
  [ "${SELFTESTS_EXTRA:-0}" = 1 ] && run_bins+=("${extra_bins[@]}")
  local wrap=(); [ -n "${SELFTESTS_WRAP:-}" ] && read -r -a wrap <<<"$SELFTESTS_WRAP"
  local tsv=$results/summary.tsv txt=$results/summary.txt
  printf 'test\tdevice\tmode\tcase\tresult\treason\n' >"$tsv"
  : >"$txt"
  {
    echo "VFIO selftests ($(cat "$bindir/source-version" 2>/dev/null || echo '?')) on $(uname -r)," \
      "modes: $modes${SELFTESTS_WRAP:+, wrapped by: $SELFTESTS_WRAP}"
    printf '%-30s %-15s %-22s %5s %5s %5s %7s %s\n' test dev mode pass skip fail secs rc
  } | tee -a "$txt"
  local t d mode bdfs base exclude m v total_fail=0 start secs rc counts x
  for t in "${run_bins[@]}"; do
    if [ -n "${SELFTESTS_ONLY:-}" ] && [[ " $SELFTESTS_ONLY " != *" $t "* ]]; then continue; fi
    for d in ${devices_of[$t]}; do
      bdfs=()
      for x in ${d//+/ }; do bdfs+=("${dev[$x]}"); done
      for mode in $modes; do
        base=$results/$t.$d.$mode
        export VFIO_SELFTESTS_DEFAULT_IOMMU_MODE=$mode
        # Exclude the variants of every other mode; non-mode variants (msi, msix) stay.
        exclude=()
        while read -r m v; do
          [ "$m" = "$mode" ] || exclude+=(-V "$v")
        done < <("${wrap[@]}" "$bindir/$t" -l "${bdfs[@]}" 2>&1 >/dev/null | list_mode_variants)
        start=$(date +%s.%N)
        set +e
        (cd "$results" && exec "${wrap[@]}" "$bindir/$t" "${exclude[@]}" "${bdfs[@]}") \
          >"$base.tap" 2>"$base.err"
        rc=$?
        set -e
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        echo "$rc" >"$base.rc"
        counts=$(summarize_tap "$base.tap" "$t" "$d" "$mode" "$tsv")
        read -r p s f <<<"$counts"
        # No TAP result at all: the binary itself skipped (rc 4) or died before the harness.
        if [ $((p + s + f)) = 0 ]; then
          if [ "$rc" = 4 ]; then
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$d" "$mode" "(binary)" skip \
              "$(sed -n 's/^1\.\.0 # SKIP //p' "$base.tap" | head -n1)" >>"$tsv"
            s=1
          else
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$d" "$mode" "(binary)" fail \
              "rc=$rc $(grep -v '^# default_iommu_mode=' "$base.err" | tail -n1)" >>"$tsv"
            f=1
          fi
        fi
        total_fail=$((total_fail + f))
        printf '%-30s %-15s %-22s %5d %5d %5d %7.1f %d\n' "$t" "$d" "$mode" "$p" "$s" "$f" \
          "$secs" "$rc" | tee -a "$txt"
      done
    done
  done
  {
    echo
    echo "skipped and failed cases:"
    awk -F'\t' 'NR > 1 && $5 != "pass" { printf "  %-5s %s %s %s %s: %s\n", $5, $1, $2, $3, $4, $6 }' "$tsv"
    echo "total failed cases: $total_fail"
  } | tee -a "$txt"
  [ "$total_fail" = 0 ]
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  run) shift; cmd_run "$@" ;;
  *) usage ;;
esac
