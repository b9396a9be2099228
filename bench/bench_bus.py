"""The Redis bus end to end against the direct path, in the same run.

Run: ``python bench/bench_bus.py [--trades N] [--depth N] [--rate 1000] [--secs 10]
[--memory-secs 300] [--quick]``. Starts its own loopback sender (``bench/sender.py``) and its
own ``redis-server`` (127.0.0.1, a free port, no persistence). Prints one JSON object per
figure on stdout.

Figures:

- ``throughput``: messages/s at the user's callback, measured from the 10th percent of the
  stream to its end. ``direct``: ``StreamManager(url)`` as in ``bench_stream.py``;
  ``bus``: sender -> ``Bridge`` (its own manager, bounded queue, writer thread, pipelined
  fenced ``XADD``) -> Redis -> ``StreamManager.from_redis`` (``XREAD BLOCK``, entry decode,
  the same models/book) -> callback. Trades: one callback per trade; depth: one
  ``on_update(book)`` per applied update of a 5,000-level book (snapshot entry + increments).
  ``bus``: the bridge and the consumer in this one process (one GIL); ``bus_2proc``: the
  bridge as ``python -m sixmm bridge`` in its own process, as deployed.
- ``latency``: sender stamp -> user callback at ``--rate`` msgs/s (p50/p99, microseconds),
  bus and direct.
- ``reply_parser``: ``hiredis`` when the ``hiredis`` package is installed (redis-py then
  parses replies in C: the consumer's XREAD replies cost about 2.5x less), ``python``
  with ``--no-hiredis``.
- ``memory``: Redis ``used_memory`` and stream lengths sampled over ``--memory-secs`` while a
  bridge publishes ``--rate`` trades/s with ``MAXLEN ~ 10000``: start, peak, end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_latency import percentiles, sixmm_latency
from bench.bench_stream import WARM, Counter, Rates, sixmm_stream
from bench.sender import SYMBOL, SenderProcess, url_for
from tests.redisserver import RedisServer

TIMEOUT = 300.0


def bus_stream_process(port: int, redis_url: str, kind: str, n: int) -> Rates:
    """Messages/s at a bus consumer's callback, the bridge in its own process
    (``python -m sixmm bridge``): each side has its own GIL, as in production."""
    import subprocess

    import sixmm

    total = n + 1 if kind == "depth" else n
    counter = Counter(total, total - (n - int(n * WARM)))
    prefix = f"benchp{time.monotonic_ns()}"
    consumer = sixmm.StreamManager.from_redis(redis_url, prefix=prefix)
    topic = f"market.{kind}.{SYMBOL}"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with consumer:
        if kind == "trade":
            consumer.trades(SYMBOL, counter).wait_ready(30)
        else:
            consumer.order_book(SYMBOL, on_update=counter)
            consumer._routes[topic].ready.wait(30)
        size = str(max(10_000, n + 10))
        proc = subprocess.Popen(
            [sys.executable, "-m", "sixmm", "bridge", topic, "--redis", redis_url,
             "--url", url_for(port, kind=kind, n=n), "--prefix", prefix, "--maxlen", size,
             "--queue-size", size],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            if not counter.done.wait(TIMEOUT):
                raise RuntimeError(f"only {counter.count} of {total}")
        finally:
            proc.terminate()
            proc.wait(30)
    return counter.rates()


def bus_stream(port: int, redis_url: str, kind: str, n: int) -> Tuple[Rates, Dict[str, Any]]:
    """Messages/s at a bus consumer's callback, bridge and consumer in this one process;
    and the bridge's counters."""
    import sixmm
    from sixmm.bus import Bridge

    total = n + 1 if kind == "depth" else n
    counter = Counter(total, total - (n - int(n * WARM)))
    errors: List[BaseException] = []
    prefix = f"bench{time.monotonic_ns()}"  # fresh streams per run
    consumer = sixmm.StreamManager.from_redis(redis_url, on_error=errors.append, prefix=prefix)
    topic = f"market.{kind}.{SYMBOL}"
    with consumer:
        if kind == "trade":
            consumer.trades(SYMBOL, counter).wait_ready(30)
        else:
            consumer.order_book(SYMBOL, on_update=counter)
            consumer._routes[topic].ready.wait(30)  # bench only: the stream is positioned
        bridge = Bridge(
            [topic],
            redis_url,
            url=url_for(port, kind=kind, n=n),
            prefix=prefix,
            queue_size=max(10_000, n + 10),
            maxlen=max(10_000, n + 10),
            on_error=errors.append,
        )
        with bridge:
            if not counter.done.wait(TIMEOUT):
                raise RuntimeError(f"only {counter.count} of {total}; errors: {errors[:3]}")
            stats = bridge.stats()["bus"]
    return counter.rates(), {"dropped": stats["dropped"], "batches": stats["batches"]}


def bus_latency(
    port: int, redis_url: str, rate: int, n: int
) -> Tuple[float, float, Dict[str, Any]]:
    """Sender stamp -> bus consumer callback (p50, p99 in us) at ``rate`` msgs/s."""
    import sixmm
    from sixmm.bus import Bridge

    out: List[int] = []
    done = threading.Event()
    now = time.monotonic_ns

    def on_trade(trade: Any) -> None:
        out.append(now() - int(trade.raw["sent"]))
        if len(out) >= n:
            done.set()

    prefix = f"benchlat{time.monotonic_ns()}"
    consumer = sixmm.StreamManager.from_redis(redis_url, prefix=prefix)
    with consumer:
        consumer.trades(SYMBOL, on_trade).wait_ready(30)
        bridge = Bridge(
            [f"market.trade.{SYMBOL}"],
            redis_url,
            url=url_for(port, kind="trade", n=n, rate=rate),
            prefix=prefix,
        )
        with bridge:
            if not done.wait(n / rate * 3 + 30):
                raise RuntimeError(f"only {len(out)} of {n} trades")
        lag = consumer.stats()["bus"]["topics"][f"market.trade.{SYMBOL}"]
    p50, p99 = percentiles(out)
    return p50, p99, {"bridge_to_consumer_p50_ms": lag["lag_p50_ms"], "p99_ms": lag["lag_p99_ms"]}


def memory_run(
    port: int, server: RedisServer, rate: int, secs: float, emit: Callable[[Dict[str, Any]], None]
) -> None:
    """Redis memory while a bridge publishes ``rate`` trades/s for ``secs`` (MAXLEN ~ 10000)."""
    from sixmm.bus import Bridge

    n = int(rate * (secs + 30))
    client = server.client()
    key = f"benchmem:stream:market.trade.{SYMBOL}"
    samples: List[Tuple[float, int, int]] = []
    bridge = Bridge(
        [f"market.trade.{SYMBOL}"],
        server.url,
        url=url_for(port, kind="trade", n=n, rate=rate),
        prefix="benchmem",
        maxlen=10_000,
    )
    with bridge:
        t0 = time.monotonic()
        while time.monotonic() - t0 < secs:
            time.sleep(min(5.0, secs / 20))
            samples.append((time.monotonic() - t0, server.used_memory(), client.xlen(key)))
        published = bridge.stats()["bus"]["published"]
    full = [s for s in samples if s[2] >= 10_000] or samples
    emit(
        {
            "bench": "bus",
            "figure": "memory",
            "rate": rate,
            "secs": secs,
            "published": published,
            "used_memory_first_full": full[0][1],
            "used_memory_peak": max(s[1] for s in samples),
            "used_memory_end": samples[-1][1],
            "xlen_max": max(s[2] for s in samples),
            "samples": [(round(t, 1), m, x) for t, m, x in samples],
        }
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--secs", type=float, default=10.0, help="latency run length")
    parser.add_argument("--memory-secs", type=float, default=0.0, help="0: skip (300: 5 min)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny streams (smoke test)")
    parser.add_argument(
        "--no-hiredis", action="store_true", help="redis-py's pure-Python reply parser"
    )
    args = parser.parse_args(argv)
    if args.no_hiredis:
        if "redis" in sys.modules:
            raise RuntimeError("--no-hiredis must be applied before redis is imported")
        sys.modules["hiredis"] = None  # type: ignore[assignment]
    if args.quick:
        args.trades, args.depth, args.secs = 3000, 500, 1.0
    binary = shutil.which("redis-server")
    if binary is None:
        print("bench_bus: needs redis-server (apt-get install redis-server)", file=sys.stderr)
        return 2

    import redis.utils

    parser_name = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "python"

    def emit(obj: Dict[str, Any]) -> None:
        print(json.dumps({**obj, "reply_parser": parser_name}), flush=True)

    server = RedisServer(binary)
    server.start()
    try:
        with SenderProcess() as sender:
            for run in range(args.runs):
                for kind, n in (("trade", args.trades), ("depth", args.depth)):
                    direct = sixmm_stream(sender.port, kind, n, "inline")
                    bus, extra = bus_stream(sender.port, server.url, kind, n)
                    two = bus_stream_process(sender.port, server.url, kind, n)
                    emit({"bench": "bus", "figure": "throughput", "kind": kind, "n": n,
                          "run": run, "direct": round(direct.wall), "bus": round(bus.wall),
                          "ratio": round(bus.wall / direct.wall, 3),
                          "bus_2proc": round(two.wall),
                          "ratio_2proc": round(two.wall / direct.wall, 3), **extra})  # fmt: skip
                n = int(args.rate * args.secs)
                d50, d99 = sixmm_latency(sender.port, args.rate, n, "inline")
                b50, b99, lag = bus_latency(sender.port, server.url, args.rate, n)
                emit({"bench": "bus", "figure": "latency", "rate": args.rate, "n": n, "run": run,
                      "direct_p50_us": round(d50), "direct_p99_us": round(d99),
                      "bus_p50_us": round(b50), "bus_p99_us": round(b99), **lag})  # fmt: skip
            if args.memory_secs > 0:
                memory_run(sender.port, server, args.rate, args.memory_secs, emit)
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
