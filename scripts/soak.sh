#!/usr/bin/env bash
# Soak test: builds `ws` (release mode, or WS_CONFIGURATION), starts `ws serve` on 127.0.0.1, runs a churn client
# (scripts/soak_client.py on Python websockets) that opens and closes thousands of connections
# with messages in flight for SECONDS (default 20), while two hostile clients
# (Tests/Interop/hostile_client.py: one that sends to the echo and never reads, one that floods
# pings and never reads) attack it; checks that the server's resident memory stays within 64 MiB
# of its baseline during the churn (sampled every half second), that the server stopped reading
# from the hostile clients or closed them, and that memory and open file descriptors return to
# near their baseline afterwards (within 20 MiB and 10 fds).
#
#   scripts/soak.sh [SECONDS]
#
# Prints the figures and ends with `soak: N passed, M failed`; exits non-zero on a failure.
# Everything is bounded: the churn stops at SECONDS, each wait below has a deadline, and the
# server (the only process this script starts besides the client) is stopped by its PID.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
case "$seconds" in ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
workers=${SOAK_WORKERS:-40}
rss_limit_kib=$((20 * 1024))
fd_limit=10

python=.venv/bin/python
if ! "$python" -c "import websockets" 2>/dev/null; then
    echo "soak: creating .venv with Python websockets"
    python3 -m venv .venv && .venv/bin/pip install --quiet --disable-pip-version-check 'websockets>=15,<18' || exit 1
fi

configuration="${WS_CONFIGURATION:-release}"   # .ci/run: debug, the build its tests made
echo "soak: building ws ($configuration)"
swift build -c "$configuration" --product ws 2>&1 | grep -E "error|Compiling ws|Build" | tail -5
[ "${PIPESTATUS[0]}" = 0 ] || { echo "soak: build failed"; exit 1; }
ws="$(swift build -c "$configuration" --show-bin-path)/ws"

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$ws" serve --host 127.0.0.1 --port 0 --quiet --deflate >"$work/server.out" 2>"$work/server.err" </dev/null &
server_pid=$!
url=
for _ in $(seq 1 100); do
    url=$(grep -oE 'ws://127\.0\.0\.1:[0-9]+/' "$work/server.out" | head -1)
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "soak: ws serve did not start"; cat "$work/server.err"; exit 1
fi

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status"; }
fds() { ls "/proc/$server_pid/fd" | wc -l; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$server_pid/status"; }

start_rss=$(rss_kib); start_fds=$(fds)
echo "soak: ws serve (pid $server_pid) on $url: RSS $((start_rss / 1024)) MiB, $start_fds fds at start"

# A short warm-up, so that what a server allocates once (event loop threads' buffers, pools,
# malloc arenas) is in the baseline, then the baseline.
"$python" scripts/soak_client.py "$url" 2 10 >"$work/warmup.json" || { echo "soak: warm-up client failed"; exit 1; }
sleep 1
base_rss=$(rss_kib); base_fds=$(fds)
echo "soak: baseline after a 2 s warm-up: RSS $((base_rss / 1024)) MiB ($base_rss KiB), $base_fds fds, $(threads) threads"

echo "soak: churning for ${seconds}s with $workers concurrent clients and two hostile ones"
peak_fds=0; peak_during=0
port=${url#ws://127.0.0.1:}; port=${port%/}
"$python" scripts/soak_client.py "$url" "$seconds" "$workers" >"$work/churn.json" &
client_pid=$!
"$python" Tests/Interop/hostile_client.py echo-nonreader "$port" --seconds "$seconds" >"$work/hostile-echo.out" 2>&1 &
hostile_echo_pid=$!
"$python" Tests/Interop/hostile_client.py ping-flood "$port" --seconds "$seconds" >"$work/hostile-ping.out" 2>&1 &
hostile_ping_pid=$!
while kill -0 "$client_pid" 2>/dev/null; do
    n=$(fds); [ "$n" -gt "$peak_fds" ] && peak_fds=$n
    r=$(rss_kib); [ "$r" -gt "$peak_during" ] && peak_during=$r
    sleep 0.5
done
wait "$client_pid"; client_status=$?
for pid in "$hostile_echo_pid" "$hostile_ping_pid"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
done
echo "soak: hostile clients: $(cat "$work/hostile-echo.out") / $(cat "$work/hostile-ping.out")"
echo "soak: RSS during the churn: peak $((peak_during / 1024)) MiB (baseline $((base_rss / 1024)) MiB)"
during_rss=$(rss_kib)
echo "soak: churn: $(cat "$work/churn.json")"

# Connections closing (the close timeout is 5 s): wait until the fds are back, at most 30 s.
for _ in $(seq 1 60); do
    [ "$(fds)" -le $((base_fds + fd_limit)) ] && break
    sleep 0.5
done
sleep 2
end_rss=$(rss_kib); end_fds=$(fds); peak_rss=$(hwm_kib)
opened=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["opened"])' "$work/churn.json" 2>/dev/null || echo 0)
bad=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["bad_echoes"])' "$work/churn.json" 2>/dev/null || echo 1)
echo "soak: RSS  baseline $((base_rss / 1024)) MiB, at the end of the churn $((during_rss / 1024)) MiB, peak $((peak_rss / 1024)) MiB, after $((end_rss / 1024)) MiB (delta $(((end_rss - base_rss) / 1024)) MiB, $((end_rss - base_rss)) KiB)"
echo "soak: fds  baseline $base_fds, peak $peak_fds, after $end_fds (delta $((end_fds - base_fds)))"

passed=0; failed=0
result() {
    if [ "$1" = 0 ]; then passed=$((passed + 1)); echo "soak: ok   $2"; else failed=$((failed + 1)); echo "soak: FAIL $2"; fi
}
[ "$client_status" = 0 ]; result $? "the churn client ran to the end"
[ "$opened" -ge 1000 ]; result $? "opened $opened connections (at least 1000)"
[ "$bad" = 0 ]; result $? "every echo checked was intact ($bad bad)"
[ $((peak_during - base_rss)) -le $((64 * 1024)) ]; result $? "RSS during the churn within 64 MiB of the baseline (+$(((peak_during - base_rss) / 1024)) MiB)"
for out in "$work/hostile-echo.out" "$work/hostile-ping.out"; do
    grep -qE 'blocked=1|closed=1' "$out"; result $? "the server held or closed a hostile client: $(cat "$out")"
done
[ $((end_rss - base_rss)) -le "$rss_limit_kib" ]; result $? "RSS back within 20 MiB of the baseline"
[ $((end_fds - base_fds)) -le "$fd_limit" ]; result $? "open fds back within $fd_limit of the baseline"

kill -TERM "$server_pid"
for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then
    result 1 "ws serve stops on SIGTERM within 10 s"
else
    wait "$server_pid"; status=$?
    result "$status" "ws serve stopped on SIGTERM (exit $status)"
fi
server_pid=
echo "soak: $passed passed, $failed failed"
[ "$failed" = 0 ]
