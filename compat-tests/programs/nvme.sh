#!/usr/bin/env bash
# QEMU's userspace NVMe driver (block/nvme.c over util/vfio-helpers.c, a legacy TYPE1 v1 client)
# on QEMU's emulated nvme controller: qemu-io, qemu-img and qemu-storage-daemon from the host's
# qemu-utils 10.0, driving `nvme://<bdf>/1` in the test guest.
#
# Usage:
#   nvme.sh image DIR
#       On the host, before the VM: DIR/nvme.img (the controller's backing file, for vm.sh's
#       VM_NVME_IMAGE) and DIR/nvme-initial.img, both 16 MiB of seeded bytes.
#   nvme.sh run OUTDIR
#       In the guest (after guest-setup.sh, $VFIO_TEST_NVME bound to vfio-pci). Every VFIO
#       program is wrapped in $NVME_WRAP (e.g. "vfio-shim run --"), each under a 120 s timeout:
#       1. qemu-io: writes and pattern-checked reads of 4 KiB to 1 MiB (1 MiB is larger than the
#          controller's 512 KiB MDTS: several requests, several temporary maps), a sub-page write
#          (bounce buffer), write-zeroes;
#       2. the same qemu-io write+read $NVME_REPS times (default 50), one process each;
#       3. qemu-img convert nvme:// -> OUTDIR/convert.img;
#       4. qemu-storage-daemon exporting the nvme node over NBD (unix socket); qemu-io reads the
#          patterns through it and qemu-img converts it -> OUTDIR/nbd.img.
#       OUTDIR/transcript.txt holds the programs' output without timings (compared between
#       type1 and the shim), OUTDIR/summary.txt one "NVME-<step>: ok|FAIL" line per step.
#   nvme.sh check DIR OUTDIR
#       On the host, after the VM: the expected image (initial bytes plus every write of `run`)
#       must equal DIR/nvme.img, OUTDIR/convert.img and OUTDIR/nbd.img byte for byte. Appends
#       NVME-IMAGE lines to OUTDIR/summary.txt; exit 0 iff all equal.
set -euo pipefail

size=$((16 << 20))
# One write per line: "pattern offset length" (pattern "zero" = write-zeroes). `run` issues them
# in order with a pattern-checked read after each; `check` applies them to the initial image.
ops="0x5a 0 4096
0xa5 65536 65536
0x3c 1048576 131072
0xc3 2097152 1048576
zero 2359296 131072
0x77 6291968 2560"
loop_off=8388608 loop_len=65536

cmd_image() {
  local dir=$1
  mkdir -p "$dir"
  python3 - "$dir/nvme-initial.img" "$size" <<'PY'
import hashlib, sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for i in range(size // 32):
        f.write(hashlib.sha256(b"vfio-shim nvme %d" % i).digest())
PY
  cp "$dir/nvme-initial.img" "$dir/nvme.img"
}

# Runs one VFIO program (wrapped) under a timeout; its output, without qemu-io's timing lines,
# goes to the transcript.
wrapped() {
  local wrap=()
  [ -n "${NVME_WRAP:-}" ] && read -r -a wrap <<<"$NVME_WRAP"
  timeout --kill-after=10 120 "${wrap[@]}" "$@"
}

untimed() { grep -vE '^[0-9.]+ [KMG]?i?B, [0-9]+ ops; ' || true; }

qemu_io_ops() {
  local args=() p off len
  while read -r p off len; do
    if [ "$p" = zero ]; then
      args+=(-c "write -z $off $len" -c "read -P 0 $off $len")
    else
      args+=(-c "write -P $p $off $len" -c "read -P $p $off $len")
    fi
  done <<<"$ops"
  # The 1 MiB write's pattern around the zeroed range, read after the zeroing.
  args+=(-c "read -P 0xc3 2097152 262144" -c "read -P 0xc3 2490368 655360")
  printf '%s\n' "${args[@]}"
}

cmd_run() {
  local out=$1 dev=nvme://$VFIO_TEST_NVME/1 rc=0 i p args=() fail
  mkdir -p "$out"
  : >"$out/transcript.txt"; : >"$out/summary.txt"
  step() {  # step NAME STATUS DETAIL
    echo "NVME-$1: $2${3:+ ($3)}" | tee -a "$out/summary.txt"
    [ "$2" = ok ] || rc=1
  }
  mapfile -t args < <(qemu_io_ops)

  # 1. writes and reads of several sizes and patterns
  echo "== qemu-io ops" >>"$out/transcript.txt"
  set +e
  wrapped qemu-io -f raw "${args[@]}" "$dev" >"$out/qemu-io.log" 2>&1
  p=$?
  set -e
  untimed <"$out/qemu-io.log" >>"$out/transcript.txt"
  echo "exit $p" >>"$out/transcript.txt"
  fail=$(grep -cE 'verification failed|failed|error|Error' "$out/qemu-io.log" || true)
  [ "$p" = 0 ] && [ "$fail" = 0 ] && step QEMU-IO ok "$(grep -c '^read ' "$out/qemu-io.log") reads verified" \
    || step QEMU-IO FAIL "exit $p, $fail error lines"

  # 2. the same process lifecycle many times: open, map, DMA, interrupts, close
  local reps=${NVME_REPS:-50} bad=0 start
  start=$(date +%s)
  echo "== qemu-io x$reps" >>"$out/transcript.txt"
  for ((i = 1; i <= reps; i++)); do
    p=$(printf '0x%02x' "$i")
    set +e
    wrapped qemu-io -f raw -c "write -P $p $loop_off $loop_len" -c "read -P $p $loop_off $loop_len" \
      "$dev" >"$out/loop.log" 2>&1
    local e=$?
    set -e
    if [ $e != 0 ] || grep -qE 'failed|rror' "$out/loop.log"; then
      bad=$((bad + 1))
      { echo "-- repetition $i: exit $e"; cat "$out/loop.log"; } >>"$out/loop-failures.log"
    fi
  done
  echo "$bad of $reps failed" >>"$out/transcript.txt"
  [ $bad = 0 ] && step LOOP ok "$reps runs in $(( $(date +%s) - start )) s" || step LOOP FAIL "$bad of $reps failed"

  # 3. the whole namespace to a file
  set +e
  wrapped qemu-img convert -f raw -O raw "$dev" "$out/convert.img" >"$out/convert.log" 2>&1
  p=$?
  set -e
  echo "== qemu-img convert: exit $p" >>"$out/transcript.txt"
  [ $p = 0 ] && step CONVERT ok || step CONVERT FAIL "exit $p: $(tail -n1 "$out/convert.log")"

  # 4. qemu-storage-daemon serving the nvme node over NBD; clients without VFIO
  local sock=/tmp/vfio-shim-nbd.sock uri qsd ready=0
  uri="nbd+unix:///nv?socket=$sock"
  rm -f "$sock"
  wrapped qemu-storage-daemon \
    --blockdev "driver=nvme,node-name=nv,device=$VFIO_TEST_NVME,namespace=1" \
    --nbd-server "addr.type=unix,addr.path=$sock" \
    --export type=nbd,id=exp0,node-name=nv,name=nv >"$out/qsd.log" 2>&1 &
  qsd=$!
  for _ in $(seq 1 100); do
    [ -S "$sock" ] && { ready=1; break; }
    kill -0 $qsd 2>/dev/null || break
    sleep 0.2
  done
  if [ $ready = 1 ]; then
    local rargs=() a
    for a in "${args[@]}"; do
      case $a in read*) rargs+=(-c "$a") ;; esac
    done
    set +e
    timeout 120 qemu-io -r -f raw "${rargs[@]}" -c "read -P 0x$(printf %02x "$reps") $loop_off $loop_len" \
      "$uri" >"$out/nbd-io.log" 2>&1
    p=$?
    timeout 120 qemu-img convert -f raw -O raw "$uri" "$out/nbd.img" >"$out/nbd-convert.log" 2>&1
    local c=$?
    set -e
    echo "== NBD reads" >>"$out/transcript.txt"
    untimed <"$out/nbd-io.log" >>"$out/transcript.txt"
    echo "== NBD exit $p, convert exit $c" >>"$out/transcript.txt"
    [ $p = 0 ] && ! grep -qE 'failed|rror' "$out/nbd-io.log" && [ $c = 0 ] \
      && step NBD ok "$(grep -c '^read ' "$out/nbd-io.log") reads verified" || step NBD FAIL "qemu-io exit $p, convert exit $c"
  else
    step NBD FAIL "qemu-storage-daemon did not listen: $(tail -n1 "$out/qsd.log")"
  fi
  kill -TERM $qsd 2>/dev/null || true
  set +e
  wait $qsd
  p=$?
  set -e
  # SIGTERM is a clean quit for the daemon: exit 0.
  [ $p = 0 ] && step QSD-EXIT ok || step QSD-EXIT FAIL "exit $p"
  return $rc
}

cmd_check() {
  local dir=$1 out=$2
  python3 - "$dir" "$out" "$ops" "${NVME_REPS:-50}" "$loop_off" "$loop_len" <<'PY'
import pathlib, sys
d, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ops, reps, loop_off, loop_len = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
img = bytearray((d / "nvme-initial.img").read_bytes())
for line in ops.splitlines():
    p, off, n = line.split()
    off, n = int(off), int(n)
    img[off:off + n] = bytes([0 if p == "zero" else int(p, 16)]) * n
img[loop_off:loop_off + loop_len] = bytes([reps & 0xff]) * loop_len
ok = True
lines = []
for name, path in (("device", d / "nvme.img"), ("convert", out / "convert.img"), ("nbd", out / "nbd.img")):
    if not path.exists():
        lines.append(f"NVME-IMAGE-{name}: FAIL (no {path.name})"); ok = False; continue
    got = path.read_bytes()
    if got == img:
        lines.append(f"NVME-IMAGE-{name}: ok ({len(got)} bytes as expected)")
    else:
        first = next((i for i in range(min(len(got), len(img))) if got[i] != img[i]), min(len(got), len(img)))
        lines.append(f"NVME-IMAGE-{name}: FAIL (size {len(got)}, first difference at {first:#x})"); ok = False
with (out / "summary.txt").open("a") as f:
    for l in lines:
        print(l); f.write(l + "\n")
sys.exit(0 if ok else 1)
PY
}

case "${1:-}" in
  image) [ $# = 2 ] || exit 2; cmd_image "$2" ;;
  run) [ $# = 2 ] || exit 2; cmd_run "$2" ;;
  check) [ $# = 3 ] || exit 2; cmd_check "$2" "$3" ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
