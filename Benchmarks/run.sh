#!/usr/bin/env bash
# The benchmark suite: builds the echo servers (this library, bare NIOWebSocket, websocket-kit,
# hummingbird-websocket), the load generator and the micro-benchmarks in release mode, runs
# every workload against every server (server pinned to one core, load generator to the
# other), repeats each measurement, and prints the medians and the ratio of ours to the best
# peer. See README.md beside this script.
#
#   Benchmarks/run.sh [--reps 3] [--duration 5] [--warmup 1] [--only W1,W2,...] [--no-build] [--no-micro] [--floor] [--python]
#
# --floor adds echo-floor to W1-W5: not a peer, the least work SwiftNIO can do to answer the load
# generator (one handler, no HTTP parser, no validation); the table shows ours / floor, the part
# of the cost that any library on NIO pays.
#
# --python adds Python `websockets` (python/echo_websockets.py) to W1-W3: not a Swift peer, the
# reference the issue names for W3. It uses the project's .venv (scripts/test.sh makes it) or
# makes one here.
#
# --async adds echo-ours-async to W1-W3: this library's echo written as an async user would
# (a scoped handler, `for try await message in connection.messages { try await
# connection.write(message) }`); the table then compares it with the callback echo and with
# hummingbird-websocket's async echo.
#
# --metrics adds echo-ours-metrics to W1-W3: the same echo with a swift-metrics backend
# (swift-prometheus) bootstrapped, so the library records its metrics; the table compares it with
# echo-ours (the cost of metrics with a backend). `--only W2 --metrics --peers none --reps 11`
# measures just that, interleaved (ours, ours-metrics, ours, ...).
#
# --peers nio,websocketkit,hummingbird (the default) or none: the peers run beside ours.
#
# W7 (broadcast fan-out, --only W7) runs N = 100 and N = 1,000 connections on /broadcast against
# broadcast-ours (topics), broadcast-ours-loop (a hand-written loop, no topics),
# broadcast-hummingbird (a hand-written loop), Python websockets' broadcast()
# (python/broadcast_websockets.py) and uWebSockets' pub/sub (uws/broadcast_uws.cpp, built by
# uws/build.sh in /tmp from the local snapshots; left out with a note when they are absent).
# --w7-conns "100 1000" sets the sizes.
#
# Workloads: W1 W2 W3 W4 W5 W6a W6b MC (W2 on both cores), W7 and MICRO.
set -euo pipefail
cd "$(dirname "$0")"

REPS=3
DURATION=5
WARMUP=1
ONLY=""
BUILD=1
MICRO=1
FLOOR=0
PYTHON_REF=0
ASYNC=0
METRICS=0
SERVER_CPU=0
LOAD_CPU=1
IDLE_CONNS=10000
W7_CONNS="100 1000"
PEER_LIST="nio,websocketkit,hummingbird"
while [ $# -gt 0 ]; do
    case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --idle-conns) IDLE_CONNS=$2; shift 2 ;;
    --w7-conns) W7_CONNS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-micro) MICRO=0; shift ;;
    --floor) FLOOR=1; shift ;;
    --python) PYTHON_REF=1; shift ;;
    --async) ASYNC=1; shift ;;
    --metrics) METRICS=1; shift ;;
    --peers) PEER_LIST=$2; shift 2 ;;
    *) echo "usage: $0 [--reps N] [--duration S] [--warmup S] [--only W1,W2,...] [--idle-conns N] [--w7-conns \"100 1000\"] [--no-build] [--no-micro] [--floor] [--python] [--async] [--metrics] [--peers nio,websocketkit,hummingbird|none]" >&2; exit 2 ;;
    esac
done
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

SERVERS=(ours)
if [ "$PEER_LIST" != none ]; then
    IFS=, read -r -a peers <<< "$PEER_LIST"
    SERVERS+=("${peers[@]}")
fi
[ "$FLOOR" = 1 ] && SERVERS+=(floor)
# Echo workloads only (W1-W3): the Python reference.
REFERENCE=()
[ "$PYTHON_REF" = 1 ] && REFERENCE=(python)
[ "$ASYNC" = 1 ] && REFERENCE+=(ours-async)
[ "$METRICS" = 1 ] && REFERENCE+=(ours-metrics)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=results/$STAMP
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: > "$RESULTS"

# ---------------------------------------------------------------- build
if [ "$BUILD" = 1 ]; then
    echo "== building (release)"
    swift build -c release 2>&1 | tail -3
fi
BIN=$(swift build -c release --show-bin-path)
mkdir -p .build
gcc -O2 -Wall -o .build/loadgen loadgen/loadgen.c -lz
LOADGEN=$PWD/.build/loadgen
# W7's servers: ours with topics and with a hand-written loop, hummingbird's loop, Python's
# broadcast() and uWebSockets' pub/sub (built from the local snapshots, when there are some).
W7_SERVERS=(ours ours-loop hummingbird python)
if wanted W7; then
    if [ "$BUILD" = 1 ] || [ ! -x .build/broadcast-uws ]; then
        uws_status=0
        uws/build.sh "$PWD/.build/broadcast-uws" > .build/uws-build.log 2>&1 || uws_status=$?
        [ "$uws_status" = 0 ] || { echo "note: W7 without uWebSockets: $(tail -1 .build/uws-build.log)" >&2; rm -f .build/broadcast-uws; }
    fi
    [ -x .build/broadcast-uws ] && W7_SERVERS+=(uws)
fi
if [ "$PYTHON_REF" = 1 ] || wanted W7; then
    PYTHON=$PWD/../.venv/bin/python
    if ! "$PYTHON" -c "import websockets" 2>/dev/null; then
        PYTHON=$PWD/.venv/bin/python
        "$PYTHON" -c "import websockets" 2>/dev/null || {
            python3 -m venv .venv && .venv/bin/pip install --quiet --disable-pip-version-check 'websockets>=15,<18'
        }
    fi
fi

# 10,000 idle connections (and W7's 1,000) need that many descriptors in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((IDLE_CONNS + 100)) ]; then
    echo "note: ulimit -n is $(ulimit -n); W5 uses $((($(ulimit -n) - 200))) connections" >&2
    IDLE_CONNS=$(($(ulimit -n) - 200))
fi

# ---------------------------------------------------------------- machine notes
{
    echo "date: $STAMP"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
    echo "kernel: $(uname -r)"
    echo "swift: $(swift --version 2>/dev/null | head -1)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "server on cpu $SERVER_CPU, load generator on cpu $LOAD_CPU; reps=$REPS duration=${DURATION}s warmup=${WARMUP}s"
} | tee "$OUT/machine.txt"

# ---------------------------------------------------------------- server control
SERVER_PID=""
PORT=29000
KIND=echo  # echo: the echo servers; broadcast: W7's servers of the same names
start_server() { # name cpus [args...]
    local name=$1 cpus=$2
    shift 2
    PORT=$((PORT + 1))
    [ "$PORT" -gt 29900 ] && PORT=29001
    if [ "$name" = python ]; then
        taskset -c "$cpus" "$PYTHON" "python/${KIND}_websockets.py" "$PORT" > "$OUT/server-$name.log" 2>&1 &
    elif [ "$name" = uws ]; then
        taskset -c "$cpus" .build/broadcast-uws "$PORT" > "$OUT/server-$name.log" 2>&1 &
    else
        taskset -c "$cpus" "$BIN/$KIND-$name" "$PORT" "$@" > "$OUT/server-$name.log" 2>&1 &
    fi
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        grep -q listening "$OUT/server-$name.log" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "server $name did not start:" >&2
    cat "$OUT/server-$name.log" >&2
    stop_server
    return 1
}
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Runs the load generator; records each key=value of its result line as a row.
record() { # workload server rep line
    local w=$1 s=$2 r=$3 line=$4
    for kv in $line; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$s" "$r" "${kv%%=*}" "${kv#*=}" >> "$RESULTS"
    done
}
LOAD_TIMEOUT=$((${DURATION%.*} + ${WARMUP%.*} + 60))
load() { # cpus args...
    local cpus=$1
    shift
    timeout "$LOAD_TIMEOUT" taskset -c "$cpus" "$LOADGEN" --port "$PORT" --server-pid "$SERVER_PID" --warmup "$WARMUP" --duration "$DURATION" "$@" | tail -1
}

run_echo() { # workload servers... -- loadgen args
    local w=$1
    shift
    local servers=()
    while [ "$1" != "--" ]; do servers+=("$1"); shift; done
    shift
    wanted "$w" || wanted "${w%%-*}" || return 0
    echo "== $w: $*"
    for rep in $(seq 1 "$REPS"); do
        for s in "${servers[@]}"; do
            local extra=()
            [[ " $* " == *" --deflate "* ]] && extra=(--deflate)
            local line="" attempt
            for attempt in 1 2; do
                start_server "$s" "$SERVER_CPU" "${extra[@]}" || continue
                line=$(load "$LOAD_CPU" "$@" || true)
                # A run where no connection got through (the server was not reachable yet, or a
                # port was taken) is retried once on a fresh server and port; it is logged.
                if [[ "$line" == *"msgs=0 "* || "$line" == *"handshakes=0 "* || "$line" == *"deliveries=0 "* || -z "$line" ]]; then
                    echo "   $w rep $rep $s: no traffic on attempt $attempt (server alive: $(kill -0 "$SERVER_PID" 2>/dev/null && echo yes || echo no)): $line" | tee -a "$OUT/retries.log"
                    tail -3 "$OUT/server-$s.log" >> "$OUT/retries.log"
                    stop_server
                    continue
                fi
                stop_server
                break
            done
            echo "   $w rep $rep $s: $line"
            record "$w" "$s" "$rep" "$line"
        done
    done
}

# ---------------------------------------------------------------- workloads
run_echo W1 "${SERVERS[@]}" "${REFERENCE[@]}" -- --mode echo --conns 64 --inflight 1 --size 32 --text
run_echo W2 "${SERVERS[@]}" "${REFERENCE[@]}" -- --mode echo --conns 64 --inflight 16 --size 32
run_echo W3 "${SERVERS[@]}" "${REFERENCE[@]}" -- --mode echo --conns 8 --inflight 4 --size 65536
run_echo W4 "${SERVERS[@]}" -- --mode handshake --conns 32 --sources 8

if wanted W5; then
    echo "== W5: $IDLE_CONNS idle connections (each upgraded and one 32-byte echo, then idle)"
    for rep in $(seq 1 "$REPS"); do
        for s in "${SERVERS[@]}"; do
            start_server "$s" "$SERVER_CPU" || continue
            # Warm the server up (threads, pools) before the baseline.
            taskset -c "$LOAD_CPU" "$LOADGEN" --port "$PORT" --mode echo --conns 4 --warmup 0.2 --duration 0.3 > /dev/null || true
            sleep 0.5
            before=$(rss_kib "$SERVER_PID")
            timeout 150 taskset -c "$LOAD_CPU" "$LOADGEN" --port "$PORT" --mode idle --conns "$IDLE_CONNS" --sources 8 --duration 3 > "$OUT/idle.out" 2>&1 &
            lg=$!
            for _ in $(seq 1 1200); do
                grep -q '^ready' "$OUT/idle.out" && break
                kill -0 "$lg" 2>/dev/null || break
                sleep 0.1
            done
            sleep 1
            after=$(rss_kib "$SERVER_PID")
            wait "$lg" || true
            stop_server
            if grep -q '^ready' "$OUT/idle.out"; then
                per=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN { printf "%.2f", (a - b) / n }')
                line="kib_per_conn=$per rss_before_kib=$before rss_after_kib=$after"
            else
                line="errors=1"
                cat "$OUT/idle.out" >&2
            fi
            echo "   W5 rep $rep $s: $line"
            record W5 "$s" "$rep" "$line"
        done
    done
fi

run_echo W6a ours hummingbird -- --mode echo --conns 64 --inflight 16 --size 32 --deflate
run_echo W6b ours hummingbird -- --mode echo --conns 8 --inflight 4 --size 65536 --deflate

# W7: broadcast fan-out. Rounds in which each of N connections sends one 64-byte binary message
# and the server sends each to all N; whole rounds, at least 3 measured. A slow server (Python
# at N = 1,000) takes seconds per round: the load generator's time limit is raised to match.
if wanted W7; then
    KIND=broadcast
    saved_timeout=$LOAD_TIMEOUT
    LOAD_TIMEOUT=$((${DURATION%.*} + ${WARMUP%.*} + 900))
    for n in $W7_CONNS; do
        sources=1
        [ "$n" -gt 200 ] && sources=8
        run_echo "W7-$n" "${W7_SERVERS[@]}" -- --mode broadcast --conns "$n" --sources "$sources" --min-rounds 3 --round-timeout 300
    done
    LOAD_TIMEOUT=$saved_timeout
    KIND=echo
fi

if wanted MC; then
    echo "== MC: W2 with our server on 2 event loop threads, server and load generator both on cpus 0,1"
    for rep in $(seq 1 "$REPS"); do
        for threads in 1 2; do
            line=""
            for attempt in 1 2; do
                start_server ours 0,1 --threads "$threads" || continue
                line=$(load 0,1 --mode echo --conns 64 --inflight 16 --size 32 || true)
                stop_server
                if [[ "$line" == *"msgs=0 "* || -z "$line" ]]; then
                    echo "   MC rep $rep threads=$threads: no traffic on attempt $attempt: $line" | tee -a "$OUT/retries.log"
                    continue
                fi
                break
            done
            echo "   MC rep $rep ours threads=$threads: $line"
            record MC "ours-$threads" "$rep" "$line"
        done
    done
fi

if [ "$MICRO" = 1 ] && wanted MICRO; then
    echo "== micro-benchmarks (cpu $SERVER_CPU)"
    taskset -c "$SERVER_CPU" "$BIN/micro" | tee "$OUT/micro.txt"
fi

python3 report.py "$RESULTS" | tee "$OUT/table.txt"
echo "results in Benchmarks/$OUT"
