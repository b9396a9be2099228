"""Pure market simulation for the sandbox: order books with versions, trades, klines, tickers.

No I/O, no clocks: callers pass ``now_ms``. Everything random comes from one
``random.Random`` per symbol, seeded from ``(seed, symbol)``, so a given seed always
produces the same market, tick after tick. Prices and quantities are kept as integers
(in ticks) and rendered to the exact decimal strings sent on the wire.

Thread-safety: not thread-safe; the sandbox only touches it from its event-loop thread.
"""

from __future__ import annotations

import calendar
import datetime
import random
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

__all__ = ["INTERVALS", "DepthEvent", "Market", "SymbolBook", "TickResult", "fmt"]

INTERVALS: Tuple[str, ...] = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w", "1M")

_MINUTE = 60_000
_FIXED_MS: Dict[str, int] = {
    "1m": _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": 60 * _MINUTE,
    "4h": 240 * _MINUTE,
    "1d": 1440 * _MINUTE,
}
_WEEK = 7 * 1440 * _MINUTE
_MONDAY_OFFSET = 4 * 1440 * _MINUTE  # 1970-01-05 was a Monday

# symbol -> (start price, price decimals, quantity decimals)
_SPECS: Dict[str, Tuple[str, int, int]] = {
    "BTCUSDT": ("85000.0", 1, 3),
    "ETHUSDT": ("3000.00", 2, 3),
    "SOLUSDT": ("150.000", 3, 2),
}
_DEFAULT_SPEC = ("100.0000", 4, 2)

Level = Tuple[str, str]


def fmt(n: int, decimals: int) -> str:
    """Render integer ``n`` (in units of ``10**-decimals``) as a plain decimal string."""
    if decimals <= 0:
        return str(n)
    sign = "-" if n < 0 else ""
    s = str(abs(n)).rjust(decimals + 1, "0")
    return f"{sign}{s[:-decimals]}.{s[-decimals:]}"


def kline_open(interval: str, now_ms: int) -> Tuple[int, int]:
    """``(openTime, closeTime)`` of the ``interval`` kline containing ``now_ms`` (UTC)."""
    if interval in _FIXED_MS:
        size = _FIXED_MS[interval]
        start = now_ms - now_ms % size
        return start, start + size - 1
    if interval == "1w":
        start = now_ms - (now_ms - _MONDAY_OFFSET) % _WEEK
        return start, start + _WEEK - 1
    if interval == "1M":
        d = datetime.datetime.fromtimestamp(now_ms / 1000.0, tz=datetime.timezone.utc)
        first = calendar.timegm((d.year, d.month, 1, 0, 0, 0)) * 1000
        nxt_year, nxt_month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        nxt = calendar.timegm((nxt_year, nxt_month, 1, 0, 0, 0)) * 1000
        return first, nxt - 1
    raise ValueError(f"unknown interval {interval!r}")


class DepthEvent:
    """One depth message to publish: a snapshot or an update covering ``start..end``."""

    __slots__ = ("asks", "bids", "end", "kind", "start", "symbol")

    def __init__(
        self,
        symbol: str,
        kind: str,
        start: int,
        end: int,
        bids: List[Level],
        asks: List[Level],
    ) -> None:
        self.symbol = symbol
        self.kind = kind
        self.start = start
        self.end = end
        self.bids = bids
        self.asks = asks

    def __repr__(self) -> str:
        return (
            f"DepthEvent({self.symbol} {self.kind} {self.start}..{self.end} "
            f"bids={len(self.bids)} asks={len(self.asks)})"
        )


class SymbolBook:
    """The ground-truth book of one symbol plus its trade, kline and ticker state."""

    MAX_LEVELS = 300
    MIN_LEVELS = 10

    def __init__(self, symbol: str, seed: int, levels: int = 50, now_ms: int = 0) -> None:
        self.symbol = symbol
        self.rng = random.Random(f"{seed}:{symbol}")
        start, self.pd, self.qd = _SPECS.get(symbol, _DEFAULT_SPEC)
        self.mid = int(start.replace(".", ""))
        self.version = 1000 + self.rng.randint(0, 9000)
        self.bids: Dict[int, int] = {}
        self.asks: Dict[int, int] = {}
        offsets = self.rng.sample(range(1, max(levels * 3, 3) + 1), max(levels, 1))
        for off in offsets:
            self.bids[self.mid - off] = self._qty()
        for off in self.rng.sample(range(1, max(levels * 3, 3) + 1), max(levels, 1)):
            self.asks[self.mid + off] = self._qty()
        self.pending_skip = 0
        self.trade_id = 100_000 + self.rng.randint(0, 899_999)
        self.last = self.mid
        self.open = self.mid
        self.high = self.mid
        self.low = self.mid
        self.volume = 0  # in qty units
        self.quote_volume = 0  # in price*qty units (pd + qd decimals)
        self.klines: Dict[str, List[int]] = {}  # interval -> [open, close, o, h, l, c, vol]
        self.finished: List[Tuple[str, List[int]]] = []  # rolled by a trade, not yet sent closed
        for iv in INTERVALS:
            self._new_kline(iv, now_ms)

    # ------------------------------------------------------------------ book
    def _qty(self) -> int:
        return self.rng.randint(1, 5 * 10**self.qd)

    def best_bid(self) -> int:
        return max(self.bids)

    def best_ask(self) -> int:
        return min(self.asks)

    def _levels(self, side: Dict[int, int], reverse: bool) -> List[Level]:
        return [(fmt(p, self.pd), fmt(side[p], self.qd)) for p in sorted(side, reverse=reverse)]

    def snapshot(self) -> DepthEvent:
        """The full current book as a snapshot event."""
        return DepthEvent(
            self.symbol,
            "snapshot",
            self.version,
            self.version,
            self._levels(self.bids, True),
            self._levels(self.asks, False),
        )

    def truth(self) -> Tuple[int, Dict[str, str], Dict[str, str]]:
        """``(version, bids, asks)`` with the exact wire strings."""
        bids = {fmt(p, self.pd): fmt(q, self.qd) for p, q in self.bids.items()}
        asks = {fmt(p, self.pd): fmt(q, self.qd) for p, q in self.asks.items()}
        return self.version, bids, asks

    def _render(self, changes: Dict[int, int], reverse: bool) -> List[Level]:
        return [
            (fmt(p, self.pd), fmt(changes[p], self.qd) if changes[p] else "0")
            for p in sorted(changes, reverse=reverse)
        ]

    def advance(self, k: int = 1) -> DepthEvent:
        """Mutate the book (5-20 level changes, ~10% deletions) and advance ``k`` versions."""
        rng = self.rng
        cb: Dict[int, int] = {}
        ca: Dict[int, int] = {}
        if rng.random() < 0.3:
            self.mid += rng.choice((-2, -1, 1, 2))
            for p in [p for p in self.bids if p >= self.mid]:
                del self.bids[p]
                cb[p] = 0
            for p in [p for p in self.asks if p <= self.mid]:
                del self.asks[p]
                ca[p] = 0
        for _ in range(rng.randint(5, 20)):
            is_bid = rng.random() < 0.5
            side, changes = (self.bids, cb) if is_bid else (self.asks, ca)
            if rng.random() < 0.1 and len(side) > self.MIN_LEVELS:
                p = rng.choice(list(side))
                del side[p]
                changes[p] = 0
            else:
                off = 1 + min(int(rng.expovariate(1 / 25.0)), 400)
                p = self.mid - off if is_bid else self.mid + off
                q = self._qty()
                side[p] = q
                changes[p] = q
        if not self.bids:
            self.bids[self.mid - 1] = cb[self.mid - 1] = self._qty()
        if not self.asks:
            self.asks[self.mid + 1] = ca[self.mid + 1] = self._qty()
        for side, changes, reverse in ((self.bids, cb, False), (self.asks, ca, True)):
            extra = len(side) - self.MAX_LEVELS
            if extra > 0:  # prune the levels furthest from the mid
                for p in sorted(side, reverse=reverse)[:extra]:
                    del side[p]
                    changes[p] = 0
        start = self.version + 1
        self.version += k
        return DepthEvent(
            self.symbol,
            "update",
            start,
            self.version,
            self._render(cb, True),
            self._render(ca, False),
        )

    def crossed_update(self) -> DepthEvent:
        """A corrupt one-version update putting a bid at the best ask; truth keeps its levels."""
        self.version += 1
        price = fmt(self.best_ask(), self.pd)
        return DepthEvent(self.symbol, "update", self.version, self.version, [(price, "1")], [])

    # ---------------------------------------------------------------- trades
    def trades(self, now_ms: int, n: Optional[int] = None) -> List[Dict[str, object]]:
        """Generate ``n`` (default 1-3) trades at the touch and fold them into klines/ticker."""
        count = n if n is not None else self.rng.randint(1, 3)
        out: List[Dict[str, object]] = []
        for _ in range(count):
            buy = self.rng.random() < 0.5
            price = self.best_ask() if buy else self.best_bid()
            qty = self.rng.randint(1, 2 * 10**self.qd)
            self.trade_id += 1
            out.append(
                {
                    "symbol": self.symbol,
                    "tradeId": str(self.trade_id),
                    "price": fmt(price, self.pd),
                    "quantity": fmt(qty, self.qd),
                    "side": "BUY" if buy else "SELL",
                    "time": now_ms,
                }
            )
            self._fold(price, qty, now_ms)
        return out

    def _fold(self, price: int, qty: int, now_ms: int) -> None:
        self.last = price
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.volume += qty
        self.quote_volume += price * qty
        for iv in INTERVALS:
            k = self.klines[iv]
            if now_ms > k[1]:
                self.finished.append((iv, k))  # published closed by the next kline_dicts()
                self._new_kline(iv, now_ms)
                k = self.klines[iv]
            k[3] = max(k[3], price)
            k[4] = min(k[4], price)
            k[5] = price
            k[6] += qty

    def _new_kline(self, interval: str, now_ms: int) -> None:
        start, end = kline_open(interval, now_ms)
        p = self.last
        self.klines[interval] = [start, end, p, p, p, p, 0]

    def kline_dicts(self, now_ms: int) -> List[Tuple[str, Dict[str, object]]]:
        """Current kline per interval; a kline whose period ended is sent closed, then rolled."""
        out: List[Tuple[str, Dict[str, object]]] = [
            (iv, self._kline_dict(iv, k, True)) for iv, k in self.finished
        ]
        self.finished.clear()
        for iv in INTERVALS:
            k = self.klines[iv]
            closed = now_ms > k[1]
            out.append((iv, self._kline_dict(iv, k, closed)))
            if closed:
                self._new_kline(iv, now_ms)
                out.append((iv, self._kline_dict(iv, self.klines[iv], False)))
        return out

    def _kline_dict(self, interval: str, k: List[int], closed: bool) -> Dict[str, object]:
        return {
            "symbol": self.symbol,
            "interval": interval,
            "openTime": k[0],
            "open": fmt(k[2], self.pd),
            "high": fmt(k[3], self.pd),
            "low": fmt(k[4], self.pd),
            "close": fmt(k[5], self.pd),
            "volume": fmt(k[6], self.qd),
            "closeTime": k[1],
            "closed": closed,
        }

    def ticker(self) -> Dict[str, object]:
        """The 24h-style ticker summary of this symbol."""
        change = self.last - self.open
        pct = (Decimal(change) * 100 / Decimal(self.open)).quantize(Decimal("0.01"))
        index = self.mid + self.rng.randint(-3, 3)
        return {
            "symbol": self.symbol,
            "lastPrice": fmt(self.last, self.pd),
            "open": fmt(self.open, self.pd),
            "high": fmt(self.high, self.pd),
            "low": fmt(self.low, self.pd),
            "volume": fmt(self.volume, self.qd),
            "quoteVolume": fmt(self.quote_volume, self.pd + self.qd),
            "priceChange": fmt(change, self.pd),
            "priceChangePercent": str(pct),
            "markPrice": fmt(self.mid, self.pd),
            "indexPrice": fmt(index, self.pd),
            "fundingRate": "0.00010000",
        }


class TickResult:
    """What one market tick produced, for the server to publish."""

    __slots__ = ("depth", "klines", "tickers", "trades")

    def __init__(self) -> None:
        self.depth: List[DepthEvent] = []
        self.trades: Dict[str, List[Dict[str, object]]] = {}
        self.klines: List[Tuple[str, str, Dict[str, object]]] = []  # (symbol, interval, data)
        self.tickers: List[Dict[str, object]] = []


class Market:
    """Every symbol's book, advanced one tick at a time (deterministic for a seed).

    ``ticker_every``/``kline_every`` are cadences in ticks, so the sequence of emitted
    messages depends on the seed and the number of ticks only, never on wall time.
    """

    def __init__(
        self,
        symbols: Tuple[str, ...],
        seed: int = 0,
        levels: int = 50,
        ticker_every: int = 25,
        kline_every: int = 50,
        now_ms: int = 0,
    ) -> None:
        self.books: Dict[str, SymbolBook] = {
            s: SymbolBook(s, seed, levels, now_ms) for s in symbols
        }
        self.ticker_every = max(1, ticker_every)
        self.kline_every = max(1, kline_every)
        self.ticks = 0

    def skip(self, symbol: str, n: int) -> None:
        """Make the next published update of ``symbol`` jump ``n`` versions (hidden changes)."""
        self.books[symbol].pending_skip += n

    def tick(self, now_ms: int) -> TickResult:
        """Advance every book once; maybe trade; klines/tickers on their cadence."""
        self.ticks += 1
        out = TickResult()
        for book in self.books.values():
            if book.pending_skip:
                book.advance(book.pending_skip)  # applied to the truth, never published
                book.pending_skip = 0
            k = 1 if book.rng.random() < 0.8 else book.rng.randint(2, 4)
            out.depth.append(book.advance(k))
            if book.rng.random() < 0.3:
                out.trades[book.symbol] = book.trades(now_ms)
        if self.ticks % self.kline_every == 0:
            for book in self.books.values():
                for iv, data in book.kline_dicts(now_ms):
                    out.klines.append((book.symbol, iv, data))
        if self.ticks % self.ticker_every == 0:
            out.tickers = [book.ticker() for book in self.books.values()]
        return out
