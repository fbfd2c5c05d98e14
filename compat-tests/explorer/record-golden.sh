#!/usr/bin/env bash
# Records the golden corpus the host tier replays (tests/golden.rs): device-free explorer
# sequences (the regression files without device ops, then GOLDEN_SEQS sequences of
# GOLDEN_SEED), run against the real type1 in the full test kernel. Writes golden/:
#   corpus.seqs    the sequences, as text (explorer --dump)
#   type1.out      type1's transcript of them
#   platform.env   what the replay must reproduce: the devices, their groups, dma_entry_limit
# Re-record after changing the explorer's executor or the corpus; commit all three files.
#
# Usage: record-golden.sh   Env: GOLDEN_SEQS (400), GOLDEN_SEED (11), vm.sh's VM_* variables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seqs=${GOLDEN_SEQS:-400} seed=${GOLDEN_SEED:-11}
bash "$root/compat-tests/scripts/build-release.sh"
explorer=$root/target/release/explorer
golden=$here/golden
out=$root/compat-tests/out/golden
rm -rf "$out"
mkdir -p "$out"
VFIO_EXPLORE_DEVICES=0 VFIO_EXPLORE_SEED=$seed VFIO_EXPLORE_REGRESSIONS=$here/regressions \
  "$explorer" --dump "$seqs" >"$golden/corpus.seqs"
guest=$out/guest.sh
cat >"$guest" <<G
set -eu
[ -c /dev/vfio/vfio ] || { echo "record-golden: no type1 container (not the full kernel)" >&2; exit 1; }
group() { basename "\$(readlink "/sys/bus/pci/devices/\$1/iommu_group")"; }
{
  echo "# Recorded \$(date -u +%F) on the full test kernel \$(uname -r), real type1."
  echo "EDU=\$VFIO_TEST_EDU"
  echo "EDU_GROUP=\$(group "\$VFIO_TEST_EDU")"
  echo "IGB=\$VFIO_TEST_IGB"
  echo "IGB_GROUP=\$(group "\$VFIO_TEST_IGB")"
  echo "PAIR_EDU=\$VFIO_TEST_PAIR_EDU"
  echo "PAIR_RNG=\$VFIO_TEST_PAIR_RNG"
  echo "PAIR_GROUP=\$(group "\$VFIO_TEST_PAIR_EDU")"
  members=
  for d in /sys/kernel/iommu_groups/\$(group "\$VFIO_TEST_PAIR_EDU")/devices/*; do
    members+="\$(basename "\$d")=\$(basename "\$(readlink "\$d/driver" || echo none)"),"
  done
  echo "PAIR_MEMBERS=\${members%,}"
  echo "DMA_ENTRY_LIMIT=\$(cat /sys/module/vfio_iommu_type1/parameters/dma_entry_limit)"
} >$(printf %q "$out/platform.env")
VFIO_EXPLORE_CORPUS=$(printf %q "$golden/corpus.seqs") $(printf %q "$explorer") >$(printf %q "$out/type1.out")
G
bash "$root/compat-tests/scripts/vm.sh" full "$out" -- bash "$root/compat-tests/scripts/guest-setup.sh" bash "$guest"
cp "$out/type1.out" "$golden/type1.out"
cp "$out/platform.env" "$golden/platform.env"
echo "record-golden: $(grep -c '^== ' "$golden/corpus.seqs") sequences, $(grep -c '^CALL' "$golden/type1.out") calls recorded in $golden"
