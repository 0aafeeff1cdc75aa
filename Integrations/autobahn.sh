#!/usr/bin/env bash
# The Autobahn|Testsuite (fuzzingclient: the suite is the client) against the Hummingbird
# example's WebSocket route, ws://127.0.0.1:PORT/echo: this library's connection behind
# Hummingbird's port and the WebSocketHummingbird adapter.
#
#   Integrations/autobahn.sh [CASES]     default "1.*,2.*,3.*,4.*,5.*,6.*,7.*"
#
# Env: AUTOBAHN_DIR (default <project>/../shared/autobahn), AUTOBAHN_VENV (default
# /tmp/autobahn-venv), AUTOBAHN_TIMEOUT (default 1800 s), CONFIGURATION (debug, the default, or
# release), AUTOBAHN_PREPARED=1 to skip the suite's set-up (.ci/run prepares it once),
# PREBUILT=1 to use the example that `swift build --build-tests` (or `swift test`) already built
# in Integrations/.build (a plain `swift build --product` would compile its modules again, without
# testability).
# Reports: <project>/autobahn-reports/hummingbird/. Exit status 0 when every case is OK or
# INFORMATIONAL, 1 otherwise, 2 on a set-up or run error. Only the example it started is
# stopped, by its PID.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CASES="${1:-1.*,2.*,3.*,4.*,5.*,6.*,7.*}"
AUTOBAHN_DIR="$(cd "${AUTOBAHN_DIR:-$ROOT/../shared/autobahn}" 2>/dev/null && pwd)" || {
  echo "Integrations/autobahn.sh: no shared Autobahn set-up (../shared/autobahn or AUTOBAHN_DIR)" >&2; exit 2; }
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-/tmp/autobahn-venv}"
export AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"
CONFIGURATION="${CONFIGURATION:-debug}"
OUTDIR="$ROOT/autobahn-reports/hummingbird"
mkdir -p "$OUTDIR"
log() { echo "[Integrations/autobahn.sh] $*"; }

SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  SERVER_PID=""
}
trap cleanup EXIT

if [ "${AUTOBAHN_PREPARED:-0}" != 1 ]; then
  log "setting up Autobahn|Testsuite ($AUTOBAHN_DIR, venv $AUTOBAHN_VENV)"
  bash "$AUTOBAHN_DIR/setup.sh" "$AUTOBAHN_VENV" > "$OUTDIR/setup.log" 2>&1 || {
    tail -20 "$OUTDIR/setup.log" >&2; echo "Integrations/autobahn.sh: setup.sh failed" >&2; exit 2; }
fi
BIN="$(cd "$HERE" && swift build -c "$CONFIGURATION" --show-bin-path)/example-hummingbird"
if [ "${PREBUILT:-0}" = 1 ] && [ -x "$BIN" ]; then
  log "using $BIN (PREBUILT=1)"
else
  log "building example-hummingbird ($CONFIGURATION)"
  ( cd "$HERE" && swift build -c "$CONFIGURATION" --product example-hummingbird ) || { echo "Integrations/autobahn.sh: build failed" >&2; exit 2; }
fi

"$BIN" 0 > "$OUTDIR/example.log" 2>&1 < /dev/null &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 200); do
  PORT="$(sed -nE 's#.*listening on ws://127\.0\.0\.1:([0-9]+)/.*#\1#p' "$OUTDIR/example.log" | head -1)"
  [ -n "$PORT" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "Integrations/autobahn.sh: the example did not start:" >&2; cat "$OUTDIR/example.log" >&2; exit 2; }
log "example-hummingbird (PID $SERVER_PID) on port $PORT, cases [$CASES]"
T0=$(date +%s)
AGENT=hummingbird-adapter "$AUTOBAHN_DIR/run-server-tests.sh" "ws://127.0.0.1:$PORT/echo" "$CASES" "$OUTDIR" 2>&1 | tee "$OUTDIR/summary.txt"
rc=${PIPESTATUS[0]}
cleanup
[ "$rc" -le 1 ] || { echo "Integrations/autobahn.sh: run-server-tests.sh failed (exit $rc)" >&2; exit 2; }
LINE="$(grep '^autobahn: ' "$OUTDIR/summary.txt" | tail -1)"
[ -n "$LINE" ] || { echo "Integrations/autobahn.sh: no summary line" >&2; exit 2; }
num() { sed -nE "s/.* $1=([0-9]+).*/\1/p" <<<"$LINE"; }
ok=$(num OK); info=$(num INFO); total=$(num total); nonstrict=$(num NONSTRICT); failed=$(num FAILED); unimpl=$(num UNIMPLEMENTED)
log "took $(( $(date +%s) - T0 )) s: $LINE"
if [ -n "$total" ] && [ "$total" -gt 0 ] && [ "$nonstrict" = 0 ] && [ "$failed" = 0 ] && [ "$unimpl" = 0 ] && [ $((ok + info)) -eq "$total" ]; then
  log "PASS: all $total cases OK or INFORMATIONAL"
  exit 0
fi
log "FAIL: $LINE"
exit 1
