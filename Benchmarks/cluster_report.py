#!/usr/bin/env python3
"""Prints the table of a cluster.sh results file (medians over the repetitions): cross-node
throughput and latency through WebSocketPostgresBroker, PostgreSQL's own ceiling measured with
pgbench, the ratios, and the CPU a node spends per message of a topic it has no subscriber for."""
import statistics
import sys
from collections import defaultdict


def parse(path):
    runs = []
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 4:
            continue
        kind, fsync, rep = parts[0], parts[1], parts[2]
        fields = {}
        for part in parts[3:]:
            for item in part.split():
                if "=" in item:
                    key, value = item.split("=", 1)
                    fields[key] = value
        runs.append((kind, fsync, rep, fields))
    return runs


def num(fields, key):
    try:
        return float(fields[key])
    except (KeyError, ValueError):
        return None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def main(path):
    runs = parse(path)
    by = defaultdict(list)
    for kind, fsync, rep, fields in runs:
        by[(kind, fsync)].append(fields)
    fsyncs = sorted({f for _, f, _, _ in runs}, key=lambda f: 0 if f == "on" else 1)
    out = []

    def row(label, values):
        out.append(f"{label:<58}" + "".join(f"{v:>16}" for v in values))

    out.append(f"{'cluster: node A publishes, node B delivers (100 subscribers), 64 B binary':<58}" + "".join(f"{'fsync=' + f:>16}" for f in fsyncs))
    out.append("-" * (58 + 16 * len(fsyncs)))
    derived = {}
    for kind, title in (("TPUT", "max sustained"), ("LAT", "fixed 1,000/s")):
        if not any(by[(kind, f)] for f in fsyncs):
            continue
        def m(key, f):
            return med(num(x, key) for x in by[(kind, f)])
        def mean_batch(f):
            return med((num(x, "rows_inserted") or 0) / num(x, "publish_calls") if num(x, "publish_calls") else None for x in by[(kind, f)])
        row(f"{kind} {title}: runs", [str(len(by[(kind, f)])) for f in fsyncs])
        row(f"{kind} publications/s reaching all {int(m('conns', fsyncs[0]) or 100)} subscribers", [fmt(m("pubs_per_s", f)) for f in fsyncs])
        row(f"{kind} deliveries/s (all subscribers)", [fmt(m("deliveries_per_s", f)) for f in fsyncs])
        row(f"{kind} publish rate at node A (/s)", [fmt(m("publish_rate", f)) for f in fsyncs])
        row(f"{kind} latency publish -> subscriber p50 (us)", [fmt(m("p50_us", f)) for f in fsyncs])
        row(f"{kind} latency p99 (us)", [fmt(m("p99_us", f)) for f in fsyncs])
        row(f"{kind} latency p99.9 (us)", [fmt(m("p999_us", f)) for f in fsyncs])
        row(f"{kind} latency max (us)", [fmt(m("max_us", f)) for f in fsyncs])
        row(f"{kind} rows per publish call (mean batch)", [fmt(mean_batch(f), 1) for f in fsyncs])
        row(f"{kind} CPU node A (% of a core)", [fmt(m("cpu_a_pct", f)) for f in fsyncs])
        row(f"{kind} CPU node B (% of a core)", [fmt(m("cpu_b_pct", f)) for f in fsyncs])
        row(f"{kind} CPU PostgreSQL, all processes (% of a core)", [fmt(m("cpu_pg_pct", f)) for f in fsyncs])
        row(f"{kind} CPU load generator (% of a core)", [fmt(m("loadgen_cpu_pct", f)) for f in fsyncs])
        per = {}
        for f in fsyncs:
            vals = []
            for x in by[(kind, f)]:
                pubs = (num(x, "pubs_per_s") or 0) * (num(x, "window_s") or 0)
                if pubs:
                    vals.append(tuple(1e6 * (num(x, k) or 0) / pubs for k in ("cpu_a_s", "cpu_b_s", "cpu_pg_s")))
            per[f] = [med(v[i] for v in vals) if vals else None for i in range(3)]
        row(f"{kind} CPU us per publication: A / B / PostgreSQL", ["/".join(fmt(v, 1) for v in per[f]) for f in fsyncs])
        row(f"{kind} errors, skipped (runs with any)", [str(sum(1 for x in by[(kind, f)] if (num(x, "errors") or 0) or (num(x, "b_skipped") or 0) or (num(x, "refused") or 0))) for f in fsyncs])
        row(f"{kind} load average before (1 min, median)", [fmt(m("loadavg", f), 2) for f in fsyncs])
        derived[kind] = {f: (m("pubs_per_s", f), mean_batch(f), m("p99_us", f)) for f in fsyncs}
        out.append("")

    # pgbench
    pg = defaultdict(list)
    for kind, fsync, rep, fields in runs:
        if kind == "PGBENCH":
            pg[(fsync, fields["script"], int(fields["batch"]), int(fields["clients"]))].append(num(fields, "rows_per_s"))
    if pg:
        keys = sorted({(s, b) for (_, s, b, _) in pg}, key=lambda k: (k[0] != "publish-batch", k[1]))
        clients = sorted({c for (_, _, _, c) in pg})
        out.append(f"{'pgbench (rows/s stored and NOTIFYed; no listener)':<58}" + "".join(f"{'fsync=' + f:>16}" for f in fsyncs))
        out.append("-" * (58 + 16 * len(fsyncs)))
        ceilings = {}
        for script, batch in keys:
            for c in clients:
                label = f"{'publish function, batch ' + str(batch) if script == 'publish-batch' else 'INSERT 1 row + NOTIFY'}, {c} client{'s' if c > 1 else ''}"
                row(label, [fmt(med(pg.get((f, script, batch, c), []))) for f in fsyncs])
                for f in fsyncs:
                    v = med(pg.get((f, script, batch, c), []))
                    if v is not None:
                        ceilings.setdefault((f, script, batch), []).append((v, c))
        out.append("")
        out.append(f"{'ratios (ours / PostgreSQL ceiling)':<58}" + "".join(f"{'fsync=' + f:>16}" for f in fsyncs))
        out.append("-" * (58 + 16 * len(fsyncs)))
        best_batch = {f: max((max(v for v, _ in vs), b) for (ff, s, b), vs in ceilings.items() if ff == f and s == "publish-batch") for f in fsyncs if any(ff == f for (ff, _, _) in ceilings)}
        row("best pgbench ceiling, publish function (rows/s @ batch)", [f"{fmt(best_batch[f][0])}@{best_batch[f][1]}" if f in best_batch else "-" for f in fsyncs])
        single = {f: max((v for v, _ in ceilings.get((f, "insert-notify", 1), [])), default=None) for f in fsyncs}
        row("best pgbench ceiling, INSERT 1 row + NOTIFY (rows/s)", [fmt(single[f]) for f in fsyncs])
        if "TPUT" in derived:
            def nearest(f, batch):
                if batch is None:
                    return None
                options = [(abs(b - batch), b) for (ff, s, b) in ceilings if ff == f and s == "publish-batch"]
                if not options:
                    return None
                b = min(options)[1]
                return b, max(v for v, c in ceilings[(f, "publish-batch", b)] if c == 1) if any(c == 1 for _, c in ceilings[(f, "publish-batch", b)]) else None
            row("TPUT / best publish-function ceiling", [fmt(derived["TPUT"][f][0] / best_batch[f][0], 2) if derived["TPUT"][f][0] and f in best_batch else "-" for f in fsyncs])
            cells = []
            for f in fsyncs:
                n = nearest(f, derived["TPUT"][f][1])
                cells.append(f"{fmt(derived['TPUT'][f][0] / n[1], 2)} (b{n[0]})" if n and n[1] and derived["TPUT"][f][0] else "-")
            row("TPUT / 1-client ceiling at the nearest batch size", cells)
            row("TPUT / INSERT+NOTIFY ceiling", [fmt(derived["TPUT"][f][0] / single[f], 2) if derived["TPUT"][f][0] and single[f] else "-" for f in fsyncs])
        out.append("")

    # FILTER
    if any(by[("FILTER", f)] for f in fsyncs):
        out.append(f"{'filter on arrival: CPU us per publication (less idle)':<58}" + "".join(f"{'fsync=' + f:>16}" for f in fsyncs))
        out.append("-" * (58 + 16 * len(fsyncs)))
        labels = [("c", "node C, no subscriber (filter on arrival)"), ("d", "node D, 1 subscriber of the topic"),
                  ("e", "node E, other channel (= LISTEN per topic)"),
                  ("cpg", "node C's PostgreSQL backends"), ("dpg", "node D's PostgreSQL backends"),
                  ("epg", "node E's PostgreSQL backends")]
        row("FILTER runs / publication rate", [f"{len(by[('FILTER', f)])} @ {fmt(med(num(x, 'rate') for x in by[('FILTER', f)]))}/s" for f in fsyncs])
        for key, label in labels:
            cells = []
            for f in fsyncs:
                vals = []
                for x in by[("FILTER", f)]:
                    pubs = num(x, "deliveries")
                    window = num(x, "window_s")
                    busy = num(x, f"cpu_{key}_s")
                    idle = num(x, f"idle_{key}_s")
                    idle_s = num(x, "idle_s")
                    if pubs and window and busy is not None and idle is not None and idle_s:
                        vals.append(1e6 * (busy - idle * window / idle_s) / pubs)
                cells.append(fmt(med(vals), 1))
            row(label, cells)
        cells = []
        for f in fsyncs:
            cells.append(fmt(med(num(x, "p99_us") for x in by[("FILTER", f)])))
        row("node D's subscriber: latency p99 (us)", cells)
        out.append("(CPU from /proc/PID/stat, 10 ms ticks: over a 10 s window at 1,000/s one tick is 1 us per publication)")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results.tsv")
