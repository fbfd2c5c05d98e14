#!/bin/sh
# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# Builds every compat-test client into OUTDIR/<name>. The same binary runs in every
# mode; shim mode runs it under LD_PRELOAD=libvfio_shim_preload.so.
#
# usage: build.sh OUTDIR
# env:   CC (default gcc), EXTRA_CFLAGS
# A client is every *.c in this directory except common.c. The no-IOMMU clients
# (noiommu/*.c) need a machine without an IOMMU and go to OUTDIR/noiommu/<name>; those of
# vm.sh's mixed machine (mixed/*.c) to OUTDIR/mixed/<name>.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi

SRC=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CC=${CC:-gcc}
CFLAGS="-O2 -Wall -Wextra -Werror -std=gnu11 -pthread ${EXTRA_CFLAGS:-}"
built=""
for c in "$SRC"/*.c; do
	name=$(basename "$c" .c)
	[ "$name" = common ] && continue
	# shellcheck disable=SC2086
	$CC $CFLAGS -I"$SRC" -o "$OUT/$name" "$c" "$SRC/common.c"
	built="$built $name"
done

for dir in noiommu mixed; do
	mkdir -p "$OUT/$dir"
	for c in "$SRC/$dir"/*.c; do
		name=$(basename "$c" .c)
		# shellcheck disable=SC2086
		$CC $CFLAGS -I"$SRC" -o "$OUT/$dir/$name" "$c" "$SRC/common.c"
		built="$built $dir/$name"
	done
done

echo "built into $OUT:$built"
