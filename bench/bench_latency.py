"""Callback latency over loopback: sender time stamp -> user callback, sixmm vs the bare loop.

Run: ``python bench/bench_latency.py [--rates 1000,10000] [--secs 3] [--runs N]`` (starts its
own sender unless ``--port`` is given). Prints one JSON object per figure per run.

The sender paces trades at a fixed rate and writes ``time.monotonic_ns()`` into each one just
before ``sendall`` (CLOCK_MONOTONIC is system-wide on Linux, so both processes read the same
clock). The bare websocket-client loop reads the stamp right after ``recv()`` returns: its
figure is the machine's floor (two processes, a loopback hop, a thread wake-up). sixmm reads
it in the user's trade callback (``trade.raw["sent"]``), so its figure adds the frame reader,
JSON, the model, dispatch -- and, for the worker dispatcher, a second thread wake-up.
The first 5% of each stream is warm-up and not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_stream import force_stdlib_json, make_dispatcher
from bench.sender import SYMBOL, TRADE_TOPIC, SenderProcess, url_for

WARM = 0.05
_MARK = '"sent":"'


def percentiles(samples_ns: List[int]) -> Tuple[float, float]:
    """p50 and p99 in microseconds (after dropping the warm-up)."""
    values = sorted(samples_ns[int(len(samples_ns) * WARM) :])
    if not values:
        return float("nan"), float("nan")
    last = len(values) - 1
    return values[min(last, int(0.50 * len(values)))] / 1e3, values[
        min(last, int(0.99 * len(values)))
    ] / 1e3


def bare_latency(port: int, rate: int, n: int) -> Tuple[float, float]:
    """The bare websocket-client ``recv()`` loop: stamp read right after ``recv()``."""
    import websocket

    ws = websocket.create_connection(
        url_for(port, kind="trade", n=n, rate=rate), skip_utf8_validation=True
    )
    try:
        ws.send(json.dumps({"id": "1", "op": "subscribe", "args": [TRADE_TOPIC]}))
        ws.recv()  # the ack
        out: List[int] = []
        recv = ws.recv
        now = time.monotonic_ns
        append = out.append
        for _ in range(n):
            text: Any = recv()  # str: websocket-client decodes text frames
            t = now()
            i = text.find(_MARK) + len(_MARK)
            append(t - int(text[i : i + 20]))
        return percentiles(out)
    finally:
        ws.close()


def sixmm_latency(port: int, rate: int, n: int, dispatcher: str) -> Tuple[float, float]:
    """sixmm through the public API: stamp read in the user's trade callback."""
    import sixmm

    disp, drain = make_dispatcher(dispatcher)
    out: List[int] = []
    done = threading.Event()
    now = time.monotonic_ns

    def on_trade(trade: Any) -> None:
        out.append(now() - int(trade.raw["sent"]))
        if len(out) >= n:
            done.set()

    errors: List[BaseException] = []
    streams = sixmm.StreamManager(
        url_for(port, kind="trade", n=n, rate=rate), dispatcher=disp, on_error=errors.append
    )
    if drain is not None:
        drain.start()
    try:
        with streams:
            streams.trades(SYMBOL, on_trade)
            if not done.wait(n / rate * 3 + 30):
                raise RuntimeError(f"only {len(out)} of {n} trades; errors: {errors[:3]}")
    finally:
        if drain is not None:
            drain.stop()
    return percentiles(out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="a running bench/sender.py")
    parser.add_argument("--json", choices=("orjson", "json"), default="orjson")
    parser.add_argument("--rates", default="1000,10000", help="msgs/s, comma-separated")
    parser.add_argument("--secs", type=float, default=3.0, help="seconds per figure")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--first-run", type=int, default=0)
    parser.add_argument("--dispatchers", default="inline,worker")
    args = parser.parse_args(argv)
    if args.json == "json":
        force_stdlib_json()
    from sixmm import _json

    def emit(row: Dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)

    sender = None if args.port else SenderProcess()
    port = args.port or (sender.port if sender else 0)
    try:
        for run in range(args.first_run, args.first_run + args.runs):
            for rate in (int(r) for r in args.rates.split(",")):
                n = max(200, int(rate * args.secs))
                base = {"bench": "latency", "run": run, "rate": rate, "n": n}
                base["backend"] = _json.BACKEND
                p50, p99 = bare_latency(port, rate, n)
                emit(dict(base, figure="bare", p50=p50, p99=p99))
                for name in args.dispatchers.split(","):
                    try:
                        s50, s99 = sixmm_latency(port, rate, n, name)
                    except Exception as exc:
                        emit(dict(base, figure=f"sixmm-{name}", error=f"{exc}"))
                        continue
                    emit(dict(base, figure=f"sixmm-{name}", p50=s50, p99=s99, d50=s50 - p50))
    finally:
        if sender is not None:
            sender.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
