"""The live local order book users get from ``streams.order_book(symbol)``.

:class:`OrderBook` wraps the pure :class:`~sixmm.protocol.book.BookState` with one lock, so
every read sees a whole number of updates (never half of one) from any thread, and a
condition so :meth:`OrderBook.wait_synced` blocks without polling.

The manager drives it through three underscore methods (not for users):

- ``_feed(msg)`` for every parsed depth message of the symbol, in wire order. It returns the
  :class:`~sixmm.protocol.book.Outcome`; the manager resubscribes the topic on GAP or CROSSED
  (after calling ``_begin_resync``) and dispatches the user's ``on_update(book)`` after
  SNAPSHOT and APPLIED — callbacks are the manager's business, never called from here.
- ``_expect_snapshot()`` when the depth topic's subscribe ack arrives (for streams without a
  ``type``, the next message is the snapshot — PROTOCOL.md §8).
- ``_invalidate(reason)`` the moment the book may be wrong without a resubscribe of its own
  (connection lost), and ``_begin_resync(reason)`` when a fresh snapshot is requested (gap,
  crossed book, reconnect) — call it BEFORE sending the subscribe, since it disarms
  ``_expect_snapshot``; it counts ``resyncs``.
- ``_bad_payload(reason) -> bool`` when a depth payload of the symbol fails to parse: the book
  is unsynced and disarmed; True means "resubscribe" (it was synced or awaiting its snapshot).

Two hooks for the Redis bus bridge (:mod:`sixmm.bus.bridge`): ``_observer``, if set, is called
under the lock after every fed message and every invalidation (see :data:`Observer`), and
``_locked(fn)`` runs ``fn(state)`` under the lock (one consistent snapshot).

GAP and CROSSED are logged here at INFO with the versions involved (the manager logs the
resync itself).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from sixmm.protocol.book import BookState, Outcome, PriceQty, fast_apply
from sixmm.protocol.depth import DepthMsg

__all__ = ["OrderBook"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: ``observer(msg, outcome, state)``, called under the book's lock after each fed message and
#: with ``(None, None, state)`` after each invalidation (the bus bridge's hook; must not block).
Observer = Callable[[Optional[DepthMsg], Optional[Outcome], BookState], None]

_SNAPSHOT = Outcome.SNAPSHOT  # enum member lookups are slow (~75 ns); _feed runs per frame
_GAP = Outcome.GAP
_CROSSED = Outcome.CROSSED


class OrderBook:
    """A local order book for one symbol, kept in sync with the exchange by sixmm.

    ``synced`` is False from the moment the book could be wrong (gap, crossed book,
    disconnect, resubscribe) until a fresh snapshot is applied: do not trade on an unsynced
    book. ``verified`` is False when the exchange sent updates without continuity fields
    since the last snapshot (they were applied but could not be proven continuous).

    Thread-safety: all methods are safe from any thread; every read is consistent (taken
    under the same lock the updates are applied under).
    """

    def __init__(self, symbol: str) -> None:
        self._symbol = symbol
        self._state = BookState(symbol)
        self._lock = threading.Lock()
        self._synced_cond = threading.Condition(self._lock)
        self._resyncs = 0
        self._observer: Optional[Observer] = None
        # For parse_depth(known=...): the price strings in the book (validated when they came
        # in). Read by the reader thread that also feeds the book; a dict lookup is atomic.
        self._known = self._state.known_prices()

    # -- user-facing reads -------------------------------------------------------------------

    @property
    def symbol(self) -> str:
        """The symbol, e.g. ``"BTCUSDT"``."""
        return self._symbol

    @property
    def version(self) -> Optional[int]:
        """The version of the last applied snapshot or update (None before the first)."""
        with self._lock:
            return self._state.version

    @property
    def synced(self) -> bool:
        """True while the book is known to match the exchange's."""
        with self._lock:
            return self._state.synced

    @property
    def verified(self) -> bool:
        """False if updates since the last snapshot could not be proven continuous."""
        with self._lock:
            return self._state.verified

    def best_bid(self) -> Optional[PriceQty]:
        """The highest bid ``(price, quantity)`` as Decimals, or None."""
        with self._lock:
            return self._state.best_bid()

    def best_ask(self) -> Optional[PriceQty]:
        """The lowest ask ``(price, quantity)`` as Decimals, or None."""
        with self._lock:
            return self._state.best_ask()

    def top(self, n: int = 10) -> Tuple[List[PriceQty], List[PriceQty]]:
        """The best ``n`` levels ``(bids high->low, asks low->high)`` of ``(Decimal, Decimal)``.

        Check :attr:`synced` (or read both at once with :meth:`view`) before trusting the levels.
        """
        with self._lock:
            return self._state.top(n)

    def view(self, n: int = 10) -> Dict[str, Any]:
        """One consistent read: ``{"version", "synced", "verified", "bids", "asks"}``, top ``n``."""
        with self._lock:
            state = self._state
            bids, asks = state.top(n)
            return {
                "version": state.version,
                "synced": state.synced,
                "verified": state.verified,
                "bids": bids,
                "asks": asks,
            }

    def levels(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        """A full copy ``(bids, asks)`` as ``{price: quantity}`` strings, as received."""
        with self._lock:
            return self._state.levels()

    def wait_synced(self, timeout: Optional[float] = None) -> bool:
        """Block until the book is synced (or ``timeout`` seconds pass); return :attr:`synced`.

        Not from a callback that runs on the reader thread (inline dispatcher): the snapshot
        cannot arrive while that thread waits, so it would only return at the timeout.
        """
        state = self._state
        with self._synced_cond:
            return self._synced_cond.wait_for(lambda: state.synced, timeout)

    def stats(self) -> Dict[str, Any]:
        """Counters: version, synced, verified, resyncs, stale_drops, gaps, crossed, applied,
        ignored, snapshots, unverified_applied, bid_levels, ask_levels."""
        with self._lock:
            state = self._state
            bid_levels, ask_levels = state.depth()
            return {
                "version": state.version,
                "synced": state.synced,
                "verified": state.verified,
                "resyncs": self._resyncs,
                "stale_drops": state.stale,
                "gaps": state.gaps,
                "crossed": state.crossed,
                "applied": state.applied,
                "ignored": state.ignored,
                "snapshots": state.snapshots,
                "unverified_applied": state.unverified_applied,
                "bid_levels": bid_levels,
                "ask_levels": ask_levels,
            }

    def __repr__(self) -> str:
        with self._lock:
            state = self._state
            return f"<OrderBook {self._symbol} version={state.version} synced={state.synced}>"

    # -- manager-facing ----------------------------------------------------------------------

    def _feed(self, msg: DepthMsg) -> Outcome:
        """Apply one depth message (manager only). See the module docstring for the protocol."""
        with self._lock:
            state = self._state
            before = state.version
            outcome = fast_apply(state, msg)
            if outcome is _SNAPSHOT:
                self._synced_cond.notify_all()
            if self._observer is not None:
                self._observer(msg, outcome, state)
        if outcome is _GAP:
            logger.info(
                "order book %s: version gap (book at %s, update start=%s prev=%s end=%s)",
                self._symbol,
                before,
                msg.start,
                msg.prev,
                msg.end,
            )
        elif outcome is _CROSSED:
            logger.info(
                "order book %s: crossed after version %s (treated as corruption)",
                self._symbol,
                msg.end,
            )
        return outcome

    def _expect_snapshot(self) -> None:
        """The depth subscribe ack arrived: the next message without a ``type`` is the snapshot."""
        with self._lock:
            self._state.expect_snapshot()

    def _invalidate(self, reason: str) -> None:
        """The book may be wrong from now on (e.g. connection lost): unsynced until a snapshot."""
        with self._lock:
            was_synced = self._state.synced
            self._state.invalidate()
            self._observed()
        if was_synced:
            logger.info("order book %s: not synced (%s)", self._symbol, reason)

    def _bad_payload(self, reason: str) -> bool:
        """A depth payload of this symbol failed to parse (manager only).

        The lost message may have been an update or the awaited snapshot, so the book is
        unsynced and :meth:`_expect_snapshot` disarmed (else the next update of a stream
        without ``type`` would be taken for the snapshot). Returns True if the manager must
        resubscribe: the book was synced or waiting for its snapshot.
        """
        with self._lock:
            state = self._state
            must_resync = state.synced or state.expecting_snapshot
            state.invalidate()
            self._observed()
        logger.info("order book %s: bad depth payload (%s)", self._symbol, reason)
        return must_resync

    def _begin_resync(self, reason: str) -> None:
        """A fresh snapshot is being requested (gap, crossed, reconnect...): counts a resync."""
        with self._lock:
            self._state.invalidate()
            self._resyncs += 1
            self._observed()
        logger.info("order book %s: resync (%s)", self._symbol, reason)

    def _observed(self) -> None:
        """Tell the observer the book was invalidated (lock held)."""
        if self._observer is not None:
            self._observer(None, None, self._state)

    def _locked(self, fn: Callable[[BookState], T]) -> T:
        """Run ``fn(state)`` under the book's lock (one consistent read; the bus bridge's)."""
        with self._lock:
            return fn(self._state)
