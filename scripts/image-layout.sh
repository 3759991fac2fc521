#!/bin/sh
# Builds cutover and lays out the container image's files under ROOT.
#
# The Dockerfile's build stage runs exactly this script, and tests/packaging.rs runs it on
# the machine (no Docker engine there), so the image's build steps are tested without one.
#
#   scripts/image-layout.sh ROOT                 # cargo build --release --locked, then lay out
#   CUTOVER_BINARY=PATH scripts/image-layout.sh ROOT   # lay out an already built binary
#
# Layout (the final stage copies ROOT/ to /):
#   usr/local/bin/cutover     the binary
#   etc/cutover/              config/ of the repository: the annotated example and its hooks
#   etc/cutover/state ->      ../../var/lib/cutover, so the example's `state_dir: state`
#   var/lib/cutover/          lands on the image's volume (owned by uid 10001 in the image)
set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 ROOT" >&2
    exit 2
fi
root=$1
cd "$(dirname "$0")/.."

if [ -z "${CUTOVER_BINARY:-}" ]; then
    cargo build --release --locked --bin cutover
    CUTOVER_BINARY="${CARGO_TARGET_DIR:-target}/release/cutover"
fi

install -D -m 0755 "$CUTOVER_BINARY" "$root/usr/local/bin/cutover"
mkdir -p "$root/etc/cutover" "$root/var/lib/cutover"
cp -R config/. "$root/etc/cutover/"
# A state/ left by a local run of the example must not end up in the image.
rm -rf "$root/etc/cutover/state"
ln -s ../../var/lib/cutover "$root/etc/cutover/state"
