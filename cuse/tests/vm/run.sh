#!/usr/bin/env bash
# CUSE VM test, run by hand (not part of `make test`):
#
#   bash cuse/tests/vm/run.sh [results-dir]     (from anywhere; default results: target/cuse-vm)
#
# Builds vfio-shim-cuse and the C client on the host, boots the cdev-only test kernel
# (CONFIG_CUSE=y) through compat-tests/scripts/vm.sh and runs guest.sh in it as root.
# Prints a pass/fail summary; exit status 0 only if every check passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
results=${1:-$repo/target/cuse-vm}
mkdir -p "$results"
results=$(cd "$results" && pwd)

cd "$repo"
cargo build -q -p vfio-shim-cuse --features test-device
gcc -O2 -Wall -Wextra -Werror -o "$results/cuse_client" "$here/cuse_client.c"

# vm.sh runs the command in this working directory, in the guest, with the host's root fs.
exec bash compat-tests/scripts/vm.sh cdev-only "$results" -- \
  bash "$here/guest.sh" "$results" "$repo/target/debug/vfio-shim-cuse" "$results/cuse_client"
