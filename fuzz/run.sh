#!/usr/bin/env bash
# Runs every cargo fuzz target (fuzz/fuzz_targets) for SECONDS each (default 20: the CI pass),
# from its committed seeds (fuzz/seeds/<target>) into a working corpus outside the repo's
# tracked files (fuzz/corpus/<target>, ignored). Installs cargo-fuzz from crates.io when it is
# missing. The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its -Z sanitizer
# flags. Exit status: non-zero when a target crashes (its input is in fuzz/artifacts/<target>/).
#
# Usage: fuzz/run.sh [target...]     Env: SECONDS_PER_TARGET (20), FUZZ_JOBS (1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
secs=${SECONDS_PER_TARGET:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install --locked cargo-fuzz >&2
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build -O >&2
rc=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  start=$(date +%s)
  set +e
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    >"corpus/$t.log" 2>&1
  r=$?
  set -e
  runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "corpus/$t.log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "corpus/$t.log" | tail -n1 | grep -o '[0-9]*' || echo '?')
  if [ $r -eq 0 ]; then
    echo "fuzz: $t: pass ($runs runs in $(( $(date +%s) - start )) s, cov $cov, corpus $(ls "corpus/$t" | wc -l))"
  else
    echo "fuzz: $t: FAIL (rc $r; tail of fuzz/corpus/$t.log below)"
    tail -n 30 "corpus/$t.log"
    rc=1
  fi
done
exit $rc
