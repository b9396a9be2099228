"""Order-book benchmark: how many depth frames per second the book keeps up with.

Run: ``python bench/bench_book.py [--quick] [--runs N] [--frames N] [--far F]``. Stdlib only.

An "update" is one depth frame of 20 level changes (about 10% deletions of present levels,
10% new levels, the rest quantity changes); a fraction ``--far`` of the changes (default 0.1)
lands anywhere in the book, the rest within 50 ticks of the top; prices look like
``"85000.1"``. Books of 100 and 5,000 levels per side; at 5,000 levels the run is repeated
with 30% far changes (deep changes touch cold memory and cost about twice as much). Each
figure is the median of several runs (the best run is shown too: on a shared machine it is
the better estimate of the code's own cost). Measured in the same run: a naive reference book
(dict + ``sorted()`` on read), the cost of :func:`parse_depth` per frame, and the live
:class:`OrderBook` (with its lock) against the bare :class:`BookState`.

The book runs its C extension (``sixmm.protocol._bookside``) when it is built and not disabled
with ``SIXMM_NO_EXTENSIONS=1``; the output says which. With the extension, the same run also
measures ``BookState(speedups=False)``, the pure-Python code, beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from sixmm.orderbook import OrderBook
from sixmm.protocol.book import SPEEDUPS, BookState
from sixmm.protocol.depth import DepthMsg, parse_depth

MID_TICK = 850_000  # 85000.0 with a 0.1 tick
CHANGES = 20
FAR_SPLIT = 0.1  # default fraction of level changes anywhere in the book

# CPU time of this (single-threaded) process: on a busy machine, time spent descheduled does
# not count. Windows' process clock is too coarse: wall time there. ``--wall`` forces it.
_clock = time.perf_counter if sys.platform == "win32" else time.process_time


def _price(tick: int) -> str:
    return f"{tick // 10}.{tick % 10}"


def _qty(rng: random.Random) -> str:
    return f"{rng.randint(1, 50_000) / 1000:.3f}"


class _Side:
    """Which ticks are present on one side, for generating realistic changes."""

    def __init__(self, best: int, direction: int, levels: int) -> None:
        self.best = best
        self.direction = direction  # -1: bids (go down from best), +1: asks
        self.span = int(levels * 1.25)  # ticks the side may use; ~80% of them present
        self.present: List[int] = [best + direction * i for i in range(levels)]
        self.index: Dict[int, int] = {t: i for i, t in enumerate(self.present)}

    def _remove(self, tick: int) -> None:
        i = self.index.pop(tick)
        last = self.present.pop()
        if last != tick:
            self.present[i] = last
            self.index[last] = i

    def change(self, rng: random.Random, far: float) -> Tuple[str, str]:
        if rng.random() < far:
            distance = rng.randrange(self.span)
        else:
            distance = rng.randrange(50)
        tick = self.best + self.direction * distance
        roll = rng.random()
        if tick in self.index:
            if roll < 0.1 and len(self.present) > 10:
                self._remove(tick)
                return _price(tick), "0"
            return _price(tick), _qty(rng)
        if roll < 0.5:  # keep the size stable: insert about as often as we delete
            self.index[tick] = len(self.present)
            self.present.append(tick)
            return _price(tick), _qty(rng)
        tick = rng.choice(self.present)  # else change a present level
        return _price(tick), _qty(rng)


def make_stream(
    levels: int, frames: int, seed: int = 1, far: float = FAR_SPLIT
) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """A snapshot payload and ``frames`` update payloads (wire dicts)."""
    rng = random.Random(seed)
    bids = _Side(MID_TICK, -1, levels)
    asks = _Side(MID_TICK + 1, +1, levels)
    snapshot = {
        "symbol": "BTCUSDT",
        "type": "snapshot",
        "startVersion": 1000,
        "endVersion": 1000,
        "bids": [[_price(t), _qty(rng)] for t in bids.present],
        "asks": [[_price(t), _qty(rng)] for t in asks.present],
    }
    updates = []
    version = 1000
    for _ in range(frames):
        b: List[List[str]] = []
        a: List[List[str]] = []
        for _ in range(CHANGES):
            if rng.random() < 0.5:
                b.append(list(bids.change(rng, far)))
            else:
                a.append(list(asks.change(rng, far)))
        updates.append(
            {
                "symbol": "BTCUSDT",
                "type": "update",
                "startVersion": version + 1,
                "endVersion": version + 1,
                "bids": b,
                "asks": a,
            }
        )
        version += 1
    return snapshot, updates


class NaiveBook:
    """The reference: dict of float key -> (price, qty); sort on every read."""

    def __init__(self) -> None:
        self.bids: Dict[float, Tuple[str, str]] = {}
        self.asks: Dict[float, Tuple[str, str]] = {}

    def apply(self, msg: DepthMsg) -> None:
        if msg.kind == "snapshot":
            self.bids.clear()
            self.asks.clear()
        for book, levels in ((self.bids, msg.bids), (self.asks, msg.asks)):
            for price, qty in levels:
                key = float(price)
                if Decimal(qty) == 0:
                    book.pop(key, None)
                else:
                    book[key] = (price, qty)

    def top(
        self, n: int = 10
    ) -> Tuple[List[Tuple[Decimal, Decimal]], List[Tuple[Decimal, Decimal]]]:
        bids = [self.bids[k] for k in sorted(self.bids, reverse=True)[:n]]
        asks = [self.asks[k] for k in sorted(self.asks)[:n]]
        return (
            [(Decimal(p), Decimal(q)) for p, q in bids],
            [(Decimal(p), Decimal(q)) for p, q in asks],
        )


def _stats(run: Callable[[], float], runs: int, best: Callable[..., float]) -> Tuple[float, float]:
    """(median, best) of ``runs`` runs; ``best`` is max for rates, min for costs."""
    values = [run() for _ in range(runs)]
    return statistics.median(values), best(values)


def bench_levels(levels: int, frames: int, runs: int, far: float = FAR_SPLIT) -> Dict[str, float]:
    """The figures for one book size: ``"<figure>"`` is the median, ``"<figure> best"`` the
    best run. Keys: apply/s, apply+top10/s, live apply+top10/s, naive apply/s,
    naive apply+top10/s, top10 us, live top10 us, naive top10 us, parse us/frame; with the C
    extension also pure apply/s, pure apply+top10/s, pure top10 us (``speedups=False``)."""
    snapshot_raw, updates_raw = make_stream(levels, frames, far=far)
    snapshot = parse_depth(snapshot_raw)
    all_updates = [parse_depth(u) for u in updates_raw]
    # the naive book is too slow for every frame of a big book: a prefix is enough for a rate
    naive_updates = all_updates if levels <= 1000 else all_updates[: max(200, frames // 20)]
    results: Dict[str, float] = {}

    def rate(
        factory: Callable[[], Any], step: Callable[[Any, DepthMsg], Any], updates: List[DepthMsg]
    ) -> Callable[[], float]:
        def run() -> float:
            book = factory()
            step(book, snapshot)
            t0 = _clock()
            for msg in updates:
                step(book, msg)
            return len(updates) / (_clock() - t0)

        return run

    def state_apply(book: BookState, msg: DepthMsg) -> None:
        book.apply(msg)

    def state_apply_top(book: BookState, msg: DepthMsg) -> None:
        book.apply(msg)
        book.top(10)

    def live_apply_top(book: OrderBook, msg: DepthMsg) -> None:
        book._feed(msg)
        book.top(10)

    def naive_apply(book: NaiveBook, msg: DepthMsg) -> None:
        book.apply(msg)

    def naive_apply_top(book: NaiveBook, msg: DepthMsg) -> None:
        book.apply(msg)
        book.top(10)

    def new_state() -> BookState:
        return BookState("BTCUSDT")

    def new_pure() -> BookState:
        return BookState("BTCUSDT", speedups=False)

    def new_live() -> OrderBook:
        return OrderBook("BTCUSDT")

    figures: List[Tuple[str, Callable[[], float], Callable[..., float]]] = [
        ("apply/s", rate(new_state, state_apply, all_updates), max),
        ("apply+top10/s", rate(new_state, state_apply_top, all_updates), max),
        ("live apply+top10/s", rate(new_live, live_apply_top, all_updates), max),
        ("naive apply/s", rate(NaiveBook, naive_apply, naive_updates), max),
        ("naive apply+top10/s", rate(NaiveBook, naive_apply_top, naive_updates), max),
    ]
    if SPEEDUPS:
        figures += [
            ("pure apply/s", rate(new_pure, state_apply, all_updates), max),
            ("pure apply+top10/s", rate(new_pure, state_apply_top, all_updates), max),
        ]

    # top(10) alone, on the books as the updates left them (Decimals cached per level)
    state = BookState("BTCUSDT")
    pure = new_pure()
    live = OrderBook("BTCUSDT")
    naive = NaiveBook()
    for msg in [snapshot, *all_updates]:
        state.apply(msg)
        pure.apply(msg)
        live._feed(msg)
    for msg in [snapshot, *naive_updates]:
        naive.apply(msg)
    reads = 20_000
    naive_reads = max(200, reads // (levels // 50 + 1))
    figures += [
        ("top10 us", _per_call(lambda: state.top(10), reads), min),
        ("live top10 us", _per_call(lambda: live.top(10), reads), min),
        ("naive top10 us", _per_call(lambda: naive.top(10), naive_reads), min),
        ("parse us/frame", _per_item(parse_depth, updates_raw), min),
    ]
    if SPEEDUPS:
        figures.append(("pure top10 us", _per_call(lambda: pure.top(10), reads), min))
    for name, run, best in figures:
        results[name], results[name + " best"] = _stats(run, runs, best)
    return results


def lock_cost_ns(calls: int = 200_000, runs: int = 5) -> float:
    """An uncontended ``with lock:`` minus an empty loop, in ns (best of ``runs``)."""
    lock = threading.Lock()

    def locked() -> float:
        t0 = _clock()
        for _ in range(calls):
            with lock:
                pass
        return _clock() - t0

    def empty() -> float:
        t0 = _clock()
        for _ in range(calls):
            pass
        return _clock() - t0

    return (min(locked() for _ in range(runs)) - min(empty() for _ in range(runs))) / calls * 1e9


def _per_call(fn: Callable[[], Any], calls: int) -> Callable[[], float]:
    def run() -> float:
        t0 = _clock()
        for _ in range(calls):
            fn()
        return (_clock() - t0) / calls * 1e6

    return run


def _per_item(fn: Callable[[Any], Any], items: Sequence[Any]) -> Callable[[], float]:
    def run() -> float:
        t0 = _clock()
        for item in items:
            fn(item)
        return (_clock() - t0) / len(items) * 1e6

    return run


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and runs")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median)")
    parser.add_argument("--frames", type=int, default=None, help="update frames per run")
    parser.add_argument("--far", type=float, default=FAR_SPLIT, help="fraction of deep changes")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock")
    args = parser.parse_args(list(argv))
    global _clock
    if args.wall:
        _clock = time.perf_counter
    runs = args.runs or (3 if args.quick else 7)
    frames = args.frames or (3_000 if args.quick else 20_000)

    print(f"machine: {platform.platform()} / {platform.machine()} / {os.cpu_count()} CPUs")
    print(f"python:  {platform.python_implementation()} {sys.version.split()[0]}")
    try:
        print(f"load:    {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)")
    except OSError:
        pass
    print(f"frames:  {frames} updates of {CHANGES} level changes, median (best) of {runs} runs")
    clock = "wall clock" if _clock is time.perf_counter else "process CPU time"
    print(f"clock:   {clock}")
    print(f"book:    {_implementation()}")
    print(f"lock:    uncontended threading.Lock acquire+release {lock_cost_ns():.0f} ns\n")
    header = (
        f"{'levels':>6} {'far':>4} | {'figure':<24} | {'sixmm median':>13} {'(best)':>10} | "
        f"{'reference':>10} | {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for levels, far in ((100, args.far), (5_000, args.far), (5_000, 0.3)):
        r = bench_levels(levels, frames, runs, far)
        rows: List[Tuple[str, str, Optional[str], bool]] = [
            ("apply (updates/s)", "apply/s", "naive apply/s", True),
            ("apply+top10 (updates/s)", "apply+top10/s", "naive apply+top10/s", True),
            ("top10 alone (us)", "top10 us", "naive top10 us", False),
            ("live apply+top10 (/s)", "live apply+top10/s", "apply+top10/s", True),
            ("live top10 (us)", "live top10 us", "top10 us", False),
            ("parse_depth (us/frame)", "parse us/frame", None, False),
        ]
        if SPEEDUPS:  # the C figures above, the pure ones here, C / pure as the ratio
            rows[3:3] = [
                ("pure: apply (updates/s)", "pure apply/s", "apply/s", True),
                ("pure: apply+top10 (/s)", "pure apply+top10/s", "apply+top10/s", True),
                ("pure: top10 alone (us)", "pure top10 us", "top10 us", False),
            ]
        for label, key, ref_key, higher_better in rows:
            ours = r[key]
            ref = r[ref_key] if ref_key else None
            ratio = ""
            if ref is not None:
                better = ours / ref if higher_better else ref / ours
                if label.startswith("pure:"):  # shown as C / pure: the extension's speed-up
                    better = 1 / better
                ratio = f"{better:.2f}x"
            best = _fmt(r[key + " best"])
            ref_text = "" if ref is None else _fmt(ref)
            print(
                f"{levels:>6} {far:>4.1f} | {label:<24} | {_fmt(ours):>13} {best:>10} | "
                f"{ref_text:>10} | {ratio:>6}"
            )
        print()
    print("reference = the naive book (dict + sorted() on read) for the first three rows, the bare")
    print(
        "BookState for the 'live' rows (ratio < 1 is the lock and wrapper's cost); ratio > 1 means"
    )
    print("sixmm is better. far = fraction of level changes anywhere in the book.")
    if SPEEDUPS:
        print("'pure:' rows = BookState(speedups=False), the pure-Python code, in the same run;")
        print("their reference is the C figure and their ratio is C / pure (the C speed-up).")
    return 0


def _implementation() -> str:
    if SPEEDUPS:
        return "C extension sixmm.protocol._bookside (pure Python measured beside it)"
    if os.environ.get("SIXMM_NO_EXTENSIONS") == "1":
        return "pure Python (SIXMM_NO_EXTENSIONS=1)"
    return "pure Python (the C extension sixmm.protocol._bookside is not built)"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
