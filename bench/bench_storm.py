"""Resync storms and CPU at a realistic load, many symbols over one manager (issue 16).

Run: ``python bench/bench_storm.py [--symbols 200] [--levels 1000] [--quick]``. Starts the
loopback sender (``bench/sender.py``, ``kind=storm``) and runs each client in a fresh
subprocess. Two figures:

- ``storm``: ``order_book()`` for every symbol (1,000 levels per side), depth at 10 updates/s
  per symbol. Once every book is synced the sender drops every connection (TCP shutdown, no
  close frame: the sandbox's ``drop``). Measured: the time from the first book seen unsynced
  to every book synced again; the worst delay of a GUI-like main thread ticking every 10 ms
  (``time.sleep`` to the next 10 ms deadline, lateness = wake-up minus deadline) over the whole
  run; and, with ``--gil-probe``, the longest gap seen by a probe thread sleeping 1 ms (about
  the longest time any other thread -- the readers -- held the GIL in one go, plus OS
  scheduling). The probe is off by default: it is one more thread asking for the GIL every
  millisecond, so it competes with the very tick it would explain (with a 5 ms switch interval
  a waking main thread can lose the GIL to it and wait another interval). At the end every
  book is compared with the sender's: each must be synced, with 1,000 levels per side.
- ``cpu``: depth of every symbol at 10 updates/s plus trades (5/s) and a ticker (1/s) per
  symbol; the client's process CPU time (every thread, user + system) over a fixed window,
  as percent of one core: sixmm with the inline, worker and queue dispatchers (the callbacks
  read ``book.top(10)`` on each update, count trades and tickers), against the peer pattern in
  the same run: ``websocket.WebSocketApp`` + ``json.loads`` + a callback, each book kept as a
  dict per side (price -> quantity) updated per level and sorted on read (its top 10 read on
  each update too). Process CPU time barely moves with other load on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.sender import SenderProcess, url_for  # noqa: E402

TICK = 0.010


def symbols(n: int) -> List[str]:
    return [f"S{i:04d}USDT" for i in range(n)]


class Ticker:
    """The GUI-like main-thread loop: wake every 10 ms, record how late each wake-up is."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.late = 0  # ticks more than 20 ms late
        self.ticks = 0

    def run_until(self, done: Any, timeout: float, on_tick: Any = None) -> bool:
        deadline = time.monotonic() + timeout
        nxt = time.monotonic() + TICK
        while time.monotonic() < deadline:
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lateness = time.monotonic() - nxt
            self.ticks += 1
            self.worst = max(self.worst, lateness)
            if lateness > 0.020:
                self.late += 1
            nxt += TICK
            if nxt < time.monotonic():  # a missed tick is counted once, not replayed
                nxt = time.monotonic() + TICK
            if on_tick is not None:
                on_tick()
            if done():
                return True
        return False


class GcWatch:
    """The longest single cyclic-GC collection (gc.callbacks), and collections per generation."""

    def __init__(self) -> None:
        import gc

        self.worst = 0.0
        self.worst_cpu = 0.0  # the same pause in the collecting thread's CPU time
        self.counts = [0, 0, 0]
        self._t = self._c = 0.0
        self._gc = gc
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            self._c = time.thread_time()
        else:
            self.worst = max(self.worst, time.perf_counter() - self._t)
            self.worst_cpu = max(self.worst_cpu, time.thread_time() - self._c)
            self.counts[info["generation"]] += 1


class GilProbe:
    """A thread sleeping 1 ms in a loop; the longest gap between its wake-ups."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-gil-probe", daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        last_cpu = time.process_time()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.monotonic()
            cpu = time.process_time()
            gap = now - last - 0.001
            if gap > self.worst:
                # the process's CPU time over the gap: ~the gap when another thread held the
                # GIL and ran; ~0 when the whole process was descheduled (a loaded machine)
                self.worst, self.worst_cpu = gap, cpu - last_cpu
            last, last_cpu = now, cpu

    def __enter__(self) -> GilProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the storm -------------------------------------------------------------------------------


class NoProbe:
    """Stands in for :class:`GilProbe` when the probe is off: no thread, no figure."""

    worst: Optional[float] = None
    worst_cpu: Optional[float] = None

    def __enter__(self) -> NoProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def client_storm(
    port: int, n: int, levels: int, drop_at: float, gil_probe: bool = False
) -> Dict[str, Any]:
    import sixmm

    syms = symbols(n)
    url = url_for(
        port, kind="storm", levels=levels, rate=10, sid=f"s{os.getpid()}", drop_at=drop_at
    )
    errors: List[BaseException] = []
    ticker = Ticker()
    gcw = GcWatch()
    out: Dict[str, Any] = {"bench": "storm", "symbols": n, "levels": levels}
    probe: Any = GilProbe() if gil_probe else NoProbe()
    with probe, sixmm.StreamManager(url, on_error=errors.append) as streams:
        books = [streams.order_book(s) for s in syms]
        t0 = time.monotonic()
        if not ticker.run_until(lambda: all(b.synced for b in books), 120):
            raise RuntimeError("the books never synced")
        out["initial_sync_s"] = time.monotonic() - t0
        seen: Dict[str, float] = {}

        def watch() -> None:
            if "unsynced" not in seen and not all(b.synced for b in books):
                seen["unsynced"] = time.monotonic()

        if not ticker.run_until(lambda: "unsynced" in seen, drop_at + 60, watch):
            raise RuntimeError("no drop seen")
        if not ticker.run_until(lambda: all(b.synced for b in books), 120):
            raise RuntimeError(
                f"not every book synced again: {sum(not b.synced for b in books)} left"
            )
        out["resync_s"] = time.monotonic() - seen["unsynced"]
        ticker.run_until(lambda: False, 1.0)  # a second of steady streaming after it
        for b in books:  # the end state: every book synced and whole
            bids, asks = b.levels()
            if not b.synced or len(bids) != levels or len(asks) != levels:
                raise AssertionError(
                    f"WRONG BOOK {b.symbol}: synced={b.synced}, {len(bids)}/{len(asks)} levels"
                )
            best_bid, best_ask = b.best_bid(), b.best_ask()
            if best_bid is None or best_ask is None or best_bid[0] >= best_ask[0]:
                raise AssertionError(f"WRONG BOOK {b.symbol}: best {best_bid} / {best_ask}")
        out["resyncs"] = sum(b.stats()["resyncs"] for b in books)
    out.update(
        worst_tick_ms=ticker.worst * 1e3,
        late_ticks=ticker.late,
        ticks=ticker.ticks,
        worst_gil_gap_ms=None if probe.worst is None else probe.worst * 1e3,
        worst_gil_gap_cpu_ms=None if probe.worst_cpu is None else probe.worst_cpu * 1e3,
        worst_gc_ms=gcw.worst * 1e3,
        worst_gc_cpu_ms=gcw.worst_cpu * 1e3,
        gc_collections=gcw.counts,
        errors=len(errors),
    )
    return out


# -- CPU at a realistic load -----------------------------------------------------------------


class PeerBook:
    """How the peers keep a book: a dict per side, updated per level, sorted on read."""

    def __init__(self) -> None:
        self.bids: Dict[str, str] = {}
        self.asks: Dict[str, str] = {}

    def apply(self, data: Dict[str, Any]) -> None:
        if data.get("type") == "snapshot":
            self.bids = {}
            self.asks = {}
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for price, qty in levels:
                if float(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty

    def top(self, n: int = 10) -> Any:
        bids = sorted(self.bids.items(), key=lambda kv: float(kv[0]), reverse=True)[:n]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:n]
        return bids, asks


def _topics(syms: List[str]) -> List[str]:
    return [f"market.{c}.{s}" for s in syms for c in ("depth", "trade", "ticker")]


def client_cpu(
    port: int, n: int, levels: int, who: str, warm: float, secs: float
) -> Dict[str, Any]:
    syms = symbols(n)
    url = url_for(port, kind="storm", levels=levels, rate=10, trades=5, tickers=1)
    counts = {"depth": 0, "trade": 0, "ticker": 0}
    ticker = Ticker()

    def window() -> Dict[str, Any]:
        ticker.run_until(lambda: False, warm)
        before = dict(counts)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        ticker.run_until(lambda: False, secs)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - t0
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        msgs = {k: counts[k] - before[k] for k in counts}
        total = sum(msgs.values())
        return {
            "cpu_pct": cpu / wall * 100,
            "msgs_per_s": total / wall,
            "cpu_us_per_msg": cpu / max(total, 1) * 1e6,
            **{f"{k}_per_s": v / wall for k, v in msgs.items()},
        }

    if who == "peer":
        import websocket

        books: Dict[str, PeerBook] = {s: PeerBook() for s in syms}
        loads = json.loads

        def on_message(app: Any, message: str) -> None:
            msg = loads(message)
            topic = msg.get("topic")
            if topic is None:
                return
            _, channel, symbol = topic.split(".")
            if channel == "depth":
                book = books[symbol]
                book.apply(msg["data"])
                book.top(10)
                counts["depth"] += 1
            else:
                counts[channel] += 1

        def on_open(app: Any) -> None:
            app.send(json.dumps({"id": "1", "op": "subscribe", "args": _topics(syms)}))

        app = websocket.WebSocketApp(url, on_open=on_open, on_message=on_message)
        thread = threading.Thread(
            target=app.run_forever, kwargs={"skip_utf8_validation": True}, daemon=True
        )
        thread.start()
        try:
            out = window()
        finally:
            app.close()
            thread.join(5)
    else:
        import sixmm
        from bench.bench_stream import make_dispatcher

        disp, drain = make_dispatcher(who)
        streams = sixmm.StreamManager(url, dispatcher=disp)
        if drain is not None:
            drain.start()

        def on_book(book: Any) -> None:
            book.top(10)
            counts["depth"] += 1

        def on_trade(_t: Any) -> None:
            counts["trade"] += 1

        def on_ticker(_t: Any) -> None:
            counts["ticker"] += 1

        try:
            with streams:
                for s in syms:
                    streams.order_book(s, on_update=on_book)
                    streams.trades(s, on_trade)
                    streams.ticker(s, on_ticker)
                out = window()
        finally:
            if drain is not None:
                drain.stop()
    return {"bench": "cpu", "who": who, "symbols": n, **out}


# -- the runner ------------------------------------------------------------------------------


def _child(args: List[str], timeout: float) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{args[0]} timed out"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return {"error": f"{' '.join(args[:3])} exited {proc.returncode}: {tail}"}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--levels", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--secs", type=float, default=10.0, help="CPU window per client")
    parser.add_argument("--only", default="storm,cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--switch-interval",
        default="default,0.001",
        help="storm runs at each of these thread switch intervals: 'default' (CPython's 5 ms) "
        "and/or seconds (0.001: what sixmm.gui's pumps set)",
    )
    parser.add_argument(
        "--gil-probe",
        action="store_true",
        help="storm runs also a thread sleeping 1 ms and report its longest gap (it competes "
        "with the main thread's tick for the GIL, so the tick figure is measured without it)",
    )
    parser.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        what = args.child[0]
        if what == "storm":
            interval = args.child[1] if len(args.child) > 1 else "default"
            if interval != "default":
                sys.setswitchinterval(float(interval))
            row = client_storm(
                args.port, args.symbols, args.levels, drop_at=3.0, gil_probe=args.gil_probe
            )
            row["switch_interval_ms"] = sys.getswitchinterval() * 1e3
        else:
            row = client_cpu(args.port, args.symbols, args.levels, what, 3.0, args.secs)
        print(json.dumps(row), flush=True)
        return 0
    if args.quick:
        args.symbols, args.levels, args.secs = min(args.symbols, 20), min(args.levels, 200), 2.0
    rows: List[Dict[str, Any]] = []
    common = [
        "--symbols",
        str(args.symbols),
        "--levels",
        str(args.levels),
        "--secs",
        str(args.secs),
    ]
    only = set(args.only.split(","))
    with SenderProcess() as sender:
        port = ["--port", str(sender.port)]
        for _run in range(args.runs):
            if "storm" in only:
                for interval in args.switch_interval.split(","):
                    probe = ["--gil-probe"] if args.gil_probe else []
                    rows.append(_child(["storm", interval, *port, *common, *probe], 300))
                    print(json.dumps(rows[-1]), flush=True)
            if "cpu" in only:
                for who in ("peer", "inline", "worker", "queue"):
                    rows.append(_child([who, *port, *common], 300))
                    print(json.dumps(rows[-1]), flush=True)
    bad = [r for r in rows if "error" in r]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
