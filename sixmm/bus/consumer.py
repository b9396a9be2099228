"""The consumer: a :class:`~sixmm.StreamManager` that reads what bridges published to Redis.

``StreamManager.from_redis(url)`` returns a :class:`RedisStreamManager`: the same registration
methods for public topics, the same models, dispatchers and notifications, fed by one reader
thread (``sixmm-bus-reader``) doing blocking ``XREAD``s (no consumer groups: every consumer
gets everything). Books are rebuilt from the latest ``snapshot`` entry plus the ``update``
entries after it, through the same :class:`~sixmm.OrderBook` and version rules. Continuity is
checked per stream by ``(session, seq)``: a hole (the consumer fell behind past the trim), an
idle stream (no bridge fed it for ``idle_after`` seconds) or a bridge's ``gap`` entry gives
``on_gap`` and an unsynced book until the next snapshot; a new session (failover) resyncs the
book and trades are de-duplicated by trade id.

Thread-safety: as :class:`~sixmm.StreamManager`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from ..config import Backoff
from ..dispatch import Dispatcher
from ..errors import ConnectionLost, ProtocolError
from ..manager import StreamManager
from ..orderbook import OrderBook
from ..protocol import redact
from ..protocol.book import Outcome
from ..protocol.depth import parse_depth
from ..protocol.events import Push
from ..protocol.models import DepthUpdate, convert
from ..protocol.topics import depth_topic
from ..states import GapEvent, StateEvent, StreamState
from ..subscriptions import Callback, Carrier, Route, Subscription
from ..threads import OwnedThread
from .cursor import Cursor, Verdict
from .format import (
    DEFAULT_PREFIX,
    Entry,
    as_list,
    decode_entry,
    previous_id,
    snapshot_key,
    stream_key,
)
from .redisio import connect, display_url, redis_errors

__all__ = ["RedisStreamManager"]

logger = logging.getLogger(__name__)

_LANE = "bus"
_STATE_TOPIC = "sixmm.state"
_APPLIED = Outcome.APPLIED
_SNAPSHOT = Outcome.SNAPSHOT
_RECENT_IDS = 20_000  # trade ids remembered per stream for de-duplication


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Feed:
    """What the reader knows about one stream."""

    __slots__ = (
        "check_dups",
        "cursor",
        "deliver_after",
        "duplicates",
        "entries",
        "handovers",
        "holes",
        "idle",
        "key",
        "lags",
        "last_id",
        "last_rx",
        "last_seen",
        "recent",
        "recent_set",
        "rewind",
        "route",
        "trade_dups",
    )

    def __init__(self, route: Route, key: str) -> None:
        self.route = route
        self.key = key
        self.cursor = Cursor()
        self.last_id: Optional[str] = None  # None: resolve the start position
        self.rewind = False
        self.deliver_after: Optional[str] = None
        self.last_rx: Optional[int] = None
        self.last_seen: Optional[float] = None
        self.idle = False
        self.recent: Deque[str] = deque()  # trade ids delivered lately, oldest first
        self.recent_set: Set[str] = set()
        self.check_dups = 0  # trades still to check against ``recent`` after a new session
        self.lags: Deque[int] = deque(maxlen=1000)
        self.entries = 0
        self.duplicates = 0
        self.trade_dups = 0
        self.holes = 0
        self.handovers = 0


def _after(entry_id: str, mark: Optional[str]) -> bool:
    if mark is None:
        return True
    a, _, b = entry_id.partition("-")
    c, _, d = mark.partition("-")
    return (int(a), int(b or 0)) > (int(c), int(d or 0))


def _pct(values: List[int], q: float) -> Optional[int]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Reader:
    """The reader thread: XREAD BLOCK over every desired stream, entries to routes."""

    def __init__(
        self,
        manager: RedisStreamManager,
        url: str,
        *,
        prefix: str,
        block: float,
        idle_after: float,
        count: int,
    ) -> None:
        redis_errors()  # ImportError with the install hint, now rather than in the thread
        self._m = manager
        self._url = url
        self.display = display_url(url)
        self._prefix = prefix
        self._block_ms = max(1, int(block * 1000))
        self._idle_after = idle_after
        self._count = count
        self._owner = OwnedThread("sixmm-bus-reader", self._run)
        self._stop = self._owner.stopping
        self._wake = self._owner.wake
        self._lock = threading.Lock()
        self._feeds: Dict[str, _Feed] = {}
        self._backoff = Backoff(initial=0.1, maximum=2.0)
        self._failures = 0
        self.state: Optional[StreamState] = None
        self.entries = 0
        self.bad_entries = 0
        self.redis_errors = 0
        self.reconnects = 0
        self._rewind_all = False

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._owner.start()

    def stop(self, timeout: float) -> None:
        self._owner.stop(timeout)

    def wake(self) -> None:
        self._wake.set()

    def add(self, route: Route) -> None:
        """A new desired topic (the manager's registry calls this; the thread picks it up)."""
        route.session = self
        self._wake.set()

    def remove(self, route: Route, *, unsubscribe: bool = True) -> None:
        """A topic no longer desired (the thread drops its feed on its next look)."""
        if route.session is self:
            route.session = None
        self._wake.set()

    def resync(self, route: Route, reason: str) -> None:
        """Rebuild ``route``'s book: restart its stream at the latest snapshot."""
        self.book_added(route.topic)

    def book_added(self, topic: str) -> None:
        """A book was asked for: (re)start its stream at the latest snapshot."""
        with self._lock:
            feed = self._feeds.get(topic)
            if feed is not None:
                feed.rewind = True
        self._wake.set()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        errors = redis_errors()
        client = connect(self._url, timeout=self._block_ms / 1000.0 + 5.0)
        try:
            while not self._stop.is_set():
                feeds = self._sync_feeds()
                if not feeds:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                try:
                    self._resolve(client, feeds)
                    streams = {f.key: f.last_id for f in feeds.values()}
                    reply = client.xread(streams, count=self._count, block=self._block_ms)
                except errors as exc:
                    self._trouble(exc, feeds)
                    self._stop.wait(self._backoff.delay(self._failures))
                    continue
                self._ok()
                by_key = {f.key: f for f in feeds.values()}
                items = reply.items() if isinstance(reply, dict) else (reply or [])
                for key, rows in items:
                    feed = by_key.get(_text(key))
                    if feed is None:
                        continue
                    for entry_id, fields in rows:
                        self._handle(feed, _text(entry_id), fields)
                self._check_idle(feeds)
        finally:
            client.close()

    def _sync_feeds(self) -> Dict[str, _Feed]:
        routes = self._m._routes_now()
        with self._lock:
            feeds = self._feeds
            for topic in list(feeds):
                if routes.get(topic) is not feeds[topic].route:
                    del feeds[topic]
            for topic, route in routes.items():
                if topic not in feeds:
                    feeds[topic] = _Feed(route, stream_key(self._prefix, topic))
            return dict(feeds)

    def _resolve(self, client: Any, feeds: Dict[str, _Feed]) -> None:
        rewind_all, self._rewind_all = self._rewind_all, False
        for feed in feeds.values():
            book = feed.route.book
            if feed.last_id is not None and not feed.rewind and not (rewind_all and book):
                continue
            feed.rewind = False
            start: Optional[str] = None
            if book is not None:
                pointer = client.get(snapshot_key(self._prefix, feed.route.topic))
                if pointer is not None:
                    start = previous_id(_text(pointer))
                    if feed.last_id is not None:
                        feed.deliver_after = feed.last_id  # callbacks saw these already
            if start is None and feed.last_id is None:
                rows = client.xrevrange(feed.key, "+", "-", count=1)
                start = _text(rows[0][0]) if rows else "0-0"
            if start is not None:
                feed.last_id = start
                feed.cursor = Cursor()
            feed.route.ready.set()

    # -- one entry ----------------------------------------------------------------------------

    def _handle(self, feed: _Feed, entry_id: str, fields: Any) -> None:
        feed.last_id = entry_id
        route = feed.route
        try:
            e = decode_entry(fields)
        except ProtocolError as exc:
            self.bad_entries += 1
            route.bad_payloads += 1
            self._m._bus_report(ProtocolError(f"bad bus entry on {route.topic}: {exc}"))
            return
        self.entries += 1
        feed.entries += 1
        now_ms = int(time.time() * 1000)
        lag = now_ms - e.rx
        feed.lags.append(lag)
        route.lag_ms = lag
        feed.last_seen = time.monotonic()
        verdict = feed.cursor.check(e.session, e.seq)
        if verdict is Verdict.DUPLICATE:
            feed.duplicates += 1
            return
        book = route.book
        if feed.idle:
            feed.idle = False
            if e.kind != "gap":  # a bridge's gap entry covers the outage (and says more)
                self._gap(feed, feed.last_rx or e.rx, e.rx, "no bridge fed the stream")
        if verdict is Verdict.HOLE:
            feed.holes += 1
            lost = feed.cursor.lost
            self._gap(feed, feed.last_rx or e.rx, e.rx, f"{lost} entries missed (trimmed away)")
        elif verdict is Verdict.NEW_SESSION:
            feed.handovers += 1
            feed.check_dups = _RECENT_IDS
            logger.info("bus: %s now published by session %s", route.topic, e.session)
            if book is not None and e.kind != "snapshot":
                book._invalidate(f"new bridge session {e.session}")
        feed.last_rx = e.rx
        kind = e.kind
        if kind == "data":
            self._data(feed, e)
        elif kind == "update" or kind == "snapshot":
            self._depth(feed, entry_id, e)
        elif kind == "gap":
            self._gap(feed, e.start or e.rx, e.end or e.rx, e.reason or "gap")
        elif kind == "unsynced" and book is not None:
            book._invalidate(f"the bridge's book is not synced ({e.reason})")

    def _gap(self, feed: _Feed, start: int, end: int, reason: str) -> None:
        route = feed.route
        route.gaps += 1
        if route.book is not None:
            route.book._invalidate(f"bus gap: {reason}")
        logger.info("bus gap on %s (%s)", route.topic, reason)
        self._m._emit_gap(_LANE, GapEvent(route.topic, start, end))

    def _data(self, feed: _Feed, e: Entry) -> None:
        route = feed.route
        callbacks = route.callbacks
        route.messages += 1
        if e.ts is not None:
            route.last_ts = e.ts
        if not callbacks:
            return
        submit = self._m._dispatcher.submit
        if route.channel == "trade":
            pushes = [
                Push(route.topic, e.ts, item)
                for item in as_list(e.data)
                if self._new_trade(feed, item)
            ]
        else:
            pushes = [Push(route.topic, e.ts, e.data)]
        for push in pushes:
            if route.channel is None:
                items: List[Any] = [{"topic": push.topic, "ts": push.ts, "data": push.data}]
            else:
                try:
                    items = convert(route.channel, push)
                except ProtocolError as exc:
                    route.bad_payloads += 1
                    self._m._bus_report(ProtocolError(f"bad {route.topic} payload: {exc}"))
                    continue
            for item in items:
                submit(_LANE, route.topic, callbacks, item, route.conflate)

    def _new_trade(self, feed: _Feed, item: Any) -> bool:
        """False for a trade already delivered. Within one bridge session the ``seq`` rules
        exclude duplicates (the direct path does not de-duplicate either); after a change of
        session (a failover may re-publish a few) the first trades are checked against the
        ids delivered lately (no assumption that ids increase)."""
        value = (
            item.get("tradeId", item.get("id", item.get("t"))) if isinstance(item, dict) else None
        )
        if value is None:
            return True
        text = str(value)
        seen = feed.recent_set
        if feed.check_dups > 0:
            feed.check_dups -= 1
            if text in seen:
                feed.trade_dups += 1
                return False
        seen.add(text)
        recent = feed.recent
        recent.append(text)
        if len(recent) > _RECENT_IDS:
            seen.discard(recent.popleft())
        return True

    def _depth(self, feed: _Feed, entry_id: str, e: Entry) -> None:
        route = feed.route
        route.messages += 1
        snapshot = e.kind == "snapshot"
        book: Optional[OrderBook] = route.book
        try:
            msg = parse_depth(e.data, snapshot, book._known if book is not None else None)
        except ProtocolError as exc:
            route.bad_payloads += 1
            self._m._bus_report(ProtocolError(f"bad {route.topic} bus payload: {exc}"))
            if book is not None:
                book._bad_payload(str(exc))
            return
        submit = self._m._dispatcher.submit
        if book is not None:
            outcome = book._feed(msg)
            if (outcome is _APPLIED or outcome is _SNAPSHOT) and route.listeners:
                submit(_LANE, route.topic, route.listeners, book, True)
        if route.callbacks and _after(entry_id, feed.deliver_after):
            symbol = route.topic.rsplit(".", 1)[-1]
            update = DepthUpdate.from_depth_msg(msg, ts=e.ts, symbol=symbol, raw=e.data)
            submit(_LANE, route.topic, route.callbacks, update, False)

    # -- health -------------------------------------------------------------------------------

    def _check_idle(self, feeds: Dict[str, _Feed]) -> None:
        now = time.monotonic()
        for feed in feeds.values():
            if feed.idle or feed.last_seen is None or now - feed.last_seen < self._idle_after:
                continue
            feed.idle = True
            logger.warning("bus: no entry on %s for %.1f s", feed.route.topic, now - feed.last_seen)
            if feed.route.book is not None:
                feed.route.book._invalidate("no bridge is feeding the stream")

    def _ok(self) -> None:
        if self._failures:
            self.reconnects += 1
            self._failures = 0
        self._set_state(StreamState.CONNECTED, f"reading from Redis at {self.display}")

    def _trouble(self, exc: BaseException, feeds: Dict[str, _Feed]) -> None:
        self.redis_errors += 1
        self._failures += 1
        text = redact.scrub(str(exc))
        if self._failures == 1:
            logger.warning("bus reader: Redis trouble at %s: %s", self.display, text)
            self._m._bus_report(ConnectionLost(f"Redis at {self.display}: {text}"))
            for feed in feeds.values():
                if feed.route.book is not None:
                    feed.route.book._invalidate("Redis connection lost")
                    feed.rewind = True  # back at the latest snapshot once Redis answers
            for feed in feeds.values():
                feed.last_seen = None  # the silence is ours, not the bridge's
        self._set_state(StreamState.SUSPENDED, f"Redis: {text}")

    def _set_state(self, state: StreamState, reason: str) -> None:
        if state is self.state:
            return
        first = self.state is None
        self.state = state
        if first and state is StreamState.CONNECTED:
            return
        self._m._emit_state(StateEvent(state, reason, _LANE))

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            feeds = dict(self._feeds)
        topics = {}
        for topic, f in feeds.items():
            lags = list(f.lags)
            topics[topic] = {
                "entries": f.entries,
                "lag_ms": lags[-1] if lags else None,
                "lag_p50_ms": _pct(lags, 0.5),
                "lag_p99_ms": _pct(lags, 0.99),
                "last_id": f.last_id,
                "session": f.cursor.session,
                "seq": f.cursor.seq,
                "holes": f.holes,
                "handovers": f.handovers,
                "duplicate_entries": f.duplicates,
                "duplicate_trades": f.trade_dups,
                "idle": f.idle,
            }
        return {
            "redis": self.display,
            "state": None if self.state is None else self.state.value,
            "entries": self.entries,
            "bad_entries": self.bad_entries,
            "redis_errors": self.redis_errors,
            "reconnects": self.reconnects,
            "topics": topics,
        }


class RedisStreamManager(StreamManager):
    """A :class:`~sixmm.StreamManager` fed from Redis by bridges (see the module docstring).

    Bus options: ``prefix`` (key prefix, default ``"sixmm"``), ``block`` (seconds per
    ``XREAD BLOCK``, bounds :meth:`stop`), ``idle_after`` (seconds without any entry, even a
    heartbeat, before a stream counts as unfed), ``count`` (entries per read).

    Thread-safety: every method may be called from any thread, including from callbacks.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        block: float = 0.5,
        idle_after: float = 3.0,
        count: int = 1000,
        dispatcher: Optional[Dispatcher] = None,
        on_state: Optional[Callable[[StateEvent], Any]] = None,
        on_error: Optional[Callable[[BaseException], Any]] = None,
        on_gap: Optional[Callable[[GapEvent], Any]] = None,
        **kwargs: Any,
    ) -> None:
        for name in ("url", "rest"):
            if name in kwargs:
                raise TypeError(f"from_redis() takes no {name!r}: the bridges talk to the exchange")
        super().__init__(
            dispatcher=dispatcher, on_state=on_state, on_error=on_error, on_gap=on_gap, **kwargs
        )
        self._reader = _Reader(
            self, redis_url, prefix=prefix, block=block, idle_after=idle_after, count=count
        )
        self.url = self._reader.display

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> RedisStreamManager:
        super().start()
        self._reader.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        self._reader.stop(timeout / 2)
        super().stop(max(0.05, deadline - time.monotonic()))

    def _join_stopped(self, timeout: float) -> None:
        if self._stopping and not self._in_sixmm_thread():
            self._reader.stop(timeout / 2)
        super()._join_stopped(timeout / 2)

    # -- registration -------------------------------------------------------------------------

    def order_book(
        self,
        symbol: str,
        on_update: Optional[Callback] = None,
        *,
        silence_after: Optional[float] = None,
    ) -> OrderBook:
        book = super().order_book(symbol, on_update, silence_after=silence_after)
        self._reader.book_added(depth_topic(symbol))
        return book

    def user(
        self,
        on_order: Optional[Callback] = None,
        on_account: Optional[Callback] = None,
        on_event: Optional[Callback] = None,
    ) -> Subscription:
        raise ValueError(
            "the private user stream is never published to the bus: use a StreamManager "
            "with rest=RestClient(...) in the process that needs it"
        )

    def stats(self) -> Dict[str, Any]:
        out = super().stats()
        out["bus"] = self._reader.stats()
        return out

    # -- hooks for the manager and the reader -----------------------------------------------

    def _session_with_room(self, topic: str = "") -> Carrier:
        self._reader.wake()
        return self._reader

    def _routes_now(self) -> Dict[str, Route]:
        with self._lock:
            return dict(self._routes)

    def _bus_report(self, error: BaseException) -> None:
        self._report(_LANE, error)

    def _emit_state(self, event: StateEvent) -> None:
        if self._on_state is not None:
            self._dispatcher.submit(_LANE, _STATE_TOPIC, (self._on_state,), event, False)

    def _overall_state(self) -> StreamState:
        if not self._started or self._stopping:
            return StreamState.LOST
        state = self._reader.state
        return StreamState.SUSPENDED if state is None else state

    def __repr__(self) -> str:
        state = self._overall_state().value
        return f"<RedisStreamManager {self.url} state={state} topics={len(self._routes)}>"
