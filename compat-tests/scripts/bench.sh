#!/usr/bin/env bash
# Benchmarks against the kernel, from one run: 4 KiB MAP+UNMAP pairs and mapping 1 GiB through
# type1, the kernel's iommufd compat layer, the shim (LD_PRELOAD) and the seccomp supervisor
# (the benchmark linked statically, under `vfio-shim run`), interleaved in one boot of the full
# test kernel, and the shim again with `vfio-shim trace` on; the CUSE node without the preload against the preload path, on shared
# memory, interleaved in one boot of the cdev-only kernel; the preload's userspace instructions
# per 4 KiB MAP and UNMAP at 1,000 live mappings (callgrind, compat-tests/bench/map_insns.c);
# and the preload's and the supervisor's pass-through cost on the host, with seccomp's own floor
# (an allow-everything filter, compat-tests/bench/seccomp_floor.c). Prints ratios.
# Usage: bench.sh [results-dir]     (default target/bench)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/target/bench}
mkdir -p "$out"
out=$(cd "$out" && pwd)

bash "$here/host-deps.sh"
bash "$here/build-kernel.sh" full >/dev/null
bash "$here/build-kernel.sh" cdev-only >/dev/null
bash "$here/build-release.sh"
lib=$root/target/release/libvfio_shim_preload.so
cli=$root/target/release/vfio-shim
gcc -O2 -Wall -Wextra -Werror -o "$out/map_bench" "$root/compat-tests/bench/map_bench.c"
gcc -O2 -Wall -Wextra -Werror -static -o "$out/map_bench-static" "$root/compat-tests/bench/map_bench.c"
gcc -O2 -Wall -Wextra -Werror -o "$out/passthrough_bench" "$root/compat-tests/bench/passthrough_bench.c"
gcc -O2 -Wall -Wextra -Werror -o "$out/seccomp_floor" "$root/compat-tests/bench/seccomp_floor.c"
# callgrind (valgrind) counts the preload's userspace instructions per MAP and per UNMAP.
command -v valgrind >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }
gcc -O2 -Wall -Wextra -Werror -o "$out/map_insns" "$root/compat-tests/bench/map_insns.c"
rm -f "$out"/type1.* "$out"/compat.* "$out"/shim.* "$out"/supervisor.* "$out"/shim-trace.* "$out"/host-*.* "$out"/preload-shared.* "$out"/cuse.* "$out"/cg-*

{
  echo '#!/usr/bin/env bash'
  echo 'set -eu'
  echo ". $(printf %q "$here/guest-setup.sh") 2>$(printf %q "$out/guest-setup.log")"
  echo "cd $(printf %q "$out")"
  echo 'for round in 1 2 3; do'
  echo '  ./map_bench >type1.$round'
  echo "  unshare -m --propagation private sh -c 'mount --bind /dev/iommu /dev/vfio/vfio && exec ./map_bench' >compat.\$round"
  echo "  unshare -m --propagation private sh -c 'mkdir -p /run/vfio-hide && mount --bind /dev/vfio /run/vfio-hide &&" \
       "mount -t tmpfs none /dev/vfio && mkdir /dev/vfio/devices && mount --bind /run/vfio-hide/devices /dev/vfio/devices &&" \
       "LD_PRELOAD=$(printf %q "$lib") exec ./map_bench' >shim.\$round"
  # The static build, which only the supervisor serves (vfio-shim run picks it for a static program).
  echo "  unshare -m --propagation private sh -c 'mkdir -p /run/vfio-hide && mount --bind /dev/vfio /run/vfio-hide &&" \
       "mount -t tmpfs none /dev/vfio && mkdir /dev/vfio/devices && mount --bind /run/vfio-hide/devices /dev/vfio/devices &&" \
       "exec $(printf %q "$cli") run -- ./map_bench-static' >supervisor.\$round"
  # The same with vfio-shim trace on (text lines into a tmpfs file, as an operator would).
  echo "  unshare -m --propagation private sh -c 'mkdir -p /run/vfio-hide && mount --bind /dev/vfio /run/vfio-hide &&" \
       "mount -t tmpfs none /dev/vfio && mkdir /dev/vfio/devices && mount --bind /run/vfio-hide/devices /dev/vfio/devices &&" \
       "rm -f /tmp/bench-trace.txt && VFIO_SHIM_TRACE=/tmp/bench-trace.txt LD_PRELOAD=$(printf %q "$lib") exec ./map_bench'" \
       ">shim-trace.\$round"
  echo 'done'
  echo "valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=cg-type1 ./map_insns >/dev/null 2>cg-type1.log"
  echo "unshare -m --propagation private sh -c 'mkdir -p /run/vfio-hide && mount --bind /dev/vfio /run/vfio-hide &&" \
       "mount -t tmpfs none /dev/vfio && mkdir /dev/vfio/devices && mount --bind /run/vfio-hide/devices /dev/vfio/devices &&" \
       "LD_PRELOAD=$(printf %q "$lib") exec valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=cg-shim ./map_insns'" \
       ">/dev/null 2>cg-shim.log"
} >"$out/guest.sh"
VM_MEMORY=${VM_MEMORY:-4G} bash "$here/vm.sh" full "$out" -- bash "$out/guest.sh" </dev/null >/dev/null

# cdev-only: the daemon serves /dev/vfio/vfio and the group nodes; the preload adopts them and
# serves in-process, a client without it goes through the daemon.
{
  echo '#!/usr/bin/env bash'
  echo 'set -eu'
  echo ". $(printf %q "$here/guest-setup.sh") 2>$(printf %q "$out/guest-setup-cdev.log")"
  echo "cd $(printf %q "$out")"
  echo "$(printf %q "$root/target/release/vfio-shim-cuse") 2>cuse-daemon.log"
  echo 'for round in 1 2 3; do'
  echo "  BENCH_MEMORY=shared LD_PRELOAD=$(printf %q "$lib") ./map_bench >preload-shared.\$round"
  echo '  BENCH_MEMORY=shared BENCH_NO_DEVICE=1 ./map_bench >cuse.$round'
  echo 'done'
  echo 'pkill -TERM -x vfio-shim-cuse'
} >"$out/guest-cdev.sh"
VM_MEMORY=${VM_MEMORY:-4G} bash "$here/vm.sh" cdev-only "$out" -- bash "$out/guest-cdev.sh" </dev/null >/dev/null

# Interleaved, so the host's drift falls on every column alike; the floor is the same program
# under a filter that allows everything (seccomp_floor.c): seccomp's own entry cost.
for round in $(seq 1 "${BENCH_HOST_RUNS:-9}"); do
  "$out/passthrough_bench" >"$out/host-plain.$round"
  LD_PRELOAD=$lib "$out/passthrough_bench" >"$out/host-preload.$round"
  "$out/seccomp_floor" "$out/passthrough_bench" >"$out/host-floor.$round"
  "$cli" run --supervise -- "$out/passthrough_bench" >"$out/host-supervisor.$round"
done

python3 - "$out" <<'PY'
import statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
def med(prefix, key):
    vals = []
    for f in sorted(out.glob(prefix + ".*")):
        for line in f.read_text().splitlines():
            p = line.split()
            if len(p) >= 3 and p[0] == "BENCH" and p[1] == key:
                vals.append(float(p[2]))
    if not vals:
        sys.exit(f"bench: no {key} figures from {prefix} runs")
    return statistics.median(vals)
def best(prefix, key):
    vals = [float(line.split()[2]) for f in sorted(out.glob(prefix + ".*")) for line in f.read_text().splitlines()
            if line.startswith(f"BENCH {key} ")]
    if not vals:
        sys.exit(f"bench: no {key} figures from {prefix} runs")
    return min(vals)
rows = [("4 KiB MAP+UNMAP pair (us)", "pair_4k_us"), ("map 1 GiB (ms)", "map_1g_ms"), ("unmap 1 GiB (ms)", "unmap_1g_ms")]
print(f"{'guest (TCG), median of 3 runs':32} {'type1':>10} {'compat':>10} {'shim':>10} {'shim/type1':>11} {'shim/compat':>12}")
for name, key in rows:
    t, c, s = med("type1", key), med("compat", key), med("shim", key)
    print(f"{name:32} {t:10.2f} {c:10.2f} {s:10.2f} {s/t:11.3f} {s/c:12.3f}")
t, c, s = best("type1", "pair_4k_best_us"), best("compat", "pair_4k_best_us"), best("shim", "pair_4k_best_us")
print(f"{'4 KiB pair, best of 15 rounds (us)':32} {t:10.2f} {c:10.2f} {s:10.2f} {s/t:11.3f} {s/c:12.3f}")
print()
print(f"{'supervisor, static build (same boot)':32} {'type1':>10} {'preload':>10} {'supervisor':>10} {'sup/type1':>11} {'sup/preload':>12}")
for name, key in rows:
    t, s, v = med("type1", key), med("shim", key), med("supervisor", key)
    print(f"{name:32} {t:10.2f} {s:10.2f} {v:10.2f} {v/t:11.3f} {v/s:12.3f}")
print()
print(f"{'vfio-shim trace on (same boot)':32} {'shim':>10} {'traced':>10} {'traced/shim':>12}")
for name, key in rows:
    s, tr = med("shim", key), med("shim-trace", key)
    print(f"{name:32} {s:10.2f} {tr:10.2f} {tr/s:12.3f}")
print()
print(f"{'cdev-only guest, shared memory':32} {'preload':>10} {'cuse':>10} {'cuse/preload':>13}")
for name, key in rows:
    p, c = med("preload-shared", key), med("cuse", key)
    print(f"{name:32} {p:10.2f} {c:10.2f} {c/p:13.3f}")
print()
# callgrind dumps: <name>.1 the MAPs, <name>.2 the UNMAPs (map_insns.c), 200 calls each at
# 1,000 live mappings; the type1 run's count is the program's own loop and libc's wrapper.
def insns(name, part):
    for line in (out / f"{name}.{part}").read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit(f"bench: no instruction total in {name}.{part}")
print(f"{'userspace instructions per call':32} {'type1':>10} {'shim':>10} {'preload work':>13}")
for name, part in [("4 KiB MAP, 1,000 live", 1), ("4 KiB UNMAP, 1,000 live", 2)]:
    t, s = insns("cg-type1", part) / 200, insns("cg-shim", part) / 200
    print(f"{name:32} {t:10.0f} {s:10.0f} {s - t:13.0f}")
print()
passthrough = [("ioctl(FIONREAD) on a pipe (ns)", "ioctl_pipe_ns"), ("close(dup(pipe)) (ns)", "dup_close_pipe_ns"),
               ("sendmsg+recvmsg, 1 byte (ns)", "msg_pair_ns"), ("the same with 1 fd (ns)", "msg_fd_pair_ns")]
print(f"{'host pass-through, median of runs':34} {'plain':>8} {'preload':>8} {'ratio':>6} {'floor':>8} {'ratio':>6} {'supervisor':>10} {'ratio':>6} {'sup/floor':>9}")
for name, key in passthrough:
    p, q, f, v = med("host-plain", key), med("host-preload", key), med("host-floor", key), med("host-supervisor", key)
    print(f"{name:34} {p:8.1f} {q:8.1f} {q/p:6.3f} {f:8.1f} {f/p:6.3f} {v:10.1f} {v/p:6.3f} {v/f:9.3f}")
print(f"{'the same, best run (least disturbed)':34}")
for name, key in passthrough:
    p, q, f, v = best("host-plain", key), best("host-preload", key), best("host-floor", key), best("host-supervisor", key)
    print(f"{name:34} {p:8.1f} {q:8.1f} {q/p:6.3f} {f:8.1f} {f/p:6.3f} {v:10.1f} {v/p:6.3f} {v/f:9.3f}")
PY
