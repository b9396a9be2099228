"""The order-book state machine (PROTOCOL.md §4.1): snapshot + versioned increments.

Pure: no I/O, no locks, no clocks. :class:`BookState` consumes :class:`DepthMsg` values and
answers each with an :class:`Outcome`; the live, thread-safe wrapper is
:class:`sixmm.orderbook.OrderBook`.

Continuity (``v`` is the book's version: the snapshot's ``endVersion``, then each applied
update's ``endVersion``):

- ``endVersion <= v``: STALE, dropped and counted;
- first update after a snapshot: applied if ``startVersion <= v + 1 <= endVersion``;
- later updates: applied only if ``startVersion == v + 1``;
- [assumed] no ``startVersion`` but a predecessor (``prevEndVersion``/``lastEndVersion``):
  applied only if it equals ``v`` (``startVersion`` wins when both are present);
- [assumed] neither: applied if ``endVersion > v``, and the book says ``verified = False``
  until the next snapshot;
- anything else: GAP — the book is unsynced until a snapshot is applied.

A result with best bid >= best ask is CROSSED (corruption): the update is applied, then the
book is unsynced like after a gap. Updates that arrive while unsynced are IGNORED.

Representation (chosen by measurement, see ``bench/bench_book.py``): per side a dict
``key -> (price_str, qty_str, Decimals or None)`` plus a sorted list of keys
kept with :mod:`bisect`, arranged so the best level is at the END of the list (bids keyed by
``price``, asks by ``-price``): most activity is near the top, where ``insort``/``del`` move
the least memory. Keys are ``float(price)``, which identifies a price exactly as long as it
has at most 15 significant digits (any two distinct decimals of <= 15 significant digits map
to distinct doubles; equal values written differently, such as ``"85000.10"`` and
``"85000.1"``, map to the same key and are the same level). A price with more significant
digits switches the book to exact ``Decimal`` keys (rebuilt in place) until the next
snapshot: two distinct prices are never merged.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, insort
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from sixmm.protocol.depth import DepthMsg, Level

__all__ = ["BookState", "Outcome", "PriceQty"]

PriceQty = Tuple[Decimal, Decimal]
"""A price level as users see it: ``(price, quantity)``."""

_FLOAT_DIGITS = 15  # significant decimal digits a double identifies exactly
_SHORT = _FLOAT_DIGITS + 1  # a numeral this long (with its ".") cannot exceed 15 digits
_CACHE_MAX = 65_536  # price-string -> key cache entries per side before it is emptied

# key -> (price string, quantity string, (Decimal, Decimal) once top() has built it, or None)
_Entry = Tuple[str, str, Optional[PriceQty]]
_Side = Dict[Any, _Entry]


class Outcome(enum.Enum):
    """What :meth:`BookState.apply` did with one message."""

    SNAPSHOT = "snapshot"
    """A snapshot was applied: the book is synced at its ``endVersion``."""
    APPLIED = "applied"
    """An update was applied."""
    STALE = "stale"
    """``endVersion <= version``: dropped (counted)."""
    GAP = "gap"
    """Continuity broken: nothing applied, the book is unsynced until a snapshot."""
    CROSSED = "crossed"
    """The message was applied and left best bid >= best ask: corruption, book unsynced."""
    IGNORED = "ignored"
    """An update while waiting for a snapshot."""


# Enum member lookups cost ~75 ns each on CPython 3.11; apply() runs per frame.
_SNAPSHOT = Outcome.SNAPSHOT
_APPLIED = Outcome.APPLIED
_STALE = Outcome.STALE
_GAP = Outcome.GAP
_CROSSED = Outcome.CROSSED
_IGNORED = Outcome.IGNORED


def _too_precise(price: str) -> bool:
    """True if ``price`` has more significant digits than a float key identifies."""
    return len(price.replace(".", "").strip("0")) > _FLOAT_DIGITS


class BookState:
    """One symbol's book: levels, version, and the continuity rules of PROTOCOL.md §4.1.

    Feed every depth message of the symbol to :meth:`apply`. Call :meth:`expect_snapshot`
    when the subscribe ack arrives (the first message without a ``type`` after it is the
    snapshot) and :meth:`invalidate` when the stream can no longer be trusted (disconnect,
    resubscribe). Counters are plain int attributes.

    Thread-safety: none; a single owner, or an outer lock (see :class:`sixmm.orderbook.OrderBook`).
    """

    __slots__ = (
        "_armed",
        "_ask_cache",
        "_ask_keys",
        "_asks",
        "_bid_cache",
        "_bid_keys",
        "_bids",
        "_exact",
        "_first",
        "applied",
        "crossed",
        "gaps",
        "ignored",
        "snapshots",
        "stale",
        "symbol",
        "synced",
        "unverified_applied",
        "verified",
        "version",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.version: Optional[int] = None
        self.synced = False
        """True from a clean snapshot until a gap, a crossed book or :meth:`invalidate`."""
        self.verified = False
        """False once an update without continuity fields was applied (until a snapshot)."""
        self.applied = 0
        self.stale = 0
        self.gaps = 0
        self.crossed = 0
        self.ignored = 0
        self.snapshots = 0
        self.unverified_applied = 0
        self._first = False  # the next update is the first after a snapshot
        self._armed = False  # the next message without a type is the snapshot
        self._exact = False  # Decimal keys instead of float keys
        self._bids: _Side = {}
        self._bid_keys: List[Any] = []  # ascending price: best bid last
        self._asks: _Side = {}
        self._ask_keys: List[Any] = []  # ascending -price: best ask last
        self._bid_cache: Dict[str, Any] = {}  # price string -> key (float() is ~170 ns)
        self._ask_cache: Dict[str, Any] = {}  # price string -> negated key

    # -- the state machine -------------------------------------------------------------------

    def expect_snapshot(self) -> None:
        """The subscribe ack arrived: the next message without a ``type`` is the snapshot."""
        self._armed = True

    @property
    def expecting_snapshot(self) -> bool:
        """True while :meth:`expect_snapshot` is armed and no snapshot has arrived yet."""
        return self._armed

    def invalidate(self) -> None:
        """The stream can't be trusted any more: unsynced until the next snapshot.

        Also disarms :meth:`expect_snapshot` (a new subscribe ack must re-arm it).
        """
        self.synced = False
        self._armed = False
        self._first = False

    def apply(self, msg: DepthMsg) -> Outcome:
        """Apply one depth message; see the module docstring for the rules.

        Raises ValueError if ``msg.end`` is None (:func:`parse_depth` never produces that).
        """
        kind = msg.kind
        if kind == "snapshot" or (kind is None and self._armed):
            return self._snapshot(msg)
        if not self.synced:
            self.ignored += 1
            return _IGNORED
        end = msg.end
        if end is None:
            raise ValueError("depth message without endVersion")
        v: int = self.version  # type: ignore[assignment]  # synced implies a version
        if end <= v:
            self.stale += 1
            return _STALE
        start = msg.start
        if start is not None:
            ok = start <= v + 1 if self._first else start == v + 1
        elif msg.prev is not None:
            ok = msg.prev == v
        else:
            ok = True
            self.verified = False
            self.unverified_applied += 1
        if not ok:
            self.gaps += 1
            self.invalidate()
            return _GAP
        if msg.bids:
            self._update(msg.bids, self._bids, self._bid_keys, self._bid_cache, False)
        if msg.asks:
            self._update(msg.asks, self._asks, self._ask_keys, self._ask_cache, True)
        self.version = end
        self._first = False
        self.applied += 1
        bid_keys = self._bid_keys
        ask_keys = self._ask_keys
        if bid_keys and ask_keys and bid_keys[-1] >= -ask_keys[-1]:  # crossed (inlined)
            self.crossed += 1
            self.invalidate()
            return _CROSSED
        return _APPLIED

    def _snapshot(self, msg: DepthMsg) -> Outcome:
        if msg.end is None:
            raise ValueError("depth snapshot without endVersion")
        if self._exact:  # back to float keys unless this snapshot needs exact ones
            self._exact = False
            self._bid_cache.clear()
            self._ask_cache.clear()
        self._bids.clear()
        self._asks.clear()
        self._load(msg.bids, self._bids, self._bid_cache, False)
        self._load(msg.asks, self._asks, self._ask_cache, True)
        self._bid_keys[:] = sorted(self._bids)
        self._ask_keys[:] = sorted(self._asks)
        self.version = msg.end
        self.snapshots += 1
        self._armed = False
        self._first = True
        self.verified = True
        if self._is_crossed():
            self.crossed += 1
            self.invalidate()
            return _CROSSED
        self.synced = True
        return _SNAPSHOT

    def _load(self, levels: List[Level], book: _Side, cache: Dict[str, Any], neg: bool) -> None:
        """Snapshot levels into an empty side (the key list is rebuilt afterwards)."""
        for price, qty in levels:
            key = cache.get(price)
            if key is None:
                key = self._new_key(price, cache, neg)
            if qty.strip("0."):
                book[key] = (price, qty, None)
            else:
                book.pop(key, None)

    def _update(
        self, levels: List[Level], book: _Side, keys: List[Any], cache: Dict[str, Any], neg: bool
    ) -> None:
        """Apply level changes to one side, keeping its sorted key list."""
        for price, qty in levels:
            key = cache.get(price)
            if key is None:
                key = self._new_key(price, cache, neg)
            if qty.strip("0."):
                if key not in book:
                    insort(keys, key)
                book[key] = (price, qty, None)
            elif book.pop(key, None) is not None:
                del keys[bisect_left(keys, key)]

    def _new_key(self, price: str, cache: Dict[str, Any], neg: bool) -> Any:
        """The ordering key of a price not in ``cache`` (negated for asks); caches it."""
        if not self._exact and len(price) > _SHORT and _too_precise(price):
            self._go_exact()
        key: Any = Decimal(price) if self._exact else float(price)
        if neg:
            key = -key
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[price] = key
        return key

    def _go_exact(self) -> None:
        """Re-key both sides with Decimal keys (a price needs more than 15 digits)."""
        self._exact = True
        for book, keys, cache, neg in (
            (self._bids, self._bid_keys, self._bid_cache, False),
            (self._asks, self._ask_keys, self._ask_cache, True),
        ):
            cache.clear()
            entries = list(book.values())
            book.clear()
            for entry in entries:
                key = Decimal(entry[0])
                book[-key if neg else key] = entry
            keys[:] = sorted(book)

    def _is_crossed(self) -> bool:
        bid_keys = self._bid_keys
        ask_keys = self._ask_keys
        return bool(bid_keys and ask_keys and bid_keys[-1] >= -ask_keys[-1])

    # -- reads -------------------------------------------------------------------------------

    def top(self, n: int = 10) -> Tuple[List[PriceQty], List[PriceQty]]:
        """The best ``n`` levels per side: bids high->low, asks low->high, as Decimals."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return (
            _best(self._bids, self._bid_keys, n),
            _best(self._asks, self._ask_keys, n),
        )

    def best_bid(self) -> Optional[PriceQty]:
        """The highest bid ``(price, quantity)``, or None when there are no bids."""
        best = _best(self._bids, self._bid_keys, 1)
        return best[0] if best else None

    def best_ask(self) -> Optional[PriceQty]:
        """The lowest ask ``(price, quantity)``, or None when there are no asks."""
        best = _best(self._asks, self._ask_keys, 1)
        return best[0] if best else None

    def levels(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        """A full copy ``(bids, asks)``: ``{price: quantity}`` with the strings as last received."""
        return (
            {entry[0]: entry[1] for entry in self._bids.values()},
            {entry[0]: entry[1] for entry in self._asks.values()},
        )

    def depth(self) -> Tuple[int, int]:
        """The number of ``(bid, ask)`` levels."""
        return len(self._bid_keys), len(self._ask_keys)

    @property
    def exact_keys(self) -> bool:
        """True while the book uses Decimal keys (a price had more than 15 significant digits)."""
        return self._exact

    def counters(self) -> Dict[str, int]:
        """The counters as a dict."""
        return {
            "applied": self.applied,
            "stale": self.stale,
            "gaps": self.gaps,
            "crossed": self.crossed,
            "ignored": self.ignored,
            "snapshots": self.snapshots,
            "unverified_applied": self.unverified_applied,
        }

    def __repr__(self) -> str:
        bids, asks = self.depth()
        return (
            f"BookState({self.symbol!r}, version={self.version}, synced={self.synced}, "
            f"bids={bids}, asks={asks})"
        )


def _best(book: _Side, keys: List[Any], n: int) -> List[PriceQty]:
    """The ``n`` best levels as Decimals, built once per entry and kept in it."""
    out: List[PriceQty] = []
    append = out.append
    for key in keys[: -n - 1 : -1]:
        entry = book[key]
        pair = entry[2]
        if pair is None:
            pair = (Decimal(entry[0]), Decimal(entry[1]))
            book[key] = (entry[0], entry[1], pair)
        append(pair)
    return out
