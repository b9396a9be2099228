"""The registry's records: one :class:`Route` per desired topic, and the user's handle to it."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Protocol, Tuple

from .errors import SubscriptionError
from .protocol.liveness import TopicWatch

if TYPE_CHECKING:
    from .orderbook import OrderBook

__all__ = ["Callback", "Carrier", "Route", "Subscription"]

Callback = Callable[[Any], Any]


class Carrier(Protocol):
    """What carries a route's topic: a public session (its connection subscribes it), or the
    bus reader (it reads the topic's stream). The registry adds and removes routes through
    it and asks it to rebuild a book; nothing else reaches back from a route."""

    def add(self, route: Route) -> None: ...

    def remove(self, route: Route, *, unsubscribe: bool = True) -> None: ...

    def resync(self, route: Route, reason: str) -> None: ...


class Route:
    """Everything sixmm knows about one desired topic; read by the reader thread per message.

    Callback tuples are replaced, never mutated, so the reader needs no lock to read them.
    """

    __slots__ = (
        "bad_payloads",
        "book",
        "callbacks",
        "channel",
        "conflate",
        "error",
        "gap_start",
        "gaps",
        "lag_ms",
        "last_ts",
        "listeners",
        "messages",
        "ready",
        "resync_at",
        "session",
        "silence_after",
        "topic",
        "watch",
    )

    def __init__(
        self, topic: str, channel: Optional[str], silence_bound: Optional[float] = None
    ) -> None:
        self.topic = topic
        self.channel = channel  # None for raw topics outside the known grammar
        self.callbacks: Tuple[Callback, ...] = ()
        self.listeners: Tuple[Callback, ...] = ()  # order-book on_update callbacks
        self.book: Optional[OrderBook] = None
        # state-like channels: a newer message may replace an unconsumed older one
        self.conflate = channel in ("ticker", "tickers")
        self.ready = threading.Event()
        self.error: Optional[SubscriptionError] = None
        self.session: Optional[Carrier] = None  # set by the carrier's add()
        self.messages = 0
        self.bad_payloads = 0
        self.last_ts: Optional[int] = None
        self.lag_ms: Optional[int] = None
        self.gap_start: Optional[int] = None
        self.gaps = 0
        self.resync_at: Optional[float] = None
        # liveness: the policy's bound, unless a registration passed silence_after (the
        # smallest one given wins); judged by the session's once-a-tick check
        self.silence_after: Optional[float] = None
        self.watch = TopicWatch(topic, silence_bound)

    def override_silence(self, seconds: float) -> None:
        """A registration asked for ``silence_after=seconds`` (the most demanding one wins)."""
        if self.silence_after is None or seconds < self.silence_after:
            self.silence_after = seconds
            self.watch.bound = None if seconds == float("inf") else seconds

    @property
    def empty(self) -> bool:
        return not self.callbacks and not self.listeners and self.book is None

    def stats(self) -> Dict[str, Any]:
        return {
            "messages": self.messages,
            "bad_payloads": self.bad_payloads,
            "ready": self.ready.is_set() and self.error is None,
            "gaps": self.gaps,
            "last_ts": self.last_ts,
            "lag_ms": self.lag_ms,
            **self.watch.stats(time.monotonic()),
        }


class Subscription:
    """A handle on one callback's subscription to ``topic``.

    ``wait_ready(timeout)`` blocks until the server acknowledged the subscription (True), the
    timeout passed (False), or raises :class:`~sixmm.errors.SubscriptionError` if the server
    refused it. ``unsubscribe()`` removes this callback; the topic itself is unsubscribed when
    its last callback goes.

    Thread-safety: safe; may be used from any thread, including inside callbacks.
    """

    __slots__ = ("_callback", "_manager", "_route", "_slot", "topic")

    def __init__(self, manager: Any, route: Route, callback: Optional[Callback], slot: str) -> None:
        self._manager = manager
        self._route = route
        self._callback = callback
        self._slot = slot
        self.topic = route.topic

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """True once acknowledged; False on timeout; raises ``SubscriptionError`` if refused."""
        if not self._route.ready.wait(timeout):
            return False
        if self._route.error is not None:
            raise self._route.error
        return True

    @property
    def ready(self) -> bool:
        """True once the server acknowledged the subscription."""
        return self._route.ready.is_set() and self._route.error is None

    def unsubscribe(self) -> None:
        """Stop delivering to this callback (idempotent)."""
        manager, self._manager = self._manager, None
        if manager is not None:
            manager._release(self._route, self._callback, self._slot)

    def __repr__(self) -> str:
        return f"<Subscription {self.topic} ready={self.ready}>"
