#!/usr/bin/env bash
# The Debian package, built, installed and used (part of `make test`, after the VM tier, whose
# type1 transcripts it compares with). On the host: packaging/build-deb.sh, `dpkg -i` (the
# guest runs on the host's tree, so it sees what the package installed), `systemd-analyze
# verify` of the installed unit. In the cdev-only guest, from the installed files only:
#  1. the status registry as systemd-tmpfiles makes it at boot from the package's tmpfiles.d;
#  2. the daemon started the way the unit starts it: its conditions, its ExecStart, its
#     capability bounding set and no-new-privs (setpriv), then the node's mode from the
#     package's udev rule;
#  3. `vfio-shim doctor` finds the installed preload and the running daemon;
#  4. every differential client through the installed `vfio-shim run` (the preload found in
#     the multiarch directory beside /usr/bin), against type1's transcripts;
#  5. the README's operator path to a running VM: QEMU (the host's, /usr/bin) with the edu
#     assigned through the installed `vfio-shim run`, its L2 DMA checked (qemu_l2_dma.py);
#  6. the libvirt recipe of docs/operators.md (libvirt_l2_dma.py): libvirtd starts a domain
#     with a <hostdev> whose emulator wrapper runs QEMU through the installed `vfio-shim run`,
#     as libvirt-qemu, in libvirt's namespace and cgroup; L2 DMA, `vfio-shim status`, destroy;
#     and without the recipe's cgroup_device_acl entries the domain fails, saying why;
#  7. SIGTERM (the unit's KillSignal) stops the daemon and its node goes.
# Then `dpkg -r` leaves nothing behind. Usage: test-package.sh [results-dir]
# The last line is "package: N passed, M failed".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/compat-tests/out/package}
rm -rf "$out"; mkdir -p "$out"; out=$(cd "$out" && pwd)
type1=$root/compat-tests/out/results/full/type1
[ -d "$type1" ] || { echo "run compat-tests/scripts/vm-tier.sh first (type1 transcripts)" >&2; echo "package: 0 passed, 1 failed"; exit 1; }
pass=0 fail=0
res() { if [ "$1" = 0 ]; then pass=$((pass + 1)); echo "ok   $2"; else fail=$((fail + 1)); echo "FAIL $2"; fi; }

# As the README's install step has it: make deb, then dpkg -i target/debian/vfio-shim_*.deb.
rm -rf "$root/target/debian"
deb=$(make -s -C "$root" deb | tail -n1)
res $? "make deb: $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
dpkg -i "$deb" >"$out/dpkg-install.log" 2>&1
res $? "dpkg -i $(basename "$deb")"
trap 'dpkg -r vfio-shim >"$out/dpkg-remove.log" 2>&1 || true' EXIT
unit=/usr/lib/systemd/system/vfio-shim-cuse.service
verify=$(systemd-analyze verify "$unit" 2>&1)
res $? "systemd-analyze verify $unit${verify:+: $verify}"
sh "$root/compat-tests/clients/build.sh" "$out/clients" >/dev/null

cat >"$out/guest.sh" <<GUEST
#!/usr/bin/env bash
set -u
. "$root/compat-tests/scripts/guest-setup.sh" 2>"$out/guest-setup.log" || exit 1
res() { if [ "\$1" = 0 ]; then echo "ok   \$2"; else echo "FAIL \$2"; fi; }
systemd-tmpfiles --create vfio-shim.conf
[ "\$(stat -c %a /run/vfio-shim/status)" = 1777 ]; res \$? "systemd-tmpfiles made /run/vfio-shim/status 1777"
# The unit, as systemd would run it: conditions, ExecStart, bounding set, no-new-privs.
for c in \$(sed -n 's/^ConditionPathExists=//p' $unit); do
  case \$c in !*) [ ! -e "\${c#!}" ];; *) [ -e "\$c" ];; esac
  res \$? "unit condition ConditionPathExists=\$c holds"
done
exec_start=\$(sed -n 's/^ExecStart=//p' $unit)
caps=\$(sed -n 's/^CapabilityBoundingSet=//p' $unit | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
grep -qx NoNewPrivileges=yes $unit; res \$? "unit sets NoNewPrivileges=yes"
setpriv --bounding-set=-all,\$caps --no-new-privs \$exec_start 2>"$out/daemon.log"
res \$? "daemon started as the unit starts it (\$exec_start, bounding set \$caps)"
udevadm settle
[ "\$(stat -c %a /dev/vfio/vfio)" = 666 ]; res \$? "/dev/vfio/vfio is 0666 by the package's udev rule (\$(stat -c %a /dev/vfio/vfio))"
/usr/bin/vfio-shim doctor >"$out/doctor.txt" 2>&1
grep -q "^PASS  preload: /usr/lib/\$(gcc -print-multiarch)/libvfio_shim_preload.so loads" "$out/doctor.txt"
res \$? "vfio-shim doctor: the installed preload loads"
grep -q "^PASS  daemon: vfio-shim-cuse running (pid [0-9]*), serving .*/dev/vfio/vfio" "$out/doctor.txt"
res \$? "vfio-shim doctor: the daemon runs and serves /dev/vfio/vfio"
for c in "$out"/clients/*; do
  [ -f "\$c" ] || continue   # noiommu/ and mixed/: their machines only
  n=\$(basename "\$c")
  timeout 300 /usr/bin/vfio-shim run -- "\$c" >"$out/\$n.out" 2>"$out/\$n.err"
  diff -q "$type1/\$n.out" "$out/\$n.out" >/dev/null; res \$? "client \$n through /usr/bin/vfio-shim run = type1"
done
# 5. the README's path. Diagnose: nothing fails for the device and the guest's RAM.
/usr/bin/vfio-shim doctor "\$VFIO_TEST_EDU" --memory 64M >"$out/doctor-edu.txt" 2>&1
res \$? "README path: vfio-shim doctor \$VFIO_TEST_EDU --memory 64M exits 0 (\$(grep -c '^PASS' "$out/doctor-edu.txt") PASS, \$(grep -c '^WARN' "$out/doctor-edu.txt") WARN, \$(grep -c '^FAIL' "$out/doctor-edu.txt") FAIL)"
# Run: the command the operator had, behind /usr/bin/vfio-shim run
python3 $root/compat-tests/programs/qemu_l2_dma.py --wrap "/usr/bin/vfio-shim run --" --logdir "$out/readme-qemu" \
  --tag readme /usr/bin/qemu-system-x86_64 "\$VFIO_TEST_EDU" >"$out/readme-qemu.txt" 2>"$out/readme-qemu.err"
for v in L2-DMA L2-BAR-MAP; do
  line=\$(grep "^\$v: " "$out/readme-qemu.txt"); [ "\${line#\$v: ok}" != "\$line" ]
  res \$? "README path: /usr/bin/vfio-shim run -- qemu-system-x86_64 ... -device vfio-pci,host=\$VFIO_TEST_EDU: \$line"
done
# Watch: vfio-shim trace of a legacy program writes its calls.
/usr/bin/vfio-shim trace -o "$out/trace.log" -- "$out/clients/qemu_like" >/dev/null 2>&1
res \$? "README path: vfio-shim trace -o FILE -- qemu_like exits 0"
grep -q "VFIO_IOMMU_MAP_DMA" "$out/trace.log"
res \$? "README path: the trace holds qemu_like's calls (\$(wc -l <"$out/trace.log") lines)"
# 6. the libvirt recipe (its own ok/FAIL lines)
timeout 900 python3 $root/compat-tests/programs/libvirt_l2_dma.py /usr/bin/vfio-shim "\$VFIO_TEST_EDU" "$out/libvirt" 2>"$out/libvirt.err"
res \$? "libvirt recipe (libvirt_l2_dma.py) exit status"
pkill -TERM -x vfio-shim-cuse
for _ in \$(seq 50); do [ -e /dev/vfio/vfio ] || break; sleep 0.1; done
[ ! -e /dev/vfio/vfio ]; res \$? "SIGTERM stops the daemon and its node goes"
GUEST
set +e
bash "$root/compat-tests/scripts/vm.sh" cdev-only "$out" -- bash "$out/guest.sh" </dev/null 2>"$out/vm.stderr" | tee "$out/guest.txt"
vm_rc=${PIPESTATUS[0]}
set -e
res $vm_rc "the guest ran (vm.sh rc=$vm_rc)"
pass=$((pass + $(grep -c '^ok ' "$out/guest.txt" || true)))
fail=$((fail + $(grep -c '^FAIL' "$out/guest.txt" || true)))
dpkg -r vfio-shim >"$out/dpkg-remove.log" 2>&1
res $? "dpkg -r vfio-shim"
trap - EXIT
left=$(ls /usr/bin/vfio-shim /usr/sbin/vfio-shim-cuse "$unit" /usr/lib/*/libvfio_shim_preload.so 2>/dev/null || true)
[ -z "$left" ]; res $? "nothing left after dpkg -r${left:+: $left}"
echo "package: $pass passed, $fail failed"
[ "$fail" = 0 ]
