#!/usr/bin/env bash
# Profiles one echo server under one load with perf (software cpu-clock sampling, DWARF call
# graphs; hardware counters are not available on every machine) and prints where its time goes.
#
#   Benchmarks/profile.sh SERVER [--server-args "ARGS"] -- LOADGEN-ARGS...
#   Benchmarks/profile.sh ours -- --mode echo --conns 64 --inflight 16 --size 32
#   Benchmarks/profile.sh ours --server-args --deflate -- --mode echo --conns 8 --inflight 4 --size 65536 --deflate
#
# Needs `perf` (Debian: linux-perf) and a release build (run.sh builds one).
set -euo pipefail
cd "$(dirname "$0")"
SERVER=$1
shift
SARGS=""
if [ "${1:-}" = "--server-args" ]; then SARGS=$2; shift 2; fi
[ "${1:-}" = "--" ] && shift
BIN=$(swift build -c release --show-bin-path)
[ -x .build/loadgen ] || gcc -O2 -o .build/loadgen loadgen/loadgen.c -lz
OUT=results/profile-$SERVER-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
PORT=$((19950 + RANDOM % 40))
# shellcheck disable=SC2086
taskset -c 0 "$BIN/echo-$SERVER" "$PORT" $SARGS > "$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q listening "$OUT/server.log" && break; sleep 0.05; done
taskset -c 1 .build/loadgen --port "$PORT" --server-pid "$PID" --warmup 1 --duration 4.5 "$@" > "$OUT/loadgen.out" &
LG=$!
sleep 1.5
perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$PID" -o "$OUT/perf.data" -- sleep 2 > /dev/null 2>&1
wait $LG
cat "$OUT/loadgen.out"
perf report -i "$OUT/perf.data" --no-children --sort dso -g none 2>/dev/null | grep % | head -6
perf script -i "$OUT/perf.data" 2>/dev/null | swift demangle --simplified > "$OUT/stacks.txt"
python3 - "$OUT/stacks.txt" <<'PY'
import collections, re, sys
samples, cur = [], None
for line in open(sys.argv[1], errors="replace"):
    if not line.strip():
        if cur: samples.append(cur)
        cur = None
        continue
    if not line.startswith("\t"):
        cur = []
        continue
    parts = line.strip().split(" ", 1)
    if len(parts) == 2 and cur is not None:
        cur.append(re.sub(r" \(.*\)$", "", re.sub(r"\+0x[0-9a-f]+ ", " ", parts[1])))
if cur: samples.append(cur)
n = len(samples) or 1
inclusive = collections.Counter()
for s in samples:
    for f in set(s): inclusive[f] += 1
print(f"{len(samples)} samples; inclusive share of the library's and the kernel's main frames:")
for f, c in inclusive.most_common(400):
    if re.search(r"WebSocket|sys_write|sys_read|sys_writev|epoll_wait|swift_retain$|swift_release$|swift_beginAccess$|malloc$|deflate$|inflate$", f) and not re.match(r"(thunk|partial apply|protocol witness)", f):
        print(f"{100*c/n:6.1f}%  {f[:150]}")
PY
echo "stacks: Benchmarks/$OUT/stacks.txt"
