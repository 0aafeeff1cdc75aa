#!/usr/bin/env bash
# The cluster benchmark (issue 19 item 6): cross-node delivery through WebSocketPostgresBroker.
# Starts a throwaway PostgreSQL 15 (initdb in a temporary directory, as the `postgres` user when
# run as root, on a free port of 127.0.0.1), then, for each fsync setting and repetition, with
# every node a process of its own (cluster-node, Sources/ClusterNode):
#
#   TPUT  node A publishes 64-byte binary messages to "room" as fast as its broker takes them
#         (at most --max-queued waiting, so publish never throws brokerUnavailable); node B has
#         100 subscribers of "room" (loadgen --mode subscribe): publications/s that reached all
#         100, deliveries/s, latency (there it is queueing), CPU of A, B, PostgreSQL, loadgen.
#   LAT   the same at a fixed 1,000 publications/s: latency publish -> receipt at each of the
#         100 subscribers, p50/p99/p99.9/max.
#   FILTER node A publishes at --filter-rate/s; node C has no subscriber (filter on arrival: it
#         reads id, topic, opcode of every row, no payload), node D has one subscriber of "room"
#         (reads the payloads), node E uses another table, so it LISTENs on another channel (what
#         a node without a subscriber would cost with a LISTEN per topic: no NOTIFY, no read).
#         CPU per message of each node and of each node's two PostgreSQL backends, less what
#         each costs idle (measured first, over the same time, with no publisher).
#   PGBENCH PostgreSQL's own ceiling on this machine: pgbench -n -T --pg-seconds -c 1,2,4 with
#         (a) the broker's function websocket_publications_publish called with a batch of
#         --batches rows (64-byte payloads), (b) BEGIN; a single-row INSERT; NOTIFY; COMMIT.
#         No node runs meanwhile (nothing LISTENs).
#
#   Benchmarks/cluster.sh [--reps 3] [--duration 10] [--warmup 2] [--fsync "on off"]
#                         [--only TPUT,LAT,FILTER,PGBENCH] [--no-build] [--max-queued 4000]
#                         [--filter-rate 1000] [--batches "1 10 100 1000"] [--pg-seconds 10]
#
# fsync=on is PostgreSQL's default (every commit waits for its WAL flush); fsync=off is not a
# safe setting for a database anyone keeps, it shows what the disk costs. Runs of one kind are
# interleaved within each repetition (TPUT, LAT, FILTER, then the next repetition), and the
# summary shows medians; the load average is recorded before every run, because the two
# cores are shared. Raw lines: results/cluster-<time>/. Every wait is bounded; every process
# started here is stopped by its PID (PostgreSQL with pg_ctl stop).
set -euo pipefail
cd "$(dirname "$0")"

REPS=3
DURATION=10
WARMUP=2
FSYNC_MODES="on off"
ONLY=""
BUILD=1
MAX_QUEUED=4000
FILTER_RATE=1000
BATCHES="1 10 100 1000"
PG_SECONDS=10
SUBSCRIBERS=100
while [ $# -gt 0 ]; do
    case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --fsync) FSYNC_MODES=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --max-queued) MAX_QUEUED=$2; shift 2 ;;
    --filter-rate) FILTER_RATE=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --pg-seconds) PG_SECONDS=$2; shift 2 ;;
    --subscribers) SUBSCRIBERS=$2; shift 2 ;;
    *) sed -n '2,40p' "$0" >&2; exit 2 ;;
    esac
done
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL 15 is not installed ($PGBIN): apt-get install postgresql" >&2; exit 2; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$PWD/results/cluster-$STAMP
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: > "$RESULTS"

if [ "$BUILD" = 1 ]; then
    echo "== building cluster-node (release)"
    swift build -c release --product cluster-node 2>&1 | grep -E "error|Compiling cluster|Build complete" | tail -5
fi
BIN=$(swift build -c release --show-bin-path)
NODE=$BIN/cluster-node
[ -x "$NODE" ] || { echo "no $NODE: build it (drop --no-build)" >&2; exit 2; }
mkdir -p .build
gcc -O2 -Wall -o .build/loadgen loadgen/loadgen.c -lz
LOADGEN=$PWD/.build/loadgen

{
    echo "date: $(date -u)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
    echo "swift: $(swift --version 2>&1 | head -1)"
    echo "postgres: $($PGBIN/postgres --version)"
    echo "git: $(git -C .. rev-parse --short HEAD 2>/dev/null)"
    echo "args: reps=$REPS duration=$DURATION warmup=$WARMUP fsync=($FSYNC_MODES) subscribers=$SUBSCRIBERS max_queued=$MAX_QUEUED filter_rate=$FILTER_RATE batches=($BATCHES) pg_seconds=$PG_SECONDS"
    echo "loadavg at start: $(cat /proc/loadavg)"
} | tee "$OUT/machine.txt"

# ---------------------------------------------------------------- PostgreSQL
PGDIR=$(mktemp -d /tmp/ws-clusterbench-pg.XXXXXX)
PGPASS=secret
echo "$PGPASS" > "$PGDIR/password"
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PGDIR"
PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_postgres "$PGBIN/initdb" -D "$PGDIR/data" -U ws --pwfile="$PGDIR/password" --auth-local=trust \
    --auth-host=scram-sha-256 --no-sync -E UTF8 --locale=C > "$OUT/initdb.log" 2>&1
PG_RUNNING=0
pg_start() {  # $1: on|off (fsync)
    as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -t 60 \
        -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $PGDIR -c fsync=$1 -c track_functions=pl -c max_connections=100" start > /dev/null
    PG_RUNNING=1
}
pg_stop() {
    if [ "$PG_RUNNING" = 1 ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w -t 60 stop > /dev/null || true
        PG_RUNNING=0
    fi
}
psql_ws() { psql -h "$PGDIR" -p "$PGPORT" -U ws -d postgres -At -v ON_ERROR_STOP=1 -c "$1"; }
postmaster_pid() { head -1 "$PGDIR/data/postmaster.pid"; }

# Processes started here, stopped by PID on exit.
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    pg_stop
    rm -rf "$PGDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pg_start on
psql_ws "CREATE DATABASE ws" > /dev/null
for role in node_a node_b node_c node_d node_e; do
    psql_ws "CREATE ROLE $role LOGIN SUPERUSER PASSWORD '$PGPASS'" > /dev/null
done
pg_stop
url() { echo "postgres://$1:$PGPASS@127.0.0.1:$PGPORT/ws"; }
sql() { psql -h "$PGDIR" -p "$PGPORT" -U ws -d ws -At -v ON_ERROR_STOP=1 -c "$1"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts a node in the background; sets NODE_PID and NODE_PORT. $1 name, $2 role, rest: options.
start_node() {
    local name=$1 role=$2
    shift 2
    NODE_PORT=$(free_port)
    local log=$OUT/node-$name.log
    "$NODE" --port "$NODE_PORT" --url "$(url "$role")" --node "$name" "$@" > "$log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    for _ in $(seq 600); do
        grep -q '^listening' "$log" 2>/dev/null && return 0
        kill -0 "$NODE_PID" 2>/dev/null || { echo "node $name ended: $(tail -3 "$log")" >&2; return 1; }
        sleep 0.05
    done
    echo "node $name did not start within 30 s" >&2
    return 1
}

# Stops a node by PID (SIGTERM: it prints its figures), waiting at most 15 s.
stop_node() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Waits (at most $2 s) for the line "ready" in file $1.
wait_ready() {
    for _ in $(seq $(($2 * 20))); do
        grep -q '^ready' "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "not ready within $2 s: $1" >&2
    return 1
}

# The CPU options for loadgen: every child of the postmaster (backends, walwriter, ...).
pg_cpu_args() {
    local args=""
    for pid in $(ps --ppid "$(postmaster_pid)" -o pid=); do args+=" --cpu pg:$pid"; done
    echo "$args"
}
backend_cpu_args() {  # $1 label, $2 role: the backends of that role
    local args=""
    for pid in $(sql "SELECT pid FROM pg_stat_activity WHERE usename = '$2'"); do args+=" --cpu $1:$pid"; done
    echo "$args"
}
cpu_of() { awk '{ split($0, a, ") "); split(a[2], f, " "); printf "%.2f", (f[12] + f[13]) / 100 }' "/proc/$1/stat"; }

record() {  # $1 kind, $2 fsync, $3 rep, $4 the result line
    printf '%s\t%s\t%s\t%s\tloadavg=%s\n' "$1" "$2" "$3" "$4" "$(cut -d' ' -f1 /proc/loadavg)" >> "$RESULTS"
}

# ---------------------------------------------------------------- TPUT and LAT
# $1 TPUT|LAT, $2 fsync, $3 rep
run_delivery() {
    local kind=$1 fsync=$2 rep=$3 rate
    [ "$kind" = TPUT ] && rate=max || rate=1000
    sql "TRUNCATE websocket_publications" > /dev/null 2>&1 || true
    local load_before
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    start_node b node_b
    local b_pid=$NODE_PID b_port=$NODE_PORT
    local go=$OUT/go-$kind-$fsync-$rep
    rm -f "$go"
    local lg=$OUT/loadgen-$kind-$fsync-$rep.log
    # Node A: its pid is needed by the load generator, so it starts first and waits for `go`.
    NODE_PORT=$(free_port)
    "$NODE" --port "$NODE_PORT" --url "$(url node_a)" --node a --publish "$rate" --topic room \
        --duration "$(echo "$WARMUP + $DURATION + 1" | bc)" --max-queued "$MAX_QUEUED" --go-file "$go" > "$OUT/node-a-$kind-$fsync-$rep.log" 2>&1 &
    local a_pid=$!
    PIDS+=("$a_pid")
    for _ in $(seq 600); do grep -q '^listening' "$OUT/node-a-$kind-$fsync-$rep.log" && break; sleep 0.05; done
    sql "SELECT pg_stat_reset()" > /dev/null
    # shellcheck disable=SC2046
    "$LOADGEN" --port "$b_port" --mode subscribe --path /room --conns "$SUBSCRIBERS" --warmup "$WARMUP" --duration "$DURATION" \
        --cpu "a:$a_pid" --cpu "b:$b_pid" $(pg_cpu_args) > "$lg" 2> "$lg.err" &
    local lg_pid=$!
    PIDS+=("$lg_pid")
    wait_ready "$lg" 60
    sleep 0.5
    touch "$go"
    local lg_status=0
    wait "$lg_pid" || lg_status=$?
    for _ in $(seq 900); do kill -0 "$a_pid" 2>/dev/null || break; sleep 0.1; done
    stop_node "$a_pid"
    stop_node "$b_pid"
    local a_line b_line stats
    a_line=$(grep '^published=' "$OUT/node-a-$kind-$fsync-$rep.log" | tail -1 || true)
    b_line=$(grep '^node=b' "$OUT/node-b.log" | tail -1 | sed 's/^node=b /b_/; s/ last_seen_id=/ b_last_seen_id=/; s/ state=/ b_state=/' || true)
    stats=$(sql "SELECT 'publish_calls=' || coalesce((SELECT calls FROM pg_stat_user_functions WHERE funcname = 'websocket_publications_publish'), 0)
        || ' rows_inserted=' || coalesce((SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'websocket_publications'), 0)
        || ' table_idx_scans=' || coalesce((SELECT idx_scan FROM pg_stat_user_tables WHERE relname = 'websocket_publications'), 0)
        || ' xact_commit=' || (SELECT xact_commit FROM pg_stat_database WHERE datname = 'ws')")
    local line
    line="$(grep "^conns=" "$lg" | tail -1) $a_line $b_line $stats loadgen_status=$lg_status load_before=${load_before// /,}"
    record "$kind" "$fsync" "$rep" "$line"
    echo "  $kind fsync=$fsync rep $rep: $line" | cut -c1-400
    [ -s "$lg.err" ] && head -3 "$lg.err" | sed 's/^/    /'
    return 0
}

# ---------------------------------------------------------------- FILTER
run_filter() {
    local fsync=$1 rep=$2
    sql "TRUNCATE websocket_publications" > /dev/null 2>&1 || true
    start_node c node_c; local c_pid=$NODE_PID
    start_node d node_d; local d_pid=$NODE_PID d_port=$NODE_PORT
    start_node e node_e --table websocket_other; local e_pid=$NODE_PID
    sleep 1
    local cpu_args
    cpu_args="--cpu c:$c_pid --cpu d:$d_pid --cpu e:$e_pid $(backend_cpu_args cpg node_c) $(backend_cpu_args dpg node_d) $(backend_cpu_args epg node_e)"
    # Idle first: the same processes over the same time with no publisher.
    local idle=""
    local -A before
    for p in $c_pid $d_pid $e_pid; do before[$p]=$(cpu_of "$p"); done
    local -A bbefore
    local all_backend_pids
    all_backend_pids=$(sql "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE usename IN ('node_c', 'node_d', 'node_e')")
    for p in $all_backend_pids; do bbefore[$p]=$(cpu_of "$p"); done
    sleep "$DURATION"
    idle="idle_s=$DURATION"
    idle+=" idle_c_s=$(echo "$(cpu_of "$c_pid") - ${before[$c_pid]}" | bc) idle_d_s=$(echo "$(cpu_of "$d_pid") - ${before[$d_pid]}" | bc) idle_e_s=$(echo "$(cpu_of "$e_pid") - ${before[$e_pid]}" | bc)"
    for role in node_c node_d node_e; do
        local sum=0
        for p in $(sql "SELECT pid FROM pg_stat_activity WHERE usename = '$role'"); do sum=$(echo "$sum + $(cpu_of "$p") - ${bbefore[$p]:-0}" | bc); done
        idle+=" idle_${role#node_}pg_s=$sum"
    done
    local go=$OUT/go-FILTER-$fsync-$rep lg=$OUT/loadgen-FILTER-$fsync-$rep.log
    rm -f "$go"
    NODE_PORT=$(free_port)
    "$NODE" --port "$NODE_PORT" --url "$(url node_a)" --node a --publish "$FILTER_RATE" --topic room \
        --duration "$(echo "$WARMUP + $DURATION + 1" | bc)" --go-file "$go" > "$OUT/node-a-FILTER-$fsync-$rep.log" 2>&1 &
    local a_pid=$!
    PIDS+=("$a_pid")
    for _ in $(seq 600); do grep -q '^listening' "$OUT/node-a-FILTER-$fsync-$rep.log" && break; sleep 0.05; done
    # shellcheck disable=SC2086
    "$LOADGEN" --port "$d_port" --mode subscribe --path /room --conns 1 --warmup "$WARMUP" --duration "$DURATION" \
        $cpu_args > "$lg" 2> "$lg.err" &
    local lg_pid=$!
    PIDS+=("$lg_pid")
    wait_ready "$lg" 60
    sleep 0.5
    touch "$go"
    local lg_status=0
    wait "$lg_pid" || lg_status=$?
    for _ in $(seq 900); do kill -0 "$a_pid" 2>/dev/null || break; sleep 0.1; done
    stop_node "$a_pid"
    for p in $c_pid $d_pid $e_pid; do stop_node "$p"; done
    local line
    line="$(grep "^conns=" "$lg" | tail -1) $idle rate=$FILTER_RATE loadgen_status=$lg_status"
    record FILTER "$fsync" "$rep" "$line"
    echo "  FILTER fsync=$fsync rep $rep: $line" | cut -c1-400
    [ -s "$lg.err" ] && head -3 "$lg.err" | sed 's/^/    /'
    return 0
}

# ---------------------------------------------------------------- PGBENCH
PAYLOAD_HEX=$(python3 -c 'print("".join("%02x" % (i * 37 % 256) for i in range(64)))')
cat > "$OUT/publish-batch.sql" <<EOF
SELECT websocket_publications_publish('pgbench-' || :client_id,
    ARRAY(SELECT nextval('bench_seq') FROM generate_series(1, :batch)),
    array_fill('room'::text, ARRAY[:batch]), array_fill(2::int2, ARRAY[:batch]),
    array_fill('\\x$PAYLOAD_HEX'::bytea, ARRAY[:batch]));
EOF
cat > "$OUT/insert-notify.sql" <<EOF
BEGIN;
INSERT INTO websocket_publications (node, seq, topic, opcode, payload)
    VALUES ('pgbench-' || :client_id, nextval('bench_seq'), 'room', 2, '\\x$PAYLOAD_HEX'::bytea);
SELECT pg_notify('websocket_publications', currval('bench_seq')::text);
COMMIT;
EOF
run_pgbench() {
    local fsync=$1 rep=$2 script=$3 batch=$4 clients=$5
    sql "TRUNCATE websocket_publications; CHECKPOINT" > /dev/null
    local log=$OUT/pgbench-$fsync-$rep-$(basename "$script" .sql)-$batch-$clients.log
    PGPASSWORD=$PGPASS timeout $((PG_SECONDS + 60)) pgbench -h 127.0.0.1 -p "$PGPORT" -U node_a -n -f "$script" -D "batch=$batch" \
        -c "$clients" -j "$clients" -T "$PG_SECONDS" ws > "$log" 2>&1 || true
    local tps
    tps=$(grep -Eo 'tps = [0-9.]+' "$log" | head -1 | cut -d' ' -f3)
    local lat
    lat=$(grep -Eo 'latency average = [0-9.]+ ms' "$log" | grep -Eo '[0-9.]+' || echo 0)
    local rows
    rows=$(echo "${tps:-0} * $batch" | bc)
    record PGBENCH "$fsync" "$rep" "script=$(basename "$script" .sql) batch=$batch clients=$clients tps=${tps:-0} rows_per_s=$rows latency_ms=$lat"
    echo "  pgbench fsync=$fsync rep $rep $(basename "$script" .sql) batch=$batch clients=$clients: tps=${tps:-0} rows/s=$rows latency=${lat}ms"
}

# ---------------------------------------------------------------- runs
for fsync in $FSYNC_MODES; do
    echo "== PostgreSQL with fsync=$fsync"
    pg_start "$fsync"
    # The schema (the nodes create it too; pgbench needs it first) and pgbench's sequence.
    start_node schema node_a; stop_node "$NODE_PID"
    sql "CREATE SEQUENCE IF NOT EXISTS bench_seq" > /dev/null
    for rep in $(seq "$REPS"); do
        wanted TPUT && run_delivery TPUT "$fsync" "$rep"
        wanted LAT && run_delivery LAT "$fsync" "$rep"
        wanted FILTER && run_filter "$fsync" "$rep"
        if wanted PGBENCH; then
            for clients in 1 2 4; do
                for batch in $BATCHES; do run_pgbench "$fsync" "$rep" "$OUT/publish-batch.sql" "$batch" "$clients"; done
                run_pgbench "$fsync" "$rep" "$OUT/insert-notify.sql" 1 "$clients"
            done
        fi
    done
    pg_stop
done
echo "loadavg at end: $(cat /proc/loadavg)" | tee -a "$OUT/machine.txt"
python3 cluster_report.py "$RESULTS" | tee "$OUT/table.txt"
echo "raw: $OUT"
