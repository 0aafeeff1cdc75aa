#!/usr/bin/env bash
# Counts the heap allocations of publishing to a topic without subscribers: valgrind's count for
# `micro --publish-empty 0` and for `--publish-empty N`; the difference over N is the allocations
# per publish (issue 18 asks for none). Needs valgrind (apt-get install valgrind).
#
#   Benchmarks/publish-allocs.sh [N]     (default 100000; builds `micro` in release first)
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-100000}
command -v valgrind >/dev/null || { echo "publish-allocs.sh: valgrind is not installed" >&2; exit 2; }
swift build -c release --product micro >/dev/null 2>&1 || { rm -f .build/release.yaml; swift build -c release --product micro; }
BIN=$(swift build -c release --show-bin-path 2>/dev/null)
# valgrind cannot read the DWARF 5 debug info Swift writes: it runs a stripped copy.
STRIPPED=$(mktemp /tmp/micro-stripped.XXXXXX)
trap 'rm -f "$STRIPPED"' EXIT
strip -o "$STRIPPED" "$BIN/micro"
allocs() {
    valgrind --tool=memcheck --leak-check=no "$STRIPPED" --publish-empty "$1" 2>&1 >/dev/null |
        sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' | tr -d ,
}
base=$(allocs 0)
many=$(allocs "$N")
echo "allocations: $base for 0 publications, $many for $N publications"
awk -v b="$base" -v m="$many" -v n="$N" 'BEGIN { printf "per publication to a topic without subscribers: %.4f allocations\n", (m - b) / n }'
