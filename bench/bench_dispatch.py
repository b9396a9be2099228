"""Cost per message of the dispatch paths (median of several runs), vs a direct call.

    python bench/bench_dispatch.py [--n 100000] [--runs 9]

Rows: a bare direct call (baseline, same loop), ``Invoker.invoke``, ``InlineDispatcher.submit``,
``WorkerDispatcher`` (the reader's submit cost with the worker parked, and end-to-end
throughput incl. the thread hand-off: both threads share the GIL), ``QueueDispatcher``
(bursts of 100 submits, each followed by a drain), conflated queue submits, and the error path
of a raising callback (logging to a NullHandler, ``on_error`` a no-op).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
from time import perf_counter
from typing import Any, Callable, List, Tuple

from sixmm.dispatch import InlineDispatcher, Invoker, QueueDispatcher, WorkerDispatcher


def sink(msg: Any) -> None:
    """The user callback: as cheap as a callback can be."""


def measure_ns(fn: Callable[[int], float], n: int, runs: int) -> Tuple[float, float]:
    """(median, best) cost per message in ns over ``runs`` runs of ``n`` messages."""
    fn(min(n, 10000))  # warm-up
    times = [fn(n) / n * 1e9 for _ in range(runs)]
    return statistics.median(times), min(times)


def direct(n: int) -> float:
    msgs = range(n)
    cb = sink
    t0 = perf_counter()
    for m in msgs:
        cb(m)
    return perf_counter() - t0


def invoker_invoke(n: int) -> float:
    inv = Invoker()
    invoke = inv.invoke
    t0 = perf_counter()
    for m in range(n):
        invoke("t", sink, m)
    return perf_counter() - t0


def inline_submit(n: int) -> float:
    d = InlineDispatcher()
    d.start(Invoker())
    submit = d.submit
    cbs = [sink]
    t0 = perf_counter()
    for m in range(n):
        submit("c", "t", cbs, m)
    dt = perf_counter() - t0
    d.stop()
    return dt


def worker_submit_only(n: int) -> float:
    """Reader-side cost alone: the worker is parked in a callback, the queue never fills."""
    d = WorkerDispatcher(maxsize=n + 1)
    d.start(Invoker())
    parked, release = threading.Event(), threading.Event()

    def park(_: Any) -> None:
        parked.set()
        release.wait(120)

    d.submit("c", "park", [park], None)
    parked.wait(10)
    submit = d.submit
    cbs = [sink]
    t0 = perf_counter()
    for m in range(n):
        submit("c", "t", cbs, m)
    dt = perf_counter() - t0
    release.set()
    d.stop(timeout=60)
    return dt


def worker_end_to_end(n: int) -> float:
    """Submit n messages (default maxsize, block policy) until the last callback has run."""
    d = WorkerDispatcher()
    d.start(Invoker())
    done = threading.Event()
    last = n - 1

    def cb(m: int) -> None:
        if m == last:
            done.set()

    submit = d.submit
    cbs = [cb]
    t0 = perf_counter()
    for m in range(n):
        submit("c", "t", cbs, m)
    if not done.wait(120):
        raise RuntimeError("worker did not finish")
    dt = perf_counter() - t0
    d.stop()
    return dt


def queue_submit_drain(n: int) -> float:
    """Submit in bursts of 100, each followed by a drain() (a GUI pumping regularly)."""
    d = QueueDispatcher()
    d.start(Invoker())
    submit = d.submit
    drain = d.drain
    cbs = [sink]
    ran = 0
    t0 = perf_counter()
    for start in range(0, n, 100):
        for m in range(start, min(n, start + 100)):
            submit("c", "t", cbs, m)
        ran += drain()
    dt = perf_counter() - t0
    assert ran == n, ran
    d.stop()
    return dt


def queue_conflated_submit(n: int) -> float:
    d = QueueDispatcher(conflate=True)
    d.start(Invoker())
    submit = d.submit
    cbs = [sink]
    t0 = perf_counter()
    for m in range(n):
        submit("c", "ticker", cbs, m, True)
    dt = perf_counter() - t0
    assert d.drain() == 1
    d.stop()
    return dt


def error_path(n: int) -> float:
    inv = Invoker(lambda e: None)

    def bad(m: Any) -> None:
        raise ValueError(m)

    invoke = inv.invoke
    t0 = perf_counter()
    for m in range(n):
        invoke("t", bad, m)
    return perf_counter() - t0


def main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args(argv)
    logging.getLogger("sixmm").addHandler(logging.NullHandler())
    logging.getLogger("sixmm").propagate = False  # the error path: record creation, no I/O

    rows: List[Tuple[str, Callable[[int], float], int]] = [
        ("direct call (baseline)", direct, args.n),
        ("Invoker.invoke", invoker_invoke, args.n),
        ("InlineDispatcher.submit", inline_submit, args.n),
        ("WorkerDispatcher.submit (worker parked)", worker_submit_only, args.n),
        ("WorkerDispatcher end-to-end (2 threads)", worker_end_to_end, args.n),
        ("QueueDispatcher submit + drain/100", queue_submit_drain, args.n),
        ("QueueDispatcher conflated submit", queue_conflated_submit, args.n),
        ("Invoker error path (raise+log+report)", error_path, max(1000, args.n // 10)),
    ]
    print(
        f"python {sys.version.split()[0]}, n={args.n}, {args.runs} runs, 1 callback; "
        "ns per message (median / best run); 'over' = median minus the direct call's"
    )
    print(f"{'path':40} {'median':>8} {'best':>8} {'over':>8} {'msg/s (median)':>15}")
    base = 0.0
    for name, fn, n in rows:
        med, best = measure_ns(fn, n, args.runs)
        if fn is direct:
            base = med
        print(f"{name:40} {med:8.0f} {best:8.0f} {med - base:+8.0f} {1e9 / med:15,.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
