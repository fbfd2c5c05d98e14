#!/usr/bin/env bash
# The guest half of the CUSE VM test (run.sh boots the VM and calls this as root).
# Usage: guest.sh <results-dir> <vfio-shim-cuse binary> <cuse_client binary>
#
# 1. foreground daemon: the client's tests as root and as nobody; SIGTERM with a client holding
#    the node open: the daemon exits 0, the node goes, the holder's next ioctl fails at once;
# 2. kill -9 of the daemon under two client loops (root and nobody): both get errors, no hang;
# 3. detached daemon (no --foreground) under the default name vfio/vfio: /dev/vfio/vfio exists
#    when the command returns; an abort via /sys/class/cuse/vfio!vfio/abort ends the daemon and
#    removes the node.
# Every step is bounded by `timeout`: a hang is a failure, never a stuck VM.
set -uo pipefail
results=$1 daemon=$2 client_src=$3
name=vfio-shim-cuse-test
node=/dev/$name
pass=0 fail=0
declare -a summary

result() { # result <ok|fail> <name> <detail>
  if [ "$1" = ok ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
  summary+=("$(printf '%-4s %-34s %s' "$([ "$1" = ok ] && echo ok || echo FAIL)" "$2" "$3")")
  echo "== $1: $2 $3"
}

wait_for() { # wait_for <seconds> <test...>: polls every 0.1 s
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$deadline" ] && return 1; sleep 0.1; done
}

alive() { kill -0 "$1" 2>/dev/null; }
gone() { ! alive "$1"; }

# The nobody user must be able to run the client: copy it out of the results dir.
client=/tmp/cuse_client
install -m 0755 "$client_src" "$client"
as_nobody=(setpriv --reuid 65534 --regid 65534 --clear-groups)

echo "guest: $(uname -r); /dev/cuse: $(ls -l /dev/cuse 2>&1)"
[ -c /dev/cuse ] || { echo "no /dev/cuse (CONFIG_CUSE)"; exit 1; }

start_daemon() { # start_daemon <log>: foreground daemon in the background; sets dpid
  "$daemon" --test-device --foreground --name "$name" --threads 4 >"$1" 2>&1 &
  dpid=$!
  if wait_for 10 test -c "$node"; then
    chmod 0666 "$node"
    return 0
  fi
  echo "node $node did not appear; daemon log:"; cat "$1"
  return 1
}

# --- 1. client tests, SIGTERM ---------------------------------------------------------------------
if start_daemon "$results/daemon-1.log"; then
  result ok daemon-start "$node: $(stat -c '%F %t:%T' "$node")"
  for who in root nobody; do
    pre=(); [ $who = nobody ] && pre=("${as_nobody[@]}")
    timeout 60 "${pre[@]}" "$client" basic "$node" >"$results/client-$who.log" 2>&1
    rc=$?
    sed "s/^/  [$who] /" "$results/client-$who.log"
    if [ $rc -eq 0 ]; then result ok "client-basic-$who" "$(tail -n1 "$results/client-$who.log")"
    else result fail "client-basic-$who" "rc=$rc (124 = hang)"; fi
  done

  flag=/tmp/cuse-hold-flag; rm -f "$flag"
  timeout 30 "$client" hold "$node" "$flag" >"$results/hold.log" 2>&1 &
  hpid=$!
  wait_for 10 grep -q ready "$results/hold.log" || echo "holder not ready: $(cat "$results/hold.log")"
  kill -TERM "$dpid"
  if wait_for 10 gone "$dpid"; then
    wait "$dpid"; rc=$?
    if [ $rc -eq 0 ]; then result ok sigterm-clean-exit "daemon exited 0 with a client holding the node"
    else result fail sigterm-clean-exit "daemon exit status $rc"; fi
  else
    result fail sigterm-clean-exit "daemon still running 10 s after SIGTERM"; kill -9 "$dpid"
  fi
  if wait_for 5 test ! -e "$node"; then result ok sigterm-node-removed ""
  else result fail sigterm-node-removed "$node still exists"; fi
  touch "$flag"
  wait "$hpid"; rc=$?
  sed 's/^/  [hold] /' "$results/hold.log"
  if [ $rc -eq 0 ]; then result ok sigterm-open-fd-errors "$(grep 'after the daemon' "$results/hold.log" | sed 's/^hold: //')"
  else result fail sigterm-open-fd-errors "rc=$rc (124 = hang)"; fi
  out=$(timeout 10 "$client" gone "$node" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then result ok sigterm-new-open-fails "$out"; else result fail sigterm-new-open-fails "rc=$rc $out"; fi
else
  result fail daemon-start "see $results/daemon-1.log"
fi

# --- 2. kill -9 under load ------------------------------------------------------------------------
if start_daemon "$results/daemon-2.log"; then
  timeout 30 "$client" loop "$node" 20 >"$results/loop-root.log" 2>&1 &
  l1=$!
  timeout 30 "${as_nobody[@]}" "$client" loop "$node" 20 >"$results/loop-nobody.log" 2>&1 &
  l2=$!
  sleep 2
  kill -9 "$dpid"
  wait "$dpid" 2>/dev/null
  for pair in "root:$l1" "nobody:$l2"; do
    who=${pair%%:*} pid=${pair#*:}
    wait "$pid"; rc=$?
    sed "s/^/  [loop $who] /" "$results/loop-$who.log"
    if [ $rc -eq 0 ]; then result ok "kill9-loop-$who-errors" "$(head -n1 "$results/loop-$who.log" | sed 's/^loop uid [0-9]*: //')"
    else result fail "kill9-loop-$who-errors" "rc=$rc (124 = hang, 2 = no error)"; fi
  done
  if wait_for 5 test ! -e "$node"; then result ok kill9-node-removed ""
  else result fail kill9-node-removed "$node still exists"; fi
else
  result fail daemon-start-2 "see $results/daemon-2.log"
fi

# --- 3. detached daemon under the default name, abort through sysfs ---------------------------
# The default name vfio/vfio is the real target: /dev/vfio/vfio, which the cdev-only kernel lacks.
dnode=/dev/vfio/vfio
if [ -e "$dnode" ]; then
  result fail detach-node-ready "$dnode already exists (not the cdev-only kernel?)"
elif timeout 20 "$daemon" --test-device >"$results/daemon-3.log" 2>&1; then
  if [ -c "$dnode" ]; then result ok detach-node-ready "$dnode present when the command returned"
  else result fail detach-node-ready "command returned 0 but $dnode is missing"; fi
  chmod 0666 "$dnode" 2>/dev/null
  timeout 60 "${as_nobody[@]}" "$client" basic "$dnode" >"$results/client-detached.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then result ok detach-client-basic "as nobody"; else result fail detach-client-basic "rc=$rc"; fi
  # The class device is named after the node with '/' spelled '!'.
  abort='/sys/class/cuse/vfio!vfio/abort'
  if [ -e "$abort" ]; then
    echo 1 >"$abort"
    if wait_for 10 test ! -e "$dnode"; then result ok abort-ends-daemon "node removed after $abort"
    else result fail abort-ends-daemon "$dnode still exists"; fi
  else
    result fail abort-ends-daemon "no $abort: $(ls /sys/class/cuse/)"
  fi
else
  result fail detach-node-ready "rc=$? $(cat "$results/daemon-3.log")"
fi

echo
echo "===== CUSE VM test summary ($(uname -r)) ====="
printf '%s\n' "${summary[@]}"
echo "cuse-vm: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
