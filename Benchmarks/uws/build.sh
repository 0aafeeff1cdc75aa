#!/usr/bin/env bash
# Builds the W7 reference server broadcast-uws (broadcast_uws.cpp beside this script) against
# uWebSockets and uSockets, cloned from the local snapshots of uNetworking/uWebSockets and
# uNetworking/uSockets into a directory under /tmp. Their code is never copied into this
# repository; only broadcast_uws.cpp is ours.
#
#   Benchmarks/uws/build.sh [OUTPUT]      (default OUTPUT: Benchmarks/.build/broadcast-uws)
#
# Environment: UWS_MIRROR, USOCKETS_MIRROR (git directories of the snapshots, default
# /work/.mirror/uNetworking+uWebSockets/repo and /work/.mirror/uNetworking+uSockets/repo),
# UWS_BUILD_DIR (default /tmp/w7-uws). Exit status 3, with a message, when a snapshot is absent:
# run.sh then leaves uWebSockets out of W7.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../.build/broadcast-uws}
uws_mirror=${UWS_MIRROR:-/work/.mirror/uNetworking+uWebSockets/repo}
usockets_mirror=${USOCKETS_MIRROR:-/work/.mirror/uNetworking+uSockets/repo}
dir=${UWS_BUILD_DIR:-/tmp/w7-uws}

for m in "$uws_mirror" "$usockets_mirror"; do
    if ! git --git-dir="$m" rev-parse --verify -q HEAD > /dev/null 2>&1; then
        echo "uws/build.sh: no snapshot at $m: skipping uWebSockets (fetch uNetworking/uWebSockets and uNetworking/uSockets first)" >&2
        exit 3
    fi
done

mkdir -p "$dir"
if [ ! -d "$dir/uWebSockets/.git" ]; then
    git clone -q "$uws_mirror" "$dir/uWebSockets"
fi
# uSockets at the commit uWebSockets pins as its submodule, when the snapshot has it.
pinned=$(git -C "$dir/uWebSockets" ls-tree HEAD uSockets | awk '{print $3}')
if [ ! -d "$dir/uWebSockets/uSockets/.git" ] && [ ! -f "$dir/uWebSockets/uSockets/.git" ]; then
    rm -rf "$dir/uWebSockets/uSockets"
    git clone -q "$usockets_mirror" "$dir/uWebSockets/uSockets"
fi
if [ -n "$pinned" ] && git -C "$dir/uWebSockets/uSockets" cat-file -e "$pinned^{commit}" 2>/dev/null; then
    git -C "$dir/uWebSockets/uSockets" checkout -q "$pinned"
else
    echo "uws/build.sh: uSockets snapshot lacks the pinned commit ${pinned:-?}; using its HEAD" >&2
fi
echo "uWebSockets $(git -C "$dir/uWebSockets" rev-parse --short HEAD), uSockets $(git -C "$dir/uWebSockets/uSockets" rev-parse --short HEAD) in $dir"

# uSockets without TLS (its default target: the object files and uSockets.a, with -flto -O3).
if [ ! -f "$dir/uWebSockets/uSockets/uSockets.a" ]; then
    make -s -C "$dir/uWebSockets/uSockets" WITH_OPENSSL=0 > "$dir/usockets-build.log" 2>&1 || { cat "$dir/usockets-build.log" >&2; exit 1; }
fi
# The server, as uWebSockets' build.c compiles its examples (-O3 -flto, no zlib: no compression in W7).
mkdir -p "$(dirname "$out")"
g++ -O3 -std=c++20 -flto=auto -march=native -DUWS_NO_ZLIB -DLIBUS_NO_SSL \
    -I"$dir/uWebSockets/src" -I"$dir/uWebSockets/uSockets/src" \
    "$here/broadcast_uws.cpp" "$dir/uWebSockets/uSockets/"*.o -o "$out"
echo "built $out"
