"""The whole-book depth workload of issue 16, and the independent reference book of every run.

``make_whole_book(levels, frames)``: a snapshot of ``levels`` per side, then ``frames``
updates, each with 10 bid and 10 ask changes; per side one removal (quantity ``"0"``), one new
level and eight quantity changes, all at distinct prices; 70% of the changes land in the top
10% of the side's levels, 30% anywhere in it. Versions are JSON integers, continuous
(``startVersion = endVersion = previous endVersion + 1``). Deterministic for a seed.

``expected_book(stream)``: the book a correct client holds after the pre-framed ``stream``
(server frames as ``bench/sender.py`` writes them): parsed with stdlib ``json`` and applied to
a plain ``dict`` per side (price text -> quantity text), no sixmm code. Every bench run
compares its live book with it (``check_book``) and fails loudly when they differ.
"""

from __future__ import annotations

import bisect
import json
import random
from typing import Any, Dict, List, Tuple

MID_TICK = 850_000  # 85000.0 with a 0.1 tick
PER_SIDE = 10
TOP_SHARE = 0.7  # share of changes in the top 10% of levels
TOP_FRACTION = 0.1


def _price(tick: int) -> str:
    return f"{tick // 10}.{tick % 10}"


def _qty(rng: random.Random) -> str:
    return f"{rng.randint(1, 50_000) / 1000:.3f}"


class _Side:
    """The present ticks of one side, ranked from the best (rank 0)."""

    def __init__(self, best: int, direction: int, levels: int) -> None:
        self.best = best
        self.direction = direction  # -1: bids, +1: asks
        self.span = int(levels * 1.25)  # ~80% of the span's ticks present
        # distance from the best tick, ascending = rank order
        self.dist: List[int] = list(range(levels))
        self.present = set(self.dist)

    def tick(self, d: int) -> int:
        return self.best + self.direction * d

    def _rank(self, rng: random.Random) -> int:
        n = len(self.dist)
        if rng.random() < TOP_SHARE:
            return rng.randrange(max(1, int(n * TOP_FRACTION)))
        return rng.randrange(n)

    def changes(self, rng: random.Random) -> List[List[str]]:
        used = set()
        # one removal
        while True:
            d = self.dist[self._rank(rng)]
            if d not in used:
                break
        used.add(d)
        out = [[_price(self.tick(d)), "0"]]
        # one new level: a free tick near the top (70%) or anywhere in the span
        while True:
            if rng.random() < TOP_SHARE:
                top = self.dist[max(1, int(len(self.dist) * TOP_FRACTION)) - 1]
                nd = rng.randrange(top + 1)
            else:
                nd = rng.randrange(self.span)
            if nd not in self.present:
                break
        used.add(nd)
        out.append([_price(self.tick(nd)), _qty(rng)])
        # eight quantity changes of other present levels
        while len(out) < PER_SIDE:
            q = self.dist[self._rank(rng)]
            if q in used:
                continue
            used.add(q)
            out.append([_price(self.tick(q)), _qty(rng)])
        # apply: remove d, add nd
        self.dist.pop(bisect.bisect_left(self.dist, d))
        self.present.discard(d)
        bisect.insort(self.dist, nd)
        self.present.add(nd)
        rng.shuffle(out)
        return out


def make_whole_book(
    levels: int, frames: int, seed: int = 16
) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """A snapshot payload and ``frames`` update payloads (wire dicts) of the whole-book load."""
    rng = random.Random(seed)
    bids = _Side(MID_TICK, -1, levels)
    asks = _Side(MID_TICK + 1, +1, levels)
    snapshot = {
        "symbol": "BTCUSDT",
        "type": "snapshot",
        "startVersion": 1000,
        "endVersion": 1000,
        "bids": [[_price(bids.tick(d)), _qty(rng)] for d in bids.dist],
        "asks": [[_price(asks.tick(d)), _qty(rng)] for d in asks.dist],
    }
    updates = []
    version = 1000
    for _ in range(frames):
        version += 1
        updates.append(
            {
                "symbol": "BTCUSDT",
                "type": "update",
                "startVersion": version,
                "endVersion": version,
                "bids": bids.changes(rng),
                "asks": asks.changes(rng),
            }
        )
    return snapshot, updates


# -- the reference book ----------------------------------------------------------------------


def iter_payloads(stream: bytes) -> List[bytes]:
    """The payloads of a stream of unmasked, final server frames."""
    out = []
    i, n = 0, len(stream)
    while i < n:
        length = stream[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = int.from_bytes(stream[i : i + 2], "big")
            i += 2
        elif length == 127:
            length = int.from_bytes(stream[i : i + 8], "big")
            i += 8
        out.append(stream[i : i + length])
        i += length
    return out


def expected_book(stream: bytes) -> Tuple[Dict[str, str], Dict[str, str], int]:
    """(bids, asks, last version) after applying every depth push of ``stream`` in order."""
    bids: Dict[str, str] = {}
    asks: Dict[str, str] = {}
    version = -1
    for payload in iter_payloads(stream):
        msg = json.loads(payload)
        data = msg.get("data")
        if not isinstance(data, dict) or "bids" not in data:
            continue
        if data.get("type") == "snapshot":
            bids.clear()
            asks.clear()
        elif data["startVersion"] != version + 1:
            raise AssertionError(f"the stream itself skips a version at {version}")
        version = data["endVersion"]
        for side, levels in ((bids, data["bids"]), (asks, data["asks"])):
            for price, qty in levels:
                if float(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
    return bids, asks, version


def check_book(book: Any, stream: bytes) -> None:
    """Raise AssertionError unless the live ``OrderBook`` equals the reference book."""
    want_bids, want_asks, want_version = expected_book(stream)
    got_bids, got_asks = book.levels()
    if book.version != want_version:
        raise AssertionError(f"book version {book.version}, expected {want_version}")
    for name, got, want in (("bids", got_bids, want_bids), ("asks", got_asks, want_asks)):
        if got != want:
            extra = sorted(set(got) - set(want))[:3]
            missing = sorted(set(want) - set(got))[:3]
            wrong = [p for p in want if p in got and got[p] != want[p]][:3]
            raise AssertionError(
                f"{name} differ from the reference: {len(got)} vs {len(want)} levels; "
                f"extra {extra}, missing {missing}, wrong quantity at {wrong}"
            )
