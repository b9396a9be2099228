"""Run every sixmm benchmark and print one table: ``python bench/run.py [--quick] [--runs N]``.

Starts the loopback sender (``bench/sender.py``) in its own process, then runs each client in a
fresh subprocess (``bench_stream.py`` for throughput, once per JSON backend and run;
``bench_latency.py``; ``bench_memory.py`` per topic count and run, plus one flat-memory run),
and the order-book figures of ``bench/bench_book.py`` in this process. Every figure is the
median over ``--runs`` runs; every throughput ratio is taken against L, the bare
websocket-client loop measured on the same stream in the same run and process.

Options: ``--quick`` (a smoke run, under a minute), ``--runs N`` (default 3), ``--long``
(the flat-memory run lasts 5 minutes instead of 20 s), ``--only stream,latency,...``,
``--save FILE`` (every raw row as JSON lines). See ``bench/README.md`` for what each figure
means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.sender import SenderProcess  # noqa: E402

Row = Dict[str, Any]
SECTIONS = ("stream", "parse", "book", "dispatch", "latency", "memory", "flat", "storm")


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine() -> Dict[str, str]:
    """CPU model, cores, Python, websocket-client, JSON backends."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import websocket

    try:
        import orjson

        orjson_version = orjson.__version__
    except ImportError:
        orjson_version = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "websocket-client": websocket.__version__,
        "orjson": orjson_version,
    }


def _client(script: str, args: Sequence[str], timeout: float) -> List[Row]:
    """Run ``bench/<script>`` in a fresh interpreter; return the JSON rows it printed."""
    cmd = [sys.executable, os.path.join(HERE, script), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"error": f"{script} timed out after {timeout:.0f}s", "script": script}]
    rows = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        rows.append({"error": f"{script} exited {proc.returncode}: {tail[0]}", "script": script})
    return rows


# -- collecting ----------------------------------------------------------------------------


def run_all(args: argparse.Namespace, log: Callable[[str], None]) -> List[Row]:
    rows: List[Row] = []
    quick, runs = args.quick, args.runs
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    with SenderProcess() as sender:
        port = str(sender.port)
        if "stream" in only:
            sizes = (
                ["--quick"]
                if quick
                else [
                    "--trades",
                    str(args.trades),
                    "--depth",
                    str(args.depth),
                    "--book",
                    str(args.book),
                ]
            )
            for run in range(runs):
                for backend in ("orjson", "json"):
                    log(f"throughput run {run + 1}/{runs} ({backend})")
                    rows += _client(
                        "bench_stream.py",
                        ["--port", port, "--json", backend, "--first-run", str(run), *sizes],
                        timeout=600,
                    )
        if "parse" in only:
            log("parse costs")
            rows += parse_rows(number=20_000 if quick else 100_000, runs=runs)
        if "book" in only:
            log("order book (bench_book)")
            try:
                rows += book_rows(frames=2_000 if quick else 10_000, runs=runs)
            except Exception as exc:  # e.g. a book bug: report it, go on
                rows.append({"bench": "book", "error": f"{type(exc).__name__}: {exc}"})
        if "dispatch" in only:
            log("dispatch paths (bench_dispatch)")
            try:
                rows += dispatch_rows(n=20_000 if quick else 100_000, runs=runs)
            except Exception as exc:
                rows.append({"bench": "dispatch", "error": f"{type(exc).__name__}: {exc}"})
        if "latency" in only:
            lsecs = "0.5" if quick else str(args.latency_secs)
            for run in range(runs):
                log(f"latency run {run + 1}/{runs}")
                rows += _client(
                    "bench_latency.py",
                    ["--port", port, "--secs", lsecs, "--first-run", str(run)],
                    timeout=600,
                )
        if "memory" in only:
            msecs = "1" if quick else "3"
            for topics in (1, 50, 500):
                for run in range(runs):
                    log(f"memory, {topics} topic(s), run {run + 1}/{runs}")
                    rows += _client(
                        "bench_memory.py",
                        [
                            "--port",
                            port,
                            "--topics",
                            str(topics),
                            "--secs",
                            msecs,
                            "--run",
                            str(run),
                        ],
                        timeout=300,
                    )
        if "storm" in only:
            log("resync storm and CPU at a realistic load (bench_storm)")
            storm_args = ["--quick"] if quick else []
            rows += _client("bench_storm.py", ["--runs", str(runs), *storm_args], timeout=1800)
        if "flat" in only:
            fsecs = 4.0 if quick else (300.0 if args.long else 20.0)
            log(f"flat memory over {fsecs:.0f} s")
            rows += _client(
                "bench_memory.py",
                [
                    "--port",
                    port,
                    "--flat",
                    "--topics",
                    "50",
                    "--rate",
                    "10000",
                    "--secs",
                    str(fsecs),
                ],
                timeout=fsecs * 3 + 120,
            )
    return rows


def parse_rows(number: int, runs: int) -> List[Row]:
    """µs per frame to parse the sender's own trade and depth payloads: stdlib ``json.loads``
    (of the text, as websocket-client hands it over), ``orjson.loads`` (of the bytes, as
    sixmm's reader hands it over), and sixmm's whole ``decode`` (frame -> ``Push``)."""
    import json as stdlib_json
    import timeit

    from bench.sender import TRADE_TOPIC, stream_bytes, trade_payload
    from sixmm.protocol.frames import decode

    depth = stream_bytes("depth", 2, 5000)
    depth = depth[depth.rindex(b'{"topic"') :]  # the last update frame's payload
    samples = {"trade": trade_payload(TRADE_TOPIC, 1_234_567), "depth": depth}
    parsers: List[Tuple[str, Callable[[bytes], Any]]] = [
        ("stdlib json.loads", lambda b: stdlib_json.loads(b.decode())),
        ("sixmm decode()", decode),
    ]
    try:
        import orjson

        parsers.insert(1, ("orjson.loads", orjson.loads))
    except ImportError:
        pass
    out: List[Row] = []
    for kind, payload in samples.items():
        for name, fn in parsers:
            best = min(
                timeit.repeat(lambda: fn(payload), number=number, repeat=max(3, runs))  # noqa: B023
            )
            out.append(
                {
                    "bench": "parse",
                    "figure": f"{kind} ({len(payload)} B): {name}",
                    "value": best / number * 1e6,
                }
            )
    return out


def book_rows(frames: int, runs: int) -> List[Row]:
    """Book apply rate and top(10) cost at 5,000 levels per side (bench/bench_book.py)."""
    from bench.bench_book import bench_levels

    r = bench_levels(5_000, frames, runs)
    return [
        {"bench": "book", "figure": "apply/s", "value": r["apply/s"]},
        {"bench": "book", "figure": "apply+top10/s", "value": r["apply+top10/s"]},
        {"bench": "book", "figure": "live apply+top10/s", "value": r["live apply+top10/s"]},
        {"bench": "book", "figure": "top10 us", "value": r["top10 us"]},
        {"bench": "book", "figure": "live top10 us", "value": r["live top10 us"]},
        {"bench": "book", "figure": "parse us", "value": r["parse us/frame"]},
    ]


def dispatch_rows(n: int, runs: int) -> List[Row]:
    """Cost per message of the dispatch paths, in-process (bench/bench_dispatch.py)."""
    from bench import bench_dispatch as bd

    out: List[Row] = []
    for name, fn in (
        ("direct call (baseline)", bd.direct),
        ("InlineDispatcher.submit", bd.inline_submit),
        ("WorkerDispatcher end to end (2 threads)", bd.worker_end_to_end),
        ("QueueDispatcher submit + drain every 100", bd.queue_submit_drain),
    ):
        median, _best = bd.measure_ns(fn, n, runs)
        out.append({"bench": "dispatch", "figure": name, "value": median / 1e3})
    return out


# -- the table -----------------------------------------------------------------------------


def _median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _num(x: Optional[float], unit: str = "") -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    if abs(x) >= 100:
        return f"{x:.0f}{unit}"
    return f"{x:.1f}{unit}"


_STREAM_NAMES = {
    "raw": "raw socket reader (sender ceiling)",
    "bare": "**L**: bare websocket-client `recv()` loop",
    "sixmm-inline": "sixmm, inline dispatcher",
    "sixmm-worker": "sixmm, worker dispatcher",
    "sixmm-queue": "sixmm, queue + drain thread",
    "peer-app": "peer pattern: `WebSocketApp` + `json.loads` + callback",
}
_TARGETS = {  # issue 16's targets (trades inline, depth into a live 5,000-level book)
    ("trade", "sixmm-inline", "json"): 1.0,
    ("trade", "sixmm-inline", "orjson"): 1.3,
    ("trade", "sixmm-worker", "json"): 0.6,
    ("trade", "sixmm-worker", "orjson"): 0.6,
    ("depth", "sixmm-inline", "json"): 0.5,
    ("depth", "sixmm-inline", "orjson"): 0.6,
    ("book", "sixmm-inline", "json"): 0.5,
    ("book", "sixmm-inline", "orjson"): 0.6,
}


def _cells(*cells: str) -> str:
    return "| " + " | ".join(list(cells) + [""] * (5 - len(cells))) + " |"


def _x(ratio: Optional[float]) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def table(rows: List[Row]) -> List[str]:
    """The markdown table of every figure (medians over runs)."""
    out = [
        _cells("figure", "median", "ratio to L", "ratio to L (CPU time)", "target"),
        "|---|---:|---:|---:|---|",
    ]
    stream = [r for r in rows if r.get("bench") == "stream" and "rate" in r]
    for kind, title in (
        ("trade", "trades (~200 B)"),
        ("depth", "depth, 20 changes (~600 B), into a live 5,000-level book"),
        (
            "book",
            "whole-book depth (issue 16): 10+10 changes, per side 1 removal, 1 new level, "
            "8 quantity changes, 70% in the top 10% of 5,000 levels",
        ),
    ):
        sel = [r for r in stream if r["kind"] == kind]
        if not sel:
            continue
        out.append(_cells(f"***{title}***, msgs/s, {sel[0]['n']:,} msgs per figure"))
        for figure in ("raw", "bare"):
            vals = [r for r in sel if r["figure"] == figure]
            cpu = _median([r["cpu_rate"] for r in vals if "cpu_rate" in r])
            name = _STREAM_NAMES[figure]
            if figure == "raw":
                bad = [r for r in vals if not r.get("valid", True)]
                name += f" -- ⚠ INVALID: < 20x L in {len(bad)} run(s)" if bad else ", ≥ 20x L ✅"
            out.append(
                _cells(
                    name,
                    _num(_median([r["rate"] for r in vals])),
                    _x(_median([r["ratio"] for r in vals])),
                    "" if cpu is None else f"({_num(cpu)} msgs/CPU-s)",
                )
            )
        for figure in ("sixmm-inline", "sixmm-worker", "sixmm-queue", "peer-app"):
            for backend in ("json", "orjson"):
                vals = [r for r in sel if r["figure"] == figure and r["backend"] == backend]
                if figure == "peer-app":  # independent of sixmm's backend: one row
                    if backend == "orjson":
                        continue
                    vals = [r for r in sel if r["figure"] == figure]
                if not vals:
                    continue
                ratio = _median([r["ratio"] for r in vals])
                target = _TARGETS.get((kind, figure, backend))
                verdict = ""
                if target is not None and ratio is not None:
                    verdict = f"≥ {target}x {'✅' if ratio >= target else '❌'}"
                json_name = "stdlib json" if backend == "json" else "orjson"
                label = _STREAM_NAMES[figure]
                if figure != "peer-app":
                    label += f", {json_name}"
                out.append(
                    _cells(
                        label,
                        _num(_median([r["rate"] for r in vals])),
                        _x(ratio),
                        _x(_median([r["cpu_ratio"] for r in vals])),
                        verdict,
                    )
                )
    parse = [r for r in rows if r.get("bench") == "parse"]
    if parse:
        out.append(_cells("***parse cost per frame*** (best of the runs, no I/O)"))
        for r in parse:
            out.append(_cells(r["figure"], f"{r['value']:.2f} µs"))
    book = [r for r in rows if r.get("bench") == "book" and "value" in r]
    if book:
        out.append(_cells("***order book, 5,000 levels per side*** (bench_book.py)"))
        names = {
            "apply/s": ("BookState apply, updates/s", ""),
            "apply+top10/s": ("BookState apply + top(10), updates/s", ""),
            "live apply+top10/s": ("OrderBook (locked) apply + top(10), updates/s", ""),
            "top10 us": ("top(10) alone", " µs"),
            "live top10 us": ("OrderBook.top(10)", " µs"),
            "parse us": ("parse_depth per frame", " µs"),
        }
        for r in book:
            label, unit = names[r["figure"]]
            out.append(_cells(label, _num(r["value"], unit)))
    disp = [r for r in rows if r.get("bench") == "dispatch" and "value" in r]
    if disp:
        out.append(_cells("***dispatch, per message*** (bench_dispatch.py, no I/O)"))
        for r in disp:
            out.append(_cells(r["figure"], f"{r['value']:.2f} µs"))
    lat = [r for r in rows if r.get("bench") == "latency" and "p50" in r]
    for rate in sorted({r["rate"] for r in lat}):
        out.append(
            _cells(
                f"***callback latency at {rate:,} msgs/s***, sender stamp -> callback",
                "p50 / p99 µs",
                "p50 vs the bare loop",
            )
        )
        for figure, label in (
            ("bare", "bare websocket-client loop (the floor)"),
            ("sixmm-inline", "sixmm, inline"),
            ("sixmm-worker", "sixmm, worker"),
        ):
            vals = [r for r in lat if r["rate"] == rate and r["figure"] == figure]
            if not vals:
                continue
            p50 = _median([r["p50"] for r in vals])
            p99 = _median([r["p99"] for r in vals])
            d50 = _median([r["d50"] for r in vals if "d50" in r])
            verdict = ""
            if rate == 1000 and figure == "sixmm-inline" and d50 is not None:
                verdict = f"≤ +20 µs {'✅' if d50 <= 20 else '❌'}"
            delta = "" if d50 is None else f"{d50:+.0f} µs"
            out.append(_cells(label, f"{_num(p50)} / {_num(p99)}", delta, "", verdict))
    mem = [r for r in rows if r.get("bench") == "memory" and "rss" in r]
    if mem:
        out.append(
            _cells(
                f"***memory and CPU***, trades at {mem[0]['rate']:,} msgs/s over all topics",
                "RSS MiB (+ over import)",
                "tracemalloc KiB",
                "CPU % of a core (µs/msg)",
            )
        )
        for topics in sorted({r["topics"] for r in mem}):
            vals = [r for r in mem if r["topics"] == topics]
            rss = _median([r["rss"] for r in vals])
            grow = _median([r["rss"] - r["rss_base"] for r in vals]) or 0.0
            cpu = _median([r["cpu_pct"] for r in vals]) or 0.0
            cpu_us = _median([r["cpu_us"] for r in vals]) or 0.0
            conns = vals[0].get("connections")
            out.append(
                _cells(
                    f"{topics} topic(s), {conns} connection(s)",
                    f"{_num(rss)} (+{grow:.1f})",
                    _num(_median([r["traced_kb"] for r in vals])),
                    f"{cpu:.0f}% ({cpu_us:.1f})",
                )
            )
        bare = [r for r in mem if "bare_cpu_pct" in r]
        if bare:
            cpu = _median([r["bare_cpu_pct"] for r in bare]) or 0.0
            cpu_us = _median([r["bare_cpu_us"] for r in bare]) or 0.0
            out.append(
                _cells(
                    "bare websocket-client loop, same stream, 1 topic",
                    "",
                    "",
                    f"{cpu:.0f}% ({cpu_us:.1f})",
                )
            )
    for r in rows:
        if r.get("bench") == "flat" and "rss_end" in r:
            out.append(
                _cells(
                    f"***memory over {r['secs']:.0f} s***, {r['topics']} topics, "
                    f"{r['rate']:,} msgs/s, {r['n']:,} msgs: from 40% of the run to its end",
                    f"RSS {r['rss_q1']:.1f} -> {r['rss_end']:.1f} MiB",
                    f"{r['rss_growth_mb']:+.2f} MiB",
                    f"gc objects {r['objects_q1']:,} -> {r['objects_end']:,}",
                )
            )
    storm = [r for r in rows if r.get("bench") == "storm" and "resync_s" in r]
    if storm:
        s0 = storm[0]
        out.append(
            _cells(
                f"***resync storm***: {s0['symbols']} symbols x {s0['levels']:,} levels per side, "
                "one manager, every connection dropped",
                "median (worst) of the runs",
            )
        )
        out.append(
            _cells(
                "time until every book is synced again",
                f"{_median([r['resync_s'] for r in storm]):.2f} s "
                f"({max(r['resync_s'] for r in storm):.2f} s)",
            )
        )
        by_interval: Dict[float, List[Dict[str, Any]]] = {}
        for r in storm:
            by_interval.setdefault(round(r.get("switch_interval_ms", 5.0), 3), []).append(r)
        for interval in sorted(by_interval, reverse=True):
            group = by_interval[interval]
            worst = max(r["worst_tick_ms"] for r in group)
            who = (
                "CPython's default"
                if interval == 5.0
                else "as `sixmm.gui`'s pumps set it"
                if interval == 1.0
                else "set by hand"
            )
            out.append(
                _cells(
                    "worst delay of a 10 ms main-thread tick (whole run), thread switch "
                    f"interval {interval:g} ms ({who})",
                    f"{_median([r['worst_tick_ms'] for r in group]):.0f} ms ({worst:.0f} ms)",
                    "",
                    "",
                    f"≤ 20 ms {'✅' if worst <= 20 else '❌'}",
                )
            )
        probed = [r for r in storm if r.get("worst_gil_gap_ms") is not None]
        if probed:  # bench_storm.py --gil-probe
            out.append(
                _cells(
                    "longest gap of a 1 ms probe thread (~longest GIL hold + scheduling)",
                    f"{_median([r['worst_gil_gap_ms'] for r in probed]):.0f} ms "
                    f"({max(r['worst_gil_gap_ms'] for r in probed):.0f} ms)",
                    "process CPU during it: "
                    f"{_median([r.get('worst_gil_gap_cpu_ms') or 0.0 for r in probed]):.0f} ms",
                )
            )
        out.append(
            _cells(
                "longest cyclic-GC collection, wall (CPU)",
                f"{_median([r['worst_gc_ms'] for r in storm]):.0f} ms "
                f"({_median([r['worst_gc_cpu_ms'] for r in storm]):.0f} ms CPU)",
            )
        )
    cpu_rows = [r for r in rows if r.get("bench") == "cpu" and "cpu_pct" in r]
    if cpu_rows:
        c0 = cpu_rows[0]
        out.append(
            _cells(
                f"***CPU at a realistic load***: {c0['symbols']} symbols, depth 10/s + trades "
                "5/s + ticker 1/s each",
                "% of one core",
                "CPU µs per message",
                "msgs/s",
            )
        )
        names = {
            "peer": "peer pattern: `WebSocketApp` + `json.loads` + dict books sorted on read",
            "inline": "sixmm, inline dispatcher",
            "worker": "sixmm, worker dispatcher",
            "queue": "sixmm, queue + drain thread",
        }
        for who, label in names.items():
            vals = [r for r in cpu_rows if r["who"] == who]
            if vals:
                out.append(
                    _cells(
                        label,
                        f"{_median([r['cpu_pct'] for r in vals]):.1f}%",
                        f"{_median([r['cpu_us_per_msg'] for r in vals]):.1f}",
                        _num(_median([r["msgs_per_s"] for r in vals])),
                    )
                )
    for e in (r for r in rows if "error" in r):
        where = f"{e.get('bench', e.get('script', '?'))} {e.get('figure', '')}"
        out.append(_cells(f"⚠ {where} failed", e["error"][:120]))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (< 60 s)")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--long", action="store_true", help="5-minute flat-memory run")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--trades", type=int, default=60_000, help="trades per figure")
    parser.add_argument("--depth", type=int, default=20_000, help="depth updates per figure")
    parser.add_argument(
        "--book", type=int, default=20_000, help="whole-book depth updates per figure"
    )
    parser.add_argument(
        "--latency-secs", type=float, default=2.0, help="seconds per latency figure"
    )
    parser.add_argument("--save", default="", help="write every raw row to this JSON-lines file")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    t0 = time.monotonic()
    load_before = _loadavg()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    info = machine()
    rows = run_all(args, log)
    if args.save:
        with open(args.save, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    cmd = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"`{cmd.strip()}` -- median of {args.runs} run(s), {time.monotonic() - t0:.0f} s\n")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; {info['python']}; "
        f"websocket-client {info['websocket-client']}; orjson {info['orjson']}; {info['os']}"
    )
    print(f"load average (1/5/15 min): {load_before} before, {_loadavg()} after\n")
    print("\n".join(table(rows)))
    wrong = [r for r in rows if "WRONG BOOK" in str(r.get("error", ""))]
    if wrong:
        print(f"\nFAILED: {len(wrong)} figure(s) ended with a wrong book", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
