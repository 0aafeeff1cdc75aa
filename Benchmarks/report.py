#!/usr/bin/env python3
"""Prints the table of a run.sh results file: medians per workload and server, and the ratio
of ours to the best peer (for W5, the smallest memory), with the targets of issue 8. When the
run has the `floor` server (run.sh --floor: the least work NIO can do for the load generator,
not a peer), its column and the ratio of ours to it are printed too; so is the column of Python
`websockets` (run.sh --python), a reference that is not a peer either.

W7 (broadcast fan-out) has a table of its own: deliveries/s, round latency and CPU for each of
its servers at each N, and the ratios of issue 18's targets: ours (topics) against uWebSockets'
pub/sub, Python websockets' broadcast() and the hand-written loop on this library."""
import statistics
import sys
from collections import defaultdict

PEERS = ["nio", "websocketkit", "hummingbird"]
# workload, metric, higher is better, target ratio (None: informational), label
ROWS = [
    ("W1", "msgs_per_s", True, 1.5, "W1 latency 64x1 32 B text: msgs/s"),
    ("W1", "p50_us", False, None, "W1 p50 latency (us)"),
    ("W1", "p99_us", False, None, "W1 p99 latency (us)"),
    ("W1", "server_cpu_pct", False, None, "W1 server CPU (% of its core)"),
    ("W1", "loadgen_cpu_pct", False, None, "W1 load generator CPU (%)"),
    ("W1", "server_us_per_op", False, None, "W1 server CPU us per message"),
    ("W2", "msgs_per_s", True, 1.5, "W2 pipelined 64x16 32 B binary: msgs/s"),
    ("W2", "server_cpu_pct", False, None, "W2 server CPU (% of its core)"),
    ("W2", "server_us_per_op", False, None, "W2 server CPU us per message"),
    ("W3", "mb_per_s", True, 2.0, "W3 throughput 8x4 64 KiB binary: MB/s"),
    ("W3", "server_cpu_pct", False, None, "W3 server CPU (% of its core)"),
    ("W3", "server_us_per_op", False, None, "W3 server CPU us per message"),
    ("W4", "handshakes_per_s", True, 1.5, "W4 handshakes, 32 concurrent: /s"),
    ("W4", "server_cpu_pct", False, None, "W4 server CPU (% of its core)"),
    ("W4", "server_us_per_op", False, None, "W4 server CPU us per handshake"),
    ("W5", "kib_per_conn", False, 0.5, "W5 idle memory: KiB/connection"),
    ("W6a", "msgs_per_s", True, None, "W6a deflate, W2 shape: msgs/s"),
    ("W6a", "server_us_per_op", False, None, "W6a server CPU us per message"),
    ("W6b", "mb_per_s", True, None, "W6b deflate, W3 shape: MB/s"),
    ("W6b", "server_us_per_op", False, None, "W6b server CPU us per message"),
    ("W6b", "compressed_pct", True, None, "W6b echoes that came back compressed (%)"),
]

data = defaultdict(list)
errors = defaultdict(int)
rows = defaultdict(dict)  # (workload, server, rep) -> {key: value}
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5:
        continue
    w, s, rep, key, value = parts
    try:
        rows[(w, s, rep)][key] = float(value)
    except ValueError:
        continue
for (w, s, _rep), values in rows.items():
    errors[(w, s)] += int(values.get("errors", 0))
    # A repetition in which no message or handshake got through (even after run.sh's retry)
    # measured nothing: it is flagged, not counted in the median.
    if values.get("msgs") == 0 or values.get("handshakes") == 0 or values.get("deliveries") == 0:
        continue
    for key, v in values.items():
        if key != "errors":
            data[(w, s, key)].append(v)


# Not peers: `floor` (run.sh --floor) and Python `websockets` (run.sh --python), when the run has them.
SERVERS = ["ours"] + PEERS + [r for r in ("floor", "python", "ours-async", "ours-metrics") if any(s == r and not w.startswith("W7") for (w, s, _k) in data)]


def median(w, s, key):
    values = data.get((w, s, key))
    return statistics.median(values) if values else None


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


echo_rows = any(not w.startswith("W7") for (w, _s, _k) in data)
header = f"{'workload':44} " + " ".join(f"{s:>13}" for s in SERVERS) + f" {'best peer':>13} {'ours/best':>9} {'target':>7}  met" + (f" {'ours/floor':>10}" if "floor" in SERVERS else "")
if echo_rows:
    print(header)
    print("-" * len(header))
for w, key, higher, target, label in ROWS:
    values = {s: median(w, s, key) for s in SERVERS}
    if all(v is None for v in values.values()):
        continue
    peers = {s: v for s, v in values.items() if s in PEERS and v is not None}
    best_name, best = (None, None)
    if peers:
        best_name = (max if higher else min)(peers, key=peers.get)
        best = peers[best_name]
    ours = values["ours"]
    ratio = ours / best if ours is not None and best else None
    met = ""
    if target is not None and ratio is not None:
        met = "yes" if (ratio >= target if higher else ratio <= target) else "NO"
        target_text = (">=" if higher else "<=") + f"{target}"
    else:
        target_text = ""
    cells = []
    for s in SERVERS:
        cell = fmt(values[s])
        if errors.get((w, s)):
            cell += "!"
        cells.append(f"{cell:>13}")
    best_text = f"{fmt(best)} {best_name[:3] if best_name else ''}"
    line = f"{label:44} " + " ".join(cells) + f" {best_text:>13} {fmt(ratio) if ratio else '-':>9} {target_text:>7}  {met:3}"
    if "floor" in SERVERS:
        floor = values["floor"]
        line += f" {fmt(ours / floor) if ours is not None and floor else '-':>10}"
    print(line.rstrip())

# The async echo (run.sh --async) against the callback echo and hummingbird-websocket's async echo.
ASYNC_ROWS = [("W1", 0.9, None), ("W2", 0.9, 2.0), ("W3", 0.9, 2.0)]
if any(s == "ours-async" for (_w, s, _k) in data):
    print()
    print(f"{'async echo':44} {'ours-async':>13} {'/ours':>9} {'target':>7}  met {'/hummingbird':>13} {'target':>7}  met")
    for w, to_ours, to_hb in ASYNC_ROWS:
        key = "mb_per_s" if w == "W3" else "msgs_per_s"
        a, o, h = median(w, "ours-async", key), median(w, "ours", key), median(w, "hummingbird", key)
        if a is None:
            continue
        r1 = a / o if o else None
        r2 = a / h if h else None
        m1 = ("yes" if r1 >= to_ours else "NO") if r1 is not None else ""
        m2 = ("yes" if r2 >= to_hb else "NO") if (r2 is not None and to_hb) else ""
        label = next((lab for (ww, kk, _hi, _t, lab) in ROWS if ww == w and kk == key), w)
        print(f"{label:44} {fmt(a):>13} {fmt(r1) if r1 else '-':>9} {'>=' + str(to_ours):>7}  {m1:3} {fmt(r2) if r2 else '-':>13} {('>=' + str(to_hb)) if to_hb else '':>7}  {m2:3}")

# Metrics with a backend (run.sh --metrics): echo-ours-metrics against echo-ours. "paired" is the
# median, over repetitions, of each repetition's ratio (the two run one after the other, so a
# loaded machine's drift cancels more); "us/msg" compares server CPU per message the same way.
def paired(w, key):
    ratios = []
    for (ww, s, rep), values in rows.items():
        if ww != w or s != "ours-metrics":
            continue
        other = rows.get((w, "ours", rep), {})
        if values.get(key) and other.get(key):
            ratios.append(values[key] / other[key])
    return statistics.median(ratios) if ratios else None


if any(s == "ours-metrics" for (_w, s, _k) in data):
    print()
    print(f"{'metrics with a backend (prometheus)':44} {'ours-metrics':>13} {'ours':>13} {'/ours':>9} {'paired':>9} {'us/msg':>9} {'target':>7}  met")
    for w in ("W1", "W2", "W3"):
        key = "mb_per_s" if w == "W3" else "msgs_per_s"
        m, o = median(w, "ours-metrics", key), median(w, "ours", key)
        if m is None or not o:
            continue
        r, pr, cpu = m / o, paired(w, key), paired(w, "server_us_per_op")
        label = next((lab for (ww, kk, _hi, _t, lab) in ROWS if ww == w and kk == key), w)
        print(f"{label:44} {fmt(m):>13} {fmt(o):>13} {fmt(r):>9} {fmt(pr):>9} {fmt(cpu):>9} {'>=0.95':>7}  {'yes' if r >= 0.95 else 'NO':3}")

# W7: broadcast fan-out, one table per run with every N it has.
W7_SERVERS = ["ours", "ours-loop", "hummingbird", "python", "uws"]
W7_ROWS = [
    ("deliveries_per_s", "deliveries/s"),
    ("p50_us", "round latency p50 (us)"),
    ("p99_us", "round latency p99 (us)"),
    ("rounds", "rounds measured"),
    ("server_cpu_pct", "server CPU (% of its core)"),
    ("loadgen_cpu_pct", "load generator CPU (%)"),
    ("server_us_per_op", "server CPU us per delivery"),
]
# ours / reference, target, label: issue 18's targets, as ratios of deliveries/s.
W7_TARGETS = [("uws", 0.8, "ours/uws"), ("python", 3.0, "ours/python"), ("ours-loop", 3.0, "ours/ours-loop"),
              ("hummingbird", None, "ours/hummingbird")]
w7_sizes = sorted({int(w.split("-")[1]) for (w, _s, _k) in data if w.startswith("W7-")})
if w7_sizes:
    if echo_rows:
        print()
    head = f"{'W7 broadcast, 64 B binary':44} " + " ".join(f"{s:>13}" for s in W7_SERVERS)
    print(head)
    print("-" * len(head))
    for n in w7_sizes:
        w = f"W7-{n}"
        for key, label in W7_ROWS:
            cells = []
            for s in W7_SERVERS:
                cell = fmt(median(w, s, key))
                if errors.get((w, s)):
                    cell += "!"
                cells.append(f"{cell:>13}")
            print(f"{'N=' + format(n, ',') + ' ' + label:44} " + " ".join(cells))
    print()
    print(f"{'W7 targets (deliveries/s, medians)':44} " + " ".join(f"{'N=' + format(n, ','):>13}" for n in w7_sizes) + f" {'target':>7}  met")
    for ref, target, label in W7_TARGETS:
        ratios = []
        for n in w7_sizes:
            ours, other = median(f"W7-{n}", "ours", "deliveries_per_s"), median(f"W7-{n}", ref, "deliveries_per_s")
            ratios.append(ours / other if ours is not None and other else None)
        met = ""
        if target is not None and all(r is not None for r in ratios):
            met = "yes" if all(r >= target for r in ratios) else "NO"
        cells = " ".join(f"{fmt(r) if r is not None else '-':>13}" for r in ratios)
        print(f"{label:44} {cells} {('>=' + str(target)) if target else '':>7}  {met}".rstrip())

mc1, mc2 = median("MC", "ours-1", "msgs_per_s"), median("MC", "ours-2", "msgs_per_s")
if mc1 or mc2:
    print()
    print(f"MC: W2 with server and load generator sharing cpus 0,1: ours 1 thread {fmt(mc1)} msgs/s, 2 threads {fmt(mc2)} msgs/s")
if any(errors.values()):
    print()
    print("! = validation or connection errors in that cell:", {f"{w}/{s}": n for (w, s), n in errors.items() if n})
