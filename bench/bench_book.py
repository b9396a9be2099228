"""Order-book benchmark: how many depth frames per second the book keeps up with.

Run: ``python bench/bench_book.py [--quick] [--runs N] [--frames N]``. Stdlib only.

An "update" is one depth frame of ~20 level changes (about 10% deletions of present levels,
10% new levels, the rest quantity changes), 70% of them within 50 ticks of the top and 30%
anywhere in the book; prices look like ``"85000.1"``. Books of 100 and 5,000 levels per side.
Each figure is the median of several runs. Measured in the same run: a naive reference book
(dict + ``sorted()`` on read), the cost of :func:`parse_depth` per frame, and the live
:class:`OrderBook` (with its lock) against the bare :class:`BookState`.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from decimal import Decimal
from typing import Any, Callable, Dict, List, Sequence, Tuple

from sixmm.orderbook import OrderBook
from sixmm.protocol.book import BookState
from sixmm.protocol.depth import DepthMsg, parse_depth

MID_TICK = 850_000  # 85000.0 with a 0.1 tick
CHANGES = 20
FAR_SPLIT = 0.7


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

    def change(self, rng: random.Random) -> Tuple[str, str]:
        if rng.random() < FAR_SPLIT:
            distance = rng.randrange(50)
        else:
            distance = rng.randrange(self.span)
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
    levels: int, frames: int, seed: int = 1
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
                b.append(list(bids.change(rng)))
            else:
                a.append(list(asks.change(rng)))
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


def _median_rate(run: Callable[[], float], runs: int) -> float:
    return statistics.median(run() for _ in range(runs))


def bench_levels(levels: int, frames: int, runs: int) -> Dict[str, float]:
    snapshot_raw, updates_raw = make_stream(levels, frames)
    snapshot = parse_depth(snapshot_raw)
    updates = [parse_depth(u) for u in updates_raw]
    results: Dict[str, float] = {}

    def timed(
        factory: Callable[[], Any], step: Callable[[Any, DepthMsg], Any]
    ) -> Callable[[], float]:
        def run() -> float:
            book = factory()
            step(book, snapshot)
            t0 = time.perf_counter()
            for msg in updates:
                step(book, msg)
            return len(updates) / (time.perf_counter() - t0)

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

    def new_live() -> OrderBook:
        return OrderBook("BTCUSDT")

    results["apply/s"] = _median_rate(timed(new_state, state_apply), runs)
    results["apply+top10/s"] = _median_rate(timed(new_state, state_apply_top), runs)
    results["live apply+top10/s"] = _median_rate(timed(new_live, live_apply_top), runs)
    naive_runs = runs
    naive_updates = updates if levels <= 1000 else updates[: max(200, len(updates) // 20)]
    saved = updates
    updates = naive_updates
    results["naive apply/s"] = _median_rate(timed(NaiveBook, naive_apply), naive_runs)
    results["naive apply+top10/s"] = _median_rate(timed(NaiveBook, naive_apply_top), naive_runs)
    updates = saved

    # top(10) alone on the final book: reads of a book that does not change (cached Decimals)
    # and reads right after a change at the top (Decimals rebuilt for the changed level).
    state = BookState("BTCUSDT")
    state.apply(snapshot)
    for msg in updates:
        state.apply(msg)
    naive = NaiveBook()
    naive.apply(snapshot)
    for msg in naive_updates:
        naive.apply(msg)
    live = OrderBook("BTCUSDT")
    live._feed(snapshot)
    reads = 20_000
    results["top10 us"] = _per_call_us(lambda: state.top(10), reads, runs)
    results["live top10 us"] = _per_call_us(lambda: live.top(10), reads, runs)
    results["naive top10 us"] = _per_call_us(
        lambda: naive.top(10), max(200, reads // (levels // 50 + 1)), runs
    )
    results["parse us/frame"] = _per_call_us_seq(parse_depth, updates_raw, runs)
    return results


def _per_call_us(fn: Callable[[], Any], calls: int, runs: int) -> float:
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls * 1e6

    return statistics.median(run() for _ in range(runs))


def _per_call_us_seq(fn: Callable[[Any], Any], items: Sequence[Any], runs: int) -> float:
    def run() -> float:
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        return (time.perf_counter() - t0) / len(items) * 1e6

    return statistics.median(run() for _ in range(runs))


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and runs")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median)")
    parser.add_argument("--frames", type=int, default=None, help="update frames per run")
    args = parser.parse_args(list(argv) or None)
    runs = args.runs or (3 if args.quick else 7)
    frames = args.frames or (3_000 if args.quick else 20_000)

    print(f"machine: {platform.platform()} / {platform.machine()} / {platform.processor() or '?'}")
    print(f"python:  {platform.python_implementation()} {sys.version.split()[0]}")
    print(f"frames:  {frames} updates of {CHANGES} level changes, median of {runs} runs\n")
    header = f"{'levels/side':>11} | {'figure':<22} | {'sixmm':>12} | {'naive':>12} | {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for levels in (100, 5_000):
        r = bench_levels(levels, frames, runs)
        rows = [
            ("apply (updates/s)", r["apply/s"], r["naive apply/s"], True),
            ("apply+top10 (upd/s)", r["apply+top10/s"], r["naive apply+top10/s"], True),
            ("top10 alone (us)", r["top10 us"], r["naive top10 us"], False),
            ("live apply+top10 (/s)", r["live apply+top10/s"], r["apply+top10/s"], True),
            ("live top10 (us)", r["live top10 us"], r["top10 us"], False),
            ("parse_depth (us/frame)", r["parse us/frame"], float("nan"), False),
        ]
        for name, ours, other, higher_better in rows:
            ratio = ours / other if higher_better else other / ours
            other_text = "" if other != other else _fmt(other)
            ratio_text = "" if ratio != ratio else f"{ratio:.2f}x"
            print(
                f"{levels:>11} | {name:<22} | {_fmt(ours):>12} | {other_text:>12} | {ratio_text:>7}"
            )
        print()
    print("ratio = how many times better sixmm is; for the 'live' rows the reference column is the")
    print("bare BookState (ratio < 1 = the lock's cost). top10 reads of an unchanged book use the")
    print("Decimals cached per level.")
    return 0


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
