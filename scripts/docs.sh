#!/usr/bin/env bash
# Builds the DocC documentation of the WebSocket module with the toolchain's `docc`, without the
# swift-docc-plugin (which would add SymbolKit to every `swift build`). Fails on any DocC warning
# in the catalog (a link to a symbol that does not exist, an ambiguous one, a missing article);
# warnings about the sources' `///` comments are printed but do not fail.
#
#   scripts/docs.sh                 # writes .build/docs/WebSocket.doccarchive
#   scripts/docs.sh --serve-dir D   # also writes a static site to D (serve D over HTTP, open
#                                   # /documentation/websocket)
#   scripts/docs.sh --bin-path B    # no build: uses the module already built in B, e.g.
#                                   # .build/debug (for the tests, which run while SwiftPM
#                                   # holds the build lock)
set -euo pipefail
cd "$(dirname "$0")/.."

out=.build/docs
site=""
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --serve-dir) site="$2"; shift 2 ;;
        --bin-path) bin=$(cd "$2" && pwd -P); shift 2 ;;
        *) echo "usage: scripts/docs.sh [--bin-path DIR] [--serve-dir DIR]" >&2; exit 2 ;;
    esac
done

if [ -z "$bin" ]; then
    swift build --target WebSocket >/dev/null
    bin=$(swift build --show-bin-path)
fi
triple=$(swift -print-target-info | sed -n 's/.*"triple": "\(.*\)".*/\1/p' | head -1)

# Symbol graph of the public API, read from the module just built.
rm -rf "$out/symbol-graphs" && mkdir -p "$out/symbol-graphs"
args=()
for map in "$bin"/*.build/module.modulemap; do args+=(-Xcc "-fmodule-map-file=$map"); done
while IFS= read -r dir; do args+=(-Xcc "-I$dir"); done < <(find .build/checkouts -type d -name include -not -path '*/Tests/*')
swift symbolgraph-extract -module-name WebSocket -I "$bin/Modules" -target "$triple" \
    -minimum-access-level public -output-dir "$out/symbol-graphs" "${args[@]}"

docc=$(command -v docc || echo "$(dirname "$(command -v swift)")/docc")
"$docc" convert Sources/WebSocket/WebSocket.docc \
    --additional-symbol-graph-dir "$out/symbol-graphs" \
    --fallback-display-name WebSocket --fallback-bundle-identifier websocket \
    --output-dir "$out/WebSocket.doccarchive" --diagnostics-file "$out/diagnostics.json" >/dev/null

# Problems in the catalog (Sources/WebSocket/WebSocket.docc) fail; problems in the `///` comments
# of the sources are listed as warnings.
python3 - "$out/diagnostics.json" <<'PY'
import json, sys
diagnostics = json.load(open(sys.argv[1]))["diagnostics"]
failed = False
for d in diagnostics:
    if d["severity"] not in ("warning", "error"):
        continue
    source = d.get("source") or ""
    line = (d.get("range") or {}).get("start", {}).get("line", "?")
    where = source.replace("file://", "").split("/Sources/WebSocket/", 1)[-1]
    in_catalog = "WebSocket.docc/" in source or not source
    failed |= in_catalog
    print(f"{'error' if in_catalog else 'warning'}: {where}:{line}: {d['summary']}", file=sys.stderr)
sys.exit(1 if failed else 0)
PY
if [ -n "$site" ]; then
    "$docc" process-archive transform-for-static-hosting "$out/WebSocket.doccarchive" --output-path "$site"
fi
echo "scripts/docs.sh: $out/WebSocket.doccarchive"
