"""Where the time goes per frame: cProfile of sixmm's reader thread on a recorded stream.

Run: ``python bench/profile_frame.py [--kind book|depth|trade] [--n 20000] [--json json]
[--top 25]``. Starts its own loopback sender, runs ``StreamManager`` inline over the stream
with the reader thread under ``cProfile``, and prints the functions by total and self time
(µs per frame). The stream is fixed (deterministic), so two trees compare on the same work;
cProfile inflates small calls, so read the shares, not the absolute figures.
``SIXMM_BENCH_TREE=DIR`` runs another checkout's ``sixmm`` under these scripts;
``--record FILE`` records the session (``StreamManager(record=FILE)``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import threading
import time
from typing import Any, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# this tree's bench scripts, whichever sixmm runs; bench_stream puts SIXMM_BENCH_TREE (another
# checkout's sixmm, bench_instructions.py --against) first on sys.path
import bench.bench_stream  # noqa: F401


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kind", default="book", choices=("book", "depth", "trade"))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--json", choices=("orjson", "json"), default="orjson")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="CPU µs per frame only")
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() (to see its share)")
    parser.add_argument("--record", default="", help="record the session to this file")
    args = parser.parse_args(argv)
    if args.no_gc:
        import gc

        gc.disable()
    if args.json == "json":
        sys.modules["orjson"] = None  # type: ignore[assignment]
    import sixmm
    import sixmm.connection as connection
    from bench.bench_stream import SYMBOL, verify_book
    from bench.sender import SenderProcess, url_for

    prof = cProfile.Profile()
    original = connection.Connection._read_loop
    cpu: List[float] = []

    def profiled(self: Any, transport: Any) -> str:
        c0 = time.thread_time()
        reading.append(True)
        if not args.no_profile:
            prof.enable()
        try:
            return original(self, transport)
        finally:
            if not args.no_profile:
                prof.disable()
            cpu.append(time.thread_time() - c0)
            reading.clear()

    import gc

    reading: List[bool] = []
    gc_time = [0.0, 0.0] + [0] * 3  # total, start, collections per generation

    def on_gc(phase: str, info: Any) -> None:
        if not reading:
            return
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]
            gc_time[2 + info["generation"]] += 1

    gc.callbacks.append(on_gc)
    connection.Connection._read_loop = profiled  # type: ignore[method-assign]
    done = threading.Event()
    count = [0]
    total = args.n if args.kind == "trade" else args.n + 1

    def cb(_item: Any) -> None:
        count[0] += 1
        if count[0] == total:
            reading.clear()
            done.set()

    with SenderProcess() as sender:
        url = url_for(sender.port, kind=args.kind, n=args.n)
        record = {"record": args.record} if args.record else {}
        with sixmm.StreamManager(url, dispatcher=sixmm.InlineDispatcher(), **record) as streams:
            if args.kind == "trade":
                streams.trades(SYMBOL, cb)
            else:
                book = streams.order_book(SYMBOL, on_update=cb)
            if not done.wait(300):
                raise SystemExit(f"only {count[0]} of {total} callbacks")
            if args.kind != "trade":
                verify_book(book, args.kind, args.n)
    print(
        f"{args.kind}, {args.n} frames, {args.json}, book C={sixmm.protocol.book.SPEEDUPS}, "
        f"sixmm from {os.path.dirname(os.path.dirname(sixmm.__file__))}: "
        f"reader thread CPU {cpu[0] / total * 1e6:.2f} µs/frame"
        + ("" if args.no_profile else " (under cProfile)")
        + f"; gc {gc_time[0] / total * 1e6:.2f} µs/frame (wall, during the read loop), "
        f"collections per generation {gc_time[2:]}"
    )
    if not args.no_profile:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
