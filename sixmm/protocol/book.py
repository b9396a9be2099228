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

Representation (chosen by measurement, see ``bench/bench_book.py``): per side one mutable
entry ``[price_str, qty_str, (Decimal, Decimal) or None, key, Decimal(price) or None]`` per
level, found two ways: by the price string as last received (a dict: the hot path — a
quantity change for a known spelling is one dict lookup and two list stores, no allocation)
and by an ordering key (a dict plus a sorted list kept with :mod:`bisect`, arranged so the
best level is at the END of the list — bids keyed by ``price``, asks by ``-price`` — where
most activity is and ``insort``/``del`` move the least memory). Keys are ``float(price)``,
which identifies a price exactly as long as it has at most 15 significant digits (any two
distinct decimals of <= 15 significant digits map to distinct doubles; equal values written
differently, such as ``"85000.10"`` and ``"85000.1"``, map to the same key and are the same
level). A price with more significant digits switches the book to exact ``Decimal`` keys
(rebuilt in place) until the next snapshot: two distinct prices are never merged. ``top()``
builds Decimals only for the levels it returns, once per change of a level.

Speedups: the optional C extension :mod:`sixmm.protocol._bookside` runs the hot paths
(``_BookSide.update``, ``_BookSide.best`` and a snapshot's ``_BookSide.load``) on the same
objects, calling back into the Python methods for every rare case; the Python code is the
reference. :data:`SPEEDUPS` says whether it is in use. Setting the environment variable
``SIXMM_NO_EXTENSIONS=1`` before ``sixmm`` is imported forces the pure-Python code.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, insort
from decimal import Decimal
from typing import Any, Callable, Container, Dict, List, Optional, Tuple

from sixmm.protocol._speedups import load as load_extension
from sixmm.protocol.depth import DepthMsg, Level

__all__ = ["SPEEDUPS", "BookState", "Outcome", "PriceQty"]

PriceQty = Tuple[Decimal, Decimal]
"""A price level as users see it: ``(price, quantity)``."""

_FLOAT_DIGITS = 15  # significant decimal digits a double identifies exactly
_SHORT = _FLOAT_DIGITS  # a numeral this long (with or without a ".") has at most 15 digits

# A level: [price string, quantity string, (Decimal, Decimal) or None, key, Decimal(price) or None]
_PRICE, _QTY, _PAIR, _KEY, _PRICE_DEC = range(5)
_Entry = List[Any]


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


_speedups = load_extension("_bookside")

SPEEDUPS: bool = _speedups is not None
"""True when new books use the C extension :mod:`sixmm.protocol._bookside` by default."""


def _too_precise(price: str) -> bool:
    """True if ``price`` has more significant digits than a float key identifies."""
    return len(price.replace(".", "").strip("0")) > _FLOAT_DIGITS


class BookState:
    """One symbol's book: levels, version, and the continuity rules of PROTOCOL.md §4.1.

    Feed every depth message of the symbol to :meth:`apply`. Call :meth:`expect_snapshot`
    when the subscribe ack arrives (the first message without a ``type`` after it is the
    snapshot) and :meth:`invalidate` when the stream can no longer be trusted (disconnect,
    resubscribe). Counters are plain int attributes.

    ``speedups``: None (the default) uses the C extension when :data:`SPEEDUPS` is True;
    False forces the pure-Python code; True requires the extension (RuntimeError if it is not
    loaded). Both give identical results.

    Thread-safety: none; a single owner, or an outer lock (see :class:`sixmm.orderbook.OrderBook`).
    """

    __slots__ = (
        "_armed",
        "_asks",
        "_best",
        "_bids",
        "_exact",
        "_first",
        "_load",
        "_update",
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

    def __init__(self, symbol: str, *, speedups: Optional[bool] = None) -> None:
        if speedups and _speedups is None:
            raise RuntimeError("the C extension sixmm.protocol._bookside is not loaded")
        self._update: Callable[[_BookSide, List[Level]], None] = _BookSide.update
        self._best: Callable[[_BookSide, int], List[PriceQty]] = _BookSide.best
        self._load: Callable[[_BookSide, List[Level]], None] = _BookSide.load
        if _speedups is not None and speedups is not False:
            self._update = _speedups.update
            self._best = _speedups.best
            self._load = _speedups.load
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
        self._bids = _BookSide(self, False)
        self._asks = _BookSide(self, True)

    # -- the state machine -------------------------------------------------------------------

    @property
    def speedups(self) -> bool:
        """True if this book runs the C extension's hot paths."""
        return self._update is not _BookSide.update

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
        bids = self._bids
        asks = self._asks
        update = self._update  # _BookSide.update or its C twin
        if msg.bids:
            update(bids, msg.bids)
        if msg.asks:
            update(asks, msg.asks)
        self.version = end
        self._first = False
        self.applied += 1
        bid_keys = bids.keys
        ask_keys = asks.keys
        if bid_keys and ask_keys and bid_keys[-1] >= -ask_keys[-1]:  # crossed
            self.crossed += 1
            self.invalidate()
            return _CROSSED
        return _APPLIED

    def _snapshot(self, msg: DepthMsg) -> Outcome:
        if msg.end is None:
            raise ValueError("depth snapshot without endVersion")
        self._exact = False  # float keys again, unless this snapshot needs exact ones
        load = self._load  # _BookSide.load or its C twin
        load(self._bids, msg.bids)
        load(self._asks, msg.asks)
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

    def _key(self, price: str) -> Any:
        """The (unsigned) ordering key of ``price``; may switch the book to exact keys."""
        if not self._exact and len(price) > _SHORT and _too_precise(price):
            self._exact = True
            self._bids.rekey()
            self._asks.rekey()
        return Decimal(price) if self._exact else float(price)

    def _is_crossed(self) -> bool:
        bid_keys = self._bids.keys
        ask_keys = self._asks.keys
        return bool(bid_keys and ask_keys and bid_keys[-1] >= -ask_keys[-1])

    # -- reads -------------------------------------------------------------------------------

    def top(self, n: int = 10) -> Tuple[List[PriceQty], List[PriceQty]]:
        """The best ``n`` levels per side: bids high->low, asks low->high, as Decimals."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        best = self._best
        return best(self._bids, n), best(self._asks, n)

    def best_bid(self) -> Optional[PriceQty]:
        """The highest bid ``(price, quantity)``, or None when there are no bids."""
        best = self._best(self._bids, 1)
        return best[0] if best else None

    def best_ask(self) -> Optional[PriceQty]:
        """The lowest ask ``(price, quantity)``, or None when there are no asks."""
        best = self._best(self._asks, 1)
        return best[0] if best else None

    def known_prices(self) -> Tuple[Container[str], Container[str]]:
        """Live ``(bid, ask)`` containers of the price strings currently in the book.

        For :func:`~sixmm.protocol.depth.parse_depth`'s ``known``: every level entered the
        book through a validated :class:`DepthMsg`. The same objects for the book's lifetime;
        read-only for callers.
        """
        return self._bids.by_str, self._asks.by_str

    def levels(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        """A full copy ``(bids, asks)``: ``{price: quantity}`` with the strings as last received."""
        return self._bids.levels(), self._asks.levels()

    def depth(self) -> Tuple[int, int]:
        """The number of ``(bid, ask)`` levels."""
        return len(self._bids.keys), len(self._asks.keys)

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


class _BookSide:
    """One side's levels: entries by price string and by key, keys sorted (best last)."""

    __slots__ = ("_book", "_fast", "by_key", "by_str", "keys", "neg")

    def __init__(self, book: BookState, neg: bool) -> None:
        self._book = book
        self.neg = neg  # asks: keys are -price, so the best (lowest) ask sorts last
        self.by_str: Dict[str, _Entry] = {}
        self.by_key: Dict[Any, _Entry] = {}
        self.keys: List[Any] = []
        # The same objects for the C extension, read in one go: never rebind the attributes
        # above (by_str, by_key and keys are only ever changed in place).
        self._fast = (book, self.by_str, self.by_key, self.keys, neg)

    def update(self, levels: List[Level]) -> None:
        """Apply level changes (the hot path: a known price string changing quantity).

        The reference for ``_bookside.update``, which calls it for levels it does not handle.
        """
        by_str = self.by_str
        get = by_str.get
        by_key = self.by_key
        keys = self.keys
        book = self._book
        neg = self.neg
        for price, qty in levels:
            entry = get(price)
            if entry is not None:
                if qty.strip("0."):
                    entry[1] = qty  # _QTY
                    entry[2] = None  # _PAIR
                else:
                    del by_str[price]
                    key = entry[3]  # _KEY
                    del by_key[key]
                    del keys[bisect_left(keys, key)]
            elif not qty.strip("0."):
                self._remove_other_spelling(price)
            elif book._exact or len(price) > _SHORT:
                self._set(price, qty, True)  # may switch the book to exact keys
            else:  # a new price string short enough for a float key (inlined _set)
                key = -float(price) if neg else float(price)
                if key in by_key:
                    self._set(price, qty, True)  # another spelling of a present level
                else:
                    by_str[price] = by_key[key] = [price, qty, None, key, None]
                    insort(keys, key)

    def _key(self, price: str) -> Any:
        key = self._book._key(price)
        return -key if self.neg else key

    def _set(self, price: str, qty: str, sort: bool) -> None:
        """A price string not seen on this side: a new level, or a new spelling of one."""
        key = self._key(price)
        entry = self.by_key.get(key)
        if entry is not None:  # same value, another spelling: keep the latest spelling
            del self.by_str[entry[_PRICE]]
            entry[_PRICE] = price
            entry[_QTY] = qty
            entry[_PAIR] = None
            entry[_PRICE_DEC] = None
        else:
            entry = [price, qty, None, key, None]
            self.by_key[key] = entry
            if sort:
                insort(self.keys, key)
        self.by_str[price] = entry

    def _remove_other_spelling(self, price: str) -> None:
        """Quantity 0 for a price string not seen: remove the level if it exists at all."""
        key = self._key(price)
        entry = self.by_key.pop(key, None)
        if entry is not None:
            del self.by_str[entry[_PRICE]]
            keys = self.keys
            del keys[bisect_left(keys, key)]

    def load(self, levels: List[Level]) -> None:
        """Replace everything with a snapshot's levels.

        The reference for ``_bookside.load``, which runs the common case (a new price string
        of at most 15 characters, a non-zero quantity, float keys) in C with entries the
        cyclic GC never tracks, and calls :meth:`_load_levels` for every other level and
        :meth:`_loaded` at the end.
        """
        self.by_str.clear()
        self.by_key.clear()
        self.keys.clear()
        self._load_levels(levels)
        self._loaded()

    def _load_levels(self, levels: List[Level]) -> None:
        """Add a snapshot's levels to the side being loaded (unsorted keys)."""
        for price, qty in levels:
            if qty.strip("0."):
                entry = self.by_str.get(price)
                if entry is not None:
                    entry[_QTY] = qty
                    entry[_PAIR] = None
                else:
                    self._set(price, qty, False)
            else:
                entry = self.by_str.pop(price, None)
                if entry is not None:
                    del self.by_key[entry[_KEY]]
                else:
                    key = self._key(price)
                    entry = self.by_key.pop(key, None)
                    if entry is not None:
                        del self.by_str[entry[_PRICE]]

    def _loaded(self) -> None:
        """The snapshot's levels are in: sort the keys (and untrack a C book's entries)."""
        self.keys[:] = sorted(self.by_key)
        if _speedups is not None and self._book._update is _speedups.update:
            # the entries cannot be part of a reference cycle: no GC tracking, so no full
            # collection walks a whole book (_bookside.c, untrack)
            _speedups.untrack(self.by_str)
            _speedups.untrack(self.by_key)
            _speedups.untrack(self.keys)

    def rekey(self) -> None:
        """Recompute every key (the book switched to exact Decimal keys), in place."""
        entries = list(self.by_key.values())
        self.by_key.clear()
        for entry in entries:
            key = Decimal(entry[_PRICE])
            entry[_KEY] = key = -key if self.neg else key
            self.by_key[key] = entry
        self.keys[:] = sorted(self.by_key)

    def best(self, n: int) -> List[PriceQty]:
        """The ``n`` best levels as Decimals, built once per change of a level."""
        by_key = self.by_key
        out: List[PriceQty] = []
        append = out.append
        for key in self.keys[: -n - 1 : -1]:
            entry = by_key[key]
            pair = entry[2]  # _PAIR
            if pair is None:
                price = entry[4]  # _PRICE_DEC: kept while only the quantity changes
                if price is None:
                    price = entry[4] = Decimal(entry[0])
                pair = entry[2] = (price, Decimal(entry[1]))
            append(pair)
        return out

    def levels(self) -> Dict[str, str]:
        return {price: entry[_QTY] for price, entry in self.by_str.items()}


fast_apply: Callable[[BookState, DepthMsg], Outcome] = BookState.apply
"""``BookState.apply(state, msg)``; with the C extension, its common case (an update that
continues a synced C-backed book) runs in C and everything else is the method itself. The
live book's hot path; :meth:`BookState.apply` stays the reference it is tested against."""
if _speedups is not None and hasattr(_speedups, "bind"):
    _speedups.bind(BookState, DepthMsg, _BookSide, BookState.apply, _APPLIED, _CROSSED)
    fast_apply = _speedups.apply
