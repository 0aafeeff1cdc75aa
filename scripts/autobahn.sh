#!/usr/bin/env bash
# Run the Autobahn|Testsuite against this package's `ws` tool.
#
#   scripts/autobahn.sh server [CASES]   the suite (fuzzingclient) tests `ws serve`
#   scripts/autobahn.sh client [CASES]   `ws autobahn-client` is tested by the suite (fuzzingserver)
#   scripts/autobahn.sh prepare          only set up the suite's venv and build `ws`, so that a
#                                        server and a client run can then go at the same time
#
#   CASES  comma-separated Autobahn case patterns, default
#          "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*": 12.x/13.x (permessage-deflate, 216
#          cases, 10+ minutes) are left out unless named. `ws serve` runs with --deflate
#          and `ws autobahn-client` offers it by default, so they run when named.
#
# Env:
#   AUTOBAHN_DIR      the shared Autobahn setup (default: <project>/../shared/autobahn)
#   AUTOBAHN_VENV     its venv (default /tmp/autobahn-venv; passed on to the shared scripts)
#   AUTOBAHN_TIMEOUT  time limit of the whole suite run in seconds (default 1800)
#   CASE_TIMEOUT      client mode: time limit of one case in seconds (default 60)
#   AGENT             agent name in the reports (default ws-server / ws-client)
#   WS_CONFIGURATION  the build configuration of `ws`: release (default) or debug (.ci/run uses
#                     the debug build its tests already made, saving a second full build)
#   SERVE_ARGS        server mode: extra `ws serve` options
#   CLIENT_ARGS       client mode: extra `ws autobahn-client` options (e.g. --no-deflate)
#   AUTOBAHN_PREPARED 1: `prepare` already ran; skip the set-up and the build (two runs at once
#                     would otherwise pip-install into one venv and build into one .build together)
#
# Builds `ws` (release mode unless WS_CONFIGURATION says otherwise), runs the suite on 127.0.0.1 only, writes reports to
# <project>/autobahn-reports/{server,client}/ and prints the suite's summary. Exit status:
# 0 when every case is OK or INFORMATIONAL; 1 when any is NON-STRICT, FAILED or
# UNIMPLEMENTED (or no case ran); 2 on a usage, setup or run error.
set -uo pipefail

usage() { awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-}"
CASES="${2:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*}"
case "$MODE" in
  server|client|prepare) ;;
  -h|--help|"") usage ;;
  *) echo "autobahn.sh: unknown mode '$MODE' (use server, client or prepare)" >&2; usage ;;
esac

AUTOBAHN_DIR="${AUTOBAHN_DIR:-$ROOT/../shared/autobahn}"
for f in setup.sh run-server-tests.sh run-client-tests.sh summarize.py; do
  if [ ! -f "$AUTOBAHN_DIR/$f" ]; then
    cat >&2 <<EOF
autobahn.sh: the shared Autobahn|Testsuite setup is missing: no $AUTOBAHN_DIR/$f
  This script needs the directory with setup.sh, run-server-tests.sh,
  run-client-tests.sh and summarize.py (the Python 3 port of autobahntestsuite
  25.10.1), by default ../shared/autobahn next to the project root
  ($ROOT/../shared/autobahn). Put it there or set AUTOBAHN_DIR=/path/to/it.
  setup.sh also needs Python 3.8-3.12, 'patch' and access to PyPI.
EOF
    exit 2
  fi
done
AUTOBAHN_DIR="$(cd "$AUTOBAHN_DIR" && pwd)"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-/tmp/autobahn-venv}"
export AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"
CASE_TIMEOUT="${CASE_TIMEOUT:-60}"
REPORTS="$ROOT/autobahn-reports"
OUTDIR="$REPORTS/$MODE"
mkdir -p "$REPORTS"
[ "$MODE" = prepare ] || mkdir -p "$OUTDIR"

log() { echo "[autobahn.sh] $*"; }

# --- cleanup: only the processes started here, by PID ----------------------------------
SERVER_PID=""
FUZZ_PID=""
CLIENT_PID=""
cleanup() {
  if [ -n "$CLIENT_PID" ] && kill -0 "$CLIENT_PID" 2>/dev/null; then kill "$CLIENT_PID" 2>/dev/null; wait "$CLIENT_PID" 2>/dev/null; fi
  CLIENT_PID=""
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  SERVER_PID=""
  if [ -n "$FUZZ_PID" ]; then
    "$AUTOBAHN_DIR/run-client-tests.sh" stop "$FUZZ_PID" >/dev/null 2>&1 || kill "$FUZZ_PID" 2>/dev/null
  fi
  FUZZ_PID=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# --- setup and build ----------------------------------------------------------------------
CONFIGURATION="${WS_CONFIGURATION:-release}"
case "$CONFIGURATION" in release|debug) ;; *) echo "autobahn.sh: WS_CONFIGURATION must be release or debug" >&2; exit 2 ;; esac
if [ "${AUTOBAHN_PREPARED:-0}" = 1 ]; then
  log "set-up and build skipped (AUTOBAHN_PREPARED=1)"
else
log "setting up Autobahn|Testsuite ($AUTOBAHN_DIR, venv $AUTOBAHN_VENV)"
if ! bash "$AUTOBAHN_DIR/setup.sh" "$AUTOBAHN_VENV" > "$REPORTS/setup.log" 2>&1; then
  tail -20 "$REPORTS/setup.log" >&2
  echo "autobahn.sh: $AUTOBAHN_DIR/setup.sh failed (log: $REPORTS/setup.log)" >&2
  exit 2
fi

log "building ws ($CONFIGURATION)"
( cd "$ROOT" && swift build -c "$CONFIGURATION" --product ws ) || { echo "autobahn.sh: swift build failed" >&2; exit 2; }
fi
WS="$(cd "$ROOT" && swift build -c "$CONFIGURATION" --show-bin-path)/ws"
[ -x "$WS" ] || { echo "autobahn.sh: no ws binary at $WS" >&2; exit 2; }
[ "$MODE" = prepare ] && { log "prepared: venv $AUTOBAHN_VENV, $WS"; exit 0; }

free_port() {
  "$AUTOBAHN_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The summary's last machine-readable line decides: every case OK or INFORMATIONAL.
verdict() {
  local line="$1"
  if [ -z "$line" ]; then echo "autobahn.sh: no 'autobahn:' summary line" >&2; return 2; fi
  local ok nonstrict failed unimpl info total
  ok="$(sed -nE 's/.* OK=([0-9]+).*/\1/p' <<<"$line")"
  nonstrict="$(sed -nE 's/.* NONSTRICT=([0-9]+).*/\1/p' <<<"$line")"
  failed="$(sed -nE 's/.* FAILED=([0-9]+).*/\1/p' <<<"$line")"
  unimpl="$(sed -nE 's/.* UNIMPLEMENTED=([0-9]+).*/\1/p' <<<"$line")"
  info="$(sed -nE 's/.* INFO=([0-9]+).*/\1/p' <<<"$line")"
  total="$(sed -nE 's/.* total=([0-9]+).*/\1/p' <<<"$line")"
  for v in "$ok" "$nonstrict" "$failed" "$unimpl" "$info" "$total"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "autobahn.sh: cannot parse summary line: $line" >&2; return 2; }
  done
  if [ "$total" -gt 0 ] && [ "$nonstrict" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$unimpl" -eq 0 ] \
     && [ $((ok + info)) -eq "$total" ]; then
    log "PASS ($MODE): all $total cases OK or INFORMATIONAL"
    return 0
  fi
  log "FAIL ($MODE): OK=$ok NONSTRICT=$nonstrict FAILED=$failed UNIMPLEMENTED=$unimpl INFO=$info total=$total"
  return 1
}

T0=$(date +%s)
SUMMARY="$OUTDIR/summary.txt"

if [ "$MODE" = server ]; then
  AGENT="${AGENT:-ws-server}"
  # permessage-deflate on, so that 12.x/13.x run (they are UNIMPLEMENTED without it)
  SERVE=(serve --host 127.0.0.1 --port 0 --max-frame-size 16777216 --max-message-size 16777216 --deflate)
  # no log line per connection, where this build has the flag
  if "$WS" serve --help 2>/dev/null | grep -q -- '--quiet'; then SERVE+=(--quiet); fi
  # SERVE_ARGS: extra `ws serve` options
  read -r -a EXTRA <<<"${SERVE_ARGS:-}"
  rm -f "$OUTDIR/ws-serve.log"   # here, not in the child: the port is read from it below
  "$WS" "${SERVE[@]}" ${EXTRA[@]+"${EXTRA[@]}"} > "$OUTDIR/ws-serve.log" 2>&1 < /dev/null &
  SERVER_PID=$!
  PORT=""
  for _ in $(seq 1 100); do
    PORT="$(sed -nE 's#.*listening on ws://127\.0\.0\.1:([0-9]+)/.*#\1#p' "$OUTDIR/ws-serve.log" | head -1)"
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$PORT" ]; then
    echo "autobahn.sh: ws serve did not start; log:" >&2; cat "$OUTDIR/ws-serve.log" >&2
    exit 2
  fi
  log "ws serve (PID $SERVER_PID) on ws://127.0.0.1:$PORT, cases [$CASES]"
  AGENT="$AGENT" "$AUTOBAHN_DIR/run-server-tests.sh" "ws://127.0.0.1:$PORT" "$CASES" "$OUTDIR" 2>&1 | tee "$SUMMARY"
  rc=${PIPESTATUS[0]}
  cleanup
  [ "$rc" -le 1 ] || { echo "autobahn.sh: run-server-tests.sh failed (exit $rc)" >&2; exit 2; }
else
  AGENT="${AGENT:-ws-client}"
  PORT="$(free_port)" || { echo "autobahn.sh: cannot find a free port" >&2; exit 2; }
  rm -f "$OUTDIR/index.json"
  START_OUT="$("$AUTOBAHN_DIR/run-client-tests.sh" "$PORT" "$OUTDIR" "$CASES")"
  rc=$?
  echo "$START_OUT"
  FUZZ_PID="$(sed -nE 's/^PID=([0-9]+)$/\1/p' <<<"$START_OUT" | tail -1)"
  if [ "$rc" -ne 0 ] || [ -z "$FUZZ_PID" ]; then
    echo "autobahn.sh: fuzzingserver did not start (exit $rc)" >&2; exit 2
  fi
  NCASES="$(sed -nE 's/.*\(([0-9]+) cases\).*/\1/p' <<<"$START_OUT" | tail -1)"
  log "ws autobahn-client against ws://127.0.0.1:$PORT (fuzzingserver PID $FUZZ_PID), cases [$CASES] (${NCASES:-?} cases)"
  # A crash of the client (a library bug) must not lose the run: the crashed case is left to
  # the suite's verdict and the client is restarted after it, with the count it already knows.
  DEADLINE=$(( $(date +%s) + AUTOBAHN_TIMEOUT ))
  : > "$OUTDIR/ws-client.log"
  NEXT=1; ATTEMPT=0; CRASHES=""
  while :; do
    ATTEMPT=$((ATTEMPT + 1))
    LEFT=$(( DEADLINE - $(date +%s) ))
    [ "$LEFT" -gt 0 ] || { echo "autobahn.sh: client mode ran out of time (AUTOBAHN_TIMEOUT=$AUTOBAHN_TIMEOUT s)" >&2; exit 2; }
    ARGS=(autobahn-client --url "ws://127.0.0.1:$PORT" --agent "$AGENT" --case-timeout "$CASE_TIMEOUT")
    read -r -a EXTRA <<<"${CLIENT_ARGS:-}"
    ARGS+=(${EXTRA[@]+"${EXTRA[@]}"})
    if [ "$ATTEMPT" -gt 1 ]; then ARGS+=(--case-count "$NCASES" --cases "$NEXT-$((NCASES > NEXT ? NCASES : NEXT))"); fi
    : > "$OUTDIR/ws-client.attempt.log"   # here, not in the child: tail reads it at once
    timeout "$LEFT" "$WS" "${ARGS[@]}" > "$OUTDIR/ws-client.attempt.log" 2>&1 &
    CLIENT_PID=$!
    # live progress; tail ends by itself when the client has exited
    tail -n +1 -f --pid="$CLIENT_PID" "$OUTDIR/ws-client.attempt.log" 2>/dev/null \
      | grep --line-buffered -E '^(case |autobahn-client: )'
    wait "$CLIENT_PID"; rc=$?
    CLIENT_PID=""
    cat "$OUTDIR/ws-client.attempt.log" >> "$OUTDIR/ws-client.log"
    [ "$rc" -eq 0 ] && break
    if [ "$rc" -eq 124 ] || [ "$rc" -lt 128 ] || [ -z "$NCASES" ] || [ "$ATTEMPT" -gt $((NCASES + 1)) ]; then
      tail -5 "$OUTDIR/ws-client.attempt.log" >&2
      echo "autobahn.sh: ws autobahn-client failed (exit $rc, attempt $ATTEMPT)" >&2; exit 2
    fi
    LAST="$(sed -nE 's/^case ([0-9]+): .*/\1/p' "$OUTDIR/ws-client.attempt.log" | tail -1)"
    if ! grep -q '^autobahn-client: .* cases on ' "$OUTDIR/ws-client.attempt.log"; then
      WHERE="getCaseCount"
    elif grep -q '^autobahn-client: .* updating reports' "$OUTDIR/ws-client.attempt.log"; then
      # the suite writes the reports before it sends its close frame
      CRASHES="$CRASHES updateReports;"
      grep -m1 -E 'Fatal error' "$OUTDIR/ws-client.attempt.log"
      log "ws autobahn-client CRASHED (exit $rc) in updateReports"
      for _ in $(seq 1 50); do [ -f "$OUTDIR/index.json" ] && break; sleep 0.1; done
      [ -f "$OUTDIR/index.json" ] || { echo "autobahn.sh: no reports after updateReports" >&2; exit 2; }
      break
    else
      CRASHED=$(( ${LAST:-$((NEXT - 1))} + 1 )); WHERE="case $CRASHED"; NEXT=$((CRASHED + 1))
    fi
    CRASHES="$CRASHES $WHERE;"
    grep -m1 -E 'Fatal error|Program crashed' "$OUTDIR/ws-client.attempt.log"
    log "ws autobahn-client CRASHED (exit $rc) in $WHERE; restarting at case $NEXT"
  done
  rm -f "$OUTDIR/ws-client.attempt.log"
  [ -z "$CRASHES" ] || log "client crashes:$CRASHES (full output: $OUTDIR/ws-client.log)"
  # updateReports returns once the reports are written; give a slow disk a moment anyway.
  for _ in $(seq 1 50); do [ -f "$OUTDIR/index.json" ] && break; sleep 0.1; done
  cleanup
  "$AUTOBAHN_VENV/bin/python" "$AUTOBAHN_DIR/summarize.py" "$OUTDIR" --agent "$AGENT" --sections 2>&1 | tee "$SUMMARY"
  rc=${PIPESTATUS[0]}
  [ "$rc" -le 1 ] || { echo "autobahn.sh: summarize.py failed (exit $rc)" >&2; exit 2; }
fi

LINE="$(grep '^autobahn: ' "$SUMMARY" | tail -1)"
log "$MODE mode took $(( $(date +%s) - T0 )) s (reports: $OUTDIR/index.html)"
verdict "$LINE"
exit $?
