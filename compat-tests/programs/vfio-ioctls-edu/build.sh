#!/usr/bin/env bash
# Builds vfio-ioctls-edu twice into <outdir>: dynamically linked (vfio-ioctls-edu) and
# statically linked (vfio-ioctls-edu-static, glibc's static-pie: what LD_PRELOAD cannot
# reach). Its crates come from crates.io at build time, pinned by this directory's Cargo.lock.
# Usage: build.sh <outdir>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh <outdir>}
mkdir -p "$out"; out=$(cd "$out" && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
(cd "$here" && CARGO_TARGET_DIR=$target cargo build -q --locked --release)
cp "$target/release/vfio-ioctls-edu" "$out/vfio-ioctls-edu"
(cd "$here" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$target/static \
  cargo build -q --locked --release --target x86_64-unknown-linux-gnu)
cp "$target/static/x86_64-unknown-linux-gnu/release/vfio-ioctls-edu" "$out/vfio-ioctls-edu-static"
