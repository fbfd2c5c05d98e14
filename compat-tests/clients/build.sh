#!/bin/sh
# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# Builds every compat-test client into OUTDIR, twice:
#   OUTDIR/<name>       plain: legacy calls go to libc
#   OUTDIR/<name>.shim  -DVFIO_SHIM_DRIVER, linked to libvfio_shim_driver.so
#
# usage: build.sh OUTDIR
# env:   CC (default gcc), EXTRA_CFLAGS,
#        DRIVER_DIR: directory holding libvfio_shim_driver.so (default OUTDIR).
#        The .shim variants are built only when DRIVER_DIR/libvfio_shim_driver.so
#        exists; the script says which variants it built.
# A client is every *.c in this directory except common.c.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi

SRC=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CC=${CC:-gcc}
CFLAGS="-O2 -Wall -Wextra -Werror -std=gnu11 ${EXTRA_CFLAGS:-}"
DRIVER_DIR=${DRIVER_DIR:-$OUT}

shim=0
if [ -f "$DRIVER_DIR/libvfio_shim_driver.so" ]; then
	DRIVER_DIR=$(cd "$DRIVER_DIR" && pwd)
	shim=1
fi

built=""
for c in "$SRC"/*.c; do
	name=$(basename "$c" .c)
	[ "$name" = common ] && continue
	# shellcheck disable=SC2086
	$CC $CFLAGS -I"$SRC" -o "$OUT/$name" "$c" "$SRC/common.c"
	built="$built $name"
	if [ $shim = 1 ]; then
		# shellcheck disable=SC2086
		$CC $CFLAGS -DVFIO_SHIM_DRIVER -I"$SRC" -o "$OUT/$name.shim" "$c" "$SRC/common.c" \
			-L"$DRIVER_DIR" -lvfio_shim_driver -Wl,-rpath,"$DRIVER_DIR"
		built="$built $name.shim"
	fi
done

echo "built into $OUT:$built"
if [ $shim = 1 ]; then
	echo "shim variants: built against $DRIVER_DIR/libvfio_shim_driver.so"
else
	echo "shim variants: SKIPPED ($DRIVER_DIR/libvfio_shim_driver.so not found; set DRIVER_DIR)"
fi
