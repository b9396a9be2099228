"""Memory and CPU of a sixmm client with 1, 50 or 500 subscribed trade topics, and whether
memory stays flat over a long run.

Run one measurement per process (``bench/run.py`` does this), e.g.
``python bench/bench_memory.py --topics 500 --rate 5000 --secs 4`` or
``python bench/bench_memory.py --flat --topics 50 --secs 20``. Starts its own sender unless
``--port`` is given. Prints one JSON object.

Topics mode, in one fresh process:

1. ``rss_base``: RSS after ``import sixmm`` (and websocket-client), before any manager;
2. a ``StreamManager`` subscribes ``topics`` trade topics (the default 100 topics per
   connection: 500 topics are 5 connections) and receives ``rate`` msgs/s spread over them for
   ``secs``: ``rss`` is the RSS at the end (still streaming), ``cpu_pct`` the process CPU time
   (every thread) over the wall time of the stream, ``cpu_us`` the CPU per message;
3. the manager is stopped; ``tracemalloc`` is started and a second identical manager runs the
   same stream: ``traced_kb`` is what is allocated and still alive at the end (the manager,
   routes, buffers, statistics), ``traced_peak_kb`` the peak.

Flat mode samples RSS and ``len(gc.get_objects())`` every second of a ``secs`` run (no
tracemalloc) and reports their growth from 40% of the run to its end (the first 40% is
warm-up: per-topic statistics rings, caches and buffers reach their steady size).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_stream import force_stdlib_json
from bench.sender import SenderProcess, trade_topic_of, url_for

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux /proc; 0.0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return 0.0


class _Count:
    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first_wall = 0.0
        self.first_cpu = 0.0
        self.done = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, _trade: Any) -> None:
        with self.lock:  # several connections call in on their own threads
            self.count += 1
            if self.count == 1:
                self.first_wall = time.perf_counter()
                self.first_cpu = time.process_time()
            if self.count >= self.n:
                self.done.set()


def _stream(port: int, topics: int, rate: int, secs: float, on_done: Any = None) -> Dict[str, Any]:
    import sixmm

    n = max(topics, int(rate * secs))
    url = url_for(port, kind="trade", n=n, rate=rate, topics=topics)
    counter = _Count(n)
    errors: List[BaseException] = []
    streams = sixmm.StreamManager(url, on_error=errors.append)
    for i in range(topics):
        streams.trades(trade_topic_of(i, topics).rsplit(".", 1)[-1], counter)
    with streams:
        if not counter.done.wait(secs * 3 + 30):
            raise RuntimeError(f"only {counter.count} of {n} trades; errors: {errors[:3]}")
        wall = time.perf_counter() - counter.first_wall
        cpu = time.process_time() - counter.first_cpu
        out: Dict[str, Any] = {"n": n, "connections": len(streams.stats()["connections"])}
        out.update(cpu_pct=100 * cpu / wall, cpu_us=cpu / n * 1e6, rss=rss_mb())
        if on_done is not None:
            out.update(on_done())
    if errors:
        raise RuntimeError(f"sixmm reported errors: {errors[:3]}")
    return out


def bare_cpu(port: int, rate: int, secs: float) -> Dict[str, float]:
    """CPU of websocket-client's bare ``recv()`` loop on the same paced stream (1 topic)."""
    import websocket

    n = max(2, int(rate * secs))
    ws = websocket.create_connection(
        url_for(port, kind="trade", n=n, rate=rate, topics=1), skip_utf8_validation=True
    )
    try:
        ws.send(json.dumps({"id": "1", "op": "subscribe", "args": [trade_topic_of(0, 1)]}))
        ws.recv()  # the ack
        ws.recv()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n - 1):
            ws.recv()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        ws.close()
    return {"bare_cpu_pct": 100 * cpu / wall, "bare_cpu_us": cpu / (n - 1) * 1e6}


def topics_mode(port: int, topics: int, rate: int, secs: float) -> Dict[str, Any]:
    import websocket  # noqa: F401

    import sixmm  # noqa: F401  (the baseline includes the library)

    gc.collect()
    base = rss_mb()
    out: Dict[str, Any] = {"bench": "memory", "topics": topics, "rate": rate, "rss_base": base}
    out.update(_stream(port, topics, rate, secs))
    if topics == 1:
        out.update(bare_cpu(port, rate, secs))
    tracemalloc.start()

    def traced() -> Dict[str, float]:
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        return {"traced_kb": current / 1024, "traced_peak_kb": peak / 1024}

    out.update(
        {k: v for k, v in _stream(port, topics, rate, secs, traced).items() if "traced" in k}
    )
    tracemalloc.stop()
    return out


def flat_mode(port: int, topics: int, rate: int, secs: float) -> Dict[str, Any]:
    samples: List[Tuple[float, float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.wait(1.0):
            samples.append((time.perf_counter() - t0, rss_mb(), len(gc.get_objects())))

    sampler = threading.Thread(target=sample, name="bench-sampler", daemon=True)
    sampler.start()
    try:
        res = _stream(port, topics, rate, secs)
    finally:
        stop.set()
        sampler.join(5)
    q = samples[max(0, len(samples) * 2 // 5 - 1)] if samples else (0.0, 0.0, 0)
    last = samples[-1] if samples else (0.0, 0.0, 0)
    span_min = max(1e-9, (last[0] - q[0]) / 60)
    return {
        "bench": "flat",
        "topics": topics,
        "rate": rate,
        "secs": secs,
        "n": res["n"],
        "rss_q1": q[1],
        "rss_end": last[1],
        "rss_growth_mb": last[1] - q[1],
        "rss_mb_per_min": (last[1] - q[1]) / span_min,
        "objects_q1": q[2],
        "objects_end": last[2],
        "cpu_pct": res["cpu_pct"],
        "samples": len(samples),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="a running bench/sender.py")
    parser.add_argument("--json", choices=("orjson", "json"), default="orjson")
    parser.add_argument("--topics", type=int, default=1)
    parser.add_argument("--rate", type=int, default=5000, help="msgs/s over all topics")
    parser.add_argument("--secs", type=float, default=4.0)
    parser.add_argument("--flat", action="store_true", help="sample RSS over a long run")
    parser.add_argument("--run", type=int, default=0)
    args = parser.parse_args(argv)
    if args.json == "json":
        force_stdlib_json()
    sender = None if args.port else SenderProcess()
    port = args.port or (sender.port if sender else 0)
    try:
        mode = flat_mode if args.flat else topics_mode
        try:
            row = mode(port, args.topics, args.rate, args.secs)
        except Exception as exc:
            row = {"bench": "flat" if args.flat else "memory", "topics": args.topics}
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["run"] = args.run
        print(json.dumps(row), flush=True)
    finally:
        if sender is not None:
            sender.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
